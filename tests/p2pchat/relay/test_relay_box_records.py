"""Box records (docs/relay.md, "Box records"): a chat frame's head sealed, its end-to-end box carried in clear as
the record's associated data — agreed by both clients and the relay, bounded, and never used for anything the chat
channel did not seal itself."""

from __future__ import annotations

import os
import threading

import pytest

from p2pchat.foundation import crypto
from p2pchat.foundation.codec import CLEAR_BOX_MIN, HEADER, BoxedFrame
from p2pchat.foundation.errors import FrameError
from p2pchat.relay.protocol import MAX_BOX_RECORD
from p2pchat.relay.secure import (
    KIND_FLAGS,
    PAIR_FLAG,
    RECORD_HEADER,
    PairKeys,
    _Opener,
    open_box_record,
    open_record,
    seal_box_record,
    seal_records,
)
from p2pchat.relay.server import RelayServer, RelaySession
from tests.p2pchat.relay.relay_helpers import INNER

VECTOR_FRAME = bytes(range(8)) + bytes(range(0x80, 0xA0))      # head 00..07, box 80..9f
VECTOR_RECORD = ("c000003a0008" "24cf1429c43442fb7d4c4c77080c1cb854b59493708223c4"
                 "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")


def _record(key: bytes, counter: int, frame: BoxedFrame) -> bytes:
    first, box = seal_box_record(key, counter, frame)
    return bytes(first) + bytes(box)


def test_the_documented_box_record_vector_and_every_changed_byte_fails():
    to_callee, _ = crypto.relay_pair_keys(bytes(range(32)))
    record = _record(to_callee, 0, BoxedFrame(VECTOR_FRAME, 8))
    assert record.hex() == VECTOR_RECORD
    assert record.endswith(bytes(range(0x80, 0xA0)))                # the box, in clear
    assert bytes(range(8)) not in record                             # the head, sealed
    assert open_box_record(to_callee, 0, record) == VECTOR_FRAME
    assert open_record(to_callee, 0, record) == VECTOR_FRAME        # the one entry point tells the kinds apart
    for at in range(6, len(record)):                                 # head, tag or box: every byte counts
        altered = bytearray(record)
        altered[at] ^= 0x01
        with pytest.raises(FrameError, match="failed authentication"):
            open_box_record(to_callee, 0, altered)
    with pytest.raises(FrameError, match="failed authentication"):
        open_box_record(to_callee, 1, record)                        # replayed as another record number


def test_an_opener_takes_box_records_only_when_agreed_within_the_agreed_size_and_cut_anywhere():
    link_key, pair_key = bytes(32), bytes(range(32))
    frame = _sealed(70_000)
    plain, _ = seal_records(pair_key, 0, b"before", PAIR_FLAG)
    stream = bytes(plain) + _record(pair_key, 1, frame)
    client, relay = _Opener(link_key), _Opener(link_key)
    client.pair, client.box_max = PairKeys(pair_key, pair_key, box_max=MAX_BOX_RECORD), MAX_BOX_RECORD
    relay.forward_pairs, relay.box_max = True, MAX_BOX_RECORD
    got_client, got_relay = [], []
    for at in range(0, len(stream), 9_999):                          # the network cuts it anywhere
        got_client += client.feed(stream[at:at + 9_999])
        got_relay += relay.feed(stream[at:at + 9_999])
    assert got_client == [("pair", b"before"), ("pair", frame)]
    assert [r for _, r in got_relay] == [bytes(plain), stream[len(plain):]]   # forwarded whole, unopened

    not_agreed = _Opener(link_key)
    not_agreed.pair = PairKeys(pair_key, pair_key)
    with pytest.raises(FrameError, match="did not agree on box records"):
        not_agreed.feed(_record(pair_key, 0, frame))
    small = _Opener(link_key)
    small.forward_pairs, small.box_max = True, 4096
    with pytest.raises(FrameError, match="over the agreed 4096"):
        small.feed(_record(pair_key, 0, frame)[:6])                  # refused from its header, nothing buffered
    for word, head_len in ((0xC0000000 | 100, 0), (0xC0000000 | 100, 82), (0x40000000 | 100, 10)):
        bad = _Opener(link_key)
        bad.forward_pairs, bad.box_max = True, MAX_BOX_RECORD
        with pytest.raises(FrameError):
            bad.feed(RECORD_HEADER.pack(word) + head_len.to_bytes(2, "big") + bytes(100))


def _sealed(box_len: int, counter: int = 7) -> BoxedFrame:
    """A chat channel's sealed frame with a random box, marked as the channel marks it."""
    from p2pchat.chat_protocol import sealed_frame

    frame, box_at = sealed_frame(0, counter, box_len)
    frame[box_at:] = os.urandom(box_len)
    return BoxedFrame(frame, box_at)


@pytest.mark.parametrize("box_len", [CLEAR_BOX_MIN, 70_000], ids=["opened from the read", "opened in its buffer"])
@pytest.mark.parametrize("damage", ["two frames", "part of a frame", "a bin header of another length",
                                    "a head without a bin header", "a head that is only the length prefix"])
def test_a_box_record_that_does_not_carry_exactly_one_frame_ending_with_its_box_is_refused(box_len, damage):
    """docs/relay.md: a box record holds exactly one whole frame and its box ends it; anything else (which an
    honest sender never makes) ends the connection instead of reaching the chat as if sealed by the link."""
    pair_key = bytes(range(32))
    frame = _sealed(box_len)
    at = frame.box_at
    bad = {
        "two frames": BoxedFrame(HEADER.pack(len(frame) - HEADER.size + 5) + frame[HEADER.size:at]
                                 + frame[at:], at),
        "part of a frame": BoxedFrame(HEADER.pack(len(frame)) + frame[HEADER.size:], at),
        "a bin header of another length": BoxedFrame(frame[:at - 1] + bytes([frame[at - 1] ^ 1]) + frame[at:], at),
        "a head without a bin header": BoxedFrame(HEADER.pack(len(frame) - HEADER.size) + bytes(at - HEADER.size)
                                                  + frame[at:], at),
        "a head that is only the length prefix": BoxedFrame(HEADER.pack(box_len) + frame[at:], HEADER.size),
    }[damage]
    first, box = seal_box_record(pair_key, 0, bad)
    opener = _Opener(bytes(32))
    opener.pair, opener.box_max = PairKeys(pair_key, pair_key, box_max=MAX_BOX_RECORD), MAX_BOX_RECORD
    with pytest.raises(FrameError, match="exactly one frame ending with its box"):
        opener.feed(bytes(first) + bytes(box))
    good = _Opener(bytes(32))
    good.pair, good.box_max = PairKeys(pair_key, pair_key, box_max=MAX_BOX_RECORD), MAX_BOX_RECORD
    first, box = seal_box_record(pair_key, 0, frame)
    assert [bytes(got) for _, got in good.feed(bytes(first) + bytes(box))] == [frame]


class _Capture(RelayServer):
    """An honest relay that also keeps every record it forwards, as they travel on the network."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.records: list[bytes] = []
        self._records_lock = threading.Lock()

    def forward(self, session: RelaySession, sender: int, payload: bytes) -> None:
        with self._records_lock:
            self.records.append(payload)
        super().forward(session, sender, payload)


def _inner(body: bytes) -> bytes:
    return INNER.encode("msg", n=1, body=body)


def test_only_a_long_box_the_channel_marked_leaves_the_link_unsealed(env, identities):
    relay = env.relay(_Capture, bytes_per_second=None)
    caller, callee = env.pair(identities[0], identities[1], relay)
    assert caller.box_max == callee.box_max == MAX_BOX_RECORD
    big = os.urandom(CLEAR_BOX_MIN + 5000)
    frame = _inner(big)
    boxed = BoxedFrame(frame, len(frame) - len(big))
    unmarked = _inner(os.urandom(CLEAR_BOX_MIN + 5000))              # the same size, not marked as a box
    short = _inner(os.urandom(100))
    short_boxed = BoxedFrame(short, len(short) - 100)                # a box too short to be worth a record
    caller.send_frame(boxed)
    assert caller.send_nowait(boxed) == len(boxed)                   # the non-blocking path seals it the same way
    caller.send_frame(unmarked)
    caller.send_frame(short_boxed)
    for _ in range(4):
        assert callee.recv(timeout=10)["n"] == 1
    kinds = [RECORD_HEADER.unpack_from(r)[0] & KIND_FLAGS for r in relay.records]
    assert kinds == [KIND_FLAGS, KIND_FLAGS, PAIR_FLAG, PAIR_FLAG]
    assert relay.records[0].endswith(big) and relay.records[1].endswith(big)
    assert frame[:len(frame) - len(big)] not in relay.records[0]     # the frame's head is sealed
    assert unmarked[-4096:] not in relay.records[2] and short[-50:] not in relay.records[3]
    assert relay.counters()["bytes"] == 2 * len(frame) + len(unmarked) + len(short)   # counted as chat bytes


@pytest.mark.parametrize("caller_offers, callee_offers, relay_offers",
                         [(False, True, True), (True, False, True), (True, True, False)])
def test_box_records_are_off_unless_both_clients_and_the_relay_offer_them(env, identities, caller_offers,
                                                                         callee_offers, relay_offers):
    relay = env.relay(_Capture, bytes_per_second=None, box_records=relay_offers)
    env.register(identities[1], relay, box_records=callee_offers)
    caller = env.call(identities[0], relay, identities[1], box_records=caller_offers)
    callee = env.invites.get()
    assert caller.box_max is None and callee.box_max is None
    body = os.urandom(CLEAR_BOX_MIN * 2)
    frame = _inner(body)
    caller.send_frame(BoxedFrame(frame, len(frame) - len(body)))     # marked, but not agreed: sealed whole
    assert callee.recv(timeout=10)["body"] == body
    assert [RECORD_HEADER.unpack_from(r)[0] & KIND_FLAGS for r in relay.records] == [PAIR_FLAG]
    assert body[:4096] not in relay.records[0]


def test_a_box_record_the_relay_did_not_agree_to_ends_that_session_with_a_reason_for_both(env, identities):
    from p2pchat.foundation.codec import HEADER
    from p2pchat.relay import RelayError
    from p2pchat.relay.protocol import expect
    from tests.p2pchat.relay.test_relay_limits import assert_pair_works, reason_of

    relay = env.relay(box_records=False)
    env.register(identities[1], relay)
    raw = env.raw(identities[0], relay, "call", peer=identities[1].fingerprint)
    paired = expect(raw, "paired", 5, relay.address)
    assert paired["box_max"] is None
    link = env.invites.get()
    frame = BoxedFrame(HEADER.pack(CLEAR_BOX_MIN + 8) + bytes(8) + os.urandom(CLEAR_BOX_MIN), 12)
    first, box = seal_box_record(crypto.relay_pair_keys(paired["pair_key"])[0], 0, frame)
    raw.send_raw(bytes(first) + bytes(box))
    assert "did not agree on box records" in reason_of(raw)
    with pytest.raises(RelayError, match="your peer sent an invalid frame"):
        link.recv(timeout=5)
    assert_pair_works(env, relay, identities[2], identities[0])


def test_a_sealed_chat_frame_in_a_box_record_reaches_the_channel_writable_and_nothing_else_does(env, identities):
    """The callee's link opens a box record in a buffer of its own and hands the chat protocol that buffer, so
    the channel decrypts the box where it arrived (no copy); a frame that came in an ordinary pair record is
    decoded from read-only bytes as before."""
    from p2pchat.chat_protocol import CHAT, sealed_frame

    relay = env.relay(bytes_per_second=None)
    env.register(identities[1], relay, inner_protocol=CHAT)
    caller = env.call(identities[0], relay, identities[1], inner_protocol=CHAT)
    callee = env.invites.get()
    box = os.urandom(300_000)       # a record over the link's 64 KiB is read into a buffer of its own
    frame, box_at = sealed_frame(0, 7, len(box))
    frame[box_at:] = box
    caller.send_frame(BoxedFrame(frame, box_at))
    got = callee.recv(timeout=10)
    assert (got.type, got["epoch"], got["counter"]) == ("sealed", 0, 7)
    assert isinstance(got["box"], memoryview) and not got["box"].readonly and bytes(got["box"]) == box
    small = os.urandom(100)
    frame, box_at = sealed_frame(0, 8, len(small))
    frame[box_at:] = small
    caller.send_frame(bytes(frame))                                  # not marked: an ordinary pair record
    got = callee.recv(timeout=10)
    assert got["counter"] == 8 and bytes(got["box"]) == small
    assert not (isinstance(got["box"], memoryview) and not got["box"].readonly)
