"""Drives a session's :class:`~p2pchat.channel.Channel` once the keys are agreed: the user's texts and typing
state go in, frames from the peer come out as UI events (dispatched on their types).

Delivery receipts mean the message reached the UI: the channel collects the ids of texts it opened
(``more_buffered=True``), and :meth:`ChannelDriver.taken` seals the receipt once the UI has taken every message
event of the session from the node's event queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.channel import (
    Abort,
    Channel,
    ChEvent,
    FileMessage,
    Goodbye,
    GroupFrame,
    PadControl,
    PadText,
    Receipt,
    Refused,
    Rotated,
    SmpFrame,
    Text,
    Typing,
)
from p2pchat.chat_protocol import MAX_RECEIPT_IDS, Send
from p2pchat.display import quoted
from p2pchat.events import DeliveryReceipt, Event, MessageReceived, Notice, PeerTyping
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.handshake import Established
from p2pchat.session import Phase
from p2pchat.steps import Step

if TYPE_CHECKING:
    from p2pchat.history_recorder import HistoryRecorder
    from p2pchat.pad_mode import PadModes
    from p2pchat.session import Session
    from p2pchat.smp_driver import SmpDriver

# Texts opened but not yet receipted that make the reader wait for the UI: with at most one batch of texts more
# (MAX_BATCH_TEXTS) the channel never reaches MAX_RECEIPT_IDS and so never receipts a text the UI has not taken.
UNRECEIPTED_PAUSE = MAX_RECEIPT_IDS // 2


class OutboxFull(UsageError):
    """The peer takes our messages more slowly than the user sends them; the text was not queued."""


class FileMessages(Protocol):
    def on_message(self, session: Session, kind: str, fields: dict[str, Any]) -> None: ...


def ch_of(session: Session) -> Channel:
    assert session.channel is not None
    return session.channel


class GroupSink(Protocol):
    """[groups, issue 18] Takes group frames from peers (the node's group service; queues only)."""

    def frame_from(self, session: str, fp: str, body: bytes) -> None: ...


class ChannelHost(Protocol):
    rotate_every: int
    history: HistoryRecorder | None      # keeps the texts of every chat past step 4 (None: no history)
    files: FileMessages
    smp: SmpDriver                       # the shared-secret check (p2pchat/smp_driver.py)
    groups: GroupSink | None             # [groups, issue 18] (None: this node keeps no groups)

    def emit(self, event: Event) -> None: ...

    def emit_info(self, session: Session, **changes: Any) -> None: ...

    def end(self, session: Session, reason: str, *, clean: bool) -> None: ...


class ChannelDriver:
    """One instance serves every session of a node; all per-session state lives on the session."""

    def __init__(self, host: ChannelHost) -> None:
        self.host = host
        self.pads: PadModes | None = None      # one-time-pad mode (issue 17): set by the node with a data dir

    def start(self, session: Session, established: Established) -> None:
        """The handshake is done (``session.lock`` held): its secrets move into a channel."""
        # texts a key rotation held back are sealed by the writer, as the wire takes them (Rotated below)
        session.channel = Channel(established, rotate_every=self.host.rotate_every, seal_held=False)
        session.peer_fp = crypto.fingerprint(established.peer_public_der).hex()
        if session.handshake is not None:
            session.handshake = None      # its secrets now live in the channel only
        session.move(Phase.CHAT)
        session.progress = (None, time.monotonic())
        session.update(peer_nickname=established.peer_nickname or session.info.peer_nickname,
                       safety_number=established.safety_number)
        self.refresh_info(session, force=True)

    # --- the user's side ----------------------------------------------------------------------------------

    def send_text(self, session: Session, text: str, history_row: int | None = None) -> tuple[int, bool]:
        """Queue ``text`` (``session.lock`` held); returns its id and whether to write at once on this thread.
        ``history_row``: the history row that holds it already (see ``ChatNode.send_text``)."""
        ch = self._open_channel(session)
        size = len(text)
        if not session.writer.room_for(size):
            pending = session.writer.pending_bytes
            raise OutboxFull(f"the peer is not taking messages as fast as you send them ({pending / 2**20:.1f} MiB "
                             "still waiting to be sent); this message was not sent — try again shortly")
        if self.pads is not None and self.pads.pad_required(session):      # issue 17: pad mode
            return self._send_pad_text(session, ch, text, history_row)
        session.writer.before_text()
        now = time.time()
        msg_id = ch.queue_text(text, now)
        session.sent_ids.add(msg_id)
        if self.host.history is not None and session.peer_fp is not None:
            self.host.history.sent(session.id, msg_id, session.peer_fp, text, now, row=history_row)
        session.typing_sent = False
        session.writer.queue_text()
        self.refresh_info(session)
        # A message with none of ours in flight goes out on this thread at once (latency). With earlier ones still
        # unreceipted the user is ahead of the wire: a pool writer seals what has queued up meanwhile, several
        # texts per frame, while this thread returns to queue more.
        at_once = len(session.sent_ids) <= 1
        if not at_once:
            session.writer.schedule_flush()
        return msg_id, at_once

    def _send_pad_text(self, session: Session, ch: Channel, text: str,
                       history_row: int | None) -> tuple[int, bool]:
        """Issue 17: a text in pad mode; written at once (each one spends pad bytes on disk before it leaves)."""
        assert self.pads is not None
        msg_id, frames = self.pads.seal_text(session, ch, text)
        session.sent_ids.add(msg_id)
        if self.host.history is not None and session.peer_fp is not None:
            self.host.history.sent(session.id, msg_id, session.peer_fp, text, time.time(), row=history_row)
        session.typing_sent = False
        session.writer.queue_all(frames)
        session.writer.schedule_flush()
        return msg_id, False

    def pad_action(self, session: Session, action: str) -> None:
        """Issue 17: the user's pad-mode action (``session.lock`` held); see p2pchat.pad_mode."""
        ch = self._open_channel(session)
        if self.pads is None:
            raise UsageError("this node has no data directory, so it has no one-time pads")
        session.writer.queue_all(self.pads.user(session, ch, action))
        session.writer.schedule_flush()

    def set_typing(self, session: Session, typing: bool) -> None:
        if session.channel is None or session.ended or session.typing_sent == typing:
            return
        session.typing_sent = typing
        session.writer.queue_all(session.channel.send_typing(typing))
        session.writer.schedule_flush()

    def _open_channel(self, session: Session) -> Channel:
        if session.ended:
            raise UsageError("this chat has ended")
        if session.channel is None:
            raise UsageError(f"the chat is not ready yet: finish step {Step.AGREE_KEY.label} first")
        return session.channel

    # --- the peer's side (the reader thread, session.lock held) -----------------------------------------

    def poll(self, session: Session) -> None:
        """The channel's timer (``session.lock`` held): an unacknowledged rotation is sent again, then ends the
        session (issue 11)."""
        ch = session.channel
        if ch is not None and not session.ended:
            self.on_events(session, ch.poll(time.monotonic()))

    def receive(self, session: Session, msg: Message) -> None:
        ch = session.channel
        assert ch is not None
        # The receipt waits until the UI took the texts (taken), never sealed here.
        self.on_events(session, ch.receive(msg, more_buffered=True))

    def on_events(self, session: Session, out: Iterable[ChEvent]) -> None:
        for ev in out:
            if session.ended:
                return
            match ev:
                case Send(frame=frame):
                    session.writer.queue(frame)
                case Text() if self.pads is not None and self.pads.pad_required(session):
                    # issue 17: in pad mode a text without the pad is a downgrade; counted like any refused frame
                    self.on_events(session, ch_of(session).refuse(
                        "unexpected", f"message {ev.msg_id} arrived without the one-time pad while pad mode is on; "
                                      "it was not shown"))
                case PadControl(op=op, pad_id=pad_id) if self.pads is not None:     # issue 17
                    frames, said = self.pads.peer_op(session, ch_of(session), op, pad_id)
                    session.writer.queue_all(frames)
                    if said:
                        self.host.emit(Notice(session.id, "refused", said))
                case PadText() if self.pads is not None:                           # issue 17
                    try:
                        text = self.pads.open_text(session, ev.box)
                    except UserError as exc:
                        from p2pchat.pad import PadRefused  # (loaded already: self.pads uses it)
                        from p2pchat.pad_mode import PadModeError

                        if isinstance(exc, (PadRefused, PadModeError)):   # the peer's doing: counted as refused
                            self.on_events(session, ch_of(session).refuse("tampered", str(exc)))
                        else:                                       # a local fault (a damaged pad): told only
                            self.host.emit(Notice(session.id, "refused", str(exc)))
                        continue
                    self._show(session, Text(ev.msg_id, text, ev.sent_at, ev.received_at))
                case PadControl() | PadText():
                    self.host.emit(Notice(session.id, "refused", "the peer used one-time-pad mode, which this "
                                          "node cannot (it has no data directory); ignored"))
                case Text():
                    self._show(session, ev)
                case Receipt(msg_id=msg_id):
                    if msg_id in session.sent_ids:      # a repeated receipt shows nothing (one per text sent)
                        session.sent_ids.discard(msg_id)
                        if self.host.history is not None:
                            self.host.history.delivered(session.id, msg_id)
                        self.host.emit(DeliveryReceipt(session.id, msg_id))
                case Typing(typing=typing):
                    self.host.emit(PeerTyping(session.id, typing))
                case GroupFrame(body=body):                  # [groups, issue 18]
                    if self.host.groups is not None and session.peer_fp is not None:
                        self.host.groups.frame_from(session.id, session.peer_fp, body)
                case Rotated(epoch=epoch, direction=direction):
                    if direction == "send":
                        session.writer.texts_released()
                    whose = "our sending key" if direction == "send" else "the peer's sending key"
                    self.host.emit(Notice(session.id, "rotation",
                                          f"key rotated: {whose} is now epoch {epoch}; the old key is erased"))
                case FileMessage(kind=kind, fields=fields):
                    self.host.files.on_message(session, kind, fields)
                case Refused(reason=reason):
                    self.host.emit(Notice(session.id, "refused", reason))
                case Goodbye(reason=reason):
                    session.peer_gone()
                    peer = session.info.peer_nickname or "the peer"
                    # the peer's words in guillemets they cannot close: they never read as this program's own
                    said = f", saying {quoted(reason)}" if reason else ""
                    self.host.end(session, f"{peer} left the chat{said}", clean=True)
                    return
                case Abort(reason=reason, connection_lost=lost):
                    # The channel ended the session, in its own words (never the peer's: issue 11).
                    if lost:
                        session.peer_gone()
                    self.host.end(session, reason, clean=False)
                    return
                case SmpFrame(kind=kind, fields=fields):
                    self.host.smp.received(session, kind, fields)
                case _:
                    raise TypeError(f"unexpected channel event {ev!r}")
        session.writer.schedule_flush()
        self.refresh_info(session)

    def _show(self, session: Session, ev: Text) -> None:
        session.unreceipted += 1
        session.untaken += 1
        now = time.time()
        if self.host.history is not None and session.peer_fp is not None:
            self.host.history.received(session.id, ev.msg_id, session.peer_fp, ev.text, now)
        self.host.emit(MessageReceived(session.id, ev.msg_id, ev.text,
                                       session.info.peer_nickname or "peer", ev.sent_at, now))

    def send_group(self, session: Session, body: bytes) -> None:
        """[groups, issue 18] Seal one group frame (``session.lock`` held)."""
        ch = self._open_channel(session)
        session.writer.queue_all(ch.send_group(body))
        session.writer.schedule_flush()

    def taken(self, session: Session) -> None:
        """The UI took one message event of ``session`` (``session.lock`` held): once it has taken all of them,
        the texts opened so far are receipted."""
        session.untaken -= 1
        ch = session.channel
        if session.untaken == 0 and session.unreceipted and ch is not None and not session.ended:
            session.unreceipted = 0
            session.writer.queue_all(ch.take_receipt())
            session.writer.schedule_flush()

    def refresh_info(self, session: Session, force: bool = False) -> None:
        ch = session.channel
        if ch is None:
            return
        info = session.info
        if force or info.key_epoch != ch.epoch or info.until_rotation != ch.until_rotation:
            self.host.emit_info(session, key_epoch=ch.epoch, until_rotation=ch.until_rotation)
