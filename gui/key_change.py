"""The dialog shown when step 2 stopped because the ledger names another key for a contact (issue 13).

It names the risk in the node's own words (what was expected, what the ledger now says, since when, what may be
happening). "Keep the old key" is the default (Escape, Enter, closing the window); "Accept the new key" lets the
next chat with that key go on, and the node records the decision once that chat's four steps succeed. For a
contact the user had verified the stop is hard: Accept stays off until the user ticks that they checked the new
key with the person, in person or by phone.
"""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.key_words import window_warning
from gui.text import clean
from gui.widgets.dialog_parts import button_row, place_over, read_only_text
from gui.widgets.style import BAD, MUTED, Fonts
from p2pchat.events import KeyChangeStopped
from p2pchat.foundation import crypto

WRAP = 470


def grouped(fp_hex: str) -> str:
    """A full fingerprint in groups of four, on two lines of eight groups."""
    if not fp_hex:
        return "?"
    groups = crypto.format_fingerprint(bytes.fromhex(fp_hex), 16).split()
    return " ".join(groups[:8]) + "\n" + " ".join(groups[8:])


class KeyChangeDialog(ctk.CTkToplevel):
    """Calls ``on_answer(True)`` when the user accepts the new key, ``on_answer(False)`` when they keep the old."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, peer_name: str, stop: KeyChangeStopped,
                 on_answer: Callable[[bool], None]) -> None:
        super().__init__(master)
        self.stop = stop
        self._on_answer = on_answer
        self._answered = False
        title = f"The key of {peer_name} has changed"
        self.title(title)
        self.resizable(False, False)
        self.transient(master.winfo_toplevel())
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(False))
        if stop.verified:
            banner = ctk.CTkLabel(self, text="HARD STOP — you had verified this contact", font=fonts.bold,
                                  text_color="white", fg_color=("#b71c1c", "#b71c1c"), corner_radius=4, height=28)
            banner.pack(padx=24, pady=(18, 0), fill="x")
        ctk.CTkLabel(self, text=title, font=fonts.title, text_color=BAD).pack(padx=24, pady=(14, 4), anchor="w")
        self.message = read_only_text(self, window_warning(clean(stop.reason), peer_name, stop.verified),
                                      fonts.small, WRAP, 260)
        self.message.pack(padx=24, pady=4, fill="x")
        keys = ctk.CTkFrame(self, fg_color="transparent")
        keys.pack(padx=24, pady=4, fill="x")
        for row, (label, fp) in enumerate((("Expected key", stop.old_fingerprint),
                                           ("Key the ledger names now", stop.new_fingerprint))):
            ctk.CTkLabel(keys, text=label, font=fonts.small, text_color=MUTED).grid(row=row, column=0, sticky="w",
                                                                                  padx=(0, 8))
            ctk.CTkLabel(keys, text=grouped(fp), font=fonts.mono, justify="left").grid(row=row, column=1, sticky="w",
                                                                                        pady=2)
        ctk.CTkLabel(self, text="Accepting lets the next chat with this key go on (press 1 Connect again); the "
                                "decision is recorded. Keep the old key unless you know why it changed.",
                     font=fonts.small, text_color=MUTED, wraplength=WRAP, justify="left").pack(
            padx=24, pady=4, anchor="w")
        self.checked = ctk.BooleanVar(value=not stop.verified)
        self.confirm_box: ctk.CTkCheckBox | None = None
        if stop.verified:
            self.confirm_box = ctk.CTkCheckBox(
                self, text=f"I asked {peer_name} in person or by phone and they changed their key",
                variable=self.checked, font=fonts.small, command=self._checked_changed)
            self.confirm_box.pack(padx=24, pady=4, anchor="w")
        self.keep_button, self.accept_button = button_row(
            self, fonts.bold, fonts.body, ("Keep the old key", 150, lambda: self.answer(False)),
            ("Accept the new key", 150, lambda: self.answer(True)))
        self._checked_changed()
        self.bind("<Escape>", lambda _e: self.answer(False))
        # Enter presses the focused button; anywhere else it keeps the old key (the safe default)
        self.bind("<Return>", lambda _e: self.answer(str(self.focus_get() or "").startswith(str(self.accept_button))))
        place_over(self, master.winfo_toplevel())
        self.after_idle(self._take_focus)

    def _checked_changed(self) -> None:
        self.accept_button.configure(state="normal" if self.checked.get() else "disabled")

    def _take_focus(self) -> None:
        if not self._answered and self.winfo_exists():
            self.focus_force()
            self.keep_button.focus_set()

    def answer(self, accept: bool) -> None:
        if self._answered or (accept and not self.checked.get()):
            return
        self._answered = True
        self.destroy()
        self._on_answer(accept)
