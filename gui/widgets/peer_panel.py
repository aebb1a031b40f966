"""The peer panel of a chat tab: address, fingerprint, ledger block, path, key epoch, rotation, safety number."""

from __future__ import annotations

import functools

import customtkinter as ctk

from gui.widgets.copyable import CopyButton, attach_copy_menu
from gui.widgets.style import MUTED, TEXT, Fonts, LabelText

# (label, column, row, spans both value columns); long values (fingerprint, safety number) get a full row.
LAYOUT = {
    "Peer": (0, 0, False), "Address": (1, 0, False),
    "Path": (0, 1, False), "Ledger": (1, 1, False),
    "Key epoch": (0, 2, False), "Next rotation": (1, 2, False),
    "Fingerprint": (0, 3, True), "Safety number": (0, 4, True),
}
MONO = ("Fingerprint", "Safety number")


class PeerPanel(ctk.CTkFrame):
    """Label/value rows; :meth:`show` takes :func:`gui.models.peer_rows`."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts) -> None:
        super().__init__(master, fg_color=("gray92", "gray17"))
        self.grid_columnconfigure((1, 3), weight=1)
        self.values: dict[str, ctk.CTkLabel] = {}
        self.copy_buttons: dict[str, CopyButton] = {}
        self._texts: dict[str, LabelText] = {}
        for name, (col, row, wide) in LAYOUT.items():
            ctk.CTkLabel(self, text=name, font=fonts.small, text_color=MUTED, height=18).grid(
                row=row, column=col * 2, padx=(10, 6), pady=1, sticky="w")
            value = ctk.CTkLabel(self, text="", anchor="w", height=18,
                                 font=fonts.mono if name in MONO else fonts.small)
            value.grid(row=row, column=col * 2 + 1, columnspan=3 if wide else 1, padx=(0, 10), pady=1, sticky="ew")
            self.values[name] = value
            self._texts[name] = LabelText(value)
            if name in MONO:
                get = functools.partial(self.value_text, name)
                attach_copy_menu(value, get)
                self.copy_buttons[name] = CopyButton(self, get, fonts.small)
                self.copy_buttons[name].grid(row=row, column=4, padx=(0, 8), pady=1)

    def value_text(self, name: str) -> str:
        """The value as shown (what Copy puts on the clipboard)."""
        return self._texts[name].text or ""

    def show(self, rows: list[tuple[str, str]]) -> None:
        for name, text in rows:
            self._texts[name].show(text, MUTED if text.startswith(("after step", "not known")) else TEXT)
