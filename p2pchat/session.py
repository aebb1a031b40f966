"""One chat session's state on a node: its phase, connection, protocol cores and what the UI is shown about it.

The session holds no threads of its own; the node's reader, writer and drivers act on it. Its life is one
explicit :class:`Phase`, moved only along :data:`TRANSITIONS`::

    NEW ──▶ CONNECTING ──▶ HANDSHAKE ──▶ CHAT
     │           │             │           │
     └───────────┴─────────────┴───────────┴──▶ ENDED ──▶ CLOSED

(an incoming session starts in HANDSHAKE; CONNECTING goes back to NEW when the dial could not even start).
How the connection is let go is a :class:`Farewell`.

Two locks keep things ordered:

- ``lock`` guards the phase, the protocol cores and the writer's outbox: whoever feeds a core (the reader thread
  with a frame, a worker with a user command) holds it, so the frames a core emits enter the outbox in order;
- ``writer.send_lock`` is held while frames leave the outbox for the socket, so they go out in that same order.
  Lock order is always ``send_lock`` then ``lock``: nothing waits for ``send_lock`` while holding ``lock``, which
  is why ending a session only changes state under ``lock`` and leaves the socket work to whoever releases it.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from p2pchat.events import SessionInfo
from p2pchat.steps import Step

if TYPE_CHECKING:
    from p2pchat.admission import Ticket
    from p2pchat.channel import Channel, SealJob
    from p2pchat.continuity import PinChange
    from p2pchat.foundation.codec import Frame
    from p2pchat.handshake import Handshake
    from p2pchat.links import Link
    from p2pchat.session_writer import QueuedTexts, SessionWriter, WriterHost
    from p2pchat.transfer import TransferCore


class Phase(enum.Enum):
    NEW = "new"                 # an outgoing session before step 1
    CONNECTING = "connecting"   # step 1's dial is under way
    HANDSHAKE = "handshake"     # connected; steps 1-4 run on the handshake core
    CHAT = "chat"               # keys agreed; the channel runs
    ENDED = "ended"             # over for the UI; the socket work may still be under way
    CLOSED = "closed"           # the last frames are sent and the link is closed or half-closed


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.NEW: frozenset({Phase.CONNECTING, Phase.HANDSHAKE, Phase.ENDED}),
    Phase.CONNECTING: frozenset({Phase.HANDSHAKE, Phase.NEW, Phase.ENDED}),
    Phase.HANDSHAKE: frozenset({Phase.CHAT, Phase.ENDED}),
    Phase.CHAT: frozenset({Phase.ENDED}),
    Phase.ENDED: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class Farewell(enum.Enum):
    """How the connection is let go once the session ends."""

    ABORT = "abort"             # close at once (errors, vanished peers)
    GOODBYE = "goodbye"         # we said goodbye: half-close and let the peer close first
    PEER_GONE = "peer gone"     # the peer said goodbye or closed: just close


class Session:
    """State of one chat, with an immutable :class:`SessionInfo` snapshot replaced on every change."""

    def __init__(self, sid: str, peer_query: str, *, incoming: bool, writer_host: WriterHost | None = None) -> None:
        from p2pchat.session_writer import SessionWriter

        self.id = sid
        self.incoming = incoming
        self.ticket: Ticket | None = None      # an incoming session's claim on its address's allowances
        self.lock = threading.RLock()
        self.phase = Phase.NEW
        self.farewell = Farewell.ABORT
        self.link: Link | None = None
        self.handshake: Handshake | None = None     # until the keys are agreed
        self.channel: Channel | None = None          # afterwards
        self.files: TransferCore | None = None       # file transfers of the channel (p2pchat.file_driver)
        self.writer: SessionWriter = SessionWriter(self, writer_host)
        self.auto_steps = False                # run_all: start each step when the previous one is done
        self.auto_next: Step | None = None     # the step run_all starts next
        self.typing_sent = False
        self.started_at = time.monotonic()
        self.progress: tuple[Step | None, float] = (None, self.started_at)   # step under way, since when
        self.sent_ids: set[int] = set()        # our texts without a delivery receipt yet
        self.lookup_pending = False            # a ledger lookup runs for the handshake: its reader holds frames
        self.lookup_request: tuple[str, str | None] | None = None   # asked by the core, run once the lock is free
        self.pinned_fp: str | None = None          # the peer's key fingerprint (hex) once pinned after step 4
        self.peer_fp: str | None = None            # the peer's key fingerprint (hex) once the channel is open
        self.pin_change: PinChange | None = None   # a key change step 2 allowed, written to the pins after step 4
        self.unreceipted = 0                   # texts opened since the last receipt we sealed
        self.untaken = 0                       # their MessageReceived events the UI has not taken yet
        self.reader_done: threading.Event | None = None   # set once the reader owning the link has finished
        self._info = SessionInfo(session=sid, peer_query=peer_query, incoming=incoming)

    # --- the phase ---------------------------------------------------------------------------------------

    def move(self, to: Phase) -> None:
        """Change phase along :data:`TRANSITIONS` (``lock`` held); anything else is a programming error."""
        if to not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"session {self.id}: no transition from {self.phase.name} to {to.name}")
        self.phase = to

    @property
    def ended(self) -> bool:
        return self.phase in (Phase.ENDED, Phase.CLOSED)

    @property
    def connecting(self) -> bool:
        return self.phase is Phase.CONNECTING

    @property
    def reading(self) -> bool:
        """A reader thread owns the link."""
        return self.reader_done is not None

    @property
    def peer_left(self) -> bool:
        return self.farewell is Farewell.PEER_GONE

    def peer_gone(self) -> None:
        self.farewell = Farewell.PEER_GONE

    # compatibility for tests and the demo that look at the outbox
    @property
    def outbox(self) -> deque[Frame | QueuedTexts | SealJob]:
        return self.writer.outbox

    @property
    def partial(self) -> bytes | memoryview:
        return self.writer.partial

    @property
    def send_lock(self) -> threading.Lock:
        return self.writer.send_lock

    # --- what the UI sees --------------------------------------------------------------------------------

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
