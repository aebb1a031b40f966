"""Keyboard access to customtkinter buttons: Tk's Tab traversal skips them (a button is a canvas without key
bindings), so every button of the window is made a Tab stop that Space or Enter presses, with a focus ring (and a
checkbox where it is asked for, one that Space ticks)."""

from __future__ import annotations

import tkinter

import customtkinter as ctk

from gui.widgets.style import FOCUS_RING

_done: set[str] = set()


def tab_stop(button: ctk.CTkButton) -> None:
    """Make ``button`` reachable with Tab and pressable with Space/Enter (idempotent)."""
    if str(button) in _done:
        return
    _done.add(str(button))
    canvas: tkinter.Canvas = button._canvas      # customtkinter draws the button on this canvas
    # (not Tk's highlight ring: it shifts customtkinter's drawing and clips the button's own border)
    canvas.configure(takefocus=1)
    plain = {"border_width": button.cget("border_width"), "border_color": button.cget("border_color")}

    def focus_in(_event: object) -> None:
        button.configure(border_width=2, border_color=FOCUS_RING)

    def focus_out(_event: object) -> None:
        if button.winfo_exists():
            button.configure(**plain)
    canvas.bind("<FocusIn>", focus_in, add="+")
    canvas.bind("<FocusOut>", focus_out, add="+")

    def press(_event: object) -> str:
        if button.cget("state") != "disabled":
            button.invoke()
        return "break"
    for key in ("<space>", "<Return>", "<KP_Enter>"):
        canvas.bind(key, press)
    button.bind("<Destroy>", lambda _e: _done.discard(str(button)), add="+")


def check_stop(box: ctk.CTkCheckBox) -> None:
    """Make a checkbox reachable with Tab and ticked or unticked with Space, with the same focus ring."""
    canvas: tkinter.Canvas = box._canvas          # customtkinter draws the box on this canvas
    canvas.configure(takefocus=1)
    plain = box.cget("border_color")

    def focus_out(_event: object) -> None:
        if box.winfo_exists():
            box.configure(border_color=plain)
    canvas.bind("<FocusIn>", lambda _e: box.configure(border_color=FOCUS_RING), add="+")
    canvas.bind("<FocusOut>", focus_out, add="+")

    def toggle(_event: object) -> str:
        if box.cget("state") != "disabled":
            box.toggle()
        return "break"
    canvas.bind("<space>", toggle)


def tab_stops(root: tkinter.Misc) -> None:
    """:func:`tab_stop` for every customtkinter button under ``root``."""
    for child in root.winfo_children():
        if isinstance(child, ctk.CTkButton):
            tab_stop(child)
        tab_stops(child)
