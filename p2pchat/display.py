"""How text that came from the network is made safe to show: one rule set for every user interface.

Every string a peer, a relay or a stranger can influence (message texts, nicknames, reasons, frame types,
addresses, error texts) is hostile when displayed: an escape sequence could move the cursor, erase lines, set the
window title (OSC 0) or the clipboard (OSC 52); a bidi control could reorder what is read; a newline could start
a line that looks like another sender's. The rules:

- C0 controls and DEL are shown in caret notation (``ESC`` → ``^[``, ``NUL`` → ``^@``, ``DEL`` → ``^?``);
- C1 controls, format characters (bidi marks, embeddings, overrides and isolates — U+200E, U+200F, U+061C,
  U+202A–U+202E, U+2066–U+2069 —, zero-width spaces and joiners, the BOM, tag characters, …), line and paragraph
  separators, surrogates and unassigned code points are shown as ``<U+202E>``;
- a newline (``\\n``, or ``\\r\\n``) in a multi-line text ends the line, and every following line starts with
  :data:`CONTINUATION`, so a peer's text never starts a line of its own; in a one-line field it is ``^J``;
- a tab is shown as spaces.

The terminal's choke point is :class:`Printer` (every line the terminal UI writes goes through it); the window's
is ``gui.text.clean``, built on :func:`visible`.
"""

from __future__ import annotations

import os
import unicodedata
from typing import TextIO

CONTINUATION = "  │ "
"""Starts every further line of a multi-line (or wrapped) text; no other line the terminal UI prints starts so."""
TAB = "    "
QUOTE_OPEN, QUOTE_CLOSE = "«", "»"
MAX_QUOTED = 300
"""Characters of a peer's unauthenticated words shown (the rest is cut, with "…")."""

# Categories shown by code point: format (Cf: bidi and zero-width characters), line/paragraph separators,
# surrogates, unassigned (a newer terminal might give them a meaning), controls other than C0 and DEL (C1).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})


def _render_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def _needs_escape(ch: str) -> bool:
    if " " <= ch <= "~":
        return False
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES


def visible(text: str, *, keep: str = "") -> str:
    """``text`` with every control, format, separator and unassigned character written out visibly (see the
    module docstring); the characters in ``keep`` (e.g. ``"\\n\\t"``) are left as they are."""
    if text.isascii() and text.isprintable():       # the common case, checked in C
        return text
    out: list[str] = []
    for ch in text:
        if ch in keep or not _needs_escape(ch):
            out.append(ch)
        else:
            out.append(_render_char(ch))
    return "".join(out)


def one_line(text: str | None, fallback: str = "?") -> str:
    """A one-line field (nickname, address, reason, frame type): visible, a newline shown as ``^J``."""
    if not text:
        return fallback
    return visible(text.replace("\t", " "))


def quoted(text: str | None, limit: int = MAX_QUOTED) -> str:
    """Someone else's words inside a sentence: one visible line, cut to ``limit`` characters, in guillemets that
    the words themselves cannot close (so they cannot end the quote and go on as the program's own words)."""
    words = one_line(text or "", "")
    words = words.replace(QUOTE_OPEN, "<U+00AB>").replace(QUOTE_CLOSE, "<U+00BB>")
    if len(words) > limit:
        words = words[:limit - 1] + "…"
    return f"{QUOTE_OPEN}{words}{QUOTE_CLOSE}"


LINE_MARKS = frozenset(":]«»()⚠✓✗│")      # ("[" alone closes nothing; caret escapes show "^[")
"""Characters of the terminal's own line syntax ("[12:03] bob: …", "[lab] bob: …", "bоb (not your contact bob) ⚠")."""


def name_in_line(name: str | None, fallback: str = "?", marks: frozenset[str] = LINE_MARKS) -> str:
    """A name someone else chose (a nickname, a group name) where the terminal's line syntax surrounds it: one
    visible line as it is, or :func:`quoted` when it holds a character of that syntax, so that "bob: I quit;
    alice" cannot end the name early and make what follows read as bob's words or as another name. ``marks``: the
    characters that make it quoted (a claim amid a sentence adds the space: "bob at 10.0.0.1")."""
    shown = one_line(name, fallback)
    return quoted(name) if name and any(ch in marks for ch in shown) else shown


def quote_peer(text: str | None) -> str:
    """Words a peer sent before it proved who it is (a decline or error reason): :func:`quoted`, to
    :data:`MAX_QUOTED` characters, marked as theirs."""
    return f"{quoted(text)} (their words, not checked)"


def cells(ch: str) -> int:
    """Terminal cells a character may take, counted high on purpose: a printable ASCII character takes one,
    anything else is counted as two (a wide CJK character or emoji takes two, a combining mark none), so a line
    cut at the terminal's width never wraps by itself."""
    return 1 if " " <= ch <= "~" else 2


def display_lines(text: str, width: int | None = None) -> list[str]:
    """The screen lines ``text`` is shown as: visible, split at newlines, cut to ``width`` cells (``None``: no
    cut) with every line after the first starting with :data:`CONTINUATION`."""
    logical = text.replace("\r\n", "\n").split("\n")
    lines: list[str] = []
    for n, part in enumerate(logical):
        prefix = "" if n == 0 else CONTINUATION
        rendered = visible(part.replace("\t", TAB))
        if width is None:
            lines.append(prefix + rendered)
            continue
        line, used = prefix, len(prefix)
        for ch in rendered:
            w = cells(ch)
            if used + w > width and used > len(CONTINUATION):
                lines.append(line)
                line, used = CONTINUATION, len(CONTINUATION)
            line += ch
            used += w
        lines.append(line)
    return lines


class Printer:
    """The terminal UI's one way to write: every line goes through :func:`display_lines`, so nothing written can
    be a control sequence and nothing a peer sent starts a line; flushed at once (stdout is often a pipe).

    ``width``: cut lines to this many cells; ``None`` takes the terminal's width when ``out`` is a terminal
    (asked for each line: windows get resized) and does not cut otherwise."""

    def __init__(self, out: TextIO, width: int | None = None) -> None:
        self.out = out
        self.width = width

    def _width(self) -> int | None:
        if self.width is not None:
            return self.width
        try:
            if self.out.isatty():
                return max(20, os.get_terminal_size(self.out.fileno()).columns - 1)
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def line(self, text: str = "") -> None:
        self.out.write("".join(part + "\n" for part in display_lines(text, self._width())))
        self.out.flush()


__all__ = ["CONTINUATION", "LINE_MARKS", "Printer", "cells", "display_lines", "name_in_line", "one_line", "quote_peer",
           "quoted", "visible"]
