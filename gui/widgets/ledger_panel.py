"""The ledger tab: node, peers, height, mining and sync, recent blocks, pending records, "Join network", and
"Your identity" (change nickname, rotate key, revoke — each after a confirmation dialog)."""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.ledger_actions import Action, LedgerActions, Report, confirmation_text
from gui.ledger_view import LedgerSnapshot, alert_text, ledger_rows
from gui.text import clean_line
from gui.widgets.confirm_dialog import ConfirmDialog
from gui.widgets.style import MUTED, Fonts, LabelText
from gui.widgets.visibility import hide, show

ACTION_POLL_MS = 100
OK_COLOR = ("#2e7d32", "#66bb6a")
ERROR_COLOR = ("#c62828", "#ef5350")
ALERT_COLOR = ERROR_COLOR

ROWS = ("Alert", "Node", "Problem", "Network", "Height", "Final", "Peers", "Mining", "Sync", "Your record")


class LedgerPanel(ctk.CTkFrame):
    """Calls ``on_join(address_text)`` when the user asks to join a network."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, on_join: Callable[[str], None]) -> None:
        super().__init__(master, fg_color="transparent")
        self._on_join = on_join
        self._fonts = fonts
        self._actions: LedgerActions | None = None
        self.dialog: ConfirmDialog | None = None
        self.grid_columnconfigure((0, 1), weight=1, uniform="lists")
        self.grid_rowconfigure(5, weight=1)

        # Binding alerts (ledger/watch.py, ledger/disputes.py): a red banner above everything, hidden otherwise.
        self.banner = ctk.CTkLabel(self, text="", font=fonts.bold, anchor="w", justify="left", wraplength=760,
                                   text_color=("#c62828", "#ef5350"), fg_color=("#fdecea", "#3b1f1f"),
                                   corner_radius=6)
        self.banner.grid(row=0, column=0, columnspan=2, sticky="ew", pady=(0, 6), ipadx=8, ipady=4)
        hide(self.banner)
        summary = ctk.CTkFrame(self, fg_color=("gray92", "gray17"))
        summary.grid(row=1, column=0, columnspan=2, sticky="ew")
        summary.grid_columnconfigure(1, weight=1)
        self.labels: dict[str, ctk.CTkLabel] = {}
        self.values: dict[str, ctk.CTkLabel] = {}
        self._values_text: dict[str, LabelText] = {}
        for i, name in enumerate(ROWS):
            label = ctk.CTkLabel(summary, text=name, font=fonts.small, text_color=MUTED, height=18)
            value = ctk.CTkLabel(summary, text="", font=fonts.small, anchor="w", justify="left", height=18)
            label.grid(row=i, column=0, padx=(10, 8), pady=1, sticky="w")
            value.grid(row=i, column=1, padx=(0, 10), pady=1, sticky="ew")
            self.labels[name], self.values[name] = label, value
            self._values_text[name] = LabelText(value)
        self.labels["Alert"].configure(text_color=ALERT_COLOR, font=fonts.bold)
        self.values["Alert"].configure(text_color=ALERT_COLOR, font=fonts.bold, wraplength=560)

        join = ctk.CTkFrame(self, fg_color="transparent")
        join.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(8, 4))
        join.grid_columnconfigure(1, weight=1)
        ctk.CTkLabel(join, text="Join network", font=fonts.bold).grid(row=0, column=0, padx=(4, 8))
        self.join_entry = ctk.CTkEntry(join, font=fonts.body, placeholder_text="address of a ledger node, e.g. "
                                                                                "127.0.0.3 or 127.0.0.3:8470")
        self.join_entry.grid(row=0, column=1, sticky="ew")
        self.join_entry.bind("<Return>", lambda _e: self._join())
        self.join_button = ctk.CTkButton(join, text="Join", width=80, font=fonts.bold, command=self._join)
        self.join_button.grid(row=0, column=2, padx=(8, 0))
        self.join_result = ctk.CTkLabel(join, text="", font=fonts.small, anchor="w", height=16)
        self.join_result.grid(row=1, column=0, columnspan=3, padx=4, sticky="ew")

        mine = ctk.CTkFrame(self, fg_color="transparent")
        mine.grid(row=3, column=0, columnspan=2, sticky="ew", pady=(4, 6))
        mine.grid_columnconfigure(1, weight=1)
        ctk.CTkLabel(mine, text="Your identity", font=fonts.bold).grid(row=0, column=0, padx=(4, 8))
        self.nickname_entry = ctk.CTkEntry(mine, font=fonts.body, placeholder_text="new nickname")
        self.nickname_entry.grid(row=0, column=1, sticky="ew")
        self.nickname_entry.bind("<Return>", lambda _e: self._ask(Action.NICKNAME))
        self.nickname_button = ctk.CTkButton(mine, text="Change nickname", width=130, font=fonts.bold,
                                             command=lambda: self._ask(Action.NICKNAME))
        self.nickname_button.grid(row=0, column=2, padx=(8, 0))
        self.rotate_button = ctk.CTkButton(mine, text="Rotate key…", width=110, font=fonts.body,
                                           command=lambda: self._ask(Action.ROTATE))
        self.rotate_button.grid(row=0, column=3, padx=(8, 0))
        self.revoke_button = ctk.CTkButton(mine, text="Revoke…", width=90, font=fonts.body,
                                           fg_color=ERROR_COLOR, command=lambda: self._ask(Action.REVOKE))
        self.revoke_button.grid(row=0, column=4, padx=(8, 0))
        self.action_result = ctk.CTkLabel(mine, text="", font=fonts.small, anchor="w", justify="left", height=16,
                                          wraplength=560)
        self.action_result.grid(row=1, column=0, columnspan=5, padx=4, sticky="ew")
        self._set_actions_enabled(False)

        ctk.CTkLabel(self, text="Recent blocks", font=fonts.bold, anchor="w").grid(row=4, column=0, sticky="w",
                                                                                 padx=4)
        ctk.CTkLabel(self, text="Pending records", font=fonts.bold, anchor="w").grid(row=4, column=1, sticky="w",
                                                                                   padx=4)
        self.blocks = ctk.CTkTextbox(self, font=fonts.mono, wrap="none", state="disabled", height=120)
        self.blocks.grid(row=5, column=0, sticky="nsew", padx=(0, 4))
        self.pending = ctk.CTkTextbox(self, font=fonts.small, wrap="word", state="disabled", height=120)
        self.pending.grid(row=5, column=1, sticky="nsew", padx=(4, 0))
        self._shown: LedgerSnapshot | None = None
        self._texts: dict[str, str] = {}

    # --- your identity ---------------------------------------------------------------------------------------

    def set_actions(self, actions: LedgerActions | None) -> None:
        """Enable the identity buttons, acting through ``actions`` (None: no ledger node of this key)."""
        self._actions = actions
        self._set_actions_enabled(actions is not None)
        if actions is None:
            self.action_result.configure(text="")

    def _set_actions_enabled(self, enabled: bool) -> None:
        state = "normal" if enabled else "disabled"
        for button in (self.nickname_button, self.rotate_button, self.revoke_button):
            button.configure(state=state)

    def _ask(self, action: Action) -> None:
        if self._actions is None or self._actions.busy or self.dialog is not None:
            return
        nickname = self.nickname_entry.get().strip()
        if action is Action.NICKNAME and not nickname:
            self._show_report(Report("✗ type the new nickname first", final=True, ok=False))
            return
        title, question, confirm = confirmation_text(action, nickname)
        self.dialog = ConfirmDialog(self, self._fonts, title, question, confirm,
                                    lambda yes: self._answered(action, nickname, yes))

    def _answered(self, action: Action, nickname: str, yes: bool) -> None:
        self.dialog = None
        if not yes or self._actions is None:
            return
        if self._actions.start(action, nickname):
            self._set_actions_enabled(False)
            self._show_report(Report("… asking the ledger node"))
            self.after(ACTION_POLL_MS, self._poll_actions)

    def _poll_actions(self) -> None:
        actions = self._actions
        if actions is None:
            return
        for report in actions.drain():
            self._show_report(report)
            if report.final:
                self._set_actions_enabled(True)
                if report.ok:
                    self.nickname_entry.delete(0, "end")
                return
        self.after(ACTION_POLL_MS, self._poll_actions)

    def _show_report(self, report: Report) -> None:
        color = (OK_COLOR if report.ok else ERROR_COLOR) if report.final else MUTED
        self.action_result.configure(text=clean_line(report.text), text_color=color)     # errors quote the network

    def _join(self) -> None:
        self._on_join(self.join_entry.get())

    def show_join_result(self, text: str, ok: bool) -> None:
        self.join_result.configure(text=clean_line(text), text_color=OK_COLOR if ok else ERROR_COLOR)   # a peer's words
        if ok:
            self.join_entry.delete(0, "end")

    def show(self, snap: LedgerSnapshot | None) -> None:
        if snap == self._shown and snap is not None:
            return
        self._shown = snap
        banner = alert_text(snap)
        if banner:
            self.banner.configure(text=banner)
            show(self.banner)
        else:
            hide(self.banner)
        rows = dict(ledger_rows(snap))
        for name in ROWS:
            # hide/show, not grid_remove: customtkinter would grid a removed row again at a scaling change
            if name in rows:
                show(self.labels[name])
                show(self.values[name])
                self._values_text[name].show(rows[name])
            else:
                hide(self.labels[name])
                hide(self.values[name])
        self._fill(self.blocks, "\n".join(snap.blocks) if snap and snap.blocks else "no blocks yet")
        self._fill(self.pending, "\n".join(snap.pending) if snap and snap.pending else "nothing pending")

    def _fill(self, box: ctk.CTkTextbox, text: str) -> None:
        if self._texts.get(str(box)) == text:
            return
        self._texts[str(box)] = text
        box.configure(state="normal")
        box.delete("1.0", "end")
        box.insert("1.0", text)
        box.configure(state="disabled")
