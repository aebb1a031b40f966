"""The encrypted channel core: sealing, padding, tamper/replay/reorder/drop detection, key rotation, erasure."""

from __future__ import annotations

from collections import deque
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pchat.channel import (
    Abort,
    Channel,
    ChannelError,
    Goodbye,
    Receipt,
    Refused,
    Rotated,
    Text,
    Typing,
)
from p2pchat.chat_protocol import (
    CHAT,
    MAX_FRAME,
    MAX_RECEIPT_IDS,
    MAX_TEXT_BYTES,
    PAD_BUCKETS,
    Send,
    pad,
    sealed_aad,
    sealed_nonce,
)
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import FrameError
from p2pchat.handshake import Established, LedgerBinding
from tests.p2pchat.handshake_pair import decode, established_pair

_BINDING = LedgerBinding(b"der", "peer", "127.0.0.3", 8471, None, 1, 1)


def synthetic_established() -> tuple[Established, Established]:
    """Two matching Established objects with fresh random keys (what a handshake hands over), without the
    RSA work, so property tests can run many examples."""
    k = [crypto.random_bytes(32) for _ in range(4)]
    sid = crypto.random_bytes(32)
    ei = Established(True, k[0], k[1], k[2], k[3], sid, b"der-r", "bob", _BINDING, "0000 0000 0000")
    er = Established(False, k[1], k[0], k[3], k[2], sid, b"der-i", "alice", _BINDING, "0000 0000 0000")
    return ei, er


class RecordingEphemerals:
    """An ephemeral_factory that remembers every key it made, to check they were all erased."""

    def __init__(self) -> None:
        self.made: list[crypto.EphemeralKey] = []

    def __call__(self) -> crypto.EphemeralKey:
        key = crypto.EphemeralKey()
        self.made.append(key)
        return key


class Link:
    """Two channels joined by two in-order queues (like TCP); tests choose when each frame is delivered."""

    def __init__(self, rotate_every: int = 10, est: tuple[Established, Established] | None = None,
                 ephemerals: Any = crypto.EphemeralKey, max_refused: int = 10**9) -> None:
        """``max_refused``: tests of single refusals keep the session up; the limit has tests of its own."""
        ei, er = est or synthetic_established()
        self.ch = {"a": Channel(ei, rotate_every=rotate_every, ephemeral_factory=ephemerals,
                                max_refused=max_refused),
                   "b": Channel(er, rotate_every=rotate_every, ephemeral_factory=ephemerals,
                                max_refused=max_refused)}
        self.queue: dict[str, deque[bytes]] = {"a": deque(), "b": deque()}     # frames on their way TO a / b
        self.events: dict[str, list[Any]] = {"a": [], "b": []}                # what a / b reported
        self.sent_texts: dict[str, list[str]] = {"a": [], "b": []}

    @staticmethod
    def peer(name: str) -> str:
        return "b" if name == "a" else "a"

    def send(self, name: str, text: str) -> int:
        msg_id, frames = self.ch[name].send_text(text, 1000.0 + len(self.sent_texts[name]))
        self.sent_texts[name].append(text)
        self.queue[self.peer(name)].extend(frames)
        return msg_id

    def deliver_one(self, to: str) -> bool:
        if not self.queue[to]:
            return False
        self.feed(to, self.queue[to].popleft())
        return True

    def feed(self, to: str, frame: bytes) -> list[Any]:
        events = self.ch[to].receive(decode(frame), 5.0)
        self.events[to] += events
        for ev in events:
            if isinstance(ev, Send):
                self.queue[self.peer(to)].append(ev.frame)
        return events

    def flush(self) -> None:
        for _ in range(100_000):
            if not (self.deliver_one("a") or self.deliver_one("b")):
                return
        raise AssertionError("frames kept flowing")

    def texts(self, name: str) -> list[str]:
        return [e.text for e in self.events[name] if isinstance(e, Text)]

    def of(self, name: str, kind: type) -> list[Any]:
        return [e for e in self.events[name] if isinstance(e, kind)]


def one_frame(link: Link, name: str, text: str) -> bytes:
    _, frames = link.ch[name].send_text(text, 1.0)
    assert len(frames) == 1
    return frames[0]


def reachable_bytes(*roots: object) -> set[bytes]:
    """Every bytes value reachable from ``roots`` through attributes and containers (not through the test's
    own ephemeral-key recorder, which keeps every key it made on purpose)."""
    seen: set[int] = set()
    found: set[bytes] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, int, float, type(None), type, RecordingEphemerals)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray)):
            found.add(bytes(obj))
        elif isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack += list(obj)
        elif hasattr(obj, "__dict__"):
            stack += list(vars(obj).values())
    return found


# --- the basic round trip -----------------------------------------------------------------------------------

def test_a_text_arrives_once_with_its_id_and_time_and_the_sender_gets_a_receipt():
    link = Link()
    msg_id = link.send("a", "hello")
    link.flush()
    (text,) = link.of("b", Text)
    assert (text.msg_id, text.text, text.sent_at, text.received_at) == (msg_id, "hello", 1000.0, 5.0)
    assert link.of("a", Receipt) == [Receipt(msg_id)]
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_the_cores_work_together_after_a_real_handshake(identities):
    link = Link(est=established_pair(identities[0], identities[1]))
    link.send("a", "from alice")
    link.send("b", "from bob")
    link.flush()
    assert link.texts("b") == ["from alice"] and link.texts("a") == ["from bob"]


def test_non_ascii_text_and_a_full_1_mib_message_fit_in_one_frame():
    link = Link()
    big = "é" * (MAX_TEXT_BYTES // 2)          # exactly 1 MiB of UTF-8
    assert len(big.encode()) == MAX_TEXT_BYTES
    small = "Grüße, 你好, 👋🏽 — ok"
    link.send("a", big)
    link.send("a", small)
    (frame, _) = link.queue["b"]
    assert len(frame) <= MAX_FRAME + 4
    assert len(CHAT.reader().feed(frame)) == 1          # the receiving reader accepts it as one frame
    link.flush()
    assert link.texts("b") == [big, small]


def test_a_text_over_1_mib_is_refused_before_anything_is_sent():
    link = Link()
    with pytest.raises(ChannelError, match="at most 1,048,576 bytes fit in one message"):
        link.ch["a"].send_text("x" * (MAX_TEXT_BYTES + 1), 1.0)
    assert link.ch["a"].texts_sent == 0


@pytest.mark.parametrize(("size", "bucket"), [(0, 256), (1, 256), (200, 256), (240, 1024), (900, 1024), (1000, 4096),
                                              (3000, 4096), (10_000, 16384), (60_000, 65536),
                                              (70_000, 131072), (300_000, 327680)])
def test_plaintext_is_padded_to_its_size_bucket(size, bucket):
    link = Link()
    msg = decode(one_frame(link, "a", "x" * size))
    assert len(msg["box"]) == bucket + crypto.GCM_TAG_LEN


def test_padding_hides_the_length_within_a_bucket():
    link = Link()
    sizes = {len(one_frame(link, "a", "x" * n)) for n in (0, 1, 17, 100, 199)}
    assert len(sizes) == 1
    assert len(one_frame(link, "a", "typing?")) == len(link.ch["a"].send_typing(True)[0])
    assert PAD_BUCKETS[0] == 256


# --- tampering, replay, reordering, dropping, truncation ----------------------------------------------------------

def _assert_refused_not_shown(link: Link, frame: bytes) -> None:
    """Feed ``frame`` through a frame reader as the IO layer does: the codec refuses it (the IO layer then
    closes the connection), holds it as incomplete, or the channel refuses it. It is never shown."""
    try:
        msgs = CHAT.reader().feed(frame)
    except FrameError:
        return
    for msg in msgs:
        before = link.ch["b"].refused_count
        events = link.ch["b"].receive(msg)
        assert not any(isinstance(e, (Text, Typing, Receipt, Goodbye, Rotated)) for e in events), events
        assert link.ch["b"].refused_count == before + 1     # refused (only the first refusal is reported)


def test_every_single_bit_flip_anywhere_in_a_frame_is_refused():
    link = Link()
    frame = one_frame(link, "a", "attack at dawn")
    for bit in range(len(frame) * 8):           # length prefix, msgpack header fields, ciphertext and tag
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _assert_refused_not_shown(link, bytes(flipped))
    assert [e.text for e in link.ch["b"].receive(decode(frame)) if isinstance(e, Text)] == ["attack at dawn"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=600), data=st.data())
def test_a_bit_flip_in_header_or_ciphertext_of_any_message_is_never_shown(text, data):
    link = Link()
    link.send("a", "warm-up")
    link.flush()
    frame = one_frame(link, "a", text)
    bit = data.draw(st.integers(0, len(frame) * 8 - 1), label="bit")
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    _assert_refused_not_shown(link, bytes(flipped))
    assert [e.text for e in link.feed("b", frame) if isinstance(e, Text)] == [text]


def test_a_replayed_frame_is_refused_and_never_shown_twice():
    link = Link()
    frame = one_frame(link, "a", "pay 10")
    assert [type(e) for e in link.feed("b", frame)] == [Text, Send]
    (refused,) = link.feed("b", frame)
    assert isinstance(refused, Refused) and refused.kind == "replayed"
    assert "replayed or arrived out of order" in refused.reason
    assert link.texts("b") == ["pay 10"]


def test_reordered_frames_are_reported_and_the_late_one_is_not_shown():
    link = Link()
    first, second = one_frame(link, "a", "one"), one_frame(link, "a", "two")
    events = link.feed("b", second)
    assert [e.kind for e in events if isinstance(e, Refused)] == ["missing"]
    events = link.feed("b", first)
    assert [e.kind for e in events if isinstance(e, Refused)] == ["replayed"]
    assert link.texts("b") == ["two"]


def test_a_dropped_frame_is_reported_as_missing():
    link = Link()
    one_frame(link, "a", "dropped")
    one_frame(link, "a", "dropped too")
    events = link.feed("b", one_frame(link, "a", "arrives"))
    (missing,) = [e for e in events if isinstance(e, Refused)]
    assert missing.kind == "missing" and missing.reason.startswith("2 messages from the peer never arrived")
    assert link.texts("b") == ["arrives"]


def test_truncated_frames_are_refused():
    link = Link()
    frame = one_frame(link, "a", "cut me")
    msg = decode(frame)
    short_box = CHAT.encode("sealed", epoch=msg["epoch"], counter=msg["counter"], box=msg["box"][:-1])
    (refused,) = link.feed("b", short_box)
    assert refused.kind == "tampered"
    tagless = CHAT.encode("sealed", epoch=msg["epoch"], counter=msg["counter"], box=msg["box"][:16])
    assert link.feed("b", tagless) == [] and link.ch["b"].refused_count == 2     # refused, reported once
    assert CHAT.reader().feed(frame[:-5]) == []          # a cut-off stream never yields a message
    with pytest.raises(FrameError):
        CHAT.decode(frame[4:-5])
    assert link.texts("b") == [] and [e.text for e in link.feed("b", frame) if isinstance(e, Text)] == ["cut me"]


def test_a_frame_moved_to_the_other_direction_or_session_is_refused():
    link, other = Link(), Link()
    frame = one_frame(link, "a", "for b")
    assert link.ch["a"].receive(decode(frame))[0].kind == "tampered"     # reflected back to its sender
    assert other.ch["b"].receive(decode(frame))[0].kind == "tampered"    # spliced into another session


def test_a_frame_under_an_epoch_never_agreed_is_refused():
    link = Link()
    msg = decode(one_frame(link, "a", "x"))
    forged = CHAT.encode("sealed", epoch=5, counter=msg["counter"], box=msg["box"])
    (refused,) = link.feed("b", forged)
    assert refused.kind == "unexpected" and "never agreed" in refused.reason


def test_a_handshake_frame_after_the_handshake_ends_the_session_with_an_error_frame():
    link = Link()
    *sends, abort = link.feed("b", CHAT.encode("auth", sig=bytes(384), ledgers="agree"))
    assert isinstance(abort, Abort) and "after the handshake finished" in abort.reason
    assert [decode(ev.frame).type for ev in sends] == ["error"]
    assert link.ch["b"].closed and link.feed("b", CHAT.encode("auth", sig=bytes(384), ledgers="agree")) == []


def test_an_unsealed_error_frame_after_the_handshake_is_a_lost_connection_and_its_text_is_not_shown():
    link = Link()
    (abort,) = link.feed("b", CHAT.encode("error", reason="\x1b[2Kalice: forged line"))
    assert isinstance(abort, Abort) and abort.connection_lost
    assert "connection was lost" in abort.reason and "forged" not in abort.reason


def test_a_receipt_for_a_message_never_sent_is_refused():
    link = Link()
    link.send("a", "1")
    link.flush()
    frame = link.ch["b"]._seal("receipt", ids=[99])
    (refused,) = link.feed("a", frame)
    assert refused.kind == "unexpected"


def test_a_receipt_listing_an_unsent_id_among_sent_ones_is_refused_whole():
    link = Link()
    link.send("a", "1")
    link.send("a", "2")
    (refused,) = link.feed("a", link.ch["b"]._seal("receipt", ids=[1, 2, 3]))
    assert refused.kind == "unexpected" and "message 3" in refused.reason
    assert not link.of("a", Receipt)


def test_a_receipt_with_too_many_ids_or_none_is_refused_as_malformed():
    for ids in (list(range(1, MAX_RECEIPT_IDS + 2)), []):
        link = Link(rotate_every=1000)
        for i in range(MAX_RECEIPT_IDS + 1):
            link.ch["a"].send_text(str(i), 1.0)        # so every id below is one that was sent
        (refused,) = link.feed("a", seal_unchecked(link.ch["b"], {"t": "receipt", "ids": ids}))
        assert refused.kind == "malformed" and "ids" in refused.reason
    assert not link.of("a", Receipt)


def test_duplicate_ids_in_a_receipt_are_harmless_one_receipt_event_each():
    link = Link()
    link.send("a", "1")
    link.send("a", "2")
    assert link.feed("a", link.ch["b"]._seal("receipt", ids=[2, 1, 2, 1])) == [Receipt(2), Receipt(1)]


def seal_unchecked(ch: Channel, inner: dict[str, Any]) -> bytes:
    """A sealed frame from ``ch`` around an inner body the schema would refuse to encode (a peer's bug)."""
    side = ch._send
    counter = side.counter
    side.counter += 1
    box = crypto.seal(side.key, sealed_nonce(counter), pad(msgpack.packb(inner, use_bin_type=True)),
                      sealed_aad(ch.session_id, side.direction, side.epoch, counter))
    return CHAT.encode("sealed", epoch=side.epoch, counter=counter, box=box)


def feed_burst(link: Link, to: str) -> list[Any]:
    """Deliver every queued frame to ``to`` as one burst (as the node does when they arrived in one read)."""
    frames = list(link.queue[to])
    link.queue[to].clear()
    events: list[Any] = []
    for i, frame in enumerate(frames):
        events += link.ch[to].receive(decode(frame), 5.0, more_buffered=i < len(frames) - 1)
    link.events[to] += events
    for ev in events:
        if isinstance(ev, Send):
            link.queue[link.peer(to)].append(ev.frame)
    return events


def test_a_burst_of_texts_gets_one_receipt_frame_acknowledging_every_text():
    link = Link(rotate_every=1000)
    ids = [link.send("a", f"m{i}") for i in range(40)]
    events = feed_burst(link, "b")
    assert [e.text for e in events if isinstance(e, Text)] == [f"m{i}" for i in range(40)]
    sends = [e for e in events if isinstance(e, Send)]
    assert len(sends) == 1 and isinstance(events[-1], Send)      # the receipt follows the last text
    link.flush()
    assert [r.msg_id for r in link.of("a", Receipt)] == ids
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_a_single_text_is_receipted_at_once():
    link = Link()
    msg_id = link.send("a", "alone")
    events = feed_burst(link, "b")
    assert [type(e) for e in events] == [Text, Send]
    link.flush()
    assert link.of("a", Receipt) == [Receipt(msg_id)]


def test_a_long_burst_is_receipted_at_least_every_max_receipt_ids_texts():
    link = Link(rotate_every=1000)
    n = MAX_RECEIPT_IDS * 2 + 5
    for i in range(n):
        link.send("a", str(i))
    events = feed_burst(link, "b")
    assert len([e for e in events if isinstance(e, Send)]) == 3
    link.flush()
    assert [r.msg_id for r in link.of("a", Receipt)] == list(range(1, n + 1))


def test_texts_collected_for_a_receipt_are_receipted_before_a_goodbye_either_way():
    link = Link()
    a1, a2 = link.send("a", "1"), link.send("a", "2")
    for frame in list(link.queue["b"]):
        link.ch["b"].receive(decode(frame), 5.0, more_buffered=True)     # more is coming, so no receipt yet
    link.queue["b"].clear()
    frames = link.ch["b"].send_goodbye("bye")
    assert len(frames) == 2                                            # the receipt, then the goodbye
    for frame in frames:
        link.feed("a", frame)
    assert link.of("a", Receipt) == [Receipt(a1), Receipt(a2)] and link.of("a", Goodbye) == [Goodbye("bye")]
    # and when the peer leaves in the middle of a burst, its last texts are receipted before the Goodbye event
    link2 = Link()
    b1 = link2.send("a", "x")
    link2.queue["b"].extend(link2.ch["a"].send_goodbye("later"))
    events = feed_burst(link2, "b")
    assert [type(e) for e in events] == [Text, Send, Goodbye]
    link2.deliver_one("a")
    assert link2.of("a", Receipt) == [Receipt(b1)]


# --- typing, goodbye, closing -------------------------------------------------------------------------------------

def test_typing_frames_go_out_only_when_the_state_changes():
    link = Link()
    ch = link.ch["a"]
    frames = ch.send_typing(True) + ch.send_typing(True) + ch.send_typing(True) + ch.send_typing(False)
    assert len(frames) == 2
    for f in frames:
        link.feed("b", f)
    assert link.of("b", Typing) == [Typing(True), Typing(False)]


def test_typing_after_a_sent_message_is_announced_again():
    # A text ends the typing state, so the next keystrokes must make a fresh "typing" frame.
    link = Link()
    ch = link.ch["a"]
    assert len(ch.send_typing(True)) == 1
    ch.send_text("done typing", 1.0)
    assert len(ch.send_typing(True)) == 1


def test_goodbye_closes_the_chat_on_both_sides():
    link = Link()
    frames = link.ch["a"].send_goodbye("see you")
    assert link.ch["a"].send_goodbye() == []
    with pytest.raises(ChannelError, match="closed"):
        link.ch["a"].send_text("more", 1.0)
    assert link.ch["a"].send_typing(True) == []
    (bye,) = link.feed("b", frames[0])
    assert bye == Goodbye("see you") and link.ch["b"].peer_closed
    with pytest.raises(ChannelError, match="left the chat"):
        link.ch["b"].send_text("hello?", 1.0)
    late = link.ch["a"]._seal("typing", on=True)      # a frame after goodbye (only a bug or a forgery)
    assert link.feed("b", late)[0].kind == "unexpected"


def test_a_closed_channel_forgets_its_keys():
    link = Link()
    frame = one_frame(link, "a", "x")
    link.ch["b"].close()
    assert link.feed("b", frame) == []             # nothing is read any more
    assert not any(len(b) == 32 for b in reachable_bytes(link.ch["b"]) if b != link.ch["b"].session_id)


def test_the_same_established_keys_cannot_start_two_channels():
    ei, _ = synthetic_established()
    Channel(ei)
    assert ei.send_key == b"" and ei.recv_key == b""
    with pytest.raises(ValueError, match="already taken"):
        Channel(ei)


# --- rotation ------------------------------------------------------------------------------------------------------

def test_keys_rotate_every_n_texts_per_direction_and_until_rotation_counts_down():
    link = Link(rotate_every=3)
    ch = link.ch["a"]
    assert (ch.epoch, ch.until_rotation) == (0, 3)
    link.send("a", "1")
    assert ch.until_rotation == 2
    link.send("a", "2")
    _, frames = ch.send_text("3", 1.0)
    assert len(frames) == 2 and ch.rotating and ch.until_rotation == 0
    link.queue["b"].extend(frames)
    link.flush()
    assert (ch.epoch, ch.until_rotation, ch.rotating) == (1, 3, False)
    assert link.of("a", Rotated) == [Rotated(1, "send")]
    assert link.ch["b"].recv_epoch == 0           # b switches on a's first frame under epoch 1
    link.send("a", "4")
    link.flush()
    assert link.ch["b"].recv_epoch == 1 and link.of("b", Rotated) == [Rotated(1, "receive")]
    assert link.ch["b"].epoch == 0                # the other direction rotates on its own schedule
    assert link.texts("b") == ["1", "2", "3", "4"]


def test_texts_typed_while_a_rotation_waits_for_its_ack_go_out_under_the_old_key_then_wait_for_the_new_one():
    link = Link(rotate_every=2)
    for t in ("a1", "a2"):                         # a2 is followed by a's rotate frame
        link.send("a", t)
    while link.queue["b"]:                         # b reads the rotation and answers with its half
        link.deliver_one("b")
    link.send("a", "a3 typed before a has b's answer")
    link.send("a", "a4 too")
    # the pipeline is not drained: up to rotate_every more texts go out under the old key while the ack travels
    assert [decode(f)["epoch"] for f in link.queue["b"]] == [0, 0] and link.ch["a"].queued == 0
    link.send("a", "a5 waits for the new key")
    assert len(link.queue["b"]) == 2 and link.ch["a"].queued == 1 and link.ch["a"].until_rotation == 0
    b_frames = len(link.queue["b"])
    while link.queue["a"]:                         # receipts and the rotate_ack reach a: it switches
        link.deliver_one("a")
    assert link.ch["a"].epoch == 1 and link.ch["a"].queued == 0
    assert [decode(f)["epoch"] for f in list(link.queue["b"])[b_frames:]] == [1]    # a5, under the new key
    link.flush()
    assert link.texts("b") == ["a1", "a2", "a3 typed before a has b's answer", "a4 too", "a5 waits for the new key"]
    assert not link.of("b", Refused)
    assert link.ch["b"].recv_epoch == link.ch["a"].epoch == 1 and link.ch["a"].until_rotation == 1


def test_both_sides_rotating_at_once_works():
    link = Link(rotate_every=2)
    for t in ("a1", "a2"):
        link.send("a", t)
    for t in ("b1", "b2"):
        link.send("b", t)
    assert link.ch["a"].rotating and link.ch["b"].rotating
    link.flush()
    for t in ("a3",):
        link.send("a", t)
    link.send("b", "b3")
    link.flush()
    assert link.ch["a"].epoch == link.ch["b"].epoch == 1
    assert link.ch["a"].recv_epoch == link.ch["b"].recv_epoch == 1
    assert link.texts("b") == ["a1", "a2", "a3"] and link.texts("a") == ["b1", "b2", "b3"]
    assert not link.of("a", Refused) and not link.of("b", Refused)


def test_old_epoch_keys_and_ephemeral_halves_are_erased(identities):
    eph = RecordingEphemerals()
    ei, er = established_pair(identities[0], identities[1])
    old = {ei.send_key, ei.recv_key, ei.send_chain, ei.recv_chain}
    link = Link(rotate_every=2, est=(ei, er), ephemerals=eph)
    seen_keys: list[set[bytes]] = [old]
    for round_ in range(3):                        # three rotations in each direction
        for i in range(2):
            link.send("a", f"a{round_}.{i}")
            link.send("b", f"b{round_}.{i}")
        link.flush()
        link.send("a", "switch")                   # first frames under the new epoch retire the old receive keys
        link.send("b", "switch")
        link.flush()
        now = {b for b in reachable_bytes(link.ch["a"], link.ch["b"]) if len(b) == 32}
        seen_keys.append(now - {link.ch["a"].session_id})
    assert link.ch["a"].epoch == link.ch["b"].epoch >= 3
    held = reachable_bytes(link.ch["a"], link.ch["b"], ei, er)
    for earlier in seen_keys[:-1]:
        assert not (earlier & held), "a key of an earlier epoch is still reachable"
    assert len(seen_keys[-1]) >= 4                 # two keys + two chain keys (+ a rotation under way)
    assert eph.made and all(k._key is None for k in eph.made)


def test_the_previous_receive_key_is_kept_only_until_the_first_frame_of_the_new_epoch():
    link = Link(rotate_every=2)
    link.send("a", "one")
    link.send("a", "two, then rotate")
    while link.queue["b"]:
        link.deliver_one("b")                      # b answered the rotation: it holds old and next key
    b = link.ch["b"]
    old_key = b._recv.key
    assert old_key is not None and b._recv.next_key is not None
    link.flush()                                   # a switches
    assert old_key in reachable_bytes(b)           # still needed for frames a sent before it switched
    link.send("a", "first under epoch 1")
    link.flush()
    assert old_key not in reachable_bytes(b)
    assert b._recv.next_key is None and b.recv_epoch == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.sampled_from(["a", "b", ">a", ">b"]), min_size=20, max_size=120),
       rotate_every=st.integers(2, 4))
def test_both_sides_sending_continuously_in_any_interleaving_lose_nothing(steps, rotate_every):
    link = Link(rotate_every=rotate_every)
    n = {"a": 0, "b": 0}
    for step in steps:
        if step.startswith(">"):
            link.deliver_one(step[1])
        else:
            n[step] += 1
            link.send(step, f"{step}{n[step]}")
    # keep both talking (still interleaved) until every direction has seen at least three rotations
    def epochs() -> list[int]:
        return [link.ch[w].epoch for w in "ab"] + [link.ch[w].recv_epoch for w in "ab"]

    for _ in range(100):
        if min(epochs()) >= 3:
            break
        for who in ("a", "b"):
            n[who] += 1
            link.send(who, f"{who}{n[who]}")
        for _ in range(3):
            link.deliver_one("b")
            link.deliver_one("a")
    link.flush()
    assert min(epochs()) >= 3
    assert link.texts("b") == link.sent_texts["a"]
    assert link.texts("a") == link.sent_texts["b"]
    assert not link.of("a", Refused) and not link.of("b", Refused)
    receipts = {r.msg_id for r in link.of("a", Receipt)}
    assert receipts == set(range(1, n["a"] + 1))


@pytest.mark.parametrize("sent_at", [float("nan"), float("inf"), -1.0, 1e300])
def test_a_text_with_an_impossible_send_time_is_refused(sent_at):
    link = Link()
    frame = link.ch["a"]._seal("text", id=1, sent_at=sent_at, text="when?")
    events = link.feed("b", frame)
    assert [e.kind for e in events if isinstance(e, Refused)] == ["malformed"]
    assert not link.of("b", Text)
    with pytest.raises(ValueError, match="not a time"):
        link.ch["a"].send_text("x", sent_at)


@pytest.mark.parametrize("char", ["x", "é", "👋"])
def test_the_1_mib_limit_counts_utf8_bytes_for_ascii_and_other_texts_alike(char):
    width = len(char.encode())
    fits = char * (MAX_TEXT_BYTES // width)
    over = fits + "x" * (MAX_TEXT_BYTES - len(fits.encode()) + 1)   # one byte over, whatever the width
    link = Link()
    with pytest.raises(ChannelError, match="at most 1,048,576 bytes fit in one message"):
        link.ch["a"].send_text(over, 1.0)
    link.send("a", fits)
    link.flush()
    assert link.texts("b") == [fits]


def test_a_frame_received_into_its_own_buffer_is_opened_in_place_and_a_changed_one_refused():
    """The node's reader hands the channel a sealed box that is a writable view of the frame's buffer
    (CHAT.decode_buffer): the text is decrypted there, with no copy, and shown; a changed box is refused."""
    link = Link()
    text = "é" * 300_000 + "x"
    buffer = bytearray(one_frame(link, "a", text)[HEADER.size:])
    events = link.ch["b"].receive(CHAT.decode_buffer(buffer), 5.0)
    assert [e.text for e in events if isinstance(e, Text)] == [text]
    assert text.encode() in buffer               # the plaintext now lies where the ciphertext arrived
    changed = bytearray(one_frame(link, "a", text)[HEADER.size:])
    changed[-100] ^= 1
    events = link.ch["b"].receive(CHAT.decode_buffer(changed), 5.0)
    assert [e.kind for e in events if isinstance(e, Refused)] == ["tampered"]


def test_a_changed_frame_opened_in_place_leaves_no_trace_and_the_intact_frame_is_still_taken():
    """[redteam] A failed tag leaves unauthenticated plaintext in the frame's buffer: none of it is shown or kept,
    and nothing the channel holds moves (key, counter), so the intact frame with the same number is then taken."""
    link = Link()
    text = "secret " * 50_000
    intact = one_frame(link, "a", text)[HEADER.size:]
    changed = bytearray(intact)
    changed[-1] ^= 1                              # the tag only: the whole box decrypts to the real plaintext
    events = link.ch["b"].receive(CHAT.decode_buffer(changed), 5.0)
    assert [type(e).__name__ for e in events] == ["Refused"] and events[0].kind == "tampered"
    assert "secret" not in repr(events)
    events = link.ch["b"].receive(CHAT.decode_buffer(bytearray(intact)), 6.0)
    assert [e.text for e in events if isinstance(e, Text)] == [text]
