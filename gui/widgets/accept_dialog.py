"""The accept/reject dialog for an incoming chat."""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.models import AcceptPrompt
from gui.widgets.style import MUTED, Fonts

ARMING_MS = 1000
"""After the dialog takes the keyboard, Enter does not accept for this long, and Accept gets the focus only then:
a caller's dialog raised while the user types in another program must not take an Enter (or a Space) meant for
that program as a yes. Escape rejects at once; a click on Accept accepts at once."""


class AcceptDialog(ctk.CTkToplevel):
    """A small window over the main one; closing it counts as rejecting. Not modal: other chats keep going."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, prompt: AcceptPrompt,
                 on_answer: Callable[[str, bool], None]) -> None:
        super().__init__(master)
        self.prompt = prompt
        self._on_answer = on_answer
        self._answered = False
        self.title("Incoming chat")
        self.resizable(False, False)
        self.transient(master.winfo_toplevel())
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(False))
        ctk.CTkLabel(self, text="Incoming chat", font=fonts.title).pack(padx=24, pady=(18, 4), anchor="w")
        ctk.CTkLabel(self, text=prompt.question, font=fonts.body, wraplength=360, justify="left").pack(
            padx=24, pady=4, anchor="w")
        ctk.CTkLabel(self, text="Accepting lets them run the four steps; you can check their fingerprint and "
                                "safety number in the chat tab before saying anything.",
                     font=fonts.small, text_color=MUTED, wraplength=360, justify="left").pack(padx=24, pady=4,
                                                                                             anchor="w")
        row = ctk.CTkFrame(self, fg_color="transparent")
        row.pack(padx=24, pady=(10, 18), fill="x")
        self.accept_button = ctk.CTkButton(row, text="Accept", width=110, font=fonts.bold,
                                           command=lambda: self.answer(True))
        self.accept_button.pack(side="right")
        self.reject_button = ctk.CTkButton(row, text="Reject", width=110, font=fonts.body, fg_color="transparent",
                                           border_width=1, text_color=("gray10", "gray90"),
                                           command=lambda: self.answer(False))
        self.reject_button.pack(side="right", padx=(0, 8))
        self.bind("<Escape>", lambda _e: self.answer(False))
        self.bind("<Return>", lambda _e: self._enter())
        self.bind("<KP_Enter>", lambda _e: self._enter())
        self.armed = False
        self._arm_id: str | None = self.after(ARMING_MS, self._arm)
        self._place_over(master.winfo_toplevel())

    def _enter(self) -> None:
        """Enter answers with the focused button (Tab moves between them), Accept by default once armed."""
        focus = str(self.focus_get() or "")
        if focus.startswith(str(self.reject_button)):
            self.answer(False)
        elif self.armed:
            self.answer(True)

    def take_focus(self) -> None:
        """Come to the front with the keyboard; Accept takes it ARMING_MS later (then Enter accepts)."""
        self.lift()
        self.focus_force()
        self.armed = False
        if self._arm_id is not None:
            self.after_cancel(self._arm_id)
        self._arm_id = self.after(ARMING_MS, self._arm)

    def _arm(self) -> None:
        self._arm_id = None
        self.armed = True
        if str(self.focus_get() or "") == str(self):       # the keyboard is still here, on no button
            self.accept_button.focus_set()

    def destroy(self) -> None:
        if self._arm_id is not None:
            self.after_cancel(self._arm_id)
            self._arm_id = None
        super().destroy()

    def _place_over(self, parent: ctk.CTkBaseClass) -> None:
        self.update_idletasks()
        x = parent.winfo_rootx() + max(0, (parent.winfo_width() - self.winfo_reqwidth()) // 2)
        y = parent.winfo_rooty() + max(0, (parent.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry(f"+{x}+{y}")

    def answer(self, accept: bool) -> None:
        if self._answered:
            return
        self._answered = True
        self._on_answer(self.prompt.session, accept)
        self.destroy()

    def dismiss(self) -> None:
        """Close without answering (the caller gave up first)."""
        self._answered = True
        self.destroy()
