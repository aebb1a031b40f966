"""One chat tab: the peer panel, the transcript, the typing indicator and the message entry."""

from __future__ import annotations

import os
import tkinter
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog

import customtkinter as ctk

from gui.widgets.peer_panel import PeerPanel
from gui.widgets.style import BAD, MUTED, Fonts, LabelText
from gui.widgets.transcript import Transcript
from gui.widgets.visibility import hide, show

ENTRY_HEIGHT = 58     # about three lines of text
TRANSCRIPT_MIN = 60   # the transcript never shrinks to nothing, whatever the window size


class ChatPane(ctk.CTkFrame):
    """Calls ``on_send(text) -> error or None``, ``on_input(text)``, ``on_more(line_id)`` and ``on_end()``.
    ``panel`` builds the panel above the transcript (default: the peer panel; a group's member list for a group
    conversation, which has no End chat button: ``end_text`` None)."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, *, on_send: Callable[[str], str | None],
                 on_input: Callable[[str], None], on_more: Callable[[int], None], on_end: Callable[[], None],
                 on_history: Callable[[], None], on_search_all: Callable[[str], None],
                 panel: Callable[[ChatPane], ctk.CTkFrame] | None = None, end_text: str | None = "End chat") -> None:
        super().__init__(master, fg_color="transparent")
        self._on_send = on_send
        self._on_input = on_input
        self._end_text = end_text
        self._enabled: tuple[bool, str, bool] | None = None
        self.grid_columnconfigure(0, weight=1)
        self.grid_rowconfigure(1, weight=1, minsize=TRANSCRIPT_MIN)

        self.panel = panel(self) if panel is not None else PeerPanel(self, fonts)
        self.panel.grid(row=0, column=0, columnspan=3, sticky="ew", pady=(0, 6))
        self.transcript = Transcript(self, fonts, on_more)
        self.transcript.grid(row=1, column=0, columnspan=3, sticky="nsew")
        self.typing_label = ctk.CTkLabel(self, text="", anchor="w", font=fonts.italic, text_color=MUTED, height=18)
        self.typing_label.grid(row=2, column=0, columnspan=2, sticky="ew", padx=4)
        # the kept messages: export as text, delete (beside the typing line: no extra height)
        self.history_button = ctk.CTkButton(self, text="History ▾", width=80, height=20, font=fonts.small,
                                            command=on_history, fg_color="transparent", border_width=1,
                                            text_color=("gray10", "gray90"))
        self.history_button.grid(row=2, column=2, padx=(6, 0), pady=(2, 0), sticky="e")

        # A few lines high: Enter sends, Shift+Enter starts a new line, a pasted text keeps its lines.
        self.entry = ctk.CTkTextbox(self, font=fonts.body, height=ENTRY_HEIGHT, wrap="word", border_width=1,
                                    activate_scrollbars=False)
        self.entry.grid(row=3, column=0, sticky="ew", pady=(2, 0))
        self.entry_text: tkinter.Text = next(c for c in self.entry.winfo_children() if isinstance(c, tkinter.Text))
        for key in ("<Return>", "<KP_Enter>"):
            self.entry_text.bind(key, self._enter)
        self.entry_text.bind("<Shift-Return>", self._new_line)
        self.entry_text.bind("<Tab>", self._focus_next)
        self.entry_text.bind("<Shift-Tab>", self._focus_previous)
        self.entry_text.bind("<ISO_Left_Tab>", self._focus_previous)
        self.entry_text.bind("<Control-a>", self._select_all)
        self.entry_text.bind("<KeyRelease>", lambda _e: self._on_input(self.text()))
        self.send_button = ctk.CTkButton(self, text="Send", width=70, font=fonts.bold, command=self.send)
        self.send_button.grid(row=3, column=1, padx=(6, 0), pady=(2, 0))
        self.end_button = ctk.CTkButton(self, text="End chat", width=80, font=fonts.body, command=on_end,
                                        fg_color="transparent", border_width=1, text_color=("gray10", "gray90"))
        if end_text is not None:
            self.end_button.grid(row=3, column=2, padx=(6, 0), pady=(2, 0))
        # Why the entry is off, or why the last message was not sent. (Not the entry's placeholder: customtkinter
        # cannot swap a placeholder while the entry is disabled.)
        self.hint_label = ctk.CTkLabel(self, text="", anchor="w", font=fonts.small, text_color=MUTED, height=16)
        self.hint_label.grid(row=4, column=0, columnspan=3, sticky="ew", padx=4)
        self._hint = LabelText(self.hint_label)
        self._typing = LabelText(self.typing_label)
        # Ctrl+F: a find row above the transcript (Enter: next match, Escape: close)
        self.find_row = ctk.CTkFrame(self, fg_color="transparent")
        self.find_entry = ctk.CTkEntry(self.find_row, font=fonts.body, placeholder_text="Find in this chat")
        self.find_entry.pack(side="left", fill="x", expand=True)
        self.find_result = ctk.CTkLabel(self.find_row, text="", font=fonts.small, text_color=MUTED, width=90)
        self.find_result.pack(side="left", padx=6)
        self.find_all_button = ctk.CTkButton(self.find_row, text="All chats", width=80, font=fonts.small,
                                             command=lambda: on_search_all(self.find_entry.get()))
        self.find_all_button.pack(side="left")
        self.find_entry.bind("<Return>", lambda _e: self.find_next())
        self.find_entry.bind("<KeyRelease>", lambda e: None if e.keysym == "Return" else self.find_next(restart=True))
        self.find_entry.bind("<Escape>", lambda _e: self.close_find())

    @property
    def peer_panel(self) -> PeerPanel:
        """A pairwise chat's peer panel."""
        assert isinstance(self.panel, PeerPanel), "a group conversation has no peer panel"
        return self.panel

    def open_find(self, text: str | None = None) -> None:
        """The find row (Ctrl+F); with ``text``, it is searched for at once (a hit from "All chats")."""
        if not self.find_row.winfo_manager():
            self.find_row.grid(row=0, column=0, columnspan=3, sticky="ew", pady=(0, 4))
        hide(self.panel)
        self.find_entry.focus_set()
        if text is not None:
            self.find_entry.delete(0, "end")
            self.find_entry.insert(0, text)
            self.find_next(restart=True)

    def close_find(self) -> None:
        hide(self.find_row)
        show(self.panel)
        self.transcript.clear_found()
        self.entry_text.focus_set()

    def find_next(self, restart: bool = False) -> None:
        found = self.transcript.find(self.find_entry.get(), restart=restart)
        self.find_result.configure(text="" if not self.find_entry.get() else ("found" if found else "not found"))

    def text(self) -> str:
        return self.entry_text.get("1.0", "end-1c")

    def _enter(self, _event: object) -> str:
        self.send()
        return "break"

    def _new_line(self, _event: object) -> str:
        self.entry_text.insert("insert", "\n")
        return "break"

    def _focus_next(self, _event: object) -> str:
        nxt = self.entry_text.tk_focusNext()
        if nxt is not None:
            nxt.focus_set()
        return "break"

    def _focus_previous(self, _event: object) -> str:
        prev = self.entry_text.tk_focusPrev()
        if prev is not None:
            prev.focus_set()
        return "break"

    def _select_all(self, _event: object) -> str:
        self.entry_text.tag_add("sel", "1.0", "end-1c")
        return "break"

    def send(self) -> None:
        text = self.text()
        error = self._on_send(text)
        if error is not None:
            self._hint.show(f"✗ {error}", BAD)
        else:
            self._hint.show("")
            self.entry_text.delete("1.0", "end")
            self._on_input("")

    def ask_export(self, title: str, stem: str, write: Callable[[Path], object]) -> None:
        """Ask where to export this conversation as text (``stem``: the suggested file name) and ``write`` it there."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:50] or "chat"
        path = filedialog.asksaveasfilename(parent=self.winfo_toplevel(), title=title, initialfile=f"{safe}.txt",
                                            defaultextension=".txt", filetypes=[("Text", "*.txt"), ("All files", "*")])
        if path:
            write(Path(path))

    def save_text(self, path: Path, text: str) -> bool:
        """Write an exported conversation to ``path`` (mode 0600: it is the plain text); the hint says how it went."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            self.show_hint(f"✗ could not write {path}: {exc.strerror}", BAD)
            return False
        self.show_hint(f"Exported to {path}", MUTED)
        return True

    def show_hint(self, text: str, color: tuple[str, str]) -> None:
        """A line under the entry (why it is off, a message not sent, an export written)."""
        self._hint.show(text, color)

    def set_typing(self, text: str) -> None:
        self._typing.show(text)

    def set_input(self, enabled: bool, hint: str, ended: bool) -> None:
        """Enable the entry once the four steps are done; otherwise the line below says why it is off."""
        if (enabled, hint, ended) == self._enabled:
            return
        self._enabled = (enabled, hint, ended)
        if not enabled:
            self.entry_text.configure(state="normal")
            self.entry_text.delete("1.0", "end")
        self.entry.configure(state="normal" if enabled else "disabled")
        self.send_button.configure(state="normal" if enabled else "disabled")
        self.end_button.configure(text="Close tab" if ended else self._end_text or "")
        self._hint.show(hint, MUTED)
