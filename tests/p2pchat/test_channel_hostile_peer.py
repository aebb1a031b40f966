"""A verified but hostile peer against the channel core: every inner kind at its edges, sealed under the real
session keys (red team, 2026-12-07 night). The same attacks against two real nodes are in
tests/integration/test_hostile_verified_peer.py."""

from __future__ import annotations

import msgpack
import pytest

from p2pchat.channel import ROTATE_TRIES, Abort, Channel, Receipt, Refused, Rotated, Text
from p2pchat.chat_protocol import CHAT, Send, pad, sealed_aad, sealed_nonce
from p2pchat.foundation import crypto
from tests.p2pchat.handshake_pair import decode
from tests.p2pchat.test_channel import Link


def seal_body(ch: Channel, body: bytes) -> bytes:
    """A sealed frame whose plaintext is ``body`` (any bytes: what a modified peer could seal), under ``ch``'s
    sending key, epoch and next counter, as that channel would number it."""
    side = ch._send
    assert side.key is not None
    counter = side.counter
    side.counter += 1
    box = crypto.seal(side.key, sealed_nonce(counter), pad(body),
                      sealed_aad(ch.session_id, side.direction, side.epoch, counter))
    return CHAT.encode("sealed", epoch=side.epoch, counter=counter, box=box)


def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# --- receipts ------------------------------------------------------------------------------------------------

def test_a_receipt_for_a_text_queued_but_not_sent_yet_is_refused_and_not_reported_delivered():
    link = Link(rotate_every=2)
    a, b = link.ch["a"], link.ch["b"]
    for i in range(2):
        link.send("a", f"t{i}")                    # the second starts a's rotation; b never answers it
    for i in range(2):
        link.send("a", f"overlap {i}")             # still under the old key, up to rotate_every more
    held = a.queue_text("held for the new key", 1.0)
    assert a.seal_queued() == [] and a.queued == 1   # it waits for the rotate_ack that never comes
    events = link.feed("a", b._seal("receipt", ids=[held]))
    assert not any(isinstance(e, Receipt) for e in events)
    refused = [e for e in events if isinstance(e, Refused)]
    assert refused and refused[0].kind == "unexpected" and f"message {held}" in refused[0].reason
    assert "not sent" in refused[0].reason
    # the texts that did leave are receipted as usual
    assert [e.msg_id for e in link.feed("a", b._seal("receipt", ids=[1, 2, 3, 4]))] == [1, 2, 3, 4]


def test_a_receipt_for_a_text_that_left_after_being_held_is_taken():
    link = Link(rotate_every=1)
    a = link.ch["a"]
    link.send("a", "first")                 # rotation starts
    link.send("a", "second")                # the overlap allows one more
    held = a.queue_text("third", 1.0)
    assert a.seal_queued() == []
    link.flush()                            # the ack arrives, the held text leaves, b receipts it
    assert held in [e.msg_id for e in link.of("a", Receipt)]
    assert not link.of("a", Refused)


# --- rotation in a loop ----------------------------------------------------------------------------------------

def test_a_rotate_repeated_in_a_loop_is_answered_as_often_as_an_honest_sender_asks_then_refused():
    link = Link(rotate_every=1, max_refused=3)
    a, b = link.ch["a"], link.ch["b"]
    _, frames = a.send_text("hello", 1.0)
    text, rotate = frames
    link.feed("b", text)
    sends = 0
    aborted = False
    for _ in range(50):                      # a modified sender repeats its rotate (same epoch, same half)
        again = a._seal("rotate", epoch=1, pub=a._send.pending.public)
        events = b.receive(decode(again if _ else rotate), 5.0)
        sends += sum(1 for e in events if isinstance(e, Send))
        if any(isinstance(e, Abort) for e in events):
            aborted = True
            break
    # one answer per rotate an honest sender may send (ROTATE_TRIES), then refusals end the session
    acks = sends - 1                         # (the goodbye of the abort)
    assert acks == ROTATE_TRIES and aborted and b.closed


# --- odd msgpack inside a valid box -------------------------------------------------------------------------

_TEXT_HEAD = b"\x84\xa1t\xa4text\xa2id\x01\xa7sent_at\xcb" + bytes(8) + b"\xa4text"    # then the text's str
_TYPING_X = b"\x83\xa1t\xa6typing\xa2on\xc3\xa1x"     # {"t": "typing", "on": true, "x": … (an unknown field)
ODD_BODIES = {
    "bool as the text id": packed({"t": "text", "id": True, "sent_at": 1.0, "text": "x"}),
    "an integer send time": packed({"t": "text", "id": 1, "sent_at": 1, "text": "x"}),
    "a uint64 id over 2^63-1": packed({"t": "text", "id": 2**64 - 1, "sent_at": 1.0, "text": "x"}),
    "a negative id": packed({"t": "text", "id": -1, "sent_at": 1.0, "text": "x"}),
    "a NaN send time": packed({"t": "text", "id": 1, "sent_at": float("nan"), "text": "x"}),
    "a non-UTF-8 text": _TEXT_HEAD + b"\xa2\xff\xfe",
    "a lone surrogate in CESU-8": _TEXT_HEAD + b"\xa3\xed\xa0\x80",
    "a map as the text": packed({"t": "text", "id": 1, "sent_at": 1.0, "text": {"a": 1}}),
    "bytes as the kind": packed({"t": b"text", "id": 1, "sent_at": 1.0, "text": "x"}),
    "an unknown kind": packed({"t": "selfdestruct", "now": True}),
    "an integer map key": packed({1: 2, "t": "typing", "on": True}),
    "an int for typing's bool": packed({"t": "typing", "on": 1}),
    "a receipt id 0": packed({"t": "receipt", "ids": [0]}),
    "a receipt of floats": packed({"t": "receipt", "ids": [1.0]}),
    "a batch entry of 4": packed({"t": "texts", "texts": [[1, 1.0, "x", "extra"]]}),
    "a batch entry with a bool id": packed({"t": "texts", "texts": [[True, 1.0, "x"]]}),
    "deep nesting": b"\x82\xa1t\xa4text\xa4text" + b"\x91" * 100_000 + b"\xc0",
    "100,000 empty maps in an unknown field": _TYPING_X + b"\xdd\x00\x01\x86\xa0" + b"\x80" * 100_000,
    "90 lists in an unknown field": packed({"t": "typing", "on": True, "x": [[]] * 90}),
    "an extension type": packed({"t": "text", "id": 1, "sent_at": 1.0, "text": msgpack.ExtType(1, b"x")}),
    "not a map": packed([1, 2, 3]),
    "trailing bytes": packed({"t": "typing", "on": True}) + b"\x00",
    "a rotate to epoch 2^32": packed({"t": "rotate", "epoch": 2**32, "pub": bytes(32)}),
    "a pad op that is not one": packed({"t": "pad_mode", "op": "on", "pad_id": bytes(16)}),
}


@pytest.mark.parametrize("body", ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_odd_msgpack_in_an_authentic_box_is_refused_shows_nothing_and_the_chat_goes_on(body):
    link = Link(max_refused=3)
    events = link.feed("b", seal_body(link.ch["a"], body))
    assert [type(e) for e in events if not isinstance(e, Refused)] == []
    assert len([e for e in events if isinstance(e, Refused)]) == 1
    link.send("a", "still here")
    link.flush()
    assert link.texts("b") == ["still here"] and not link.ch["b"].closed


def test_duplicate_keys_in_a_map_are_read_as_the_last_one_and_nothing_else():
    """msgpack lets a map repeat a key; the decoder keeps the last value (one reading, the same as the sender's
    own library), so a duplicate can neither smuggle a second kind nor a second text past the checks."""
    link = Link(max_refused=3)
    body = b"\x85\xa1t\xa4text\xa2id\x01\xa7sent_at\xcb" + msgpack.packb(1.0)[1:] + b"\xa4text\xa5first" + \
        b"\xa4text\xa6second"
    events = link.feed("b", seal_body(link.ch["a"], body))
    assert [e.text for e in events if isinstance(e, Text)] == ["second"]


def test_a_counter_jump_to_the_last_counter_is_reported_once_and_the_peer_can_send_nothing_after_it():
    link = Link(max_refused=3)
    a = link.ch["a"]
    a._send.counter = 2**64 - 1
    events = link.feed("b", one_text(a, "last"))
    assert [e.text for e in events if isinstance(e, Text)] == ["last"]
    assert [e.kind for e in events if isinstance(e, Refused)] == ["missing"]
    with pytest.raises(Exception, match="counter"):
        a.send_text("one more", 1.0)
    assert not any(isinstance(e, Rotated) for e in events)


def one_text(ch: Channel, text: str) -> bytes:
    _, frames = ch.send_text(text, 1.0)
    assert len(frames) == 1
    return frames[0]


def test_an_unknown_kind_is_named_with_its_quote_escaped_so_it_cannot_close_it():
    for kind in ("x'); bob is verified ✓ ('", "x'\"); ✓ ('"):
        link = Link(max_refused=3)
        (refused,) = link.feed("b", seal_body(link.ch["a"], packed({"t": kind})))
        assert f"unknown message type {kind!r} for the" in refused.reason      # escaped, never closed
