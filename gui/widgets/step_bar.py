"""The peer field, the four numbered step buttons with their results beside them, and "Connect all"."""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.models import BarView, StepState
from gui.widgets.style import MUTED, Fonts, LabelText, result_color, step_style
from gui.widgets.visibility import hide, show
from p2pchat.steps import Step


class StepBar(ctk.CTkFrame):
    """Draws a :class:`~gui.models.BarView`; user actions go to the callbacks."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, *, on_peer_changed: Callable[[str], None],
                 on_step: Callable[[Step], None], on_connect_all: Callable[[], None],
                 on_new_chat: Callable[[], None]) -> None:
        super().__init__(master)
        self._on_peer_changed = on_peer_changed
        self.grid_columnconfigure(1, weight=1)

        ctk.CTkLabel(self, text="Peer", font=fonts.bold).grid(row=0, column=0, padx=(10, 6), pady=(8, 4), sticky="w")
        self.peer_entry = ctk.CTkEntry(self, font=fonts.body, placeholder_text="IP address, nickname or fingerprint")
        self.peer_entry.grid(row=0, column=1, padx=4, pady=(8, 4), sticky="ew")
        self.peer_entry.bind("<KeyRelease>", self._peer_edited)
        self.peer_entry.bind("<<Paste>>", lambda _e: self.after_idle(self._peer_edited))
        self.peer_entry.bind("<Return>", lambda _e: on_connect_all())
        self.peer_entry.bind("<Control-a>", self._select_all)     # (Tk's own Ctrl+A jumps to the line start)
        self.connect_all_button = ctk.CTkButton(self, text="Connect all", width=110, font=fonts.bold,
                                                command=on_connect_all)
        self.connect_all_button.grid(row=0, column=2, padx=4, pady=(8, 4))
        self.new_chat_button = ctk.CTkButton(self, text="New chat", width=90, font=fonts.body, command=on_new_chat,
                                             fg_color="transparent", border_width=1,
                                             text_color=("gray10", "gray90"))
        self.new_chat_button.grid(row=0, column=3, padx=(4, 10), pady=(8, 4))

        self.buttons: dict[Step, ctk.CTkButton] = {}
        self.results: dict[Step, ctk.CTkLabel] = {}
        self._result_texts: dict[Step, LabelText] = {}
        self._shown: dict[Step, tuple] = {}
        for i, step in enumerate(Step, start=1):
            button = ctk.CTkButton(self, text=step.label, width=200, height=28, anchor="w", font=fonts.body,
                                   command=lambda s=step: on_step(s))
            button.grid(row=i, column=0, columnspan=1, padx=(10, 6), pady=2, sticky="w")
            result = ctk.CTkLabel(self, text="", anchor="w", justify="left", font=fonts.small, wraplength=520)
            result.grid(row=i, column=1, columnspan=3, padx=4, pady=2, sticky="ew")
            self.buttons[step] = button
            self.results[step] = result
            self._result_texts[step] = LabelText(result)
        self.hint = ctk.CTkLabel(self, text="", anchor="w", justify="left", font=fonts.italic, text_color=MUTED,
                                 wraplength=520)
        self.hint.grid(row=len(Step) + 1, column=0, columnspan=4, padx=10, pady=(0, 6), sticky="ew")
        # Once a chat is ready the four steps fold into this one line; a click (or Enter on it) unfolds them.
        self.summary = ctk.CTkButton(self, text="", anchor="w", height=28, font=fonts.body, fg_color="transparent",
                                     border_width=1, text_color=("gray10", "gray90"), command=self.toggle)
        self.collapsed = False
        self._expanded_by_user: str | None = None    # the session whose steps the user unfolded
        self._button_width = 200
        self._shown_all: bool | None = None
        self._shown_hint = ""
        self._session: str | None = None
        self.bind("<Configure>", self._resized)

    def _peer_edited(self, _event: object = None) -> None:
        text = self.peer_entry.get()
        if "\n" in text or "\r" in text or "\t" in text:
            # a pasted block of lines: one line in a one-line field (Tk would draw the breaks as boxes)
            text = " ".join(text.split())
            self.peer_entry.delete(0, "end")
            self.peer_entry.insert(0, text)
        self._on_peer_changed(text)

    def _select_all(self, _event: object = None) -> str:
        self.peer_entry.select_range(0, "end")
        self.peer_entry.icursor("end")
        return "break"

    def _resized(self, event: object) -> None:
        width = getattr(event, "width", 0)
        if width > 300:
            for label in self.results.values():
                label.configure(wraplength=max(200, width - self._button_width - 60))
            self.hint.configure(wraplength=max(200, width - 40))

    def _typing_in_peer_field(self) -> bool:
        focus = self.focus_get()
        return focus is not None and str(focus).startswith(str(self.peer_entry))

    def show(self, bar: BarView) -> None:
        """Redraw from the view-model; widgets are reconfigured only where something changed (cheap ticks)."""
        if self.peer_entry.get() != bar.peer_text and not self._typing_in_peer_field():
            self.peer_entry.delete(0, "end")
            if bar.peer_text:
                self.peer_entry.insert(0, bar.peer_text)
        for view in bar.steps:
            key = (view.state, view.turn, view.clickable, view.result)
            if self._shown.get(view.step) == key:
                continue
            self._shown[view.step] = key
            mark = {StepState.DONE: "✓ ", StepState.FAILED: "✗ ", StepState.RUNNING: "… "}.get(view.state, "")
            self.buttons[view.step].configure(text=f"{mark}{view.label}",
                                              state="normal" if view.clickable else "disabled",
                                              text_color_disabled=step_style(view.state, view.turn)["text_color"],
                                              **step_style(view.state, view.turn))
            self._result_texts[view.step].show(view.result, result_color(view.result))
        if self._shown_all != bar.connect_all:
            self._shown_all = bar.connect_all
            self.connect_all_button.configure(state="normal" if bar.connect_all else "disabled")
        if self._shown_hint != bar.hint:
            self._shown_hint = bar.hint
            self.hint.configure(text=bar.hint)
        # folded only while the chat is live: an ended chat's bar shows 1 Connect to start again
        ready = bar.session is not None and all(v.state is StepState.DONE and not v.clickable for v in bar.steps)
        self._session = bar.session
        self._set_collapsed(ready and self._expanded_by_user != bar.session)

    def toggle(self) -> None:
        """Fold or unfold the four steps (the summary line and its ▴ button)."""
        self._expanded_by_user = None if self._expanded_by_user == self._session else self._session
        self._set_collapsed(not self.collapsed)

    def _set_collapsed(self, collapsed: bool) -> None:
        if collapsed == self.collapsed:
            return
        self.collapsed = collapsed
        # "Connected and encrypted" (the hint) is what the folded line says already
        for widget in (*self.buttons.values(), *self.results.values(), self.hint):
            (hide if collapsed else show)(widget)
        if collapsed:
            self.summary.configure(text="✓ 1 Connect  ✓ 2 Swap keys  ✓ 3 Authenticate  ✓ 4 AES key   — show steps ▾")
            self.summary.grid(row=1, column=0, columnspan=4, padx=10, pady=2, sticky="ew")
        else:
            hide(self.summary)
