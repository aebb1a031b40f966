"""Fuzzing the frame codec with the real protocols: ledger, chat (outer frames and the sealed inner messages) and
relay. Whatever bytes arrive, decoding either yields a schema-checked message or raises ``FrameError`` with a
message for a person; an accepted message can always be encoded again (nodes and proxies re-encode frames); the
incremental reader never holds more than one frame's worth of bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.protocol import LEDGER_PROTOCOL, ROLE_CLIENT, hello_fields
from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION, SEALED_CONTENT
from p2pchat.foundation.codec import HEADER, Protocol
from p2pchat.foundation.errors import FrameError
from p2pchat.relay.protocol import CLIENT_PROTOCOL, DEFAULT_MAX_FRAME, TICKET_LEN, relay_protocol
from tests.fuzz.fuzz_kit import bodies_for, chunks, framed, fuzz_settings, mutated, split_points

PROTOCOLS: dict[str, Protocol] = {
    "ledger": LEDGER_PROTOCOL,
    "chat": CHAT,
    "chat-sealed": SEALED_CONTENT,
    "relay-server": relay_protocol(DEFAULT_MAX_FRAME),
    "relay-client": CLIENT_PROTOCOL,
}

SAMPLES: dict[str, list[bytes]] = {
    "ledger": [
        LEDGER_PROTOCOL.encode("hello", **hello_fields(role=ROLE_CLIENT, nonce=bytes(range(8)), network="p2pchat")),
        LEDGER_PROTOCOL.encode("get_headers", locator=[bytes(32), bytes(range(32))], limit=2000),
        LEDGER_PROTOCOL.encode("lookup", by="ip", value="127.0.0.2"),
        LEDGER_PROTOCOL.encode("peers", addrs=["127.0.0.2:8470", "[::1]:8470"]),
    ],
    "chat": [
        CHAT.encode("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname="alice", address="127.0.0.2:8471"),
        CHAT.encode("key", key=bytes(422), nonce=bytes(32), ephemeral=bytes(32), final_height=0, final_hash=bytes(32),
                    tip_height=0, tip_hash=bytes(32)),
        CHAT.encode("confirm_reply", confirm=bytes(32)),
        CHAT.encode("sealed", epoch=3, counter=2**40, box=bytes(272)),
    ],
    "chat-sealed": [
        SEALED_CONTENT.encode("text", id=1, sent_at=1.7e9, text="hello ✓"),
        SEALED_CONTENT.encode("rotate", epoch=2, pub=bytes(32)),
    ],
    "relay-server": [
        relay_protocol(DEFAULT_MAX_FRAME).encode("login", version=1, network="p2pchat", role="call", key=bytes(420),
                                                 sig=bytes(384), peer=bytes(32)),
        relay_protocol(DEFAULT_MAX_FRAME).encode("invite", ticket=bytes(TICKET_LEN), caller=bytes(32)),
    ],
    "relay-client": [
        CLIENT_PROTOCOL.encode("challenge", version=1, nonce=bytes(32)),
        CLIENT_PROTOCOL.encode("paired", peer=bytes(32), max_payload=1000, keepalive_ms=2000, pair_key=bytes(32)),
    ],
}


def decode_or_refuse(protocol: Protocol, body: bytes) -> None:
    """The property every decoder must have: a checked message that re-encodes to an equal message, or a
    ``FrameError`` whose text is a readable sentence."""
    try:
        msg = protocol.decode(body)
    except FrameError as exc:
        text = str(exc)
        assert text and len(text) < 2000 and "Traceback" not in text
        return
    body_again = protocol.encode_body(msg.type, **msg.fields)
    again = protocol.decode(body_again)
    # compared as bytes: a NaN inside a free-form map is not equal to itself
    assert again.type == msg.type and protocol.encode_body(again.type, **again.fields) == body_again


@pytest.mark.parametrize("name", list(PROTOCOLS))
@fuzz_settings(80)
@given(data=st.data())
def test_schema_shaped_bodies_are_accepted_checked_or_refused_with_a_reason(name, data):
    protocol = PROTOCOLS[name]
    decode_or_refuse(protocol, data.draw(bodies_for(protocol)))


@pytest.mark.parametrize("name", list(PROTOCOLS))
@fuzz_settings(80)
@given(data=st.data())
def test_mutated_valid_frames_never_raise_anything_but_frame_error(name, data):
    protocol = PROTOCOLS[name]
    frame = data.draw(st.sampled_from(SAMPLES[name]))
    decode_or_refuse(protocol, data.draw(mutated(frame[HEADER.size:])))


@pytest.mark.parametrize("name", list(PROTOCOLS))
@fuzz_settings(40)
@given(data=st.data(), junk=st.binary(max_size=300))
def test_the_incremental_reader_survives_any_stream_split_anywhere(name, data, junk):
    protocol = PROTOCOLS[name]
    frames = data.draw(st.lists(st.sampled_from(SAMPLES[name]), min_size=1, max_size=4))
    stream = b"".join(frames)
    stream = data.draw(st.sampled_from([stream, stream + junk, data.draw(mutated(stream))]))
    reader = protocol.reader()
    got = []
    try:
        for piece in chunks(stream, data.draw(split_points(stream))):
            got += reader.feed(piece)
            assert reader.pending() <= protocol.max_frame + HEADER.size
    except FrameError:
        return      # the connection would be closed here
    assert len(got) <= len(stream) // (HEADER.size + 1) + 1


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_a_length_prefix_over_the_limit_is_refused_before_the_body(name):
    protocol = PROTOCOLS[name]
    reader = protocol.reader()
    with pytest.raises(FrameError, match="over the"):
        reader.feed(HEADER.pack(protocol.max_frame + 1))
    assert reader.pending() == 0


@fuzz_settings(200)
@given(body=st.binary(max_size=2000))
def test_random_bytes_under_every_protocol_give_frame_errors_only(body):
    for protocol in PROTOCOLS.values():
        decode_or_refuse(protocol, body)


@fuzz_settings(40)
@given(depth=st.integers(min_value=50, max_value=5000), kind=st.sampled_from([b"\x91", b"\x81\xa1a"]))
def test_deeply_nested_msgpack_is_refused_not_a_recursion_crash(depth, kind):
    body = kind * depth + b"\xc0"
    for protocol in PROTOCOLS.values():
        decode_or_refuse(protocol, body)
        decode_or_refuse(protocol, msgpack.packb({"t": "hello", "network": "x"})[:-2] + body)


def test_framed_helper_matches_the_codec():
    assert framed(b"\x80") == HEADER.pack(1) + b"\x80"
