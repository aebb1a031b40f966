"""The ledger tab: node, peers, height, mining and sync, recent blocks, pending records, "Join network"."""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.ledger_view import LedgerSnapshot, ledger_rows
from gui.widgets.style import MUTED, Fonts, LabelText

ROWS = ("Alert", "Node", "Problem", "Network", "Height", "Final", "Peers", "Mining", "Sync", "Your record")
ALERT_COLOR = ("#c62828", "#ef5350")


class LedgerPanel(ctk.CTkFrame):
    """Calls ``on_join(address_text)`` when the user asks to join a network."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, on_join: Callable[[str], None]) -> None:
        super().__init__(master, fg_color="transparent")
        self._on_join = on_join
        self.grid_columnconfigure((0, 1), weight=1, uniform="lists")
        self.grid_rowconfigure(3, weight=1)

        summary = ctk.CTkFrame(self, fg_color=("gray92", "gray17"))
        summary.grid(row=0, column=0, columnspan=2, sticky="ew")
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
        join.grid(row=1, column=0, columnspan=2, sticky="ew", pady=(8, 4))
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

        ctk.CTkLabel(self, text="Recent blocks", font=fonts.bold, anchor="w").grid(row=2, column=0, sticky="w",
                                                                                 padx=4)
        ctk.CTkLabel(self, text="Pending records", font=fonts.bold, anchor="w").grid(row=2, column=1, sticky="w",
                                                                                   padx=4)
        self.blocks = ctk.CTkTextbox(self, font=fonts.mono, wrap="none", state="disabled", height=120)
        self.blocks.grid(row=3, column=0, sticky="nsew", padx=(0, 4))
        self.pending = ctk.CTkTextbox(self, font=fonts.small, wrap="word", state="disabled", height=120)
        self.pending.grid(row=3, column=1, sticky="nsew", padx=(4, 0))
        self._shown: LedgerSnapshot | None = None
        self._texts: dict[str, str] = {}

    def _join(self) -> None:
        self._on_join(self.join_entry.get())

    def show_join_result(self, text: str, ok: bool) -> None:
        self.join_result.configure(text=text, text_color=("#2e7d32", "#66bb6a") if ok else ("#c62828", "#ef5350"))
        if ok:
            self.join_entry.delete(0, "end")

    def show(self, snap: LedgerSnapshot | None) -> None:
        if snap == self._shown and snap is not None:
            return
        self._shown = snap
        rows = dict(ledger_rows(snap))
        for name in ROWS:
            if name in rows:
                self.labels[name].grid()
                self.values[name].grid()
                self._values_text[name].show(rows[name])
            else:
                self.labels[name].grid_remove()
                self.values[name].grid_remove()
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
