"""Tabs keyed by an id (a session), so a tab can be renamed ("bob (3)") or closed without confusing it with
another one of the same name. A row of buttons above one page at a time.

With more tabs than fit in the row, every tab stays reachable: the "Chats ▾" menu lists them all, and the
selected tab's button is moved to the front of the row whenever it would be drawn past the right edge."""

from __future__ import annotations

import functools
import tkinter
from collections.abc import Callable

import customtkinter as ctk

from gui.widgets.style import Fonts
from gui.widgets.visibility import hide, show

TAB_CHARS = 24
SELECTED = {"fg_color": ("#1f6aa5", "#1f6aa5"), "hover_color": ("#144870", "#144870"),
            "text_color": ("white", "white")}
UNSELECTED = {"fg_color": ("gray82", "gray25"), "hover_color": ("gray72", "gray32"),
              "text_color": ("gray10", "gray90")}


def short_title(title: str) -> str:
    return title if len(title) <= TAB_CHARS else title[:TAB_CHARS - 1] + "…"


class Notebook(ctk.CTkFrame):
    """``on_select(key)`` runs when the user picks a tab (not when :meth:`select` is called)."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, on_select: Callable[[str], None]) -> None:
        super().__init__(master, fg_color="transparent")
        self._fonts = fonts
        self._on_select = on_select
        self.grid_columnconfigure(0, weight=1)
        self.grid_rowconfigure(1, weight=1)
        self.strip = ctk.CTkFrame(self, fg_color="transparent", height=30)
        self.strip.grid(row=0, column=0, sticky="ew")
        self.strip.pack_propagate(False)
        self.overflow_button = ctk.CTkButton(self, text="Chats ▾", width=80, height=28, font=fonts.body,
                                             command=self.show_menu, **UNSELECTED)
        self.overflow_button.grid(row=0, column=1, sticky="e", padx=(4, 0))
        self.menu = tkinter.Menu(self, tearoff=False)
        self.body = ctk.CTkFrame(self)
        self.body.grid(row=1, column=0, columnspan=2, sticky="nsew", pady=(4, 0))
        self.body.grid_columnconfigure(0, weight=1)
        self.body.grid_rowconfigure(0, weight=1)
        self.buttons: dict[str, ctk.CTkButton] = {}
        self.pages: dict[str, ctk.CTkFrame] = {}
        self.titles: dict[str, str] = {}
        self.current: str | None = None

    def add(self, key: str, title: str) -> ctk.CTkFrame:
        page = ctk.CTkFrame(self.body, fg_color="transparent")
        page.grid_columnconfigure(0, weight=1)
        page.grid_rowconfigure(0, weight=1)
        button = ctk.CTkButton(self.strip, text=short_title(title), width=40, height=28, font=self._fonts.body,
                               corner_radius=6, command=lambda: self._clicked(key), **UNSELECTED)
        button.pack(side="left", padx=(0, 4))
        self.buttons[key], self.pages[key], self.titles[key] = button, page, title
        if self.current is None:
            self.select(key)
        return page

    def show_menu(self) -> None:
        """The list of every tab (the row may not have room for all of them)."""
        self._fill_menu()
        b = self.overflow_button
        self.menu.tk_popup(b.winfo_rootx(), b.winfo_rooty() + b.winfo_height())

    def _fill_menu(self) -> None:
        self.menu.delete(0, "end")
        for key, title in self.titles.items():
            self.menu.add_radiobutton(label=title, value=key, command=functools.partial(self._clicked, key),
                                      variable=self._menu_var)

    @property
    def _menu_var(self) -> tkinter.StringVar:
        if not hasattr(self, "_var"):
            self._var = tkinter.StringVar(self, value=self.current or "")
        self._var.set(self.current or "")
        return self._var

    def menu_entries(self) -> list[str]:
        """The menu's labels (tests read them)."""
        self._fill_menu()
        return [str(self.menu.entrycget(i, "label")) for i in range(int(self.menu.index("end") or -1) + 1)]

    def invoke_menu(self, key: str) -> None:
        self._fill_menu()
        self.menu.invoke(list(self.titles).index(key))

    def button_shown(self, key: str) -> bool:
        """The tab's button lies wholly inside the row (not cut off at its right edge)."""
        button = self.buttons[key]
        self.update_idletasks()
        # pack squeezes the buttons that do not fit to nothing (or to a sliver) rather than moving them away
        return (bool(button.winfo_ismapped()) and button.winfo_width() >= button.winfo_reqwidth() - 1
                and button.winfo_x() + button.winfo_width() <= self.strip.winfo_width())

    def _bring_into_view(self, key: str) -> None:
        self.update_idletasks()
        if self.strip.winfo_width() > 1 and not self.button_shown(key):
            slaves = self.strip.pack_slaves()
            if slaves and slaves[0] is not self.buttons[key]:
                self.buttons[key].pack_configure(before=slaves[0])

    def rename(self, key: str, title: str) -> None:
        if self.titles.get(key) != title:
            self.titles[key] = title
            self.buttons[key].configure(text=short_title(title))

    def remove(self, key: str) -> str | None:
        """Close a tab; if it was on screen, the first remaining tab is shown. Returns the tab now shown."""
        button, page = self.buttons.pop(key, None), self.pages.pop(key, None)
        self.titles.pop(key, None)
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
            self.buttons[self.current].configure(**UNSELECTED)
        self.current = key
        if not show(self.pages[key]):
            self.pages[key].grid(row=0, column=0, sticky="nsew")
        self.buttons[key].configure(**SELECTED)
        self._bring_into_view(key)

    def _clicked(self, key: str) -> None:
        self.select(key)
        self._on_select(key)
