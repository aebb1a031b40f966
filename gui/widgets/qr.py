"""A QR code of a text (the safety number) drawn on a Tk canvas, for comparing in person (issue 13).

The symbol comes from ``segno`` (a pure-Python QR encoder without dependencies); this widget only draws its
modules, one canvas rectangle per dark module, black on white whatever the theme (scanners need the contrast)
with the standard four-module quiet zone.
"""

from __future__ import annotations

import tkinter

import segno

QUIET_ZONE = 4


def qr_modules(text: str) -> tuple[tuple[bool, ...], ...]:
    """The QR symbol's modules for ``text`` (True: dark), without the quiet zone; error correction M."""
    symbol = segno.make(text, error="m", micro=False, boost_error=False)
    return tuple(tuple(bool(m) for m in row) for row in symbol.matrix)


class QrCode(tkinter.Canvas):
    """Shows :func:`qr_modules` of a text at ``scale`` pixels per module; :attr:`modules` is what is drawn."""

    def __init__(self, master: tkinter.Misc, text: str = "", scale: int = 5) -> None:
        super().__init__(master, highlightthickness=0, background="white", width=1, height=1)
        self.module_px = scale
        self.text = ""
        self.modules: tuple[tuple[bool, ...], ...] = ()
        if text:
            self.show(text)

    def show(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        self.modules = qr_modules(text) if text else ()
        self.delete("module")
        side = (len(self.modules) + 2 * QUIET_ZONE) * self.module_px
        self.configure(width=side, height=side)
        s = self.module_px
        for y, row in enumerate(self.modules):
            for x, dark in enumerate(row):
                if dark:
                    left, top = (x + QUIET_ZONE) * s, (y + QUIET_ZONE) * s
                    self.create_rectangle(left, top, left + s, top + s, fill="black", width=0, tags="module")

    def drawn_modules(self) -> set[tuple[int, int]]:
        """(column, row) of every dark module actually on the canvas (read back from Tk, for the tests)."""
        cells = set()
        for item in self.find_withtag("module"):
            left, top, _right, _bottom = self.coords(item)
            cells.add((round(left) // self.module_px - QUIET_ZONE, round(top) // self.module_px - QUIET_ZONE))
        return cells
