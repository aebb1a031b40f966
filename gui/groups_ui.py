"""The Tk side of group chats (issue 18): a row per group under Groups in the conversation list, a group
conversation (the member list, one transcript, the entry), the "New group…" and "Add member…" pickers, and the
confirmations for Remove and Leave. The state lives in :class:`gui.groups.GroupChats`; this class draws its
:class:`~gui.groups.GroupChanges`. A group's conversation is built the first time it is shown."""

from __future__ import annotations

import functools
import tkinter
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog

import customtkinter as ctk

from gui.groups import GroupChanges, GroupChats
from gui.models import VERIFIED
from gui.widgets.chat_pane import ChatPane
from gui.widgets.conversations import ConversationList
from gui.widgets.group_dialog import MemberPicker
from gui.widgets.group_members import GroupMembersPanel
from gui.widgets.keyboard import tab_stops
from gui.widgets.style import Fonts

Ask = Callable[[str, str, str, Callable[[bool], None]], None]     # title, question, confirm, then(yes)


class GroupsUi:
    """Draws the groups of one window; ``redraw()`` asks the window to take and draw the changes now (after a
    user action)."""

    def __init__(self, top: ctk.CTk | ctk.CTkToplevel, fonts: Fonts, tabs: ConversationList, chats: GroupChats,
                 ask: Ask, contacts: Callable[[], list[tuple[str, str, bool]]], redraw: Callable[[], None],
                 search_all: Callable[[str, tkinter.Misc | None], None]) -> None:
        self.top, self.fonts, self.tabs, self.chats = top, fonts, tabs, chats
        self._ask = ask
        self._contacts = contacts            # (fingerprint hex, name, verified) of every contact
        self._redraw = redraw
        self._search_all = search_all
        self.panes: dict[str, ChatPane] = {}
        self.panels: dict[str, GroupMembersPanel] = {}
        self.file_buttons: dict[str, ctk.CTkButton] = {}
        self.picker: MemberPicker | None = None

    # ---- drawing ------------------------------------------------------------------------------------------------

    def render(self, ch: GroupChanges) -> None:
        chats = self.chats
        for key in ch.rows_added:
            self.tabs.add(key, chats.title(key), group=True)
        for key, n in ch.lines_dropped.items():
            if key in self.panes:
                self.panes[key].transcript.drop(n)
        for key, lines in ch.lines_added.items():
            if key in self.panes:
                self.panes[key].transcript.add(lines)
        for key, lines in ch.lines_changed.items():
            if key in self.panes:
                for line in {ln.line_id: ln for ln in lines}.values():
                    self.panes[key].transcript.replace(line)
        for key in ch.members:
            self._members(key)
        for key in ch.titles | set(ch.lines_added) | ch.members:
            if key in chats.groups:
                self.tabs.rename(key, chats.title(key), chats.detail(key))
                if key in self.panes:
                    self._input(key)

    def refresh_members(self) -> None:
        """Every member list again (a pairwise chat with a member started, ended or changed)."""
        for key in self.panels:
            self._members(key)

    def _members(self, key: str) -> None:
        panel = self.panels.get(key)
        if panel is None or key not in self.chats.groups:
            return
        chats = self.chats
        panel.show(chats.member_rows(key), chats.remove_refusal(key), chats.leave_refusal(key), chats.is_member(key))
        tab_stops(panel)            # Remove buttons of rows drawn again are Tab stops too

    def _input(self, key: str) -> None:
        member = self.chats.is_member(key)
        self.file_buttons[key].configure(state="normal" if member else "disabled")
        self.panes[key].set_input(member, "Type a message and press Enter: it goes to every member over your chat "
                                          "with each" if member else "You are no longer a member of this group",
                                  False)

    def show(self, key: str) -> None:
        """The group's conversation is on screen (built the first time)."""
        if key not in self.panes and key in self.chats.groups:
            self._build(key)
        self.chats.select(key)

    def _build(self, key: str) -> None:
        page = self.tabs.pages[key]

        def members(master: ChatPane) -> GroupMembersPanel:
            panel = GroupMembersPanel(master, self.fonts, on_add=functools.partial(self.open_add, key),
                                      on_remove=functools.partial(self.ask_remove, key),
                                      on_leave=functools.partial(self.ask_leave, key))
            self.panels[key] = panel
            return panel
        pane = ChatPane(page, self.fonts, on_send=functools.partial(self._send, key), on_input=lambda _t: None,
                        on_more=functools.partial(self._more, key), on_end=lambda: None,
                        on_history=functools.partial(self._history_menu, key),
                        on_search_all=lambda text: self._search_all(text, self.panes[key].find_all_button),
                        panel=members, end_text=None)
        pane.grid(row=0, column=0, sticky="nsew", padx=6, pady=6)
        send_file = ctk.CTkButton(pane, text="Send file…", width=96, font=self.fonts.body,
                                  command=functools.partial(self.choose_file, key))
        send_file.grid(row=5, column=0, sticky="w", pady=(4, 0))
        self.file_buttons[key] = send_file
        self.panes[key] = pane
        pane.transcript.add(self.chats.groups[key].lines)
        self._members(key)
        self._input(key)
        tab_stops(pane)

    # ---- user actions -------------------------------------------------------------------------------------------

    def _send(self, key: str, text: str) -> str | None:
        error = self.chats.send(key, text)
        self._redraw()
        return error

    def choose_file(self, key: str) -> None:
        """"Send file…": the file is shared with every member of the group."""
        path = filedialog.askopenfilename(parent=self.top, title="Share a file with the group")
        if path:
            self.chats.send_file(key, path)
            self._redraw()

    def _more(self, key: str, line_id: int) -> None:
        self.chats.show_more(key, line_id)
        self._redraw()

    def _pick(self, title: str, choices: list[tuple[str, str]], done: Callable[[str, list[str]], str | None], *,
              with_name: bool, confirm: str) -> None:
        if self.picker is not None and self.picker.winfo_exists():
            self.picker.destroy()

        def answered(name: str, fps: list[str]) -> str | None:
            refusal = done(name, fps)
            self._redraw()
            return refusal
        self.picker = MemberPicker(self.top, self.fonts, title, choices, answered, with_name=with_name,
                                   confirm=confirm)
        tab_stops(self.picker)

    def _choices(self, leave_out: set[str]) -> list[tuple[str, str]]:
        return [(fp, name + (f" {VERIFIED}" if verified else "")) for fp, name, verified in self._contacts()
                if fp not in leave_out]

    def open_new_group(self) -> None:
        """"New group…": a name and members chosen among the contacts."""
        self._pick("New group…", self._choices(set()), self.chats.create, with_name=True, confirm="Create")

    def open_add(self, key: str) -> None:
        g = self.chats.groups.get(key)
        if g is None:
            return
        inside = {fp for fp, _n in g.view.members}
        self._pick(f"Add to {self.chats.name(key)}…", self._choices(inside),
                   lambda _name, fps: self.chats.add_members(key, fps), with_name=False, confirm="Add")

    def ask_remove(self, key: str, fp: str) -> None:
        g = self.chats.groups.get(key)
        if g is None:
            return
        who, group = self.chats.name_of(g, fp), self.chats.name(key)
        self._ask(f"Remove {who} from {group}?", f"{who} gets nothing said in {group} from now on (what they "
                  "received before stays on their computer), and learns they were removed.", "Remove",
                  lambda yes: self._confirmed(yes, lambda: self.chats.remove_member(key, fp)))

    def ask_leave(self, key: str) -> None:
        g = self.chats.groups.get(key)
        if g is None:
            return
        group = self.chats.name(key)
        self._ask(f"Leave {group}?", f"The members are told you left and send you nothing new; the messages of "
                  f"{group} stay on this computer.", "Leave group",
                  lambda yes: self._confirmed(yes, lambda: self.chats.remove_member(key, self.chats.me)))

    def ask_delete(self, key: str) -> None:
        g = self.chats.groups.get(key)
        if g is None:
            return
        group = self.chats.name(key)
        self._ask(f"Delete the messages of {group}?", f"The messages of {group} kept on this computer are erased; "
                  "this cannot be undone. The group and its members stay, and the members keep their own copies.",
                  "Delete", lambda yes: self._confirmed(yes, lambda: self.chats.delete_history(key)))

    def _confirmed(self, yes: bool, then: Callable[[], None]) -> None:
        if yes:
            then()
            self._redraw()

    def _history_menu(self, key: str) -> None:
        menu = tkinter.Menu(self.top, tearoff=False)
        menu.add_command(label="Export as text…", command=functools.partial(self._export, key))
        menu.add_command(label="Delete the kept messages…", command=functools.partial(self.ask_delete, key))
        self.history_menu = menu
        button = self.panes[key].history_button
        menu.tk_popup(button.winfo_rootx(), button.winfo_rooty() + button.winfo_height())

    def _export(self, key: str) -> None:
        g = self.chats.groups.get(key)
        if g is not None and key in self.panes:
            self.panes[key].ask_export("Export the group's messages as text", f"group-{g.view.name[:40]}",
                                       functools.partial(self.export_to, key))

    def export_to(self, key: str, path: Path) -> bool:
        """Write the group's kept messages to ``path`` (mode 0600: it is the plain text)."""
        text = self.chats.export_text(key)
        pane = self.panes.get(key)
        return text is not None and pane is not None and pane.save_text(path, text)

    def close(self) -> None:
        if self.picker is not None and self.picker.winfo_exists():
            self.picker.destroy()
