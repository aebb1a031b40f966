"""The identity panel: nickname, address, fingerprint and the ledger line. The private key is never shown."""

from __future__ import annotations

import customtkinter as ctk

from gui.widgets.copyable import CopyButton, attach_copy_menu
from gui.widgets.style import BAD, MUTED, TEXT, Fonts, LabelText


class IdentityPanel(ctk.CTkFrame):
    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, *, nickname: str, address: str,
                 fingerprint: str) -> None:
        super().__init__(master, fg_color="transparent")
        self.grid_columnconfigure(1, weight=1)
        self.nickname = ctk.CTkLabel(self, text=nickname, font=fonts.title, anchor="w")
        self.nickname.grid(row=0, column=0, padx=(10, 12), sticky="w")
        self.address = ctk.CTkLabel(self, text=address, font=fonts.body, anchor="w", text_color=MUTED)
        self.address.grid(row=0, column=1, sticky="w")
        ctk.CTkLabel(self, text="Fingerprint", font=fonts.small, text_color=MUTED, anchor="w").grid(
            row=1, column=0, padx=(10, 12), sticky="w")
        self.fingerprint = ctk.CTkLabel(self, text=fingerprint, font=fonts.mono, anchor="w")
        self.fingerprint.grid(row=1, column=1, sticky="w")
        attach_copy_menu(self.fingerprint, lambda: fingerprint)
        self.copy_button = CopyButton(self, lambda: fingerprint, fonts.small)
        self.copy_button.grid(row=1, column=2, padx=(6, 0), sticky="w")
        self.ledger = ctk.CTkLabel(self, text="Ledger: checking…", font=fonts.small, anchor="w", justify="left",
                                   wraplength=600)
        self.ledger.grid(row=2, column=0, columnspan=3, padx=10, sticky="ew")
        self.bind("<Configure>", lambda e: self.ledger.configure(wraplength=max(300, e.width - 30)))
        self._ledger_text = LabelText(self.ledger)

    def show_ledger(self, line: str, ok: bool) -> None:
        self._ledger_text.show(line, TEXT if ok else BAD)
