"""The "Ask a question…" button of a chat and its two small dialogs (issue 17): asking the peer a question only
they can answer (with this user's own answer), and answering the peer's question. Both sides learn only whether
the two answers match; a match marks the contact verified. The state lives in gui/secret_check.py (no Tk)."""

from __future__ import annotations

import tkinter
from collections.abc import Callable

import customtkinter as ctk

from gui.controller import ChatController
from gui.widgets.dialog_parts import button_row, place_over
from gui.widgets.keyboard import tab_stops
from gui.widgets.style import MUTED, Fonts

WRAP = 400
MAX_QUESTION = 200


class SecretDialog(ctk.CTkToplevel):
    """Ask mode (``question`` None): a question field and an answer field, "Ask". Answer mode: the peer's question
    as text, an answer field, "Answer" and "Don't answer". ``on_done(question, answer)`` gets the fields;
    ``on_decline()`` is called for "Don't answer" (Escape and closing the window in answer mode too)."""

    def __init__(self, master: tkinter.Misc, fonts: Fonts, peer_name: str, question: str | None,
                 on_done: Callable[[str, str], None], on_decline: Callable[[], None] | None = None, *,
                 take_focus: bool = True) -> None:
        super().__init__(master)
        self._on_done, self._on_decline = on_done, on_decline
        asking = question is None
        self.title(f"Ask {peer_name} a question" if asking else f"{peer_name} asks you a question")
        self.resizable(False, False)
        self.transient(master.winfo_toplevel())
        self.protocol("WM_DELETE_WINDOW", self.decline)
        intro = (f"Ask something only {peer_name} can answer, and type your own answer. Neither answer is sent: "
                 "you both learn only whether they match (case and surrounding spaces do not count). A match marks "
                 f"{peer_name} verified." if asking else
                 f"{peer_name} wants to check it is really you. Your answer is not sent: you both learn only whether "
                 "it matches theirs.")
        ctk.CTkLabel(self, text=intro, font=fonts.small, text_color=MUTED, wraplength=WRAP,
                     justify="left").pack(padx=24, pady=(18, 6), anchor="w")
        self.question = ctk.CTkEntry(self, width=WRAP, font=fonts.body, placeholder_text="Your question")
        if asking:
            self.question.pack(padx=24, pady=4, fill="x")
        else:
            self.question_label = ctk.CTkLabel(self, text=question, font=fonts.bold, wraplength=WRAP, justify="left")
            self.question_label.pack(padx=24, pady=4, anchor="w")        # quoted and cut (gui/secret_check.py)
        self.answer = ctk.CTkEntry(self, width=WRAP, font=fonts.body, placeholder_text="Your answer")
        self.answer.pack(padx=24, pady=4, fill="x")
        self.error = ctk.CTkLabel(self, text="", font=fonts.small, text_color=("#b3261e", "#f2b8b5"))
        self.error.pack(padx=24, anchor="w")
        self.ok_button, self.other_button = button_row(
            self, fonts.bold, fonts.body, ("Ask" if asking else "Answer", 100, self.done),
            ("Cancel" if asking else "Don't answer", 110, self.decline))
        self.bind("<Return>", lambda _e: self.done())
        self.bind("<Escape>", lambda _e: self.decline())
        place_over(self, master.winfo_toplevel())
        if take_focus:
            (self.question if asking else self.answer).focus_set()
        self._asking = asking

    def done(self) -> None:
        question, answer = self.question.get().strip(), self.answer.get()
        if self._asking and not question:
            self.error.configure(text="Type a question.")
        elif len(question) > MAX_QUESTION:
            self.error.configure(text=f"A question has at most {MAX_QUESTION} characters ({len(question)} now).")
        elif not answer.strip():
            self.error.configure(text="Type an answer.")
        else:
            self.destroy()
            self._on_done(question, answer)

    def decline(self) -> None:
        self.destroy()
        if self._on_decline is not None:
            self._on_decline()


class SecretDialogs:
    """The window's side: one button per chat, at most one dialog open at a time."""

    def __init__(self, top: tkinter.Misc, fonts: Fonts, controller: ChatController,
                 render: Callable[[], None]) -> None:
        self.top, self.fonts, self.controller, self.render = top, fonts, controller, render
        self.dialog: SecretDialog | None = None
        self.buttons: dict[str, ctk.CTkButton] = {}

    def add_button(self, panel: ctk.CTkFrame, session: str) -> ctk.CTkButton:
        """"Ask a question…" beside the fingerprint's Copy button (the peer panel's row 3)."""
        button = ctk.CTkButton(panel, text="Ask a question…", width=110, height=20, font=self.fonts.small,
                               command=lambda: self.open_ask(session))
        button.grid(row=3, column=5, padx=(0, 8), pady=1)
        self.buttons[session] = button
        return button

    def open_ask(self, session: str) -> None:
        tab = self.controller.tabs.get(session)
        if tab is None:
            return
        if not tab.ready:
            self.controller.secrets.ask(session, "", "")      # says why not yet
            self.render()
            return

        def asked(question: str, answer: str) -> None:
            self.dialog = None
            self.controller.secrets.ask(session, question, answer)
            self.render()
        self._show(SecretDialog(self.top, self.fonts, tab.peer_name, None, asked, self._closed))

    def open_answers(self, sessions: list[str]) -> None:
        """The answer dialog for the newest question (the others stay in their chats: /answer there)."""
        for session in sessions[-1:]:
            tab = self.controller.tabs.get(session)
            question = self.controller.secrets.questions.get(session)
            if tab is None or question is None:
                continue

            def answered(_q: str, answer: str, session: str = session) -> None:
                self.dialog = None
                self.controller.secrets.answer(session, answer)
                self.render()

            def declined(session: str = session) -> None:
                self.dialog = None
                self.controller.secrets.decline(session)
                self.render()
            # [red team] the peer chooses when this opens: it must not take the keyboard from a user typing in the
            # window (the rest of their message, and its Enter, went into the answer field as an answer)
            self._show(SecretDialog(self.top, self.fonts, tab.peer_name, question, answered, declined,
                                    take_focus=not self._typing()))

    def _typing(self) -> bool:
        """The keyboard is in a text field of the window (the chat entry, the peer field, a search)."""
        try:
            focus = self.top.focus_get()
        except (KeyError, tkinter.TclError):       # (a focus in a menu or a dialog being destroyed)
            return False
        return isinstance(focus, tkinter.Entry | tkinter.Text) and focus.winfo_toplevel() is self.top

    def _show(self, dialog: SecretDialog) -> None:
        self.close()
        self.dialog = dialog
        tab_stops(dialog)

    def _closed(self) -> None:
        self.dialog = None

    def close(self) -> None:
        if self.dialog is not None and self.dialog.winfo_exists():
            self.dialog.destroy()
        self.dialog = None


__all__ = ["SecretDialog", "SecretDialogs"]
