"""Long texts in the channel and the node's writer: sealed one write's worth at a time, the GCM pass outside the
session lock (:class:`~p2pchat.channel.SealJob`), texts a rotation held back sealed by the writer, and a sealed
frame written from the buffer it was sealed into."""

from __future__ import annotations

import threading

from p2pchat import chat_protocol as cp
from p2pchat.channel import Channel, Rotated, SealJob, Text
from p2pchat.chat_protocol import CHAT, MAX_TEXT_BYTES, Send
from p2pchat.foundation.codec import BODY_BUFFER, BoxedFrame
from p2pchat.session import Session
from p2pchat.session_writer import COALESCE_BYTES, QueuedTexts, SessionWriter
from tests.p2pchat.handshake_pair import decode
from tests.p2pchat.test_channel import synthetic_established

BIG = MAX_TEXT_BYTES


def _pair(rotate_every: int = 1000, seal_held: bool = True) -> tuple[Channel, Channel]:
    ei, er = synthetic_established()
    return Channel(ei, rotate_every=rotate_every, seal_held=seal_held), Channel(er, rotate_every=rotate_every)


def _receive(receiver: Channel, writes: list[bytes]) -> list[object]:
    """What ``receiver`` makes of the byte stream ``writes`` (frames, or writes that join several)."""
    reader = CHAT.reader()
    reader.limit = cp.MAX_FRAME
    return [ev for write in writes for msg in reader.feed(bytes(write)) for ev in receiver.receive(msg)]


def _texts(receiver: Channel, writes: list[bytes]) -> list[str]:
    return [ev.text for ev in _receive(receiver, writes) if isinstance(ev, Text)]


def test_seal_queued_with_a_size_stops_after_the_frame_that_reaches_it_and_the_rest_follow_in_order():
    a, b = _pair()
    texts = [c * BIG for c in "abc"] + ["short"]
    for i, text in enumerate(texts):
        a.queue_text(text, 1.0 + i)
    first = a.seal_queued(COALESCE_BYTES)
    assert len(first) == 1 and a.queued == 3 and a.queued_bytes == 2 * BIG + 5
    second = a.seal_queued(1)                 # at least one frame, whatever the size asked for
    assert len(second) == 1 and a.queued == 2
    rest = a.seal_queued()
    assert a.queued == 0 and a.queued_bytes == 0
    assert _texts(b, first + second + rest) == texts


def test_a_long_text_sealed_later_is_byte_for_byte_a_sealed_frame_and_short_ones_are_sealed_at_once():
    a, b = _pair()
    a.queue_text("x" * BIG, 1.0)
    a.queue_text("hi", 2.0)
    made = a.seal_queued(later=True)
    job, short = made
    assert isinstance(job, SealJob) and not isinstance(short, SealJob)
    assert isinstance(job.frame, BoxedFrame) and job.frame.box_len > BODY_BUFFER
    assert not any(job.frame[job.frame.box_at:job.frame.box_at + 64])       # not sealed yet
    frame = job.seal()
    assert frame is job.frame and job.seal() is frame                         # sealed once, in its own buffer
    # the counters were taken in order when the frames were made: the peer reads them in that order
    assert _texts(b, [frame, short]) == ["x" * BIG, "hi"]


def test_a_long_frame_sealed_later_in_the_wrong_order_is_refused_by_the_peer():
    """Sealing later never reorders counters: whoever seals must still write in the order the channel made."""
    a, b = _pair()
    a.queue_text("x" * BIG, 1.0)
    a.queue_text("hi", 2.0)
    job, short = a.seal_queued(later=True)
    assert isinstance(job, SealJob)
    assert _texts(b, [short]) == ["hi"]
    assert _texts(b, [job.seal()]) == []       # an older counter: refused as a replay


def test_without_seal_held_the_texts_a_rotation_held_back_wait_for_the_next_seal_under_the_new_key():
    a, b = _pair(rotate_every=1, seal_held=False)
    a.queue_text("one", 1.0)
    frames = a.seal_queued()                   # the text, then `rotate`
    a.queue_text("two", 2.0)
    frames += a.seal_queued()                  # one more under the old key while the ack travels
    a.queue_text("three", 3.0)
    assert a.seal_queued() == [] and a.queued == 1
    acks: list[bytes] = []
    for frame in frames:
        acks += [ev.frame for ev in b.receive(decode(bytes(frame))) if isinstance(ev, Send)]
    events = [ev for ack in acks for ev in a.receive(decode(bytes(ack)))]
    assert Rotated(1, "send") in events and not any(isinstance(ev, Send) for ev in events)
    assert a.queued == 1                       # held for the writer
    later = a.seal_queued()
    assert decode(bytes(later[0]))["epoch"] == 1 and _texts(b, later) == ["three"]


def _held(lock: threading.RLock) -> bool:
    """Whether some thread holds ``lock`` (asked from another thread: the lock is reentrant)."""
    free: list[bool] = []

    def probe() -> None:
        if lock.acquire(blocking=False):
            lock.release()
            free.append(True)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return not free


class _Link:
    """Takes every write at once and keeps a copy; records whether the session lock was held meanwhile."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.writes: list[bytes] = []
        self.locked_while_writing: list[bool] = []

    def send_nowait(self, data: bytes) -> int:
        self.locked_while_writing.append(_held(self.session.lock))
        self.writes.append(bytes(data))
        return len(data)


def _writer(channel: Channel) -> tuple[Session, SessionWriter, _Link]:
    session = Session("s1", "bob", incoming=False)
    session.channel = channel
    writer = SessionWriter(session)
    link = _Link(session)
    session.link = link  # type: ignore[assignment]
    return session, writer, link


def _queue(writer: SessionWriter, channel: Channel, text: str) -> None:
    writer.before_text()
    channel.queue_text(text, 1.0)
    writer.queue_text()


def test_the_writer_seals_queued_long_texts_one_write_at_a_time_and_the_peer_gets_them_in_order():
    a, b = _pair()
    _, writer, link = _writer(a)
    texts = [c * BIG for c in "pqrs"]
    for text in texts:
        _queue(writer, a, text)
    with writer.session.lock:
        first = writer._next_chunk()
        # only the first text was taken; its placeholder stays first in line for the others
        assert isinstance(first, SealJob) and a.queued == 3
        assert isinstance(writer.outbox[0], QueuedTexts) and writer.outbox[0] is writer.text_marker
    assert isinstance(first, SealJob)
    writes = [first.seal()]
    writer.kick()
    writes += link.writes
    assert len(writes) == 4 and writer.pending_bytes == 0 and not writer.outbox
    assert _texts(b, writes) == texts


def test_the_writer_seals_a_long_text_outside_the_session_lock():
    """The GCM pass over a megabyte runs after the lock is let go, so the user's next send_text and the reader's
    receipts do not wait for it."""
    a, b = _pair()
    session, writer, link = _writer(a)
    sealed_under: list[bool] = []
    seal = SealJob.seal

    def watching(job: SealJob) -> BoxedFrame:
        sealed_under.append(_held(session.lock))
        return seal(job)

    SealJob.seal = watching  # type: ignore[method-assign]
    try:
        _queue(writer, a, "z" * BIG)
        writer.kick()
    finally:
        SealJob.seal = seal  # type: ignore[method-assign]
    assert sealed_under == [False] and link.locked_while_writing == [False]
    assert _texts(b, link.writes) == ["z" * BIG]


def test_texts_a_rotation_held_back_get_a_placeholder_when_it_is_acknowledged():
    a, b = _pair(rotate_every=1, seal_held=False)
    _, writer, link = _writer(a)
    for text in ("one", "two", "three"):      # one, rotate; two under the old key meanwhile; three waits
        _queue(writer, a, text)
        writer.kick()
    assert a.queued == 1 and writer.text_marker is None and not writer.outbox
    acks = [ev.frame for ev in _receive(b, link.writes) if isinstance(ev, Send)]
    assert Rotated(1, "send") in _receive(a, acks)
    writer.texts_released()
    assert isinstance(writer.outbox[-1], QueuedTexts)
    link.writes.clear()
    writer.kick()
    assert _texts(b, link.writes) == ["three"]


def test_a_frame_is_sealed_into_a_bytearray_that_says_where_its_box_starts():
    """No copy into ``bytes`` after sealing: the frame written is the buffer the box was sealed into."""
    a, b = _pair()
    a.queue_text("y" * BIG, 1.0)
    (frame,) = a.seal_queued()
    assert isinstance(frame, BoxedFrame) and isinstance(frame, bytearray)
    assert frame.box_len == len(decode(bytes(frame))["box"]) and frame[frame.box_at - 5] == 0xc6   # bin 32 header
    assert _texts(b, [frame]) == ["y" * BIG]


def test_the_padding_of_a_long_message_is_a_view_of_the_zero_block_not_a_copy():
    parts = cp.padded_parts("text", id=1, sent_at=1.0, text="w" * 70_000)
    assert isinstance(parts[-1], memoryview) and parts[-1].obj is cp._ZEROS and not any(parts[-1])


def test_several_threads_sending_long_texts_through_one_writer_keep_counters_in_wire_order():
    """The user's thread queues while a pool thread and the reader both write (kick): whoever writes, frames
    leave in counter order, so the peer refuses none."""
    a, b = _pair()
    session, writer, link = _writer(a)
    texts = [f"{n:04d}" + "t" * (200_000 - 4) for n in range(24)]

    def send(chunk: list[str]) -> None:
        for text in chunk:
            with session.lock:
                _queue(writer, a, text)
            writer.kick()

    threads = [threading.Thread(target=send, args=(texts[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.kick()
    got = _texts(b, link.writes)
    assert sorted(got) == sorted(texts) and len(got) == len(texts)


def test_a_wire_hook_set_while_a_long_frame_waits_unsealed_sees_it_sealed():
    """(The demo and tests alter frames through the wire hook: it never gets a frame whose box is not sealed.)"""
    a, b = _pair()
    session, writer, link = _writer(a)
    writer.queue(b"\x00\x00\x00\x01\x80")         # a raw frame first: the long text's frame waits behind it
    _queue(writer, a, "h" * BIG)
    with session.lock:
        assert writer._next_chunk() == b"\x00\x00\x00\x01\x80"
        assert isinstance(writer.outbox[0], SealJob)
    seen: list[bytes] = []
    writer.wire_hook = lambda frame: seen.append(frame) or frame
    writer.kick()
    assert len(seen) == 1 and _texts(b, seen) == ["h" * BIG] and link.writes == seen
