"""The read-only transcript of one chat: timestamps, senders, delivery ticks, notices, "show more" links, and a
"✕ cancel" link after a text that waits for its contact."""

from __future__ import annotations

import tkinter
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import customtkinter as ctk

from gui.models import ChatLine, LineKind
from gui.text import count, indent_continuations
from gui.widgets.style import ACCENT, BAD, GOOD, MEMBER_COLORS, MUTED, OWN_BACKGROUND, WAITING, WARN, Color, Fonts

TAG_COLORS: dict[str, Color] = {
    "time": MUTED, "sender_in": ACCENT, "sender_out": GOOD, "notice": MUTED, "notice_warn": WARN,
    "notice_bad": BAD, "notice_good": GOOD, "more": ACCENT, "tick_ok": GOOD, "tick_wait": MUTED, "tick_bad": BAD,
    "tick_waiting": WAITING, "cancel": ACCENT,
    **{f"member{i}": color for i, color in enumerate(MEMBER_COLORS)},     # group members (issue 18)
}
CANCEL_LINK = "  ✕ cancel"
OWN_INDENT = 48
NOTICE_TAGS = {"refused": "notice_warn", "error": "notice_bad", "ended": "notice_bad", "ready": "notice_good",
               "key-change": "notice_warn", "key-stop": "notice_alarm"}
ALARM_BACKGROUND: Color = ("#b71c1c", "#b71c1c")     # white on this: 6.6:1 (WCAG AA)


class Transcript(ctk.CTkTextbox):
    """Appends :class:`~gui.models.ChatLine` s, redraws one in place (tick, show more) and drops the oldest."""

    def __init__(self, master: ctk.CTkBaseClass, fonts: Fonts, on_more: Callable[[int], None]) -> None:
        self._tags_ready = False
        super().__init__(master, wrap="word", font=fonts.body, state="disabled", height=80)
        self._on_more = on_more
        self._found_at: str | None = None
        self._ids: deque[int] = deque()
        self._text: tkinter.Text = next(c for c in self.winfo_children() if isinstance(c, tkinter.Text))
        self.tag_config("more", underline=True)
        self.tag_bind("more", "<Button-1>", self._more_clicked)
        self.tag_bind("more", "<Enter>", lambda _e: self.configure(cursor="hand2"))
        self.tag_bind("more", "<Leave>", lambda _e: self.configure(cursor="xterm"))
        self.on_cancel: Callable[[int], None] | None = None     # a waiting text's "✕ cancel" was clicked
        self.tag_config("cancel", underline=True)
        self.tag_bind("cancel", "<Button-1>", self._cancel_clicked)
        self.tag_bind("cancel", "<Enter>", lambda _e: self.configure(cursor="hand2"))
        self.tag_bind("cancel", "<Leave>", lambda _e: self.configure(cursor="xterm"))
        self._tags_ready = True
        self._color_tags()

    def _draw(self, no_color_updates: bool = False) -> None:
        super()._draw(no_color_updates)
        if not no_color_updates and self._tags_ready:
            self._color_tags()   # text tags take one colour: recolour them when light/dark mode changes

    def _color_tags(self) -> None:
        for tag, color in TAG_COLORS.items():
            self.tag_config(tag, foreground=self._apply_appearance_mode(color))
        self.tag_config("own", lmargin1=OWN_INDENT, lmargin2=OWN_INDENT,
                        background=self._apply_appearance_mode(OWN_BACKGROUND))
        self._text.tag_lower("own")
        # a verified contact's key changed: a red banner line in the chat, not just a red word
        self.tag_config("notice_alarm", foreground="white", background=self._apply_appearance_mode(ALARM_BACKGROUND),
                        lmargin1=6, lmargin2=6, rmargin=6, spacing1=4, spacing3=4)

    # ---- editing ------------------------------------------------------------------------------------------
    # Edits go to the plain Tk Text inside the CTkTextbox, a whole batch in one ``insert`` call: every Tk call
    # gives up and retakes the GIL, and with a busy thread beside (mining, decrypting) each retake can wait,
    # so the number of Tk calls per tick, not the amount of text, is what makes the window lag.

    def add(self, lines: Iterable[ChatLine]) -> None:
        chunks: list[Any] = []        # text, tags, text, tags, … (Tk's multi-part insert)
        for line in lines:
            chunks += self._parts(line)
            self._ids.append(line.line_id)
        if not chunks:
            return
        at_bottom = self._text.yview()[1] >= 0.999
        self._text.configure(state="normal")
        self._text.insert("end-1c", *chunks)
        self._text.configure(state="disabled")
        if at_bottom:
            self._text.see("end")

    def replace(self, line: ChatLine) -> None:
        """Redraw a line that is on screen (a tick arrived, or more of a long message is shown)."""
        ranges = self._text.tag_ranges(f"L{line.line_id}")
        if not ranges:
            return
        start = self._text.index(ranges[0])
        self._text.configure(state="normal")
        self._text.delete(start, ranges[-1])
        self._text.insert(start, *self._parts(line))
        self._text.configure(state="disabled")

    def drop(self, n: int) -> None:
        """Remove the ``n`` oldest lines."""
        gone = [self._ids.popleft() for _ in range(min(n, len(self._ids)))]
        if not gone:
            return
        self._text.configure(state="normal")
        if self._ids:
            first = self._text.tag_ranges(f"L{self._ids[0]}")
            self._text.delete("1.0", first[0] if first else "end-1c")
        else:
            self._text.delete("1.0", "end-1c")
        self._text.configure(state="disabled")
        self._text.tag_delete(*(f"L{line_id}" for line_id in gone))

    def plain_text(self) -> str:
        """What the transcript shows, as text (tests read it)."""
        return self._text.get("1.0", "end-1c")

    # ---- internals ----------------------------------------------------------------------------------------

    @staticmethod
    def _parts(line: ChatLine) -> list[Any]:
        """``text, tags, text, tags, …`` for Tk's multi-part insert; every part carries the line's own tag."""
        tag = f"L{line.line_id}"
        parts: list[tuple[str, str | None]] = [(f"{line.time}  ", "time")]
        if line.kind is LineKind.NOTICE:
            parts.append((indent_continuations(line.text[:line.shown]), NOTICE_TAGS.get(line.level, "notice")))
            if line.hidden:
                parts.append(("  ▸ details", "more"))
        else:
            who = ("sender_out" if line.kind is LineKind.OUT else
                   "sender_in" if line.colour is None else f"member{line.colour % len(MEMBER_COLORS)}")
            parts.append((f"{line.sender}: ", who))
            parts.append((indent_continuations(line.text[:line.shown]), None))
            if line.hidden:
                parts.append((f" … show more ({count(line.hidden, 'more character')})", "more"))
            if line.waiting:
                parts.append((f"  {line.tick}", "tick_waiting"))
                parts.append((CANCEL_LINK, "cancel"))
            elif line.kind is LineKind.OUT:
                tick = line.tick
                parts.append((f"  {tick}", "tick_ok" if tick == "✓" or (line.receipt and line.delivered)
                              else "tick_bad" if line.failed else "tick_wait"))
        parts.append(("\n", None))
        # own messages sit indented on a tinted band, the peer's at the left margin: told apart at a glance
        side = ("own",) if line.kind is LineKind.OUT else ()
        flat: list[object] = []
        for text, style in parts:
            flat += [text, (tag, *side, style) if style else (tag, *side)]
        return flat

    def _more_clicked(self, event: object) -> None:
        line_id = self._line_at(event)
        if line_id is not None:
            self._on_more(line_id)

    def _cancel_clicked(self, event: object) -> None:
        line_id = self._line_at(event)
        if line_id is not None and self.on_cancel is not None:
            self.on_cancel(line_id)

    def _line_at(self, event: object) -> int | None:
        x, y = getattr(event, "x", 0), getattr(event, "y", 0)
        for tag in self.tag_names(f"@{x},{y}"):
            if tag.startswith("L") and tag[1:].isdigit():
                return int(tag[1:])
        return None

    def find(self, text: str, restart: bool = False) -> bool:
        """Highlight the next occurrence of ``text`` (case-insensitive) and scroll to it; False when none."""
        self.clear_found()
        if not text:
            return False
        start = "1.0" if restart or self._found_at is None else self._found_at
        at = self._text.search(text, start, stopindex="end", nocase=True)
        if not at and start != "1.0":
            at = self._text.search(text, "1.0", stopindex="end", nocase=True)
        if not at:
            self._found_at = None
            return False
        end = f"{at}+{len(text)}c"
        self._text.tag_add("found", at, end)
        self._text.tag_config("found", background="#ffd54f", foreground="black")
        self._text.see(at)
        self._found_at = end
        return True

    def clear_found(self) -> None:
        self._text.tag_remove("found", "1.0", "end")

    def more_link_ids(self, link: str = "more") -> list[int]:
        """Lines that currently show a "show more" (or with ``link="cancel"``, a "✕ cancel") link (tests click
        them)."""
        found = []
        ranges = self.tag_ranges(link)
        for start in ranges[::2]:
            for tag in self.tag_names(start):
                if tag.startswith("L") and tag[1:].isdigit():
                    found.append(int(tag[1:]))
        return found
