"""Tabs keyed by an id (a session), so a tab can be renamed ("bob (3)") or closed without confusing it with
another one of the same name. A row of buttons above one page at a time."""

from __future__ import annotations

from collections.abc import Callable

import customtkinter as ctk

from gui.widgets.style import Fonts

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
        self.strip = ctk.CTkFrame(self, fg_color="transparent")
        self.strip.grid(row=0, column=0, sticky="ew")
        self.body = ctk.CTkFrame(self)
        self.body.grid(row=1, column=0, sticky="nsew", pady=(4, 0))
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
            self.pages[self.current].grid_remove()
            self.buttons[self.current].configure(**UNSELECTED)
        self.current = key
        self.pages[key].grid(row=0, column=0, sticky="nsew")
        self.buttons[key].configure(**SELECTED)

    def _clicked(self, key: str) -> None:
        self.select(key)
        self._on_select(key)
