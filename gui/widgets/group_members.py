"""The member list at the top of a group conversation (issue 18): each member's name in its colour with the ✔
verified mark and how this computer's pairwise chat with it stands, a Remove button per member (disabled, with the
reason under the list, for anyone but the group's creator), Add member… and Leave group."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import customtkinter as ctk

from gui.groups import MemberRow
from gui.models import VERIFIED
from gui.widgets.dialog_parts import SECONDARY
from gui.widgets.style import GOOD, MEMBER_COLORS, MUTED, PANEL_BG, Fonts, LabelText

LIST_HEIGHT = 96          # about four members; a class of 16 scrolls


class GroupMembersPanel(ctk.CTkFrame):
    """Calls ``on_add()``, ``on_remove(fp)`` and ``on_leave()``; :meth:`show` draws the rows."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, *, on_add: Callable[[], None],
                 on_remove: Callable[[str], None], on_leave: Callable[[], None]) -> None:
        super().__init__(master, fg_color=PANEL_BG)
        self._fonts = fonts
        self._on_remove = on_remove
        self.grid_columnconfigure(0, weight=1)
        head = ctk.CTkFrame(self, fg_color="transparent")
        head.grid(row=0, column=0, sticky="ew", padx=8, pady=(4, 0))
        head.grid_columnconfigure(0, weight=1)
        self.heading = ctk.CTkLabel(head, text="Members", anchor="w", font=fonts.bold, height=20)
        self.heading.grid(row=0, column=0, sticky="w")
        self.add_button = ctk.CTkButton(head, text="Add member…", width=110, height=24, font=fonts.small,
                                        command=on_add)
        self.add_button.grid(row=0, column=1, padx=(6, 0))
        self.leave_button = ctk.CTkButton(head, text="Leave group", width=100, height=24, font=fonts.small,
                                          command=on_leave, **SECONDARY)
        self.leave_button.grid(row=0, column=2, padx=(6, 0))
        self.list = ctk.CTkScrollableFrame(self, fg_color="transparent", height=LIST_HEIGHT)
        self.list._scrollbar.configure(height=0)       # (its default 200 px would hold the list open that high)
        self.list.grid(row=1, column=0, sticky="ew", padx=4)
        self.list.grid_columnconfigure(1, weight=1)
        self.note = ctk.CTkLabel(self, text="", anchor="w", justify="left", font=fonts.small, text_color=MUTED,
                                 height=16, wraplength=520)
        self.note.grid(row=2, column=0, sticky="ew", padx=10, pady=(0, 4))
        self._note = LabelText(self.note)
        self.names: dict[str, ctk.CTkLabel] = {}
        self.states: dict[str, ctk.CTkLabel] = {}
        self._state_texts: dict[str, LabelText] = {}
        self.remove_buttons: dict[str, ctk.CTkButton] = {}
        self._drawn: dict[str, tuple[int, MemberRow, bool]] = {}    # fp -> (grid row, what it shows, Remove on)
        self._head: tuple[int, bool, bool] | None = None

    def show(self, rows: Sequence[MemberRow], remove_refusal: str | None, leave_refusal: str | None,
             member: bool) -> None:
        """Draw the members. ``remove_refusal``: why Remove is off for this user (None: they created the group);
        ``leave_refusal``: why Leave is off; ``member``: this user still is one (else nobody can be added from
        here). Only the rows that changed are made again: a creator adding and removing members as fast as its
        budget allows (16 changes a second) made the whole list again at every tick — 64 members, 190 widgets,
        0.36 s a tick — and the window stopped answering (red team, 2026-12-07 night)."""
        may_remove = remove_refusal is None
        wanted = {row.fp for row in rows}
        for fp in [fp for fp in self._drawn if fp not in wanted]:
            self._forget(fp)
        moved = False
        for i, row in enumerate(rows):
            drawn = self._drawn.get(row.fp)
            if drawn is not None and drawn[1:] == (replace(row, state=drawn[1].state), may_remove):
                if drawn[0] != i:             # a member above came or went: the same widgets, one grid row on
                    moved = True
                    for widget in self._widgets(row.fp):
                        widget.grid_configure(row=i)
                self._state_texts[row.fp].show(row.state)
                self._drawn[row.fp] = (i, row, may_remove)
                continue
            if drawn is not None:
                self._forget(row.fp)
            moved = True
            self._row(i, row, may_remove)
        if moved:       # Tab goes through siblings in stacking order: the Remove buttons in the rows' order
            for row in rows:
                if row.fp in self.remove_buttons:
                    self.remove_buttons[row.fp].lift()
        head = (len(rows), bool(leave_refusal), member)
        if head != self._head:
            self._head = head
            self.heading.configure(text=f"Members ({len(rows)})")
            self.leave_button.configure(state="disabled" if leave_refusal else "normal")
            self.add_button.configure(state="normal" if member else "disabled")
        self._note.show(remove_refusal or leave_refusal or "")

    def _widgets(self, fp: str) -> list[ctk.CTkBaseClass]:
        button = self.remove_buttons.get(fp)
        return [self.names[fp], self.states[fp], *([button] if button is not None else [])]

    def _forget(self, fp: str) -> None:
        for widget in self._widgets(fp):
            widget.destroy()
        del self.names[fp], self.states[fp], self._state_texts[fp], self._drawn[fp]
        self.remove_buttons.pop(fp, None)

    def _row(self, i: int, row: MemberRow, may_remove: bool) -> None:
        self._drawn[row.fp] = (i, row, may_remove)
        colour = GOOD if row.colour is None else MEMBER_COLORS[row.colour % len(MEMBER_COLORS)]
        name = f"● {row.name}" + (f" {VERIFIED}" if row.verified else "") + (" · created the group" if row.creator
                                                                             else "")
        label = ctk.CTkLabel(self.list, text=name, anchor="w", font=self._fonts.small, text_color=colour, height=20)
        label.grid(row=i, column=0, sticky="w", padx=(4, 8))
        state = ctk.CTkLabel(self.list, text=row.state, anchor="w", font=self._fonts.small, text_color=MUTED,
                             height=20)
        state.grid(row=i, column=1, sticky="ew")
        self.names[row.fp], self.states[row.fp] = label, state
        self._state_texts[row.fp] = LabelText(state)
        self._state_texts[row.fp].text = row.state
        if row.colour is None or row.creator:
            return                      # oneself (Leave group) and the creator (never removed): no Remove
        button = ctk.CTkButton(self.list, text="Remove", width=70, height=20, font=self._fonts.small,
                               state="normal" if may_remove else "disabled",
                               command=lambda fp=row.fp: self._on_remove(fp), **SECONDARY)  # type: ignore[misc]
        button.grid(row=i, column=2, padx=(6, 2), pady=1)
        self.remove_buttons[row.fp] = button
