"""The chat protocol's hand-written readers of hostile bytes (``CHAT.decode_buffer``'s sealed-frame view and
``decode_inner``'s file-chunk view) accept exactly what the general decoder accepts, with the same values, and
leave everything else to it: generated maps near their layouts — every msgpack width of each integer and length
(minimal or not, signed forms, negative, out of range), bool/nil/float/str where an integer or bytes belongs,
duplicate, missing and extra keys, another map size or map form, lying lengths, trailing bytes, truncation."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat import chat_protocol as cp
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import FrameError

_UINT = {"cc": ">B", "cd": ">H", "ce": ">I", "cf": ">Q"}
_SINT = {"d0": ">b", "d1": ">h", "d2": ">i", "d3": ">q"}
_EDGE_INTS = [0, 1, 15, 16, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
              -1, -32, -33, -128, -129, -(2**63)]
# One kind of damage per generated frame (the rest exactly as a sender packs it), so that each is reached on
# frames the views would otherwise take.
NOISES = ["none", "none", "none", "kind", "signed", "key", "length", "drop", "duplicate", "extra", "swap", "count",
          "map form", "trailing", "truncated"]
_INTS = st.sampled_from(_EDGE_INTS) | st.integers(0, 300) | st.integers(0, 2**64 - 1) | st.integers(-(2**63), -1)
_OTHER_KINDS = [True, False, None, 1.0, "7", "", b"7", [], [1], {}, {"a": 1}]


@st.composite
def _int_item(draw: st.DrawFn, noise: str) -> bytes:
    """An integer (edge values weighted) in any unsigned msgpack form that can hold it, minimal or not; with
    ``signed`` also the signed forms, with ``kind`` sometimes another kind of value where an integer belongs."""
    if noise == "kind":
        return msgpack.packb(draw(st.sampled_from(_OTHER_KINDS)))
    value = draw(_INTS)
    form = draw(st.sampled_from(["min", *_UINT, *_SINT] if noise == "signed" else ["min", *_UINT]))
    if form != "min":
        try:
            return bytes.fromhex(form) + struct.pack(_UINT.get(form) or _SINT[form], value)
        except struct.error:
            pass
    return msgpack.packb(value)


def _sized(markers: tuple[int, int, int], n: int, form: int) -> bytes:
    """A bin/str/map header for ``n`` in form 0, 1 or 2 (8/16/32-bit length; map: 16/32 only)."""
    widths = (1, 2, 4)
    for f in range(form, 3):
        if markers[f] and n < 1 << 8 * widths[f]:
            return bytes((markers[f],)) + n.to_bytes(widths[f], "big")
    raise AssertionError(n)


@st.composite
def _bytes_item(draw: st.DrawFn, lengths: st.SearchStrategy[int], noise: str) -> bytes:
    """A bin in any length form; with ``length`` its length sometimes lying, with ``kind`` sometimes a str of
    those bytes or another kind of value."""
    if noise == "kind" and draw(st.booleans()):
        return msgpack.packb(draw(st.sampled_from(_OTHER_KINDS)))
    n = draw(lengths)
    data = bytes(n) if n > 400 else draw(st.binary(min_size=n, max_size=n))
    said = n + draw(st.sampled_from([-1, 1, 5, -n])) if noise == "length" and draw(st.booleans()) else n
    if noise == "kind" and draw(st.booleans()):
        return _sized((0xD9, 0xDA, 0xDB), said, 0) + data
    return _sized((0xC4, 0xC5, 0xC6), max(said, 0), draw(st.sampled_from([0, 0, 0, 1, 2]))) + data


@st.composite
def _key_item(draw: st.DrawFn, name: str, noise: str) -> bytes:
    """A key as msgpack packs it (fixstr); with ``key`` sometimes in the longer str 8 form, or as bytes."""
    form = draw(st.sampled_from(["fix", "str8", "bin"])) if noise == "key" else "fix"
    if form == "str8":
        return b"\xd9" + bytes((len(name),)) + name.encode()
    return msgpack.packb(name.encode() if form == "bin" else name, use_bin_type=True)


ItemFactory = Callable[[str], st.SearchStrategy[bytes]]


@st.composite
def _frame(draw: st.DrawFn, type_: str, fields: list[tuple[str, ItemFactory]]) -> bytes:
    """A map near ``{"t": type_, **fields}`` as its sender packs it (any values, any unsigned integer widths),
    with at most one kind of damage (:data:`NOISES`)."""
    noise = draw(st.sampled_from(NOISES))
    target = draw(st.sampled_from(["t", *(name for name, _ in fields)]))    # the one field a field noise hits
    strategies = {name: make(noise if name == target else "none") for name, make in fields}
    t = msgpack.packb(draw(st.sampled_from([type_, "sealed", "file_chunk", "text", "sealed\x00"]))
                      if noise == "kind" and target == "t" else type_)
    pairs = [(draw(_key_item(name, noise if name == target else "none")), value)
             for name, value in [("t", t), *((name, draw(value)) for name, value in strategies.items())]]
    if noise == "drop":
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    elif noise == "duplicate":      # a key twice: msgpack keeps the last value, the map says one more entry
        at = draw(st.integers(0, len(pairs) - 1))
        other = strategies.get(msgpack.unpackb(pairs[at][0]))
        value = draw(other) if other is not None else pairs[at][1]
        pairs.insert(draw(st.integers(0, len(pairs))), (pairs[at][0], value))
    elif noise == "extra":
        pairs.insert(draw(st.integers(0, len(pairs))), (msgpack.packb("x"), msgpack.packb(1)))
    elif noise == "swap":
        i, j = draw(st.integers(0, len(pairs) - 1)), draw(st.integers(0, len(pairs) - 1))
        pairs[i], pairs[j] = pairs[j], pairs[i]
    count = len(pairs) + (draw(st.sampled_from([-1, 1, -len(pairs)])) if noise == "count" else 0)
    if noise == "map form":
        head = _sized((0, 0xDE, 0xDF), count, draw(st.integers(1, 2)))
    else:
        head = bytes((0x80 | count,))
    body = head + b"".join(k + v for k, v in pairs)
    if noise == "trailing":
        body += draw(st.sampled_from([b"\x00", b"\xc0", b"\x01\x02", b"\x80"]))
    elif noise == "truncated":
        body = body[:draw(st.integers(0, len(body) - 1))]
    return body


def _outcome(decode: Callable[[bytes], Message], body: bytes) -> tuple[object, object]:
    """What ``decode`` makes of ``body``: type and fields (views as bytes), or the error's class and text."""
    try:
        msg = decode(body)
    except FrameError as exc:
        return type(exc), str(exc)
    return msg.type, {k: bytes(v) if isinstance(v, memoryview) else v for k, v in msg.fields.items()}


_BOX_LENGTHS = st.integers(0, 40) | st.integers(16, 300) | st.sampled_from([15, 16, cp.MAX_BOX, cp.MAX_BOX + 1])
_SEALED: list[tuple[str, ItemFactory]] = [("epoch", _int_item), ("counter", _int_item),
                                          ("box", functools.partial(_bytes_item, _BOX_LENGTHS))]
_CHUNK_LENGTHS = st.integers(0, 300) | st.sampled_from([cp.MAX_CHUNK, cp.MAX_CHUNK + 1])
_ID_LENGTHS = st.sampled_from([15, 16, 16, 16, 17])
_CHUNK: list[tuple[str, ItemFactory]] = [("id", functools.partial(_bytes_item, _ID_LENGTHS)), ("offset", _int_item),
                                         ("data", functools.partial(_bytes_item, _CHUNK_LENGTHS))]


@settings(max_examples=600, deadline=None)
@given(body=_frame("sealed", _SEALED))
def test_the_sealed_frame_view_agrees_with_the_general_decoder_on_frames_near_its_layout(body):
    fast = _outcome(lambda b: cp.CHAT.decode_buffer(bytearray(b)), body)
    assert fast == _outcome(cp.CHAT.decode, body)
    msg = cp.CHAT.decode_buffer(bytearray(body)) if fast[0] == "sealed" else None
    if msg is not None and isinstance(msg["box"], memoryview):
        assert not msg["box"].readonly            # a view is only ever given of the frame's own buffer


@settings(max_examples=600, deadline=None)
@given(body=_frame("file_chunk", _CHUNK))
def test_the_file_chunk_view_agrees_with_the_general_decoder_on_messages_near_its_layout(body):
    fast = _outcome(lambda b: cp.decode_inner(memoryview(bytearray(b))), body)
    assert fast == _outcome(cp.SEALED_CONTENT.decode, body)


def test_the_generators_reach_both_the_views_and_the_general_decoder():
    """The strategies above are near enough to the senders' layouts for the fast paths to take some frames."""
    tid = bytes(range(16))
    chunk = cp.SEALED_CONTENT.encode_body("file_chunk", id=tid, offset=2**40, data=b"d" * 20)
    sealed = cp.CHAT.encode_body("sealed", epoch=3, counter=2**40, box=b"b" * 20)
    assert cp._file_chunk_view(memoryview(bytearray(chunk))) is not None
    assert cp._sealed_view(bytearray(sealed)) is not None
    # the same frames with a non-minimal integer width: still the views' (any width is the same value)
    wide = sealed.replace(b"\xa5epoch\x03", b"\xa5epoch\xcf" + (3).to_bytes(8, "big"))
    assert _outcome(lambda b: cp.CHAT.decode_buffer(bytearray(b)), wide) == _outcome(cp.CHAT.decode, wide)
    assert cp._sealed_view(bytearray(wide)) is not None


def _sealed_variants() -> dict[str, bytes]:
    """The sender's sealed frame with one field in another encoding or out of bounds (byte-level, named)."""
    base = cp.CHAT.encode_body("sealed", epoch=1, counter=2, box=b"b" * 20)
    epoch, counter, box = b"\xa5epoch\x01", b"\xa7counter\x02", b"\xa3box\xc4\x14" + b"b" * 20
    assert base == b"\x84\xa1t\xa6sealed" + epoch + counter + box

    def frame(e: bytes = epoch, c: bytes = counter, b: bytes = box, head: bytes = b"\x84", tail: bytes = b"") -> bytes:
        return head + b"\xa1t\xa6sealed" + e + c + b + tail

    return {
        "as sent": base,
        "epoch as uint64": frame(e=b"\xa5epoch\xcf" + (1).to_bytes(8, "big")),
        "epoch over its bound": frame(e=b"\xa5epoch\xcf" + (cp.MAX_EPOCH + 1).to_bytes(8, "big")),
        "epoch at its bound": frame(e=b"\xa5epoch\xce" + cp.MAX_EPOCH.to_bytes(4, "big")),
        "epoch an empty str": frame(e=b"\xa5epoch\xa0"),
        "epoch an empty map": frame(e=b"\xa5epoch\x80"),
        "epoch an empty list": frame(e=b"\xa5epoch\x90"),
        "epoch true": frame(e=b"\xa5epoch\xc3"),
        "epoch nil": frame(e=b"\xa5epoch\xc0"),
        "epoch negative fixint": frame(e=b"\xa5epoch\xff"),
        "epoch int8 5": frame(e=b"\xa5epoch\xd0\x05"),
        "epoch int8 -1": frame(e=b"\xa5epoch\xd0\xff"),
        "epoch truncated uint16": frame(e=b"\xa5epoch\xcd\x01"),
        "counter at 2**64-1": frame(c=b"\xa7counter\xcf" + bytes([0xFF] * 8)),
        "counter float": frame(c=b"\xa7counter\xcb" + bytes(8)),
        "box a str": frame(b=b"\xa3box\xd9\x14" + b"b" * 20),
        "box of 15 bytes": frame(b=b"\xa3box\xc4\x0f" + b"b" * 15),
        "box of 16 bytes": frame(b=b"\xa3box\xc4\x10" + b"b" * 16),
        "box in bin 32": frame(b=b"\xa3box\xc6" + (20).to_bytes(4, "big") + b"b" * 20),
        "box length one too long": frame(b=b"\xa3box\xc4\x15" + b"b" * 20),
        "box length one too short": frame(b=b"\xa3box\xc4\x13" + b"b" * 20),
        "a trailing byte": frame(tail=b"\x00"),
        "a second frame after it": frame(tail=base),
        "map of 5 with an extra key": frame(head=b"\x85", tail=b"\xa1x\x01"),
        "map of 5 with the box twice": frame(head=b"\x85", tail=b"\xa3box\xc4\x10" + b"c" * 16),
        "map of 3": frame(head=b"\x83"),
        "map 16 of 4": frame(head=b"\xde\x00\x04"),
        "t in str 8": b"\x84\xd9\x01t\xa6sealed" + epoch + counter + box,
    }


def _chunk_variants() -> dict[str, bytes]:
    tid = bytes(range(16))
    base = cp.SEALED_CONTENT.encode_body("file_chunk", id=tid, offset=5, data=b"d" * 20)
    head = b"\x84\xa1t\xaafile_chunk"
    ident, offset, data = b"\xa2id\xc4\x10" + tid, b"\xa6offset\x05", b"\xa4data\xc4\x14" + b"d" * 20
    assert base == head + ident + offset + data

    def frame(i: bytes = ident, o: bytes = offset, d: bytes = data, tail: bytes = b"") -> bytes:
        return head + i + o + d + tail

    return {
        "as sent": base,
        "offset 2**63-1": frame(o=b"\xa6offset\xcf" + (2**63 - 1).to_bytes(8, "big")),
        "offset 2**63": frame(o=b"\xa6offset\xcf" + (2**63).to_bytes(8, "big")),
        "offset -1": frame(o=b"\xa6offset\xff"),
        "offset false": frame(o=b"\xa6offset\xc2"),
        "offset an empty str": frame(o=b"\xa6offset\xa0"),
        "an id of 15 bytes": frame(i=b"\xa2id\xc4\x0f" + tid[:15]),
        "an id in bin 16": frame(i=b"\xa2id\xc5\x00\x10" + tid),
        "no data": frame(d=b"\xa4data\xc4\x00"),
        "data a str": frame(d=b"\xa4data\xd9\x14" + b"d" * 20),
        "data length lying": frame(d=b"\xa4data\xc4\x15" + b"d" * 20),
        "a trailing byte": frame(tail=b"\xc0"),
    }


@pytest.mark.parametrize("name", list(_sealed_variants()))
def test_the_sealed_frame_view_and_the_general_decoder_agree_on_each_named_variant(name):
    body = _sealed_variants()[name]
    assert _outcome(lambda b: cp.CHAT.decode_buffer(bytearray(b)), body) == _outcome(cp.CHAT.decode, body)


@pytest.mark.parametrize("name", list(_chunk_variants()))
def test_the_file_chunk_view_and_the_general_decoder_agree_on_each_named_variant(name):
    body = _chunk_variants()[name]
    assert _outcome(lambda b: cp.decode_inner(memoryview(bytearray(b))), body) == \
        _outcome(cp.SEALED_CONTENT.decode, body)
