"""The conversation list: a side list of rows (the ledger, live chats, groups, contacts) beside one page at a time.

Rows are keyed by an id (a session, a contact's fingerprint), so a row can be renamed ("bob (3)") or removed
without confusing it with another of the same name. Live chats and the ledger have a page on the right; a
contact's row has none: picking it calls ``on_contact``, which starts (or shows) the chat with that contact.
The list scrolls when it is longer than the window, and the selected row is scrolled into view.
"""

from __future__ import annotations

import tkinter
from collections.abc import Callable, Sequence

import customtkinter as ctk

from gui.models import ListRow
from gui.widgets.style import MUTED, ROW_PLAIN, ROW_SELECTED, Fonts
from gui.widgets.visibility import hide, show

SIDE_WIDTH = 210
NARROW_SIDE = 150         # in a narrow window (the demo's two side by side) the list gives the chat more room
NARROW_BELOW = 800
ROW_HEIGHT = 44
TITLE_CHARS = 24
DETAIL_CHARS = 30


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def row_text(title: str, detail: str, narrow: bool = False) -> str:
    """A row's two lines: the title (with its unread count) and the detail (last message, last seen)."""
    shorter = 7 if narrow else 0
    return _cut(title, TITLE_CHARS - shorter) + ("\n" + _cut(detail, DETAIL_CHARS - shorter) if detail else "")


class ConversationList(ctk.CTkFrame):
    """``on_select(key)`` runs when the user picks a page row, ``on_contact(key)`` a contact row (not when
    :meth:`select` is called)."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, on_select: Callable[[str], None],
                 on_contact: Callable[[str], None], on_search: Callable[[str], None],
                 on_new_group: Callable[[], None] | None = None) -> None:
        super().__init__(master, fg_color="transparent")
        self._fonts = fonts
        self._on_select = on_select
        self._on_contact = on_contact
        self.grid_columnconfigure(1, weight=1)
        self.grid_rowconfigure(0, weight=1)
        self.side = ctk.CTkFrame(self, fg_color="transparent", width=SIDE_WIDTH)
        self.side.grid(row=0, column=0, sticky="ns", padx=(0, 6))
        self.side.grid_rowconfigure(1, weight=1)
        self.fixed = ctk.CTkFrame(self.side, fg_color="transparent")     # the ledger row, never scrolled away
        self.fixed.grid(row=0, column=0, sticky="ew")
        self.search_entry = ctk.CTkEntry(self.side, font=fonts.small, placeholder_text="Search all chats",
                                         width=SIDE_WIDTH - 10)
        self.search_entry.grid(row=2, column=0, sticky="ew", pady=(4, 0))
        self.search_entry.bind("<Return>", lambda _e: on_search(self.search_entry.get()))
        self.search_entry.bind("<KP_Enter>", lambda _e: on_search(self.search_entry.get()))
        self.scroller = ctk.CTkScrollableFrame(self.side, width=SIDE_WIDTH - 20, fg_color="transparent")
        self.scroller.grid(row=1, column=0, sticky="ns", pady=(4, 0))
        self.chats_label = ctk.CTkLabel(self.scroller, text="Chats", anchor="w", font=fonts.bold)
        self.chats_label.pack(fill="x", padx=4)
        self.chats = ctk.CTkFrame(self.scroller, fg_color="transparent", height=1)   # (empty: no 200 px gap)
        self.chats.pack(fill="x")
        # groups (issue 18): rows with a page, under a heading with "New group…"
        groups_head = ctk.CTkFrame(self.scroller, fg_color="transparent")
        groups_head.pack(fill="x", pady=(8, 0))
        self.groups_label = ctk.CTkLabel(groups_head, text="Groups", anchor="w", font=fonts.bold)
        self.groups_label.pack(side="left", padx=4)
        self.new_group_button = ctk.CTkButton(groups_head, text="New group…", width=90, height=22, font=fonts.small,
                                              command=on_new_group or (lambda: None),
                                              state="normal" if on_new_group else "disabled")
        self.new_group_button.pack(side="right", padx=2)
        self.groups = ctk.CTkFrame(self.scroller, fg_color="transparent", height=1)
        self.groups.pack(fill="x")
        self.contacts_label = ctk.CTkLabel(self.scroller, text="Contacts", anchor="w", font=fonts.bold)
        self.contacts_label.pack(fill="x", padx=4, pady=(8, 0))
        self.contacts = ctk.CTkFrame(self.scroller, fg_color="transparent", height=1)
        self.contacts.pack(fill="x")
        self.no_contacts = ctk.CTkLabel(self.contacts, text="Contacts appear here after a first chat.",
                                        anchor="w", justify="left", font=fonts.small, text_color=MUTED,
                                        wraplength=SIDE_WIDTH - 40)
        self.no_contacts.pack(fill="x", padx=4)
        self.body = ctk.CTkFrame(self)
        self.body.grid(row=0, column=1, sticky="nsew")
        self.body.grid_columnconfigure(0, weight=1)
        self.body.grid_rowconfigure(0, weight=1)
        self.buttons: dict[str, ctk.CTkButton] = {}      # every row, pages and contacts
        self.pages: dict[str, ctk.CTkFrame] = {}
        self.titles: dict[str, str] = {}
        self.details: dict[str, str] = {}
        self.contact_keys: list[str] = []
        self.current: str | None = None
        self._narrow: bool | None = None
        self.bind("<Configure>", self._resized, add="+")

    def _resized(self, event: tkinter.Event) -> None:
        narrow = event.width < NARROW_BELOW * ctk.ScalingTracker.get_widget_scaling(self)
        if narrow != self._narrow:
            self._narrow = narrow
            side = self._side_width()
            self.side.configure(width=side)
            for key, button in self.buttons.items():
                button.configure(width=side - 30, text=row_text(self.titles[key], self.details[key], narrow))
            self.scroller.configure(width=side - 20)
            self.search_entry.configure(width=side - 10)
            self.no_contacts.configure(wraplength=side - 40)

    def _side_width(self) -> int:
        return NARROW_SIDE if self._narrow else SIDE_WIDTH

    # ---- rows with a page (the ledger, live chats) -----------------------------------------------------------

    def add(self, key: str, title: str, *, fixed: bool = False, group: bool = False) -> ctk.CTkFrame:
        """A row and its page; ``fixed`` rows (the ledger) sit above the scrolled list, ``group`` rows under
        Groups."""
        page = ctk.CTkFrame(self.body, fg_color="transparent")
        page.grid_columnconfigure(0, weight=1)
        page.grid_rowconfigure(0, weight=1)
        parent = self.fixed if fixed else self.groups if group else self.chats
        button = self._row(parent, key, title, "", lambda: self._clicked(key))
        if not fixed:
            # the newest on top
            above = [w for w in parent.pack_slaves() if w is not button]
            if above:
                button.pack_configure(before=above[0])
        self.pages[key] = page
        if self.current is None:
            self.select(key)
        return page

    def _row(self, parent: ctk.CTkFrame, key: str, title: str, detail: str,
             command: Callable[[], None]) -> ctk.CTkButton:
        button = ctk.CTkButton(parent, text=row_text(title, detail, bool(self._narrow)), anchor="w", height=ROW_HEIGHT,
                               width=self._side_width() - 30, font=self._fonts.body, corner_radius=6, command=command,
                               **ROW_PLAIN)
        button.pack(fill="x", pady=(0, 3), padx=2)
        button._text_label.configure(justify="left")     # (customtkinter centres the lines of a button's text)
        # a row reached with Tab is scrolled into sight like a chosen one
        button._canvas.bind("<FocusIn>", lambda _e: self.scroll_to(key), add="+")
        self.buttons[key], self.titles[key], self.details[key] = button, title, detail
        return button

    def rename(self, key: str, title: str, detail: str | None = None) -> None:
        detail = self.details.get(key, "") if detail is None else detail
        if key in self.buttons and (self.titles.get(key), self.details.get(key)) != (title, detail):
            self.titles[key], self.details[key] = title, detail
            self.buttons[key].configure(text=row_text(title, detail, bool(self._narrow)))

    def remove(self, key: str) -> str | None:
        """Drop a row and its page; if it was on screen, the first remaining page is shown. Returns the page
        now shown."""
        button, page = self.buttons.pop(key, None), self.pages.pop(key, None)
        self.titles.pop(key, None)
        self.details.pop(key, None)
        if button is not None:
            button.destroy()
        if page is not None:
            page.destroy()
        if self.current == key:
            self.current = None
            if self.pages:
                self.select(next(iter(self.pages)))
        return self.current

    def select(self, key: str) -> None:
        if key not in self.pages or key == self.current:
            return
        if self.current is not None and self.current in self.pages:
            hide(self.pages[self.current])
            self.buttons[self.current].configure(**ROW_PLAIN)
        self.current = key
        if not show(self.pages[key]):
            self.pages[key].grid(row=0, column=0, sticky="nsew")
        self.buttons[key].configure(**ROW_SELECTED)
        self.scroll_to(key)

    def _clicked(self, key: str) -> None:
        self.select(key)
        self._on_select(key)

    # ---- contacts (rows without a page) -----------------------------------------------------------------------

    def set_contacts(self, rows: Sequence[ListRow]) -> None:
        """Show the contact rows in this order (rows are reused; gone ones are destroyed)."""
        wanted = [r.key for r in rows]
        for key in [k for k in self.contact_keys if k not in wanted]:
            self.buttons.pop(key).destroy()
            self.titles.pop(key, None)
            self.details.pop(key, None)
        for row in rows:
            if row.key in self.buttons:
                self.rename(row.key, row.title, row.detail)
            else:
                self._row(self.contacts, row.key, row.title, row.detail,
                          lambda k=row.key: self._on_contact(k))  # type: ignore[misc]
        order = [self.buttons[k] for k in wanted]
        if [str(b) for b in self.contacts.pack_slaves() if b is not self.no_contacts] != [str(b) for b in order]:
            for button in order:
                button.pack_forget()
            for button in order:
                button.pack(fill="x", pady=(0, 3), padx=2)
        self.contact_keys = wanted
        if wanted:
            self.no_contacts.pack_forget()
        elif not self.no_contacts.winfo_manager():
            self.no_contacts.pack(fill="x", padx=4)

    # ---- scrolling --------------------------------------------------------------------------------------------

    @property
    def _list_canvas(self) -> tkinter.Canvas:
        canvas: tkinter.Canvas = self.scroller._parent_canvas     # customtkinter's scrolled canvas
        return canvas

    def scroll_to(self, key: str) -> None:
        """Scroll the list so that the row of ``key`` is in sight (the ledger row always is)."""
        button = self.buttons.get(key)
        if button is None or button.master is self.fixed:
            return
        self.update_idletasks()
        canvas = self._list_canvas
        # customtkinter updates the scroll region on the next <Configure>: set it now, rows may have just come
        canvas.configure(scrollregion=canvas.bbox("all"))
        total = max(1, self.scroller.winfo_reqheight(), self.scroller.winfo_height())
        top = button.winfo_rooty() - self.scroller.winfo_rooty()      # in the list, from its first row
        bottom = top + button.winfo_height()
        seen_top = canvas.canvasy(0)
        seen_bottom = seen_top + canvas.winfo_height()
        # the canvas rounds its position to a multiple of its scroll increment: go to one that shows the row
        step = max(1, int(float(canvas.cget("yscrollincrement")) or 1))
        if top < seen_top:
            canvas.yview_moveto(max(0, (top // step) * step) / total)
        elif bottom > seen_bottom:
            canvas.yview_moveto(max(0, -(-(bottom - canvas.winfo_height()) // step) * step) / total)

    def row_in_sight(self, key: str) -> bool:
        """The row is drawn wholly inside the visible part of the list (tests check this)."""
        button = self.buttons[key]
        self.update_idletasks()
        if not button.winfo_ismapped():
            return False
        if button.master is self.fixed:
            return True
        canvas = self._list_canvas
        top, bottom = canvas.winfo_rooty(), canvas.winfo_rooty() + canvas.winfo_height()
        return top <= button.winfo_rooty() and button.winfo_rooty() + button.winfo_height() <= bottom + 1
