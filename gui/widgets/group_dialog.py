"""Choosing contacts for a group (issue 18): "New group…" (a name and the members) and "Add member…" (the members
only). Every contact is a checkbox with its ✔ verified mark; the dialog stays open with the reason when the choice
is refused."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import customtkinter as ctk

from gui.widgets.dialog_parts import button_row, place_over
from gui.widgets.keyboard import check_stop
from gui.widgets.style import BAD, MUTED, Fonts, LabelText

PICK_HEIGHT = 180


class MemberPicker(ctk.CTkToplevel):
    """``contacts``: (fingerprint hex, shown name with its mark). ``on_done(name, fps)`` returns why the choice
    is refused (shown in the dialog) or None (the dialog closes); ``name`` is "" without a name field."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, title: str, contacts: Sequence[tuple[str, str]],
                 on_done: Callable[[str, list[str]], str | None], *, with_name: bool, confirm: str) -> None:
        super().__init__(master)
        self._on_done = on_done
        self.title(title)
        self.resizable(False, False)
        self.transient(master.winfo_toplevel())
        self.protocol("WM_DELETE_WINDOW", self.destroy)
        ctk.CTkLabel(self, text=title.rstrip("…"), font=fonts.title).pack(padx=24, pady=(18, 4), anchor="w")
        self.name_entry: ctk.CTkEntry | None = None
        if with_name:
            self.name_entry = ctk.CTkEntry(self, font=fonts.body, width=320, placeholder_text="Group name")
            self.name_entry.pack(padx=24, pady=4, anchor="w")
        words = ("Members, chosen among your contacts (✔: you compared their safety number):" if contacts else
                 "No contacts to choose: a contact appears after a first chat with the four steps done.")
        ctk.CTkLabel(self, text=words, font=fonts.small, text_color=MUTED, wraplength=320,
                     justify="left").pack(padx=24, pady=(6, 2), anchor="w")
        self.list = ctk.CTkScrollableFrame(self, width=300, height=PICK_HEIGHT)
        self.list.pack(padx=24, pady=4, fill="x")
        self.boxes: dict[str, ctk.CTkCheckBox] = {}
        for fp, name in contacts:
            box = ctk.CTkCheckBox(self.list, text=name, font=fonts.body)
            box.pack(anchor="w", pady=2)
            check_stop(box)
            self.boxes[fp] = box
        self.error = ctk.CTkLabel(self, text="", font=fonts.small, text_color=BAD, wraplength=320, justify="left")
        self.error.pack(padx=24, anchor="w")
        self._error = LabelText(self.error)
        self.confirm_button, self.cancel_button = button_row(
            self, fonts.bold, fonts.body, (confirm, 110, self.confirm), ("Cancel", 110, self.destroy))
        self.bind("<Escape>", lambda _e: self.destroy())
        self.bind("<Return>", lambda _e: self.confirm())
        place_over(self, master.winfo_toplevel())
        self.after_idle(self._take_focus)

    def _take_focus(self) -> None:
        """The keyboard goes to the dialog: its name field, else its first contact."""
        if not self.winfo_exists():
            return
        self.focus_force()
        if self.name_entry is not None:
            self.name_entry.focus_set()
        elif self.boxes:
            next(iter(self.boxes.values()))._canvas.focus_set()

    def chosen(self) -> list[str]:
        return [fp for fp, box in self.boxes.items() if box.get()]

    def confirm(self) -> None:
        name = self.name_entry.get() if self.name_entry is not None else ""
        refusal = self._on_done(name, self.chosen())
        if refusal is None:
            self.destroy()
        else:
            self._error.show(f"✗ {refusal}")
