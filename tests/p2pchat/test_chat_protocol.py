"""The chat wire schemas and the shared byte layouts (padding, nonce, AAD, transcript encoding)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat import chat_protocol as cp
from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import FrameError, ProtocolError

SAMPLES = {
    "hello": {"version": 1, "network": "main", "nickname": "Zoë", "address": "127.0.0.2:8471",
              "features": ["file-root"]},
    "welcome": {"version": 1, "network": "main", "nickname": "", "address": "[::1]:8471", "features": []},
    "decline": {"reason": "busy"},
    "key": {"key": b"\x30" * 422, "nonce": b"n" * 32, "ephemeral": b"e" * 32, "final_height": 7,
            "final_hash": b"f" * 32, "tip_height": 2**32 - 1, "tip_hash": b"t" * 32},
    "key_ok": {},
    "auth": {"sig": b"s" * 384, "ledgers": "agree"},
    "auth_reply": {"sig": b"s" * 384, "ledgers": "conflict"},
    "auth_ok": {},
    "confirm": {"confirm": b"c" * 32},
    "confirm_reply": {"confirm": b"c" * 32},
    "sealed": {"epoch": 3, "counter": 2**64 - 1, "box": b"b" * 272},
    "error": {"reason": "no"},
}


_LEDGER = {"final_height": 0, "final_hash": bytes(32), "tip_height": 0, "tip_hash": bytes(32)}
_KEY = {"key": b"k" * 422, "nonce": b"n" * 32, "ephemeral": b"e" * 32, **_LEDGER}


def test_every_chat_frame_type_is_known_to_exactly_one_core():
    assert set(cp.CHAT.messages) == cp.HANDSHAKE_TYPES | cp.CHANNEL_TYPES | {"error"}
    assert not cp.HANDSHAKE_TYPES & cp.CHANNEL_TYPES
    assert set(SAMPLES) == set(cp.CHAT.messages)


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_every_frame_type_round_trips_through_the_codec(type_):
    frame = cp.CHAT.encode(type_, **SAMPLES[type_])
    (msg,) = cp.CHAT.reader().feed(frame)
    assert msg.type == type_ and msg.fields == SAMPLES[type_]


@pytest.mark.parametrize(("type_", "fields", "complaint"), [
    ("key", {**_LEDGER, "key": b"k" * 422, "nonce": b"n" * 31, "ephemeral": b"e" * 32}, "too short"),
    ("key", {**_LEDGER, "key": b"k" * 422, "nonce": b"n" * 33, "ephemeral": b"e" * 32}, "too long"),
    ("key", {**_LEDGER, "key": b"k" * 422, "ephemeral": b"e" * 32}, "field 'nonce' is missing"),
    ("key", {**_LEDGER, "key": b"k" * 422, "nonce": b"n" * 32}, "field 'ephemeral' is missing"),
    ("key", {**_LEDGER, "key": b"k" * 422, "nonce": b"n" * 32, "ephemeral": b"e" * 31}, "too short"),
    ("key", {**_LEDGER, "key": b"k" * 2049, "nonce": b"n" * 32, "ephemeral": b"e" * 32}, "too long"),
    ("hello", {"version": 1, "network": "", "nickname": "a", "address": "x"}, "too short"),
    ("hello", {"version": 1, "network": "n", "nickname": "a" * 65, "address": "x"}, "too long"),
    ("hello", {"version": 70000, "network": "n", "nickname": "a", "address": "x"}, "above the maximum"),
    ("sealed", {"epoch": -1, "counter": 0, "box": b"b" * 16}, "below the minimum"),
    ("sealed", {"epoch": 0, "counter": 0, "box": b"b" * 15}, "too short"),
    ("confirm_reply", {}, "field 'confirm' is missing"),
    ("auth", {"sig": "text, not bytes", "ledgers": "agree"}, "should be bytes"),
    ("auth", {"sig": b"s" * 384}, "field 'ledgers' is missing"),
    ("auth_reply", {"sig": b"s" * 384, "ledgers": "disagree!"}, "too long"),
    ("key", {**_KEY, "final_height": 2**32}, "above the maximum"),
    ("key", {**_KEY, "tip_height": -1}, "below the minimum"),
    ("key", {**_KEY, "final_hash": b"f" * 31}, "too short"),
    ("key", {k: v for k, v in _KEY.items() if k != "tip_hash"}, "field 'tip_hash' is missing"),
])
def test_out_of_bounds_or_ill_typed_fields_are_refused(type_, fields, complaint):
    import msgpack
    body = msgpack.packb({"t": type_, **fields}, use_bin_type=True)
    with pytest.raises(FrameError, match=complaint):
        cp.CHAT.decode(body)


def test_an_oversized_frame_is_refused_from_its_length_prefix_alone():
    reader = cp.CHAT.reader()
    with pytest.raises(FrameError, match="over the 2097152-byte limit"):
        reader.feed(HEADER.pack(cp.MAX_FRAME + 1) + b"\x00" * 10)
    assert reader.pending() == 0


def test_the_largest_message_fits_the_frame_and_box_limits():
    inner = cp.SEALED_CONTENT.encode_body("text", id=2**63 - 1, sent_at=1e9, text="x" * cp.MAX_TEXT_BYTES)
    padded = cp.pad(inner)
    assert len(padded) <= cp.MAX_PLAINTEXT and len(padded) + 16 <= cp.MAX_BOX
    frame = cp.CHAT.encode("sealed", epoch=cp.MAX_EPOCH, counter=cp.MAX_COUNTER, box=b"\x00" * (len(padded) + 16))
    assert len(frame) - 4 <= cp.MAX_FRAME


def test_padded_sizes_follow_the_buckets():
    assert [cp.padded_size(n) for n in (1, 256, 257, 1024, 1025, 65536, 65537, 131072, 131073)] == \
        [256, 256, 1024, 1024, 4096, 65536, 131072, 131072, 196608]


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=70_000))
def test_pad_and_unpad_round_trip(body):
    padded = cp.pad(body)
    assert len(padded) == cp.padded_size(len(body) + 4)
    assert cp.unpad(padded) == body


@pytest.mark.parametrize(("mangle", "complaint"), [
    (lambda p: p[:-1], "not padded to its size bucket"),
    (lambda p: p + bytes(256), "not padded to its size bucket"),
    (lambda p: p[:-1] + b"\x01", "padding is not zero"),
    (lambda p: struct.pack(">I", 300) + p[4:], "larger than the message"),
    (lambda p: b"\x00\x00", "too short"),
])
def test_unpad_refuses_anything_but_exact_zero_padding(mangle, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        cp.unpad(mangle(cp.pad(b"hello")))


def test_nonce_layout_is_a_zero_prefix_and_the_counter():
    assert cp.sealed_nonce(0) == bytes(12)
    assert cp.sealed_nonce(0x0102030405060708) == bytes(4) + bytes(range(1, 9))
    assert len({cp.sealed_nonce(n) for n in range(1000)}) == 1000


def test_aad_binds_session_direction_epoch_and_counter():
    sid = b"s" * 32
    base = cp.sealed_aad(sid, cp.DIRECTION_I2R, 1, 2)
    assert base == b"p2pchat/sealed/v1\x00" + sid + b"i2r" + struct.pack(">IQ", 1, 2)
    others = {cp.sealed_aad(b"t" * 32, cp.DIRECTION_I2R, 1, 2), cp.sealed_aad(sid, cp.DIRECTION_R2I, 1, 2),
              cp.sealed_aad(sid, cp.DIRECTION_I2R, 2, 2), cp.sealed_aad(sid, cp.DIRECTION_I2R, 1, 3)}
    assert base not in others and len(others) == 4


def test_transcript_items_are_length_prefixed_so_boundaries_cannot_shift():
    a, b = cp.Transcript(), cp.Transcript()
    a.add("x", b"ab")
    a.add("y", b"c")
    b.add("x", b"a")
    b.add("y", b"bc")
    assert a.digest() != b.digest()
    assert a.encoded() == b"p2pchat/chat-transcript/v1" + b"\x01x\x00\x00\x00\x02ab" + b"\x01y\x00\x00\x00\x01c"
    assert a.labels == ["x", "y"]


def test_transcript_values_encode_text_and_integers_and_refuse_the_rest():
    assert cp.encode_item("é") == "é".encode()
    assert cp.encode_item(1) == b"\x00\x00\x00\x01"
    for bad in (True, -1, 2**32, 1.5):
        with pytest.raises(TypeError):
            cp.encode_item(bad)


@pytest.mark.parametrize("box_len", [16, 255, 256, 65_535, 65_536, 4 * 65_536 + 16, cp.MAX_BOX])
@pytest.mark.parametrize(("epoch", "counter"), [(0, 0), (3, 127), (cp.MAX_EPOCH, cp.MAX_COUNTER)])
def test_a_sealed_frame_made_in_place_is_byte_for_byte_the_codecs(box_len, epoch, counter):
    box = bytes(range(256)) * (box_len // 256) + bytes(box_len % 256)
    frame, at = cp.sealed_frame(epoch, counter, box_len)
    frame[at:] = box
    assert bytes(frame) == cp.CHAT.encode("sealed", epoch=epoch, counter=counter, box=box)


def test_a_sealed_frame_refuses_a_box_the_schema_refuses():
    with pytest.raises(ValueError):
        cp.sealed_frame(0, 0, 15)
    with pytest.raises(ValueError):
        cp.sealed_frame(0, 0, cp.MAX_BOX + 1)
    with pytest.raises(FrameError):
        cp.sealed_frame(0, cp.MAX_COUNTER + 1, 16)


@pytest.mark.parametrize("size", [1, 4095, 4096, 65_000, 65_408, 65_409, cp.MAX_CHUNK])
def test_a_file_chunk_padded_in_parts_is_byte_for_byte_the_padded_message(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    fields = {"id": b"\x07" * 16, "offset": 2**40 + 3, "data": data}
    parts = cp.padded_parts("file_chunk", **fields)
    assert b"".join(parts) == cp.pad(cp.SEALED_CONTENT.encode_body("file_chunk", **fields))
    body = cp.SEALED_CONTENT.encode_body("file_chunk", **fields)
    if size >= cp.BIG_FIELD:
        assert parts[1] is data                 # the chunk itself, not a copy
    else:                                       # the packed body: one padded part, or a part of its own if long
        assert len(parts) == 1 if len(body) < cp.BIG_FIELD else parts[1] == body


@pytest.mark.parametrize("length", [1, 4000, 4100, 65_000, cp.MAX_TEXT_BYTES])
def test_a_text_padded_in_parts_is_byte_for_byte_the_padded_message(length):
    fields = {"id": 1, "sent_at": 1.5, "text": "é" * (length // 2) + "x" * (length % 2)}
    parts = cp.padded_parts("text", **fields)
    body = cp.SEALED_CONTENT.encode_body("text", **fields)
    assert b"".join(parts) == cp.pad(body)
    if len(fields["text"]) >= cp.BIG_FIELD:        # a long text's UTF-8 is a part of its own (no msgpack copy)
        assert parts[1] == fields["text"].encode()
    else:                                           # a long packed body is a part of its own, a short one padded
        assert len(parts) == 1 if len(body) < cp.BIG_FIELD else parts[1] == body


def test_a_file_chunk_padded_in_parts_is_checked_like_any_message():
    with pytest.raises(FrameError):
        cp.padded_parts("file_chunk", id=b"\x07" * 16, offset=0, data=bytes(cp.MAX_CHUNK + 1))
    with pytest.raises(FrameError):
        cp.padded_parts("file_chunk", id=b"short", offset=0, data=bytes(10_000))


@settings(max_examples=300, deadline=None)
@given(epoch=st.integers(0, cp.MAX_EPOCH), counter=st.integers(0, cp.MAX_COUNTER),
       box=st.binary(min_size=16, max_size=300), cut=st.integers(0, 400), value=st.integers(0, 255))
def test_a_received_sealed_frame_decodes_in_its_buffer_exactly_as_the_general_decoder(epoch, counter, box, cut,
                                                                                        value):
    """decode_buffer keeps the box as a writable view of the frame's own buffer and otherwise agrees with
    decode, field for field and refusal for refusal — also for a frame with any one byte changed."""
    body = cp.CHAT.encode_body("sealed", epoch=epoch, counter=counter, box=box)
    for candidate in (body, body[:cut % len(body)] + bytes([value]) + body[cut % len(body) + 1:]):
        try:
            expected = cp.CHAT.decode(candidate)
        except FrameError:
            with pytest.raises(FrameError):
                cp.CHAT.decode_buffer(bytearray(candidate))
            continue
        got = cp.CHAT.decode_buffer(bytearray(candidate))
        assert got.type == expected.type and got.fields.keys() == expected.fields.keys()
        assert all(bytes(got[k]) == v if isinstance(v, bytes) else got[k] == v for k, v in expected.fields.items())
        if got.type == "sealed":
            assert isinstance(got["box"], memoryview) and not got["box"].readonly


def test_a_sealed_frame_in_another_msgpack_layout_is_still_read_by_the_general_decoder():
    import msgpack

    for obj in ({"box": b"b" * 20, "t": "sealed", "epoch": 1, "counter": 2},          # keys in another order
                {"t": "sealed", "epoch": 1, "counter": 2, "box": b"b" * 20, "x": 1}):  # an extra field
        msg = cp.CHAT.decode_buffer(bytearray(msgpack.packb(obj, use_bin_type=True)))
        assert (msg.type, msg["epoch"], msg["counter"], bytes(msg["box"])) == ("sealed", 1, 2, b"b" * 20)


# --- [file transfer, branch h-filedirect] decode_inner: a file chunk's data as a view ----------------------------

def _decoded(body: bytes) -> object:
    """What SEALED_CONTENT.decode makes of ``body`` (type and fields, or the error's class and message)."""
    try:
        msg = cp.SEALED_CONTENT.decode(body)
    except FrameError as exc:
        return (type(exc), str(exc))
    return (msg.type, dict(msg.fields))


def _inner_decoded(body: bytes) -> object:
    try:
        msg = cp.decode_inner(memoryview(bytearray(body)))
    except FrameError as exc:
        return (type(exc), str(exc))
    return (msg.type, {k: bytes(v) if isinstance(v, memoryview) else v for k, v in msg.fields.items()})


@settings(max_examples=200)
@given(tid=st.binary(min_size=16, max_size=16), offset=st.integers(0, 2**63 - 1),
       data=st.binary(min_size=1, max_size=300), flip=st.integers(0, 400), byte=st.integers(0, 255))
def test_decode_inner_agrees_with_the_general_decoder_on_chunks_and_changed_chunks(tid, offset, data, flip, byte):
    body = cp.SEALED_CONTENT.encode_body("file_chunk", id=tid, offset=offset, data=data)
    view = cp.decode_inner(memoryview(bytearray(body)))
    assert isinstance(view["data"], memoryview)           # the fast path took it: no copy of the data
    assert _inner_decoded(body) == _decoded(body)
    changed = bytearray(body)
    changed[flip % len(body)] = byte                       # any changed byte: the same message or the same error
    assert _inner_decoded(bytes(changed)) == _decoded(bytes(changed))


def test_decode_inner_leaves_other_layouts_and_out_of_schema_chunks_to_the_general_decoder():
    import msgpack

    tid = bytes(range(16))
    others = [
        msgpack.packb({"t": "file_chunk", "offset": 5, "id": tid, "data": b"x"}, use_bin_type=True),  # key order
        msgpack.packb({"t": "file_chunk", "id": tid, "offset": -1, "data": b"x"}, use_bin_type=True),  # signed
        msgpack.packb({"t": "file_chunk", "id": tid, "offset": 2**63, "data": b"x"}, use_bin_type=True),
        msgpack.packb({"t": "file_chunk", "id": tid, "offset": 0, "data": b""}, use_bin_type=True),   # empty
        msgpack.packb({"t": "file_chunk", "id": tid, "offset": 0, "data": bytes(cp.MAX_CHUNK + 1)}, use_bin_type=True),
        msgpack.packb({"t": "file_chunk", "id": tid, "offset": 0, "data": b"x"}, use_bin_type=True) + b"\x00",
        cp.SEALED_CONTENT.encode_body("file_ack", id=tid, offset=9),
        cp.SEALED_CONTENT.encode_body("text", id=1, sent_at=1.0, text="file_chunk"),
    ]
    for body in others:
        assert _inner_decoded(body) == _decoded(body)
    with pytest.raises(FrameError):
        cp.decode_inner(memoryview(bytearray(others[3])))
