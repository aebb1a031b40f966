"""One chat session's state on a node: its connection, protocol cores, outgoing frame queue and what the UI is
shown about it.

The session holds no threads of its own; :class:`p2pchat.node.ChatNode` runs its reader and sends its frames.
Two locks keep things ordered:

- ``lock`` guards the protocol cores and the outbox: whoever feeds a core (the reader thread with a frame, a
  worker with a user command) holds it, so the frames a core emits enter the outbox in the core's order;
- ``send_lock`` is held while frames leave the outbox for the socket, so they go out in that same order.
  Lock order is always ``send_lock`` then ``lock``: nothing waits for ``send_lock`` while holding ``lock``, which
  is why ending a session only changes state under ``lock`` and leaves the socket work (:meth:`ChatNode._close_io`)
  to whoever releases it.

Texts the user sends are queued in the channel and stand in the outbox as one :class:`QueuedTexts` placeholder
per batch; whichever thread writes next replaces it with the sealed frames (several texts per frame when the user
is faster than the wire).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from p2pchat.events import SessionInfo
from p2pchat.steps import Step


class QueuedTexts:
    """Outbox placeholder for the texts queued in the channel; sealed by the writer that reaches it."""

    __slots__ = ()


class Session:
    """State of one chat, with an immutable :class:`SessionInfo` snapshot replaced on every change."""

    def __init__(self, sid: str, peer_query: str, *, incoming: bool) -> None:
        self.id = sid
        self.incoming = incoming
        self.lock = threading.RLock()
        self.send_lock = threading.Lock()
        self.link: Any = None                  # FramedSocket or RelayLink, once connected
        self.handshake: Any = None             # p2pchat.handshake.Handshake until the keys are agreed
        self.channel: Any = None               # p2pchat.channel.Channel afterwards
        self.outbox: deque[bytes | QueuedTexts] = deque()
        self.text_marker: QueuedTexts | None = None   # the placeholder of the texts queued now, while in the outbox
        self.partial: bytes | memoryview = b""  # the unsent rest of a frame the socket took only part of
        self.flush_scheduled = False
        self.defer_flush = False               # the lock holder sends the outbox itself once it lets go
        self.connecting = False                # step 1's dial is under way
        self.auto_steps = False                # run_all: start each step when the previous one is done
        self.auto_next: Step | None = None     # the step run_all starts next
        self.typing_sent = False
        self.started_at = time.monotonic()
        self.progress: tuple[Step | None, float] = (None, self.started_at)   # step under way, since when
        self.sent_ids: set[int] = set()        # our texts without a delivery receipt yet
        self.wire_hook: Callable[[bytes], bytes | None] | None = None   # demo/tests: alter outgoing frames
        self.raw_frames = 0                    # frames injected with ChatNode.inject_frame
        # ending
        self.ended = False
        self.graceful = False                  # we said goodbye: half-close and let the peer close first
        self.peer_left = False                 # the peer said goodbye or closed: just close
        self.io_closed = False
        self.reading = False                   # a reader thread owns the link
        self.reader_done = threading.Event()
        self._info = SessionInfo(session=sid, peer_query=peer_query, incoming=incoming)

    @property
    def info(self) -> SessionInfo:
        return self._info

    def update(self, **changes: Any) -> SessionInfo:
        """Replace fields of the snapshot (callers hold ``lock``); returns the new snapshot."""
        self._info = replace(self._info, **changes)
        return self._info

    def mark_done(self, step: Step) -> SessionInfo:
        done = tuple(sorted(set(self._info.steps_done) | {step}))
        return self.update(steps_done=done)
