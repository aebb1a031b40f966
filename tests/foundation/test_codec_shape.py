"""A frame may make msgpack build only as many maps and lists, and lists and maps only as long, as its protocol's
schemas allow (``bounded_shape``): a frame of nested empty containers is refused while it is read, not after
tens of megabytes were built (red team, 2026-12-07 night; bench/shape_bench.py)."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest

from p2pchat.chat_protocol import CHAT, MAX_BATCH_TEXTS, MAX_PLAINTEXT, MAX_RECEIPT_IDS, SEALED_CONTENT
from p2pchat.foundation.codec import ITEM_SLACK, SHAPE_SLACK, Field, Protocol
from p2pchat.foundation.errors import FrameError
from p2pchat.groups import GROUP_WIRE, MAX_LOG
from p2pchat.relay.protocol import MAX_STATUS_SESSIONS, relay_protocol

TOY = Protocol("toy", {"m": {"rows": Field(list, max_len=4, items=Field(list, max_len=2))}}, bounded_shape=True)


def junk(field_value: bytes) -> bytes:
    """``{"t": "typing", "on": true, "x": <field_value>}``: an unknown field, dropped once decoded."""
    return b"\x83\xa1t\xa6typing\xa2on\xc3\xa1x" + field_value


def test_the_bound_is_what_the_schemas_allow_plus_a_little_for_newer_fields():
    assert TOY.max_containers == 1 + 1 + 4 + SHAPE_SLACK
    assert SEALED_CONTENT.max_items == MAX_RECEIPT_IDS + ITEM_SLACK
    assert SEALED_CONTENT.max_containers == 2 + MAX_BATCH_TEXTS + SHAPE_SLACK


def test_the_largest_honest_messages_still_pass():
    batch = [[i, 1.0, "x"] for i in range(1, MAX_BATCH_TEXTS + 1)]
    assert len(SEALED_CONTENT.decode(SEALED_CONTENT.encode_body("texts", texts=batch))["texts"]) == MAX_BATCH_TEXTS
    ids = list(range(1, MAX_RECEIPT_IDS + 1))
    assert SEALED_CONTENT.decode(SEALED_CONTENT.encode_body("receipt", ids=ids))["ids"] == ids
    changes = [b"c" * 8] * MAX_LOG
    assert GROUP_WIRE.decode(GROUP_WIRE.encode_body("changes", ref=1, group=bytes(16), changes=changes))
    relay = relay_protocol()
    session = {"caller": "a" * 16, "callee": "b" * 16, "age_s": 1, "bytes": 2, "box_records": False}
    status = msgpack.packb({"t": "status", "sessions": [session] * MAX_STATUS_SESSIONS}, use_bin_type=True)
    try:
        relay.decode(status)
    except FrameError as exc:       # a field this test left out is fine; the shape must not be what is refused
        assert "maps and lists" not in str(exc) and "longer than" not in str(exc)


@pytest.mark.parametrize("value", [
    b"\xdd\x00\x01\x86\xa0" + b"\x80" * 100_000,                  # 100,000 empty maps in one list
    b"\xdc\x01\x00" + (b"\xdc\x01\x00" + b"\x90" * 256) * 256,   # 256 lists of 256 empty lists
    b"\x91" * 5_000 + b"\xc0",                                   # deep nesting
], ids=["a long list", "many lists", "deep nesting"])
def test_a_frame_of_nested_containers_is_refused_while_it_is_read(value):
    body = junk(value)
    assert len(body) < MAX_PLAINTEXT
    tracemalloc.start()
    with pytest.raises(FrameError):
        SEALED_CONTENT.decode(body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * len(body) + 512 * 1024      # before: up to 70 times the frame's size


def test_an_outer_chat_frame_of_nested_containers_is_refused_with_a_plain_reason():
    body = b"\x83\xa1t\xa6sealed\xa5epoch\x00\xa1x" + b"\x92" + (b"\x9f" + b"\x90" * 15) * 2   # 33 lists
    with pytest.raises(FrameError, match="more maps and lists than any chat message may"):
        CHAT.decode(body)


def test_protocols_without_the_bound_read_as_before():
    plain = Protocol("plain", {"m": {"x": Field(list)}})
    assert plain.max_containers is None
    assert len(plain.decode(msgpack.packb({"t": "m", "x": [[]] * 5000}))["x"]) == 5000
