"""The window icon, drawn with Tk's PhotoImage (no image file to ship): a speech bubble with a key hole, in the
accent blue. ``scripts/make_icon.py`` writes the same picture to a PNG for the desktop file."""

from __future__ import annotations

import tkinter

SIZE = 64
BLUE, WHITE = "#1f6aa5", "#ffffff"


def _inside_bubble(x: int, y: int) -> bool:
    # a rounded rectangle (the bubble) and a small tail at the lower left
    if 6 <= x < 58 and 8 <= y < 44:
        corners = [(14, 16), (49, 16), (14, 35), (49, 35)]
        for cx, cy in corners:
            if ((x < 14 and cx == 14) or (x >= 50 and cx == 49)) and ((y < 16 and cy == 16) or (y >= 36 and cy == 35)):
                return (x - cx) ** 2 + (y - cy) ** 2 <= 64
        return True
    return 14 <= x < 30 and 44 <= y < 56 and (x - 14) <= (56 - y) * 1.3


def _key_hole(x: int, y: int) -> bool:
    return (x - 32) ** 2 + (y - 21) ** 2 <= 30 or (29 <= x < 35 and 21 <= y < 36)


def rows() -> list[list[str]]:
    """The picture as rows of colours (None-free: transparency is set afterwards)."""
    return [[(WHITE if _key_hole(x, y) else BLUE) if _inside_bubble(x, y) else "" for x in range(SIZE)]
            for y in range(SIZE)]


def window_icon(master: tkinter.Misc) -> tkinter.PhotoImage:
    image = tkinter.PhotoImage(master=master, width=SIZE, height=SIZE)
    for y, row in enumerate(rows()):
        x = 0
        while x < SIZE:
            color = row[x]
            end = x
            while end < SIZE and row[end] == color:
                end += 1
            if color:
                image.put(color, to=(x, y, end, y + 1))
            x = end
    return image
