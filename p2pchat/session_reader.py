"""A session's incoming side: the one thread that reads its link, with the deadlines of the handshake.

Timeouts: a step under way must finish within ``step_timeout``; a caller waits up to ``accept_timeout`` for the
callee's user (who has as long to answer); a handshake left idle between steps (the GUI runs one step per click)
ends after ``handshake_timeout``. An established chat may stay quiet for ever; TCP keepalive notices a vanished
peer.

Back-pressure: before handing a frame on, the reader asks its host whether the UI has room for more and no ledger
lookup of the session is pending (:meth:`ReaderHost.wait_for_room`); while not, the reader holds that one frame
and reads nothing more, the socket's receive buffer fills and TCP flow control stops the sender.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import FrameError, UserError
from p2pchat.links import release
from p2pchat.session import Farewell
from p2pchat.steps import Step

if TYPE_CHECKING:
    from p2pchat.links import Link
    from p2pchat.session import Session

CHANNEL_POLL = 2.0          # an established chat's reader wakes this often (the channel's timer, a finished linger)
LINGER_SECONDS = 2.0        # after our goodbye, how long we wait for the peer to close first
ERROR_LINGER = 1.0          # after an error frame, how long we read (and drop) before closing


@dataclass(frozen=True)
class Deadlines:
    step_timeout: float
    accept_timeout: float
    handshake_timeout: float


@dataclass(frozen=True)
class Due:
    """When the next frame is due (``None``: no deadline), what to tell the user if it is late, and what to
    tell the peer (``None``: nothing)."""

    at: float | None
    late: str = ""
    tell_peer: str | None = None


class ReaderHost(Protocol):
    def on_frame(self, session: Session, msg: Message) -> None: ...

    def poll_channel(self, session: Session) -> None:
        """Give the session's channel its timer (rotation retries); called at least every ``CHANNEL_POLL``."""
        ...

    def fail(self, session: Session, reason: str, peer_reason: str | None = None) -> None: ...

    def close_io(self, session: Session) -> None: ...

    def wait_for_room(self, session: Session, timeout: float) -> bool:
        """Wait up to ``timeout`` until the UI has room for this session's next events; True once it has."""
        ...


class SessionReader:
    """Runs the read loop of one session at a time (one instance serves every session of a node)."""

    def __init__(self, host: ReaderHost, deadlines: Deadlines) -> None:
        self.host = host
        self.deadlines = deadlines

    def due(self, session: Session) -> Due:
        d = self.deadlines
        with session.lock:
            hs = session.handshake
            if session.channel is not None or hs is None:
                return Due(None)
            step, since = session.progress
            if not hs.initiator and Step.CONNECT not in hs.done:
                if hs.in_progress is None:
                    return Due(session.started_at + d.step_timeout, f"sent no hello within {d.step_timeout:g} s")
                return Due(since + d.accept_timeout,
                           f"you did not accept or reject the chat within {d.accept_timeout:g} s",
                           "the other side did not answer the chat request in time")
            if step == Step.CONNECT:
                return Due(since + d.accept_timeout,
                           f"did not accept or reject the chat within {d.accept_timeout:g} s")
            if step is not None:
                return Due(since + d.step_timeout, f"went silent during step {step.label} "
                                                   f"(no answer within {d.step_timeout:g} s)")
            # Idle between steps: the caller's turn (it drives the steps), whichever side's clock runs out first.
            at = f"at step {hs.next_step.label}" if hs.next_step is not None else "before the end"
            if hs.initiator:
                return Due(session.started_at + d.handshake_timeout,
                           f"you left the handshake unfinished {at} for {d.handshake_timeout:g} s "
                           "(the caller starts every step)",
                           f"the caller left the handshake unfinished {at} for {d.handshake_timeout:g} s")
            return Due(session.started_at + d.handshake_timeout,
                       f"left the handshake unfinished {at} for {d.handshake_timeout:g} s (it was the caller's "
                       "turn to continue)",
                       f"you left the handshake unfinished {at} for {d.handshake_timeout:g} s; this side stopped "
                       "waiting")

    def run(self, session: Session) -> None:
        """Read and hand over frames until the session ends; then send what is left, linger after a goodbye and
        close. Marks ``session.reader_done`` whatever happens."""
        link = session.link
        assert link is not None and session.reader_done is not None
        try:
            self._loop(session, link)
            self.host.close_io(session)
            self._linger(session, link)
        finally:
            link.close()
            release(link)
            session.reader_done.set()

    def _loop(self, session: Session, link: Link) -> None:
        while not session.ended:
            self.host.poll_channel(session)
            if session.ended:
                return
            due = self.due(session)
            wait = CHANNEL_POLL if due.at is None else max(0.001, due.at - time.monotonic())
            started = time.monotonic()
            try:
                msg = link.recv(timeout=wait)
            except FrameError as exc:      # the stream is unusable after a bad frame
                if not session.ended:
                    self.host.fail(session, f"{link.peer_text} sent a bad frame: {exc}", peer_reason=str(exc))
                return
            except UserError as exc:
                if session.ended:
                    return
                # A concurrent send resets the socket's timeout to the link's own, so a read may give up
                # after whichever of the two is shorter; anything that fast is a closed connection.
                limit = min(wait, link.timeout or wait)
                timed_out = time.monotonic() - started >= limit * 0.9
                if timed_out:
                    # The deadline of now, not of when the read began: the user may have answered meanwhile (an
                    # accepted chat is then idle between steps, and the caller's to continue, not the callee's).
                    due = self.due(session)
                if timed_out and (due.at is None or time.monotonic() < due.at):
                    continue          # a quiet chat is fine; or the deadline is still ahead
                if timed_out:
                    peer = session.info.peer_nickname or link.peer_text
                    reason = due.late if due.late.startswith("you ") else f"{peer} {due.late}"
                    self.host.fail(session, reason, peer_reason=due.tell_peer)
                else:
                    with session.lock:
                        session.peer_gone()
                    self.host.fail(session, str(exc))
                return
            # Hold this frame while the UI is behind or a ledger lookup is pending: nothing more is read, so TCP
            # flow control reaches the sender, and frames reach the core in order after the ledger's answer.
            while not self.host.wait_for_room(session, CHANNEL_POLL):
                if session.ended:
                    return
            self.host.on_frame(session, msg)

    def _linger(self, session: Session, link: Link) -> None:
        """After our goodbye or error, read (and drop) until the peer closes, so our last frames are not reset
        away; a limited time and never more than the frame limit a frame (the link's own limits apply)."""
        if session.farewell is Farewell.PEER_GONE:
            return
        deadline = time.monotonic() + (LINGER_SECONDS if session.farewell is Farewell.GOODBYE else ERROR_LINGER)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                link.recv(timeout=remaining)
            except UserError:
                return
