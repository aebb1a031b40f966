"""Pieces the trust dialogs share (gui/key_change.py, gui/verify.py, gui/first_run.py)."""

from __future__ import annotations

import tkinter
from collections.abc import Callable

import customtkinter as ctk

SECONDARY = {"fg_color": "transparent", "border_width": 1, "text_color": ("gray10", "gray90")}


def place_over(dialog: tkinter.Toplevel, parent: tkinter.Misc) -> None:
    """Put ``dialog`` over ``parent``'s upper middle, wholly on the screen (its buttons at the bottom stay
    reachable wherever the parent is), and bring it to the front."""
    dialog.update_idletasks()
    x = parent.winfo_rootx() + max(0, (parent.winfo_width() - dialog.winfo_reqwidth()) // 2)
    y = parent.winfo_rooty() + max(0, (parent.winfo_height() - dialog.winfo_reqheight()) // 4)
    x = max(0, min(x, dialog.winfo_screenwidth() - dialog.winfo_reqwidth()))
    y = max(0, min(y, dialog.winfo_screenheight() - dialog.winfo_reqheight()))
    dialog.geometry(f"+{x}+{y}")
    dialog.lift()


def read_only_text(master: tkinter.Misc, text: str, font: ctk.CTkFont, width: int, height: int) -> ctk.CTkTextbox:
    """A text the user can select and copy but not edit (a Tk label cannot be selected)."""
    box = ctk.CTkTextbox(master, font=font, wrap="word", width=width, height=height)
    box.insert("1.0", text)
    box.configure(state="disabled")
    return box


def button_row(master: tkinter.Misc, fonts_bold: ctk.CTkFont, fonts_body: ctk.CTkFont,
               main: tuple[str, int, Callable[[], None]],
               other: tuple[str, int, Callable[[], None]]) -> tuple[ctk.CTkButton, ctk.CTkButton]:
    """A right-aligned row: the main (default) button rightmost, the other beside it in the secondary style."""
    row = ctk.CTkFrame(master, fg_color="transparent")
    row.pack(padx=24, pady=(10, 18), fill="x")
    first = ctk.CTkButton(row, text=main[0], width=main[1], font=fonts_bold, command=main[2])
    first.pack(side="right")
    second = ctk.CTkButton(row, text=other[0], width=other[1], font=fonts_body, command=other[2], **SECONDARY)
    second.pack(side="right", padx=(0, 8))
    return first, second
