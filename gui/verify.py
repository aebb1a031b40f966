"""Comparing the safety number with a peer and marking the contact verified (issue 13).

The dialog shows the safety number as text (selectable, with a Copy button and a right-click menu) and as a QR
code for comparing in person; "Mark verified" and "Not verified" record the user's answer in the contact store
through the node. A verified contact whose key later changes is a hard stop (gui/key_change.py).
"""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.widgets.copyable import CopyButton, attach_copy_menu
from gui.widgets.dialog_parts import button_row, place_over, read_only_text
from gui.widgets.qr import QrCode
from gui.widgets.style import MUTED, Fonts

WRAP = 420


class VerifyDialog(ctk.CTkToplevel):
    """Calls ``on_answer(True)`` for "Mark verified", ``on_answer(False)`` for "Not verified"; Escape and
    closing the window change nothing."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, peer_name: str, safety_number: str,
                 verified: bool | None, on_answer: Callable[[bool], None]) -> None:
        super().__init__(master)
        self._on_answer = on_answer
        self.safety_number = safety_number
        self.title(f"Compare the safety number with {peer_name}")
        self.resizable(False, False)
        self.transient(master.winfo_toplevel())
        self.protocol("WM_DELETE_WINDOW", self.destroy)
        ctk.CTkLabel(self, text=f"Safety number with {peer_name}", font=fonts.title).pack(padx=24, pady=(18, 4),
                                                                                        anchor="w")
        ctk.CTkLabel(self, text=f"Read it aloud with {peer_name} in person or by phone, or let one of you scan the "
                                "other's code. If every digit matches, no one sits between you.",
                     font=fonts.small, text_color=MUTED, wraplength=WRAP, justify="left").pack(padx=24, pady=4,
                                                                                             anchor="w")
        row = ctk.CTkFrame(self, fg_color="transparent")
        row.pack(padx=24, pady=4, fill="x")
        self.number = read_only_text(row, safety_number, fonts.mono, WRAP - 70, 64)
        self.number.pack(side="left", fill="x", expand=True)
        attach_copy_menu(self.number, lambda: self.safety_number)
        CopyButton(row, lambda: self.safety_number, fonts.small).pack(side="left", padx=(6, 0), anchor="n")
        self.qr = QrCode(self, safety_number, scale=4)
        self.qr.pack(padx=24, pady=8)
        state = {True: "You marked this contact verified.", False: "This contact is not marked verified.",
                 None: "Not compared yet."}[verified]
        ctk.CTkLabel(self, text=state, font=fonts.small, text_color=MUTED).pack(padx=24, anchor="w")
        self.verify_button, self.unverify_button = button_row(
            self, fonts.bold, fonts.body, ("They match: mark verified", 190, lambda: self.answer(True)),
            ("Not verified", 120, lambda: self.answer(False)))
        self.bind("<Escape>", lambda _e: self.destroy())
        place_over(self, master.winfo_toplevel())

    def answer(self, verified: bool) -> None:
        self.destroy()
        self._on_answer(verified)


def add_verify_button(panel: ctk.CTkFrame, fonts: Fonts, command: Callable[[], None]) -> ctk.CTkButton:
    """A "Verify…" button beside the peer panel's safety number (its row 4, after the Copy button)."""
    button = ctk.CTkButton(panel, text="Verify…", width=64, height=20, font=fonts.small, command=command)
    button.grid(row=4, column=5, padx=(0, 8), pady=1)
    return button
