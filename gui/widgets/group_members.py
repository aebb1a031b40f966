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
        self._shown: tuple[tuple[MemberRow, ...], str | None, str | None, bool] | None = None

    def show(self, rows: Sequence[MemberRow], remove_refusal: str | None, leave_refusal: str | None,
             member: bool) -> None:
        """Draw the members (rebuilt only when something changed). ``remove_refusal``: why Remove is off for this
        user (None: they created the group); ``leave_refusal``: why Leave is off; ``member``: this user still is
        one (else nobody can be added from here)."""
        wanted = (tuple(replace(r, state="") for r in rows), remove_refusal, leave_refusal, member)
        if wanted == self._shown:          # only how the pairwise chats stand changed: those labels only
            for row in rows:
                self._state_texts[row.fp].show(row.state)
        else:
            self._shown = wanted
            for widget in self.list.winfo_children():
                widget.destroy()
            self.names.clear()
            self.states.clear()
            self._state_texts.clear()
            self.remove_buttons.clear()
            for i, row in enumerate(rows):
                self._row(i, row, remove_refusal is None)
            self.heading.configure(text=f"Members ({len(rows)})")
            self.leave_button.configure(state="disabled" if leave_refusal else "normal")
            self.add_button.configure(state="normal" if member else "disabled")
        self._note.show(remove_refusal or leave_refusal or "")

    def _row(self, i: int, row: MemberRow, may_remove: bool) -> None:
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
