"""Tk-free text helpers for the window: cleaning what peers send, previews of long messages, times, counts."""

from __future__ import annotations

import time
from collections.abc import Iterator

from p2pchat.display import visible

# the look-alike rule is the terminal's too (p2pchat/lookalike.py); the window imports it from here
from p2pchat.lookalike import looks_alike as looks_alike
from p2pchat.lookalike import name_keys as name_keys

PREVIEW_CHARS = 1_000
"""A received message longer than this shows a preview and a "show more" link (Tk lays out long lines slowly)."""
PREVIEW_LINES = 20
MORE_CHARS = 20_000
"""How much one click on "show more" reveals; small enough that inserting it never stalls the event loop."""
MORE_LINES = 400
NAME_CHARS = 40
LONGEST = 600
"""Characters of one status line or label value from the network (a ledger's sync phase, a refusal, an error)."""



def clean(text: str) -> str:
    """The window's one way to show text from the network: controls, bidi marks and overrides (U+200E, U+200F,
    U+061C, U+202A–U+202E, U+2066–U+2069), zero-width and other format characters written out visibly (``^[``,
    ``<U+202E>``; rules in :mod:`p2pchat.display`); newlines and tabs stay (a message keeps its lines, and the
    transcript indents every line of a message under its sender's header)."""
    return visible(text.replace("\r\n", "\n"), keep="\n\t")


CONTINUATION = "        │ "
"""Starts every further line of a message or notice in the transcript, so a text never starts a line of its own
(a line that begins with a time and a name is always a new message)."""


LONG_LINE = 2_000
"""The longest line handed to Tk. Tk lays a line out whole at every redraw that shows part of it: revealing a
peer's 1 MiB text without a space ("show more", 20,000 characters a click) made one line of 200,000 characters,
and each scroll then took 21 s (400,000: 55 s). A longer line of a message is shown as several, each a
continuation; the text itself is kept whole (history, export)."""


def _short_lines(text: str) -> Iterator[str]:
    for line in text.split("\n"):
        while len(line) > LONG_LINE:
            space = line.rfind(" ", LONG_LINE - LONG_LINE // 10, LONG_LINE)     # after a word when one ends near
            cut = space + 1 if space > 0 else LONG_LINE
            yield line[:cut]
            line = line[cut:]
        yield line


def indent_continuations(text: str) -> str:
    """``text`` with every line after the first indented by :data:`CONTINUATION`, lines over :data:`LONG_LINE`
    characters broken into continuations."""
    if len(text) > LONG_LINE:
        text = "\n".join(_short_lines(text))
    return text.replace("\n", "\n" + CONTINUATION)


def clean_name(name: str | None, fallback: str = "?") -> str:
    """A nickname or address for a label or tab title: one cleaned line of at most NAME_CHARS characters."""
    name = clean((name or "").replace("\n", " ").replace("\t", " ")).strip()
    if not name:
        return fallback
    return clipped(name, NAME_CHARS)


def clipped(text: str, chars: int = LONGEST) -> str:
    """``text`` cut to ``chars`` characters, the cut marked with "…" (a label laid out by Tk stays cheap)."""
    return text if len(text) <= chars else text[:chars - 1] + "…"


def clean_line(text: str, chars: int = LONGEST) -> str:
    """A status line or label value that may carry words from the network: cleaned and :func:`clipped`."""
    return clipped(clean(text), chars)


def preview_end(text: str, start: int = 0, chars: int = PREVIEW_CHARS, lines: int = PREVIEW_LINES) -> int:
    """Index where the visible part of ``text`` (from ``start``) ends: after ``chars`` characters or ``lines``
    line breaks, whichever comes first; ``len(text)`` when the rest fits."""
    end = min(len(text), start + chars)
    pos = start
    for _ in range(lines):
        pos = text.find("\n", pos, end)
        if pos < 0:
            return end
        pos += 1
    return pos if pos < len(text) else len(text)


def clock_time(ts: float) -> str:
    """``14:02`` in local time (the date is left out: a chat tab lives for one sitting)."""
    return time.strftime("%H:%M", time.localtime(ts))


def one_line(text: str, chars: int = 60) -> str:
    """A cleaned one-line preview of a message for a list row: line breaks become spaces, cut at ``chars``."""
    return clipped(" ".join(clean(text[:chars * 4]).split()), chars)


def seen_when(ts: float, now: float) -> str:
    """``14:02`` today, ``3 Dec`` this year, ``3 Dec 2025`` before (local time)."""
    then, today = time.localtime(ts), time.localtime(now)
    if then[:3] == today[:3]:
        return time.strftime("%H:%M", then)
    day = f"{then.tm_mday} {time.strftime('%b', then)}"
    return day if then.tm_year == today.tm_year else f"{day} {then.tm_year}"


def stamp(ts: float, now: float) -> str:
    """A stored message's time: ``14:02`` today, else the day before it (``3 Dec 14:02``)."""
    when = seen_when(ts, now)
    return when if ":" in when else f"{when} {time.strftime('%H:%M', time.localtime(ts))}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 message`` / ``3 messages`` / ``1,048,576 characters``."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def ok_text(detail: str) -> str:
    return f"✓ {detail}" if detail else "✓"


def fail_text(reason: str) -> str:
    return f"✗ {reason}" if reason else "✗"
