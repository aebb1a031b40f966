"""How often the window reaches outside itself for the user's attention (no Tk, no IO).

A verified peer can send 200 texts a second, a group many more, and open chat after chat. Telling the user once
per tick of the event loop that brought news (25 a second) would start a ``gdbus`` process and pop a notification
each time and ring the bell as often. So: the first news of a kind ("New message", "Incoming chat") is notified
at once; news of that kind within :data:`NOTIFY_GAP` seconds of its last notification is summed and said in one
notification once the gap has passed ("37 new messages from bob, carol"), unless the user looked at the window
meanwhile. A body names at most :data:`NAMES_SHOWN` names ("… and 4 more"), whatever the number of chats. The
bell rings at most once per :data:`BELL_GAP` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gui.text import count

NOTIFY_GAP = 10.0
BELL_GAP = 2.0
NAMES_SHOWN = 3


@dataclass(frozen=True)
class News:
    """Something to tell the user: ``n`` of ``noun`` (``"new message"``) ``prep`` (``"from"``) ``names``;
    ``first`` is the body when it is sent at once (default: that count sentence)."""

    summary: str
    noun: str
    prep: str
    n: int
    names: tuple[str, ...]
    first: str = ""


def names_text(names: list[str] | tuple[str, ...]) -> str:
    """``bob, carol`` / ``bob, carol, dave and 4 more``: a body stays short however many chats bring news."""
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown if len(names) <= NAMES_SHOWN else f"{shown} and {len(names) - NAMES_SHOWN} more"


def sentence(noun: str, prep: str, n: int, names: list[str] | tuple[str, ...]) -> str:
    return f"{count(n, noun)} {prep} {names_text(names)}" if names else count(n, noun)


@dataclass
class _Kind:
    noun: str
    prep: str
    sent_at: float | None = None
    n: int = 0                                                 # news held back since the last notification
    names: dict[str, None] = field(default_factory=dict)      # their names, in order, each once


class AlertPacer:
    """Decides which notifications go out now and which wait to be summed; the window sends them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, gap: float = NOTIFY_GAP,
                 bell_gap: float = BELL_GAP) -> None:
        self.clock, self.gap, self.bell_gap = clock, gap, bell_gap
        self._kinds: dict[tuple[str, str], _Kind] = {}     # (summary, prep): a chat's and a group's news apart
        self._rang_at: float | None = None

    def news(self, news: News) -> str | None:
        """The body to notify now, or None: the news is kept for the summary :meth:`due` gives later."""
        kind = self._kinds.setdefault((news.summary, news.prep), _Kind(news.noun, news.prep))
        now = self.clock()
        if kind.sent_at is None or now - kind.sent_at >= self.gap:
            kind.sent_at = now
            return news.first or sentence(news.noun, news.prep, news.n, news.names)
        kind.n += news.n
        for name in news.names:      # as many as chats or groups with news: bounded by the node's sessions
            kind.names.setdefault(name, None)
        return None

    def due(self) -> list[tuple[str, str]]:
        """``(summary, body)`` of the held-back news whose gap has passed (call on the slow tick)."""
        now, out = self.clock(), []
        for (summary, _prep), kind in self._kinds.items():
            if kind.n and kind.sent_at is not None and now - kind.sent_at >= self.gap:
                out.append((summary, sentence(kind.noun, kind.prep, kind.n, list(kind.names))))
                kind.sent_at, kind.n = now, 0
                kind.names.clear()
        return out

    def seen(self) -> None:
        """The user looked at the window: what was held back needs no notification any more."""
        for kind in self._kinds.values():
            kind.n = 0
            kind.names.clear()

    def bell(self) -> bool:
        """Whether the bell may ring now (and note that it does)."""
        now = self.clock()
        if self._rang_at is not None and now - self._rang_at < self.bell_gap:
            return False
        self._rang_at = now
        return True


__all__ = ["BELL_GAP", "NAMES_SHOWN", "NOTIFY_GAP", "AlertPacer", "News", "names_text", "sentence"]
