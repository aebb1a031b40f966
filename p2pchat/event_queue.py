"""The queue of events a node hands its UI, bounded per session so that a UI that does not read stops the
network instead of growing memory.

Putting never blocks (a node thread must not wait for the UI while it holds a session); instead each session's
reader asks :meth:`EventQueue.wait_for_room` before it reads the next frame. A session whose events not yet
taken exceed :data:`SESSION_EVENTS` events or :data:`SESSION_BYTES` bytes of message text, or all sessions
together :data:`TOTAL_BYTES`, reads nothing more until the UI catches up: its socket's receive buffer fills and
TCP flow control reaches the sender. What one read can add on top of a bound is one frame's events.

:meth:`EventQueue.get` (and ``get_nowait``) report each event taken to ``on_taken`` after the queue's lock is
released; the node uses it to send a delivery receipt only for messages the UI has taken.

A node thread that answers a peer puts its events inside :meth:`EventQueue.answering`: they enter the queue at
once, in order, but a UI thread asleep in :meth:`get` is woken only when the block ends, after the answer is
written. Woken earlier, the UI thread takes the interpreter lock from the node thread at its first system call
(the write itself), and on a busy machine the node thread then waits for the scheduler to give it back: the peer's
next frame would wait for our UI.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from p2pchat.events import (
    Event,
    FileFinished,
    FileOffer,
    FileProgress,
    MessageReceived,
    Notice,
    PadModeChanged,
    PeerTyping,
)

SESSION_EVENTS = 256                 # events of one session waiting for the UI before its reader pauses
SESSION_BYTES = 4 * 1024 * 1024      # message text of one session waiting for the UI before its reader pauses
TOTAL_BYTES = 32 * 1024 * 1024       # message text of all sessions waiting for the UI before every reader pauses
EVENT_COST = 64                      # what an event other than a message counts for against the byte bounds


def event_session(event: Event) -> str | None:
    """The session whose reader an event holds back, ``None`` for the rest: only what a peer's frames make
    (messages, typing, notices) counts; what the user's own commands make (step results, session updates, one
    receipt per text sent) does not, so a UI busy sending never stalls its own receipts."""
    if isinstance(event, (MessageReceived, PeerTyping, Notice, FileOffer, FileProgress, FileFinished)):
        return event.session
    if isinstance(event, PadModeChanged):     # issue 17: a peer's pad-mode ops and pad texts make these too
        return event.session
    return None


def event_size(event: Event) -> int:
    """What an event holds in memory against the byte bounds: a message its text as Python keeps it (1, 2 or 4
    bytes a character: counting characters let texts of emoji hold four times the bound), anything else
    :data:`EVENT_COST`."""
    return sys.getsizeof(event.text) + EVENT_COST if isinstance(event, MessageReceived) else EVENT_COST


class EventQueue(queue.Queue[Event]):
    """A FIFO of :mod:`p2pchat.events` that accounts what each session has waiting (see the module docstring)."""

    def __init__(self, on_taken: Callable[[Event], None] | None = None) -> None:
        super().__init__()
        self.on_taken = on_taken
        self._waiting: dict[str, list[int]] = {}     # session -> [events, bytes] not taken yet
        self._total = 0
        self._room = threading.Condition(self.mutex)
        self._answering = threading.local()         # per thread: [nesting depth, wake-ups held back]

    # queue.Queue calls _put/_get with self.mutex held: bookkeeping only, never a callback.
    def _put(self, item: Event) -> None:
        super()._put(item)
        sid = event_session(item)
        if sid is not None:
            size = event_size(item)
            counts = self._waiting.setdefault(sid, [0, 0])
            counts[0] += 1
            counts[1] += size
            self._total += size

    def _get(self) -> Event:
        item = super()._get()
        sid = event_session(item)
        if sid is not None:
            size = event_size(item)
            counts = self._waiting.get(sid)
            if counts is not None:
                counts[0] -= 1
                counts[1] -= size
                if counts[0] <= 0:
                    del self._waiting[sid]
            self._total -= size
            self._room.notify_all()
        return item

    def put(self, item: Event, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` (never blocks: the queue has no maxsize); inside :meth:`answering` the UI thread is not
        woken yet."""
        held = getattr(self._answering, "state", None)
        with self.mutex:
            self._put(item)
            self.unfinished_tasks += 1
            if held is not None and held[0]:
                held[1] += 1
            else:
                self.not_empty.notify()

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Events this thread puts in the block are queued at once but wake a waiting :meth:`get` only at its end
        (see the module docstring); blocks nest."""
        held = getattr(self._answering, "state", None)
        if held is None:
            held = self._answering.state = [0, 0]
        held[0] += 1
        try:
            yield
        finally:
            held[0] -= 1
            if not held[0] and held[1]:
                with self.mutex:
                    self.not_empty.notify(held[1])
                held[1] = 0

    def get(self, block: bool = True, timeout: float | None = None) -> Event:
        item = super().get(block, timeout)
        if self.on_taken is not None:
            self.on_taken(item)
        return item

    def waiting(self, session: str) -> tuple[int, int]:
        """Events and bytes of ``session`` not taken yet."""
        with self.mutex:
            events, size = self._waiting.get(session, (0, 0))
            return events, size

    def has_room(self, session: str) -> bool:
        with self.mutex:
            return self._has_room(session)

    def _has_room(self, session: str) -> bool:
        events, size = self._waiting.get(session, (0, 0))
        return events < SESSION_EVENTS and size < SESSION_BYTES and self._total < TOTAL_BYTES

    def wait_for_room(self, session: str, timeout: float, also: Callable[[], bool] | None = None) -> bool:
        """Wait up to ``timeout`` until ``session`` is under its bounds (and ``also()`` is true, when given);
        True once it is. Woken whenever the UI takes an event or :meth:`wake` is called."""
        deadline = time.monotonic() + timeout
        with self._room:
            while True:
                if self._has_room(session) and (also is None or also()):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._room.wait(remaining)

    def wake(self) -> None:
        """Wake every reader waiting for room (a session ended, or a receipt reset what it waits for)."""
        with self._room:
            self._room.notify_all()

    def __repr__(self) -> str:
        return f"EventQueue({self.qsize()} events, {self._total} bytes waiting)"
