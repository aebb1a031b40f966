"""A yes/no confirmation over the main window (not modal for the rest of the app)."""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.widgets.style import Fonts


class ConfirmDialog(ctk.CTkToplevel):
    """Calls ``on_answer(True)`` on confirm; Cancel, Escape and closing the window answer False."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, title: str, question: str, confirm: str,
                 on_answer: Callable[[bool], None]) -> None:
        super().__init__(master)
        self._on_answer = on_answer
        self._answered = False
        self.title(title)
        self.resizable(False, False)
        self.transient(master.winfo_toplevel())
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(False))
        ctk.CTkLabel(self, text=title, font=fonts.title).pack(padx=24, pady=(18, 4), anchor="w")
        self.question = ctk.CTkLabel(self, text=question, font=fonts.body, wraplength=360, justify="left")
        self.question.pack(padx=24, pady=4, anchor="w")
        row = ctk.CTkFrame(self, fg_color="transparent")
        row.pack(padx=24, pady=(10, 18), fill="x")
        self.confirm_button = ctk.CTkButton(row, text=confirm, width=110, font=fonts.bold,
                                            command=lambda: self.answer(True))
        self.confirm_button.pack(side="right")
        self.cancel_button = ctk.CTkButton(row, text="Cancel", width=110, font=fonts.body, fg_color="transparent",
                                           border_width=1, text_color=("gray10", "gray90"),
                                           command=lambda: self.answer(False))
        self.cancel_button.pack(side="right", padx=(0, 8))
        self.bind("<Escape>", lambda _e: self.answer(False))
        self.bind("<Return>", lambda _e: self.answer(not str(self.focus_get() or "").startswith(
            str(self.cancel_button))))
        parent = master.winfo_toplevel()
        self.update_idletasks()
        x = parent.winfo_rootx() + max(0, (parent.winfo_width() - self.winfo_reqwidth()) // 2)
        y = parent.winfo_rooty() + max(0, (parent.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry(f"+{x}+{y}")
        self.lift()
        self.after_idle(self._take_focus)

    def _take_focus(self) -> None:
        if not self._answered and self.winfo_exists():
            self.focus_force()
            self.confirm_button.focus_set()

    def answer(self, yes: bool) -> None:
        if self._answered:
            return
        self._answered = True
        self.destroy()
        self._on_answer(yes)
