"""The encrypted chat channel after the handshake, as a sans-IO state machine with key rotation.

API::

    Channel(est: Established, *, rotate_every: int = 10, ephemeral_factory=crypto.EphemeralKey, seal_held=True)
    .send_text(text, now) -> (msg_id, [frame, ...])   # may include a rotation frame after the text
    .queue_text(text, now) -> msg_id                  # checked like send_text; sealed by the next seal_queued()
    .seal_queued(max_bytes=None, *, later=False) -> [frame, ...]   # queued texts, several per frame; then a
                                                      # rotation frame; up to max_bytes of frames; later: a long
                                                      # text's frame as a SealJob (.seal() it, in order)
    .send_typing(typing) -> [frame] or []             # only on a change of state
    .send_goodbye(reason="") -> [frame] or []         # once; afterwards nothing more is sent
    .receive(msg: Message, now=None, *, more_buffered=False) -> list[ChEvent]   # never raises for a peer's input
    .poll(now) -> list[ChEvent]                       # the timer: retries an unanswered rotation, or gives up
    .deadline -> float | None                         # when poll() next has something to do (the IO clock)
    .take_receipt() -> [frame] or []                  # the receipt for texts collected while more_buffered
    .close()                                          # drop all key material (end of session)
    .epoch (= send_epoch), .recv_epoch, .until_rotation, .rotating, .rotate_every, .closed, .peer_closed,
    .queued (texts waiting for seal_queued), .queued_bytes (their UTF-8 bytes)

Events returned by :meth:`Channel.receive`, in order:

- ``Send(frame)``            — e.g. the automatic delivery receipt for texts, or a rotation answer
- ``Text(msg_id, text, sent_at, received_at)``  — an authentic, in-order message to show
- ``Receipt(msg_id)``        — the peer received our message ``msg_id``
- ``Typing(typing)``         — the peer started/stopped typing
- ``Rotated(epoch, direction)``  — ``"send"``: we now encrypt under ``epoch``; ``"receive"``: the peer does
- ``Goodbye(reason)``        — the peer closed the chat (authenticated)
- ``FileMessage(kind, fields)`` — a ``file_*`` message for the transfer core (:mod:`p2pchat.transfer`); sealed on
  our side with ``.send_file_message(kind, fields)``
- ``Refused(kind, reason)``  — a frame was refused and not shown (``kind``: ``tampered``, ``replayed``,
  ``malformed``, ``unexpected``), or frames never arrived (``missing``). Refusals are coalesced: only the first
  one is reported; at :data:`MAX_REFUSED` the channel ends the session (``Abort``) with one sentence counting them
- ``Abort(reason, connection_lost)`` — the session must end now; the channel is closed (keys erased) and
  ``reason`` is our own sentence for the user (never text from the network). ``connection_lost``: an
  unauthenticated ``error`` frame arrived (after step 4 only sealed frames speak, so its text is not shown)

After the handshake only sealed frames are believed: an ``error`` frame means "connection lost", a handshake
frame ends the session (an ``error`` frame goes back, as during the handshake), and too many refused frames
(replays, altered frames, frames out of turn) end it with one notice, so a flood of replays costs one line.

Timer: the IO layer calls :meth:`Channel.poll` with its monotonic clock at least every few seconds (and when
:attr:`Channel.deadline` passes). A ``rotate`` not acknowledged within :data:`ROTATE_ACK_TIMEOUT` is sent again
(same epoch and half) up to :data:`ROTATE_TRIES` times in all; then the session ends with a reason, so a dropped
rotation frame cannot freeze a direction on one key, and the sender never waits for ever.

Differences from the first sketch, on purpose: the constructor takes no clock and no rng (nothing in the
channel depends on time or randomness other than the X25519 keys from ``ephemeral_factory``); ``receive``'s
``now`` only stamps ``Text.received_at``; every ``Send`` carries one frame; ``Refused`` also has a ``kind``.

Wire format (docs/protocol.md): a ``sealed`` frame has clear ``epoch`` and ``counter`` and ``box`` =
AES-256-GCM(key[direction, epoch], nonce = 0x00000000 | counter (u64), plaintext = padded inner message,
AAD = label | session id | direction | epoch | counter). The inner message (``text``, ``texts``, ``receipt``,
``typing``, ``rotate``, ``rotate_ack``, ``goodbye``) is a :data:`~p2pchat.chat_protocol.SEALED_CONTENT` frame body,
so an observer cannot tell a typing notice from a short text. Counters strictly increase per direction across epochs;
lower or equal → refused (replay/reorder), a jump → reported as missing frames. A ``box`` that is a writable view
(a frame the node's reader received into its own buffer, :meth:`~p2pchat.chat_protocol.CHAT` ``.decode_buffer``) is
decrypted in place: the caller gives that buffer to the channel.

Delivery receipts are cumulative: one ``receipt{ids}`` acknowledges every text that arrived in one burst. The
IO layer passes ``more_buffered=True`` to :meth:`Channel.receive` while it already holds further complete
frames from the peer; the ids of texts are then collected and the receipt comes with the first ``receive`` whose
``more_buffered`` is false (so a lone text is receipted at once), or as soon as :data:`MAX_RECEIPT_IDS` ids are
collected, before a ``goodbye`` either way. ``receive``'s default keeps one receipt per text.

Frames are ``bytes`` or, for sealed frames, :class:`~p2pchat.foundation.codec.BoxedFrame` (a ``bytearray`` the box
was sealed into, written from there without a copy).

Batching: when the sender produces texts faster than they leave, the IO layer queues them (:meth:`Channel.queue_text`)
and seals whatever is queued when it next writes (:meth:`Channel.seal_queued`): one queued text travels as an
ordinary ``text``, several as ``texts`` frames of up to :data:`MAX_BATCH_TEXTS` entries (one seal and one open for
all of them; a text over :data:`MAX_BATCH_TEXT_BYTES` goes alone). Every other kind this side seals (typing,
receipts, rotation, goodbye, ``send_text``) first seals the queued texts, so frames keep the order the user made
them in and counters increase along the wire.

Rotation, per direction (sender S, receiver R), after ``rotate_every`` texts from S under the current epoch:
S sends ``rotate{epoch+1, pub_S}`` (sealed under the current key) and keeps sending under the current key;
R answers ``rotate_ack{epoch+1, pub_R}`` (sealed under R's own sending key; the same again for a repeated
``rotate``), derives
``key', chain' = HKDF(X25519(r, pub_S), salt=chain, info=label|direction|epoch+1)``, erases its ephemeral and
the old chain key, and keeps the old receive key only until S's first frame under the new epoch (its counter is
the switch counter: older frames are refused by the counter check); S derives the same on the ack, erases its
ephemeral and old keys, and switches. The two directions rotate independently, so both sides rotating at once
needs no tie-break. While S waits for the ack it goes on sealing texts under the old key, at most
``rotate_every`` more (:meth:`Channel._epoch_cap`), so a rotation does not drain the pipeline; later texts stay
queued and go out under the new key. R refuses a second ``rotate`` before the switch (it keeps at most one old
epoch) and a text frame that arrives when :data:`~p2pchat.chat_protocol.MAX_ROTATE_EVERY` texts already came
under one epoch (the interval is fixed by the protocol: a sender picks ``rotate_every`` between 1 and that
maximum).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

from p2pchat.chat_protocol import (
    CHAT,
    DIRECTION_I2R,
    DIRECTION_R2I,
    FILE_TYPES,
    MAX_BATCH_TEXT_BYTES,
    MAX_BATCH_TEXTS,
    MAX_COUNTER,
    MAX_EPOCH,
    MAX_RECEIPT_IDS,
    MAX_ROTATE_EVERY,
    MAX_TEXT_BYTES,
    PAD_OPS,
    SMP_KINDS,
    Send,
    decode_inner,
    padded_parts,
    sealed_aad,
    sealed_frame,
    sealed_nonce,
    unpad,
)
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import BODY_BUFFER, BoxedFrame, Frame, Message
from p2pchat.foundation.errors import CryptoError, FrameError, ProtocolError, UserError
from p2pchat.handshake import EphemeralLike, Established

RATCHET_INFO = b"p2pchat/chat-ratchet/v1"
DEFAULT_ROTATE_EVERY = 10
MAX_SENT_AT = 1e11        # seconds since 1970: year ~5100; later (or NaN/inf) send times are refused
MAX_TEXT_ID = 2**63 - 1
MAX_REFUSED = 3             # refused frames a session survives (the third ends it): TCP never loses or repeats
ROTATE_ACK_TIMEOUT = 10.0   # seconds to wait for a rotate_ack before sending the rotate again
ROTATE_TRIES = 3            # rotate frames sent for one rotation before the session is ended


class ChannelError(UserError):
    """Something this side asked the channel cannot do (message too long, chat already closed)."""


# --- events ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Text:
    msg_id: int
    text: str
    sent_at: float                      # the sender's clock (seconds since the epoch), as it claims
    received_at: float | None = None    # the ``now`` given to ``receive``


@dataclass(frozen=True)
class Receipt:
    msg_id: int


@dataclass(frozen=True)
class Typing:
    typing: bool


@dataclass(frozen=True)
class Rotated:
    epoch: int
    direction: str      # "send" or "receive"


@dataclass(frozen=True)
class Goodbye:
    reason: str


@dataclass(frozen=True)
class Refused:
    kind: str           # tampered | replayed | missing | malformed | unexpected
    reason: str


@dataclass(frozen=True)
class FileMessage:
    """A ``file_*`` message for the transfer core (:mod:`p2pchat.transfer`); its fields are schema-checked."""

    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Abort:
    reason: str                     # our own sentence: never text from the network
    connection_lost: bool = False   # an unauthenticated error frame arrived: nothing more can be sent


@dataclass(frozen=True)
class SmpFrame:
    """A message of the shared-secret check (p2pchat/smp.py), authentic and in order; its checks are smp's."""

    kind: str                       # smp1 .. smp4, smp_abort
    fields: dict[str, Any]


@dataclass(frozen=True)
class PadControl:
    """One-time-pad mode (issue 17): the peer's ``pad_mode`` op (one of ``PAD_OPS``) about pad ``pad_id``."""
    op: str
    pad_id: bytes


@dataclass(frozen=True)
class PadText:
    """One-time-pad mode (issue 17): a text whose body is a pad frame, for :mod:`p2pchat.pad_mode` to open."""
    msg_id: int
    box: bytes
    sent_at: float
    received_at: float | None = None


@dataclass(frozen=True)
class GroupFrame:
    """[groups, issue 18] A group frame from the peer; its body is checked by :mod:`p2pchat.groups`."""

    body: bytes


ChEvent = (Send | Text | Receipt | Typing | Rotated | Goodbye | Refused | FileMessage | Abort | SmpFrame | PadControl
           | PadText | GroupFrame)


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (the limits count bytes); cheap for the texts that cannot be over a limit."""
    if len(text) * 4 <= MAX_TEXT_BYTES:
        return len(text) * 4       # an upper bound is enough below the limit
    if text.isascii():             # a flag of the string, no pass over it: one byte a character
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


# --- key schedule --------------------------------------------------------------------------------------------

def ratchet(shared: bytes, chain: bytes, direction: bytes, epoch: int) -> tuple[bytes, bytes]:
    """Next (key, chain key) of one direction: HKDF-SHA256(ikm=shared, salt=chain,
    info=``p2pchat/chat-ratchet/v1`` | direction | epoch (u32)) → 64 bytes split in two."""
    key, next_chain = crypto.hkdf(shared, chain, RATCHET_INFO + direction + struct.pack(">I", epoch),
                                  crypto.AES_KEY_LEN, count=2)
    return key, next_chain


class _SendSide:
    """Our sending direction: current key and chain, next counter, a rotation in progress."""

    def __init__(self, direction: bytes, key: bytes, chain: bytes) -> None:
        self.direction = direction
        self.epoch = 0
        self.key: bytes | None = key
        self.chain: bytes | None = chain
        self.counter = 0                    # next counter to use
        self.texts_in_epoch = 0
        self.pending: EphemeralLike | None = None   # our half of a rotation awaiting the peer's ack
        self.rotate_tries = 0               # rotate frames sent for the pending rotation
        self.rotate_due: float | None = None     # (IO clock) when the ack is overdue; set by the first poll
        self.last_ack: tuple[int, bytes] | None = None   # the ack that completed the last rotation

    def wipe(self) -> None:
        self.key = self.chain = None
        if self.pending is not None:
            self.pending.erase()
            self.pending = None


class _RecvSide:
    """The peer's sending direction: current key, the next epoch's key once agreed, last counter seen."""

    def __init__(self, direction: bytes, key: bytes, chain: bytes) -> None:
        self.direction = direction
        self.epoch = 0
        self.key: bytes | None = key
        self.chain: bytes | None = chain
        self.next_key: bytes | None = None
        self.last_counter = -1
        self.last_text_id = 0
        self.texts_in_epoch = 0
        self.rotation: tuple[int, bytes, bytes] | None = None   # (epoch, peer's half, our half) of the answer
        self.answers = 0                    # rotate_ack frames sent for that rotation (at most ROTATE_TRIES)

    def wipe(self) -> None:
        self.key = self.chain = self.next_key = None


class SealJob:
    """A frame whose counter, epoch and key are taken (in order, by the channel) and whose box is not sealed yet:
    :meth:`seal` does the AES-GCM pass. :meth:`Channel.seal_queued` with ``later`` returns the frames of long texts
    this way, so an IO layer can seal a megabyte outside the lock that guards the channel (the user's thread and
    the reader need not wait for it); it must still write frames in the order the channel made them."""

    __slots__ = ("_aad", "_key", "_nonce", "_plain", "frame")

    def __init__(self, frame: BoxedFrame, key: bytes, nonce: bytes, aad: bytes,
                 plain: list[bytes | memoryview]) -> None:
        self.frame = frame        # header written; the box is zeros until sealed
        self._key, self._nonce, self._aad, self._plain = key, nonce, aad, plain

    def seal(self) -> BoxedFrame:
        """The frame, its box sealed (once; the key and plaintext are let go)."""
        if self._plain:
            with memoryview(self.frame) as view:
                crypto.seal_into(self._key, self._nonce, self._plain, self._aad, view[self.frame.box_at:])
            self._plain, self._key = [], b""
        return self.frame

    def __len__(self) -> int:
        return len(self.frame)


class Channel:
    """One side of an established chat session; see the module docstring."""

    def __init__(self, est: Established, *, rotate_every: int = DEFAULT_ROTATE_EVERY,
                 ephemeral_factory: Callable[[], EphemeralLike] = crypto.EphemeralKey,
                 max_refused: int = MAX_REFUSED, seal_held: bool = True) -> None:
        """Takes over ``est``'s keys (they are blanked in ``est``). ``rotate_every``: texts per direction and
        epoch before that direction's key is rotated (1 to ``MAX_ROTATE_EVERY``). ``max_refused``: refused frames
        that end the session (tests of single refusals raise it). ``seal_held``: the texts a rotation held back
        are sealed when its ack arrives (``Send`` events of that ``receive``); False leaves them queued for the
        next :meth:`seal_queued` (the node's writer seals them as the wire takes them)."""
        if not 1 <= rotate_every <= MAX_ROTATE_EVERY:
            raise ValueError(f"rotate_every must be between 1 and {MAX_ROTATE_EVERY}")
        if not est.send_key or not est.recv_key:
            raise ValueError("these session keys were already taken by another Channel")
        self.rotate_every = rotate_every
        self.seal_held = seal_held
        self.session_id = est.transcript_hash
        self.initiator = est.initiator
        self._ephemeral_factory = ephemeral_factory
        mine, theirs = (DIRECTION_I2R, DIRECTION_R2I) if est.initiator else (DIRECTION_R2I, DIRECTION_I2R)
        self._send = _SendSide(mine, est.send_key, est.send_chain)
        self._recv = _RecvSide(theirs, est.recv_key, est.recv_chain)
        est.wipe_keys()
        self._next_text_id = 1
        self._unreceipted: list[int] = []    # ids of texts received whose receipt has not been sealed yet
        self._queued: list[tuple[int, float, str, int]] = []   # (id, sent_at, text, UTF-8 size) not sealed yet
        self._queued_bytes = 0       # the sum of their sizes
        self._typing = False
        self._refused = 0            # frames refused so far (only the first is reported)
        self.max_refused = max_refused
        self._refused_since_accept = 0
        self.closed = False          # we said goodbye
        self.peer_closed = False     # the peer said goodbye

    # --- state for the UI ----------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The key epoch we send under."""
        return self._send.epoch

    send_epoch = epoch

    @property
    def recv_epoch(self) -> int:
        return self._recv.epoch

    @property
    def until_rotation(self) -> int:
        """Texts we send before our sending key starts rotating (0 while a rotation is under way)."""
        if self._send.pending is not None:
            return 0
        return max(0, self.rotate_every - self._send.texts_in_epoch - len(self._queued))

    @property
    def refused_count(self) -> int:
        """Frames refused in this session (only the first was reported)."""
        return self._refused

    @property
    def rotating(self) -> bool:
        return self._send.pending is not None

    @property
    def texts_sent(self) -> int:
        return self._next_text_id - 1

    @property
    def queued(self) -> int:
        """Texts queued with :meth:`queue_text` and not sealed yet."""
        return len(self._queued)

    @property
    def queued_bytes(self) -> int:
        """UTF-8 bytes of the texts queued and not sealed yet (also while a rotation holds them back)."""
        return self._queued_bytes

    # --- sending ----------------------------------------------------------------------------------------

    def send_text(self, text: str, now: float) -> tuple[int, list[Frame]]:
        """Encrypt a message; returns its id (for the delivery receipt) and the frames to send in order (the
        texts queued before it come first)."""
        msg_id = self.queue_text(text, now)
        return msg_id, self.seal_queued()

    def queue_text(self, text: str, now: float) -> int:
        """Check and number a message like :meth:`send_text` (same errors) without sealing it yet; returns its
        id. The next :meth:`seal_queued` (or any other frame this side seals) seals it."""
        self._check_open()
        surrogates = False
        if text.isascii():     # no encoding pass (1 MiB texts): an ASCII string's UTF-8 is its characters
            size = len(text)
        else:
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                size, surrogates = len(text.encode("utf-8", "surrogatepass")), True
        if size > MAX_TEXT_BYTES:
            raise ChannelError(f"the message is {size:,} bytes; at most {MAX_TEXT_BYTES:,} bytes fit in one message")
        if surrogates:
            raise ChannelError("the message contains characters that cannot be sent (lone surrogates)")
        if not 0.0 <= now < MAX_SENT_AT:
            raise ValueError(f"send time {now!r} is not a time in seconds since 1970")
        if self._send.key is None:
            raise ChannelError("this chat's keys are gone; nothing more can be sent")
        if self._send.epoch >= MAX_EPOCH and self._send.texts_in_epoch + len(self._queued) >= MAX_ROTATE_EVERY:
            # the last epoch cannot rotate, and the receiver takes no more than MAX_ROTATE_EVERY texts under it
            raise ChannelError("this session has used up its key epochs; reconnect")
        msg_id = self._next_text_id
        self._next_text_id += 1
        self._queued.append((msg_id, float(now), text, size))
        self._queued_bytes += size
        self._typing = False  # a text ends the typing state: the peer's UI clears its indicator on arrival
        return msg_id

    @overload
    def seal_queued(self, max_bytes: int | None = None, *, later: Literal[False] = False) -> list[Frame]: ...

    @overload
    def seal_queued(self, max_bytes: int | None = None, *, later: bool) -> list[Frame | SealJob]: ...

    def seal_queued(self, max_bytes: int | None = None, *, later: bool = False) -> list[Frame] | list[Frame | SealJob]:
        """Seal the queued texts, in order: one alone as ``text``, several as ``texts`` batches (at most
        :data:`MAX_BATCH_TEXTS` entries and :data:`MAX_BATCH_TEXT_BYTES` of text each; a larger text alone); the
        frame that crosses the rotation threshold is followed by a ``rotate`` frame. While the rotation waits for
        its ack, texts go on under the current key up to :meth:`_epoch_cap`; the rest stay queued until the ack.
        ``max_bytes``: stop once the frames made reach this size (at least one frame is made), the rest staying
        queued — a writer seals what the wire takes next, so the first megabyte text leaves while the next is
        sealed instead of after every queued one was. ``later``: a frame of texts whose box is over
        :data:`~p2pchat.foundation.codec.BODY_BUFFER` comes as a :class:`SealJob` (sealed by the caller, in order).
        ``[]`` when nothing can be sealed."""
        side, queued = self._send, self._queued
        frames: list[Frame | SealJob] = []
        start = made = 0
        while (start < len(queued) and side.texts_in_epoch < (cap := self._epoch_cap())
               and (max_bytes is None or made < max_bytes)):
            # a batch may cross rotate_every (the rotation starts after it), never the cap while the ack travels
            most = MAX_BATCH_TEXTS if side.pending is None else min(MAX_BATCH_TEXTS, cap - side.texts_in_epoch)
            end, size = start + 1, queued[start][3]
            while end < len(queued) and end - start < most and size + queued[end][3] <= MAX_BATCH_TEXT_BYTES:
                size += queued[end][3]
                end += 1
            if end - start == 1:
                msg_id, sent_at, text, _ = queued[start]
                job = self._reserve("text", id=msg_id, sent_at=sent_at, text=text)
            else:
                job = self._reserve("texts", texts=[[i, t, x] for i, t, x, _ in queued[start:end]])
            frames.append(job if later and job.frame.box_len > BODY_BUFFER else job.seal())
            made += len(job)
            side.texts_in_epoch += end - start
            start = end
            if side.pending is None and side.texts_in_epoch >= self.rotate_every and side.epoch < MAX_EPOCH:
                frames.append(self._begin_rotation())
        if start:
            self._queued = queued[start:]
            self._queued_bytes -= sum(entry[3] for entry in queued[:start])
        return frames

    def _epoch_cap(self) -> int:
        """Texts this side may seal under its current epoch: ``rotate_every`` (the rotation starts there), and
        while the ``rotate_ack`` travels up to ``rotate_every`` more — never past the protocol's
        ``MAX_ROTATE_EVERY`` per epoch, which the receiver enforces. A peer that never answers therefore gets at
        most that many texts under the old key; the rest wait for the new one (or for the timer to end the
        session). At the last epoch (nothing can rotate any more) the cap is ``MAX_ROTATE_EVERY``, the receiver's
        limit; :meth:`queue_text` refuses texts beyond it (the session must reconnect, as when the counter runs
        out)."""
        side = self._send
        if side.epoch >= MAX_EPOCH:
            return MAX_ROTATE_EVERY
        if side.pending is None:
            return self.rotate_every
        return min(2 * self.rotate_every, MAX_ROTATE_EVERY)

    def send_typing(self, typing: bool) -> list[Frame]:
        """Tell the peer we started/stopped typing. Only a change of state makes a frame; the UI must also
        debounce (start after a pause-free burst, stop after a few idle seconds), never one frame per key."""
        if self.closed or self.peer_closed or typing == self._typing:
            return []
        self._typing = typing
        return self._seal_after_queued("typing", on=typing)

    def send_goodbye(self, reason: str = "") -> list[Frame]:
        """Close the chat politely; returns ``[]`` if goodbye was already said."""
        if self.closed:
            return []
        frames = self.take_receipt()       # texts that arrived before our goodbye still get their receipt
        frames += self._seal_after_queued("goodbye", reason=reason[:1000])   # queued texts go out first
        self.closed = True
        return frames

    def send_file_message(self, kind: str, fields: dict[str, Any]) -> list[Frame]:
        """Seal one ``file_*`` message (after the queued texts); ``[]`` once either side said goodbye."""
        if kind not in FILE_TYPES:
            raise ValueError(f"not a file message: {kind}")
        if self.closed or self.peer_closed:
            return []
        return self._seal_after_queued(kind, **fields)

    def send_smp(self, kind: str, fields: dict[str, Any]) -> list[Frame]:
        """A message of the shared-secret check (``smp1`` .. ``smp4``, ``smp_abort``), sealed like a text."""
        if kind not in SMP_KINDS:
            raise ValueError(f"{kind} is not a shared-secret check message")
        self._check_open()
        return self._seal_after_queued(kind, **fields)

    def send_group(self, body: bytes) -> list[Frame]:
        """[groups, issue 18] Seal one group frame (after the queued texts)."""
        self._check_open()
        return self._seal_after_queued("group", body=body)

    def take_receipt(self) -> list[Frame]:
        """The receipt frame for every text received but not yet receipted (``[]`` if there is none)."""
        if not self._unreceipted or self.closed:
            self._unreceipted.clear()
            return []
        ids, self._unreceipted = self._unreceipted, []
        frames = self.seal_queued()
        # One batch of texts adds up to MAX_BATCH_TEXTS ids at once, so a collection may pass the receipt limit.
        for start in range(0, len(ids), MAX_RECEIPT_IDS):
            frames.append(self._seal("receipt", ids=ids[start:start + MAX_RECEIPT_IDS]))
        return frames

    def close(self) -> None:
        """Forget every key (end of session): nothing can be sent or decrypted afterwards."""
        self.closed = self.peer_closed = True
        self._unreceipted.clear()
        self._queued.clear()
        self._queued_bytes = 0
        self._send.wipe()
        self._recv.wipe()

    def _check_open(self) -> None:
        if self.closed:
            raise ChannelError("this chat is closed; nothing more can be sent")
        if self.peer_closed:
            raise ChannelError("the peer has left the chat")

    def _begin_rotation(self) -> BoxedFrame:
        eph = self._ephemeral_factory()
        self._send.pending = eph
        self._send.rotate_tries = 1
        self._send.rotate_due = None
        return self._seal("rotate", epoch=self._send.epoch + 1, pub=eph.public)

    # --- one-time-pad mode (issue 17): the channel carries pad frames and pad-mode ops; p2pchat.pad_mode
    # decides what they mean -----------------------------------------------------------------------------------

    def send_pad_control(self, op: str, pad_id: bytes) -> list[Frame]:
        """A ``pad_mode`` frame (after the queued texts)."""
        self._check_open()
        return self._seal_after_queued("pad_mode", op=op, pad_id=pad_id)

    def send_pad_text(self, box: bytes, now: float) -> tuple[int, list[Frame]]:
        """A text already encrypted with the pad (``box``, a pad frame); it takes the next text id (receipts
        work as for texts). Pad texts do not count towards key rotation: the pad, not the key, protects them."""
        self._check_open()
        msg_id = self._next_text_id
        self._next_text_id += 1
        self._typing = False
        return msg_id, self._seal_after_queued("pad_text", id=msg_id, sent_at=float(now), box=box)

    def _on_pad_text(self, inner: Message, now: float | None) -> list[ChEvent]:
        msg_id, sent_at = inner["id"], inner["sent_at"]
        if not 0.0 <= sent_at < MAX_SENT_AT:
            return [Refused("malformed", f"pad message {msg_id} carries an impossible send time; not shown")]
        if msg_id <= self._recv.last_text_id:
            return [Refused("replayed", f"message {msg_id} arrived a second time; it was not shown again")]
        self._recv.last_text_id = msg_id
        if not self.closed:
            self._unreceipted.append(msg_id)
        return [PadText(msg_id, bytes(inner["box"]), sent_at, now)]

    # --- the timer ------------------------------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """When (on the clock given to :meth:`poll`) :meth:`poll` next has something to do; ``None``: nothing is
        timed, though a rotation that just started is timed from the next :meth:`poll`."""
        return self._send.rotate_due

    def poll(self, now: float) -> list[ChEvent]:
        """The channel's timer; ``now`` is the IO layer's monotonic clock. Call it every few seconds while a
        session is up: a rotation is timed from the first call after it started; past its deadline the
        ``rotate`` goes again, and after :data:`ROTATE_TRIES` unanswered ones the session ends."""
        side = self._send
        if side.pending is None or side.key is None:
            return []
        if side.rotate_due is None:
            side.rotate_due = now + ROTATE_ACK_TIMEOUT
            return []
        if now < side.rotate_due:
            return []
        if side.rotate_tries < ROTATE_TRIES:
            side.rotate_tries += 1
            side.rotate_due = now + ROTATE_ACK_TIMEOUT
            frame = self._seal("rotate", epoch=side.epoch + 1, pub=side.pending.public)
            return [Send(frame)]
        tries = side.rotate_tries
        return self._abort(f"the peer did not acknowledge the rotation of our sending key ({tries} requests, "
                           f"{tries * ROTATE_ACK_TIMEOUT:g} s); the chat was ended so that no message waits "
                           "for ever or goes out under an old key", goodbye="key rotation not acknowledged")

    def _abort(self, reason: str, *, goodbye: str | None = None, error: str | None = None,
               lost: bool = False) -> list[ChEvent]:
        """End the session from inside the channel: an authenticated goodbye (or an ``error`` frame) for the peer
        when there is one to send, then the keys are erased."""
        events: list[ChEvent] = []
        if goodbye is not None and not self.closed and self._send.key is not None:
            self._queued.clear()      # held texts are not sent: the user is told the chat ended
            self._queued_bytes = 0
            events += [Send(frame) for frame in self.send_goodbye(goodbye)]
        if error is not None:
            events.append(Send(CHAT.encode("error", reason=error)))
        self.close()
        return [*events, Abort(reason, lost)]

    def _refuse(self, kind: str, reason: str, *, authentic: bool = False) -> list[ChEvent]:
        """A refused frame: the first is reported, the :data:`MAX_REFUSED`-th ends the session. ``authentic``:
        its counter was used up (malformed content), so it leaves no gap to explain."""
        self._refused += 1
        if not authentic:
            self._refused_since_accept += 1
        if self._refused >= self.max_refused:
            return self._abort(f"{self._refused} altered, replayed or out-of-turn frames were refused; the chat "
                               "was ended (someone on the path is tampering with it, or the peer is broken)",
                               goodbye="too many frames were refused")
        if self._refused == 1:
            return [Refused(kind, f"{reason} (the chat ends if {self.max_refused} frames are refused)")]
        return []

    def refuse(self, kind: str, reason: str) -> list[ChEvent]:
        """A frame this channel took (authentic, in order) that a layer above refused for what the peer put in it
        (a pad text whose one-time MAC fails, a text without the pad in pad mode): counted and coalesced with the
        channel's own refusals, so the first is reported and the :data:`MAX_REFUSED`-th ends the session."""
        if self._send.key is None:
            return []
        return self._refuse(kind, reason, authentic=True)

    def _seal_after_queued(self, type_: str, **fields: Any) -> list[Frame]:
        """The queued texts' frames, then one frame of another kind: the peer sees both in the order made."""
        frames = self.seal_queued()
        frames.append(self._seal(type_, **fields))
        return frames

    def _seal(self, type_: str, **fields: Any) -> BoxedFrame:
        return self._reserve(type_, **fields).seal()

    def _reserve(self, type_: str, **fields: Any) -> SealJob:
        """The next frame with its counter taken, its box still to be sealed (:meth:`SealJob.seal`)."""
        side = self._send
        if side.key is None:
            raise ChannelError("this chat's keys are gone; nothing more can be sent")
        if side.counter > MAX_COUNTER:
            raise ChannelError("this session has used up its message counter; reconnect")
        counter = side.counter
        # sealed from its parts straight into the frame: a 256 KiB file chunk is not copied on the way
        plain = padded_parts(type_, **fields)
        frame, _ = sealed_frame(side.epoch, counter, sum(len(part) for part in plain) + crypto.GCM_TAG_LEN)
        side.counter += 1
        return SealJob(frame, side.key, sealed_nonce(counter),
                       sealed_aad(self.session_id, side.direction, side.epoch, counter), plain)

    # --- receiving --------------------------------------------------------------------------------------

    def receive(self, msg: Message, now: float | None = None, *, more_buffered: bool = False) -> list[ChEvent]:
        """Feed one decoded frame from the peer; returns what to show and what to send. ``now`` (the IO
        layer's clock) is copied into ``Text.received_at``. ``more_buffered``: the IO layer already holds more
        complete frames from the peer, so the delivery receipt may wait for them (see the module docstring)."""
        events = self._receive(msg, now)
        if self._unreceipted and (not more_buffered or len(self._unreceipted) >= MAX_RECEIPT_IDS):
            events += [Send(frame) for frame in self.take_receipt()]
        return events

    def _receive(self, msg: Message, now: float | None) -> list[ChEvent]:
        side = self._recv
        if side.key is None:
            return []       # closed: nothing more is read
        if msg.type == "error":
            # Unauthenticated: the peer closing, or anyone on the path. Its text is not shown.
            self.close()
            return [Abort("the connection was lost (an unauthenticated close arrived; after step 4 only sealed "
                          "frames are believed, so its text is not shown)", connection_lost=True)]
        if msg.type != "sealed":
            return self._abort(f"a '{msg.type}' handshake frame arrived after the handshake finished; the chat was "
                               "ended", error=f"a '{msg.type}' handshake frame arrived after the handshake finished")
        epoch, counter, box = msg["epoch"], msg["counter"], msg["box"]
        if self.peer_closed:
            return self._refuse("unexpected", "a message arrived after the peer said goodbye; it was not shown")
        if counter <= side.last_counter:
            return self._refuse("replayed", f"a message was replayed or arrived out of order (number {counter}, "
                                            f"already at {side.last_counter}); it was not shown")
        if epoch == side.epoch:
            key = side.key
        elif epoch == side.epoch + 1 and side.next_key is not None:
            key = side.next_key
        elif epoch < side.epoch:
            return self._refuse("replayed", f"a message under the erased key epoch {epoch} arrived (a replay?); "
                                            "it was not shown")
        else:
            return self._refuse("unexpected", f"a message under key epoch {epoch}, which was never agreed, "
                                              "arrived; it was not shown")
        aad = sealed_aad(self.session_id, side.direction, epoch, counter)
        try:
            if isinstance(box, memoryview) and not box.readonly:
                # a frame received into its own buffer (CHAT.decode_buffer): decrypted where it lies
                plain: bytes | memoryview = crypto.open_in_place(key, sealed_nonce(counter), box, aad)
            else:
                plain = crypto.open_sealed(key, sealed_nonce(counter), box, aad)
        except CryptoError:
            return self._refuse("tampered", "a message failed authentication: it was altered on the way or "
                                            "forged; it was not shown")
        # Authentic from here on: the counter is used up even if the content turns out malformed.
        events: list[ChEvent] = []
        # frames refused since the last authentic one explain that many missing counters (reported already)
        missing = counter - side.last_counter - 1 - self._refused_since_accept
        self._refused_since_accept = 0
        if missing > 0:
            events.append(Refused("missing", f"{missing} message{'s' if missing > 1 else ''} from the peer "
                                             "never arrived (dropped on the way, or refused above)"))
        side.last_counter = counter
        if epoch != side.epoch:
            side.key, side.next_key, side.epoch = side.next_key, None, epoch   # the old key is dropped here
            side.texts_in_epoch, side.rotation = 0, None
            events.append(Rotated(epoch, "receive"))
        try:
            inner = decode_inner(unpad(plain))     # a file chunk's data stays a view of the plaintext
        except (FrameError, ProtocolError) as exc:
            return events + self._refuse("malformed", f"the peer sent a malformed message ({exc}); it was not "
                                                      "shown", authentic=True)
        out = self._dispatch(inner, now)
        if any(isinstance(ev, Refused) and ev.kind != "missing" for ev in out):
            # a refusal from the content checks: counted and coalesced like the others
            first = next(ev for ev in out if isinstance(ev, Refused))
            return events + self._refuse(first.kind, first.reason, authentic=True)
        return events + out

    def _dispatch(self, inner: Message, now: float | None) -> list[ChEvent]:
        kind = inner.type
        if kind == "text":
            return self._on_text(inner, now)
        if kind == "texts":
            return self._on_texts(inner["texts"], now)
        if kind == "receipt":
            ids = dict.fromkeys(inner["ids"])      # a duplicate id is harmless: one Receipt per message
            unsent = [i for i in ids if i >= self._next_text_id or self._is_queued(i)]
            if unsent:
                return [Refused("unexpected", f"a receipt for message {unsent[0]}, which was not sent (never, or "
                                              "not yet); it was refused")]
            return [Receipt(i) for i in ids]
        if kind == "typing":
            return [Typing(inner["on"])]
        if kind in FILE_TYPES:
            return [FileMessage(kind, inner.fields)]
        if kind == "rotate":
            return self._on_rotate(inner["epoch"], inner["pub"])
        if kind == "rotate_ack":
            return self._on_rotate_ack(inner["epoch"], inner["pub"])
        if kind in SMP_KINDS:       # the shared-secret check
            return [SmpFrame(kind, dict(inner.fields))]
        if kind == "pad_mode":          # issue 17
            if inner["op"] not in PAD_OPS:
                return [Refused("malformed", "the peer sent an unknown pad-mode request; ignored")]
            return [PadControl(inner["op"], bytes(inner["pad_id"]))]
        if kind == "pad_text":          # issue 17
            return self._on_pad_text(inner, now)
        if kind == "group":                        # [groups, issue 18]
            return [GroupFrame(bytes(inner["body"]))]
        # The peer leaves: receipts for its last texts go out before the session ends.
        events: list[ChEvent] = [Send(frame) for frame in self.take_receipt()]
        self.peer_closed = True
        return [*events, Goodbye(inner["reason"])]

    def _is_queued(self, msg_id: int) -> bool:
        """Whether our text ``msg_id`` is still queued (numbered, not sealed): a receipt for it cannot be true."""
        at = bisect.bisect_left(self._queued, (msg_id,))     # queued ids increase
        return at < len(self._queued) and self._queued[at][0] == msg_id

    def _texts_allowed(self) -> list[ChEvent]:
        """Rotation is enforced by the receiver: no text frame once :data:`MAX_ROTATE_EVERY` texts came under one
        epoch (whether or not its ``rotate`` came: texts sealed while the ``rotate_ack`` travels count too)."""
        side = self._recv
        if side.texts_in_epoch >= MAX_ROTATE_EVERY:
            return [Refused("unexpected", f"the peer sent more than {MAX_ROTATE_EVERY} messages under key epoch "
                                          f"{side.epoch} without rotating its key (the protocol's limit per key); "
                                          "not shown")]
        return []

    def _on_text(self, inner: Message, now: float | None) -> list[ChEvent]:
        msg_id = inner["id"]
        sent_at = inner["sent_at"]
        if not isinstance(sent_at, float) or not 0.0 <= sent_at < MAX_SENT_AT:
            # an integer, NaN, an infinity or an absurd time (it would break time formatting)
            return [Refused("malformed", f"message {msg_id} carries an impossible send time; it was not shown")]
        if utf8_size(inner["text"]) > MAX_TEXT_BYTES:
            return [Refused("malformed", f"message {msg_id} is longer than {MAX_TEXT_BYTES:,} bytes of UTF-8; "
                                         "it was not shown")]
        if msg_id <= self._recv.last_text_id:
            return [Refused("replayed", f"message {msg_id} arrived a second time; it was not shown again")]
        if refused := self._texts_allowed():
            return refused
        self._recv.last_text_id = msg_id
        self._recv.texts_in_epoch += 1
        if not self.closed:
            self._unreceipted.append(msg_id)     # sealed by receive() once the burst is over
        return [Text(msg_id, inner["text"], sent_at, now)]

    def _on_texts(self, entries: list[list[Any]], now: float | None) -> list[ChEvent]:
        """A batch: every entry is checked before any is shown, so a bad batch shows nothing."""
        texts: list[Text] = []
        last = self._recv.last_text_id
        for n, entry in enumerate(entries, start=1):
            msg_id, sent_at, text = entry
            if not (isinstance(msg_id, int) and not isinstance(msg_id, bool) and 1 <= msg_id <= MAX_TEXT_ID
                    and isinstance(sent_at, float) and isinstance(text, str) and utf8_size(text) <= MAX_TEXT_BYTES):
                return [Refused("malformed", f"the peer sent a batch of messages whose entry {n} is not "
                                             "[number, float time, text of at most 1 MiB]; none of it was shown")]
            if not 0.0 <= sent_at < MAX_SENT_AT:
                return [Refused("malformed", f"message {msg_id} in a batch carries an impossible send time; "
                                             "none of the batch was shown")]
            if msg_id <= last:
                if n == 1:
                    return [Refused("replayed", f"message {msg_id} arrived a second time; the batch it came in "
                                                "was not shown again")]
                return [Refused("malformed", f"the peer sent a batch of messages numbered out of order ({last} "
                                             f"then {msg_id}); none of it was shown")]
            last = msg_id
            texts.append(Text(msg_id, text, float(sent_at), now))
        if refused := self._texts_allowed():
            return refused
        self._recv.last_text_id = last
        self._recv.texts_in_epoch += len(texts)
        if not self.closed:
            self._unreceipted += [t.msg_id for t in texts]
        return list(texts)

    def _on_rotate(self, epoch: int, peer_pub: bytes) -> list[ChEvent]:
        side = self._recv
        if side.rotation is not None and side.rotation[:2] == (epoch, peer_pub):
            # the sender asked again (our ack was late or lost): the same answer again
            if side.answers >= ROTATE_TRIES:
                # an honest sender asks ROTATE_TRIES times at most: a loop of requests is not answered frame for frame
                return [Refused("unexpected", f"the peer asked to rotate to key epoch {epoch} more than "
                                              f"{ROTATE_TRIES} times; ignored")]
            if self.closed:
                return []
            side.answers += 1
            return [Send(frame) for frame in self._seal_after_queued("rotate_ack", epoch=epoch,
                                                                     pub=side.rotation[2])]
        if epoch != side.epoch + 1 or side.next_key is not None or side.chain is None:
            return [Refused("unexpected", f"the peer asked to rotate to key epoch {epoch} out of turn; ignored")]
        eph = self._ephemeral_factory()
        try:
            shared = eph.agree(peer_pub)
        except CryptoError as exc:
            return [Refused("malformed", f"the peer's rotation key is unusable ({exc})")]
        finally:
            eph.erase()
        side.next_key, side.chain = ratchet(shared, side.chain, side.direction, epoch)
        side.rotation, side.answers = (epoch, peer_pub, eph.public), 1
        if self.closed:
            return []
        return [Send(frame) for frame in self._seal_after_queued("rotate_ack", epoch=epoch, pub=eph.public)]

    def _on_rotate_ack(self, epoch: int, peer_pub: bytes) -> list[ChEvent]:
        side = self._send
        eph = side.pending
        if side.last_ack == (epoch, peer_pub):
            # The answer to a repeated rotate, after the first answer already switched keys — also when the next
            # rotation is already under way (rotate_every 1: spec review 2026-12-07, protocol.md §5.5).
            return []
        if eph is None or epoch != side.epoch + 1 or side.chain is None:
            return [Refused("unexpected", f"the peer acknowledged a key rotation to epoch {epoch} that was never "
                                          "asked for; ignored")]
        try:
            shared = eph.agree(peer_pub)
        except CryptoError as exc:
            return [Refused("malformed", f"the peer's rotation key is unusable ({exc})")]
        finally:
            eph.erase()
            side.pending = None
        side.key, side.chain = ratchet(shared, side.chain, side.direction, epoch)
        side.epoch = epoch
        side.texts_in_epoch = 0
        side.rotate_due, side.rotate_tries, side.last_ack = None, 0, (epoch, peer_pub)
        # the texts held while the key rotated go out now, under the new key (or with the next seal_queued)
        return [Rotated(epoch, "send"), *(Send(frame) for frame in (self.seal_queued() if self.seal_held else []))]


__all__ = [
    "MAX_BATCH_TEXTS", "MAX_RECEIPT_IDS", "MAX_REFUSED", "ROTATE_ACK_TIMEOUT", "ROTATE_TRIES", "Abort", "ChEvent",
    "Channel", "ChannelError", "FileMessage", "Goodbye", "Receipt", "Refused", "Rotated", "Send", "SmpFrame", "Text",
    "Typing",
    "ratchet", "utf8_size",
]
__all__ += ["PadControl", "PadText"]     # issue 17
