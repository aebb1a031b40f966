"""Copying a shown value (a fingerprint, a safety number): a small Copy button beside it and a right-click menu
on it. Labels cannot be selected in Tk, so this is how the value reaches the clipboard."""

from __future__ import annotations

import tkinter
from collections.abc import Callable

import customtkinter as ctk


def copy_to_clipboard(widget: tkinter.Misc, text: str) -> None:
    widget.clipboard_clear()
    widget.clipboard_append(text)


def attach_copy_menu(widget: tkinter.Misc, value: Callable[[], str]) -> tkinter.Menu:
    """A right-click menu with "Copy" on ``widget`` (and its inner Tk widgets)."""
    menu = tkinter.Menu(widget, tearoff=False)
    menu.add_command(label="Copy", command=lambda: copy_to_clipboard(widget, value()))

    def popup(event: tkinter.Event) -> None:
        menu.tk_popup(event.x_root, event.y_root)
    for w in (widget, *widget.winfo_children()):
        w.bind("<Button-3>", popup, add="+")
    return menu


class CopyButton(ctk.CTkButton):
    """A small "Copy" button; says "Copied" for a moment after a click."""

    def __init__(self, master: tkinter.Misc, value: Callable[[], str], font: ctk.CTkFont) -> None:
        super().__init__(master, text="Copy", width=52, height=20, font=font, fg_color="transparent", border_width=1,
                         text_color=("gray10", "gray90"), command=self._copy)
        self._value = value

    def _copy(self) -> None:
        copy_to_clipboard(self, self._value())
        self.configure(text="Copied")
        self.after(1500, lambda: self.winfo_exists() and self.configure(text="Copy"))
