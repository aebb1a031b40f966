"""A session's outgoing side: the outbox of frames and how they reach the socket without blocking anyone.

Frames enter the outbox under ``session.lock`` in the order the protocol cores made them. They leave under
``send_lock`` in that same order, either

- at once on the thread that queued them (:meth:`SessionWriter.kick`), when the socket takes them without waiting
  (the common case: no thread hand-off, lower latency), or
- on a pool thread (:meth:`SessionWriter.flush`) that may wait for the peer's receive window; one flush per
  session at a time keeps the order.

Texts the user sends are queued in the channel and stand in the outbox as one :class:`QueuedTexts` placeholder
per batch; whichever thread writes next replaces it with the sealed frames (several texts per frame when the user
is faster than the wire).

The outbox is bounded: :attr:`SessionWriter.pending_bytes` counts what waits for the wire (frames, the rest of a
partly written frame, texts queued in the channel but not sealed yet — counted by the channel itself, so texts
held back while our key rotates count too), and :meth:`SessionWriter.room_for` tells the user
command whether one more text fits under :data:`OUTBOX_LIMIT`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.channel import SealJob
from p2pchat.foundation.codec import CLEAR_BOX_MIN, BoxedFrame, Frame
from p2pchat.foundation.errors import UserError

if TYPE_CHECKING:
    from p2pchat.session import Session

COALESCE_BYTES = 256 * 1024       # queued frames joined into one write up to this size
OUTBOX_LIMIT = 8 * 1024 * 1024    # bytes a session may hold for the wire before send_text refuses more


class QueuedTexts:
    """Outbox placeholder for the texts queued in the channel; sealed by the writer that reaches it."""

    __slots__ = ()


class Filler(Protocol):
    """Frames made only when the wire is idle (file chunks, :mod:`p2pchat.file_driver`): everything queued goes
    first, so a text never waits behind chunks that were not on their way yet. Called with ``session.lock``."""

    def ready(self) -> bool: ...

    def take(self) -> list[Frame]: ...


class WriterHost(Protocol):
    """What the writer needs from the node: a worker pool, ending a session on a dead link, and telling the UI
    about the channel's key epoch after sealing."""

    def submit(self, fn: Callable[..., None], *args: Any) -> None: ...

    def link_failed(self, session: Session, reason: str) -> None: ...

    def refresh_channel_info(self, session: Session) -> None: ...


class SessionWriter:
    """The outbox of one session and the two ways it is written (see the module docstring)."""

    def __init__(self, session: Session, host: WriterHost | None = None) -> None:
        self.session = session
        self.host = host
        self.send_lock = threading.Lock()
        self.outbox: deque[Frame | QueuedTexts | SealJob] = deque()
        self.outbox_bytes = 0
        self.text_marker: QueuedTexts | None = None   # the placeholder of the texts queued now, while in the outbox
        self.partial: bytes | memoryview = b""   # the unsent rest of a frame the socket took only part of
        self.wire_hook: Callable[[bytes], bytes | None] | None = None   # demo/tests: alter outgoing frames
        self.raw_frames = 0                      # frames injected with ChatNode.inject_frame
        self._flush_scheduled = False
        self._defer_flush = False                # the lock holder sends the outbox itself once it lets go
        self.filler: Filler | None = None        # file chunks, pulled when the outbox is empty

    # --- queueing (session.lock held) -------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        channel = self.session.channel
        queued = channel.queued_bytes if channel is not None else 0
        return self.outbox_bytes + len(self.partial) + queued

    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit under :data:`OUTBOX_LIMIT` (an empty outbox takes any one text)."""
        return self.pending_bytes == 0 or self.pending_bytes + size <= OUTBOX_LIMIT

    def queue(self, frame: Frame) -> None:
        self.outbox.append(frame)
        self.outbox_bytes += len(frame)

    def queue_all(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            self.queue(frame)

    def before_text(self) -> None:
        """Called before a text is queued in the channel: when the channel holds no queued text although a
        placeholder stands in the outbox, another frame (typing, a receipt, a rotation) sealed those texts first
        and queued its frames behind the placeholder. That placeholder is spent: the new text gets a new one at
        the end of the outbox, or it would be sealed ahead of frames with lower counters."""
        channel = self.session.channel
        if self.text_marker is not None and channel is not None and not channel.queued:
            self.text_marker = None

    def queue_text(self) -> None:
        """A text was queued in the channel (after :meth:`before_text`): make sure a placeholder stands for it."""
        if self.text_marker is None:
            self.text_marker = QueuedTexts()
            self.outbox.append(self.text_marker)

    def texts_released(self) -> None:
        """Our key rotation was acknowledged: the texts it held back in the channel (if any) get a placeholder."""
        channel = self.session.channel
        if channel is not None and channel.queued:
            self.before_text()
            self.queue_text()

    def seal_queued_now(self) -> None:
        """Seal the queued texts into the outbox here (a raw frame is about to be queued behind them)."""
        if self.session.channel is not None:
            self.queue_all(self.session.channel.seal_queued())
        self.text_marker = None

    def discard(self) -> None:
        """Drop everything still queued (the session ended or the link is gone): the memory goes at once."""
        self.outbox.clear()
        self.outbox_bytes = 0
        self.partial = b""
        self.text_marker = None

    def schedule_flush(self) -> None:
        """Have the pool send the outbox (``session.lock`` held); one flush per session at a time keeps order.
        Deferred while the lock holder will try to send on its own thread (:meth:`kick`)."""
        if self._defer_flush or self.session.ended or self.host is None:
            return
        if (self.outbox or self.partial or self._filler_ready()) and not self._flush_scheduled:
            self._flush_scheduled = True
            self.host.submit(flush_session, self.session)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold ``session.lock`` to feed a core; the frames it queues are then written by this thread
        (:meth:`kick`) once the lock is let go, instead of waiting for a pool thread."""
        with self.session.lock:
            self._defer_flush = True
            try:
                yield
            finally:
                self._defer_flush = False
                fill = self._filler_ready()     # e.g. an ack opened a file transfer's window
        self.kick(fill)

    # --- writing (session.lock not held) ----------------------------------------------------------------

    def flush(self) -> None:
        """Pool task: send the outbox, waiting for the socket if need be."""
        try:
            self.send_all()
        finally:
            with self.session.lock:
                self._flush_scheduled = False
                again = bool(self.outbox or self.partial or self._filler_ready()) and not self.session.ended
                if again:   # frames queued after the last pop but before the flag was cleared
                    self.schedule_flush()

    def kick(self, fill: bool = False) -> None:
        """Send what is queued right here if the socket takes it without waiting; whatever is left goes to the
        pool. Never blocks; never called with ``session.lock`` held."""
        # Nothing queued is the usual case after a frame that needs no answer. Checked without the lock on
        # purpose: whoever queues a frame after this check kicks or schedules a flush itself.
        if not self.outbox and not self.partial and not fill:
            return
        done = False
        if self.session.link is not None and self.send_lock.acquire(blocking=False):
            try:
                done = self._send_without_waiting()
            finally:
                self.send_lock.release()
        if not done:
            with self.session.lock:
                self.schedule_flush()

    def send_all(self) -> None:
        """Send queued frames in order on this thread, waiting for the socket if need be."""
        with self.send_lock:
            while True:
                with self.session.lock:
                    link = self.session.link
                    data = self._next_chunk() if link is not None else None
                if data is None or link is None:
                    return
                if isinstance(data, SealJob):
                    data = data.seal()          # the megabyte's GCM pass, without the session lock
                try:
                    link.send_frame(data)       # (the rest of a partly written frame: a view, not copied)
                except UserError as exc:
                    self._lost(str(exc))
                    return

    def _send_without_waiting(self) -> bool:
        """True when everything queued was written (``send_lock`` held); what the socket did not take stays
        first in line for the pool."""
        while True:
            with self.session.lock:
                link = self.session.link
                if self.session.ended or link is None:
                    return False
                data = self._next_chunk()
            if data is None:
                return True
            if isinstance(data, SealJob):
                data = data.seal()
            try:
                sent = link.send_nowait(data)
            except UserError as exc:
                self._lost(str(exc))
                return True
            if sent < len(data):
                with self.session.lock:
                    self.partial = memoryview(data)[sent:]     # the rest, not a copy of it
                return False

    def _lost(self, reason: str) -> None:
        with self.session.lock:
            self.discard()
            self.session.peer_gone()
        if self.host is not None:
            self.host.link_failed(self.session, reason)

    def _next_chunk(self) -> Frame | memoryview | SealJob | None:
        """The next bytes to write (``session.lock`` held): the rest of a partly sent frame, else the queued
        frames (a :class:`QueuedTexts` placeholder sealed on the spot; each frame through the wire hook) joined
        up to :data:`COALESCE_BYTES`, so a burst costs one system call; None when nothing is queued."""
        if self.partial:
            data, self.partial = self.partial, b""
            return data
        parts: list[Frame] = []
        size = 0
        outbox, hook = self.outbox, self.wire_hook
        while size < COALESCE_BYTES:
            if not outbox:
                if self.filler is None or not (more := self.filler.take()):
                    break
                outbox.extend(more)      # idle wire: the next file chunk (texts queued later go first)
                self.outbox_bytes += sum(len(f) for f in more)
            frame = outbox[0]
            if isinstance(frame, QueuedTexts):
                outbox.popleft()
                self._seal_queued(frame)
                continue
            if isinstance(frame, SealJob):     # a long text's frame, sealed by the caller after the lock
                if hook is None:
                    if parts:
                        break
                    outbox.popleft()
                    self.outbox_bytes -= len(frame)
                    return frame
                frame = outbox[0] = frame.seal()     # (a wire hook set since: it sees the sealed frame)
            # [relaypath] a long box goes in a write of its own, so a relay link can see where it starts
            alone = isinstance(frame, BoxedFrame) and frame.box_len >= CLEAR_BOX_MIN and hook is None
            if alone and parts:
                break
            outbox.popleft()
            self.outbox_bytes -= len(frame)
            if hook is not None:
                hooked = hook(bytes(frame))     # (demo and tests: a copy of a sealed frame)
                if hooked is None:
                    continue
                frame = hooked
            parts.append(frame)
            size += len(frame)
            if alone:
                break
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _filler_ready(self) -> bool:
        return self.filler is not None and self.filler.ready()

    def _seal_queued(self, marker: QueuedTexts) -> None:
        """Put the sealed frames of the queued texts, up to :data:`COALESCE_BYTES` of them (what one write takes),
        in front of the placeholder just taken from the outbox (``session.lock`` held); the placeholder stays first
        in line after them while texts remain, so each megabyte text goes out while the next one is sealed. A
        placeholder whose texts another frame already sealed is dropped, and so is one that seals nothing more
        (the rest wait for a key rotation's ack): any frame the channel seals carries the queued texts ahead of
        it, so counters still increase along the wire."""
        if marker is not self.text_marker:
            return
        self.text_marker = None
        channel = self.session.channel
        if channel is not None:
            # long texts are sealed by the writing thread once the session lock is let go (SealJob), so the
            # user's thread and the reader do not wait for the GCM pass (the wire hook sees sealed frames only)
            frames = channel.seal_queued(COALESCE_BYTES, later=self.wire_hook is None)
            if frames and channel.queued:
                self.text_marker = marker
                self.outbox.appendleft(marker)
            self.outbox.extendleft(reversed(frames))
            self.outbox_bytes += sum(len(f) for f in frames)
            if self.host is not None:
                self.host.refresh_channel_info(self.session)


def flush_session(session: Session) -> None:
    """Pool task: send ``session``'s outbox (a function of the session, so the pool knows whose task it is)."""
    session.writer.flush()
