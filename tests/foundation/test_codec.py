import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.foundation.codec import BODY_BUFFER, HEADER, Field, Protocol, opt
from p2pchat.foundation.errors import FrameError

PROTO = Protocol("test", {
    "hello": {"version": Field(int, lo=1, hi=10), "name": Field(str, max_len=16), "blob": opt(bytes, max_len=8)},
    "batch": {"items": Field(list, max_len=3, items=Field(dict, fields={"n": Field(int)}))},
}, max_frame=1024)


def body(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_roundtrip_keeps_fields_and_type():
    frame = PROTO.encode("hello", version=2, name="ana", blob=b"\x00\x01")
    (msg,) = PROTO.reader().feed(frame)
    assert msg.type == "hello" and msg["version"] == 2 and msg["name"] == "ana" and msg["blob"] == b"\x00\x01"


def test_frames_split_across_many_feeds_are_reassembled():
    frames = PROTO.encode("hello", version=1, name="a") + PROTO.encode("hello", version=3, name="b")
    reader = PROTO.reader()
    got = []
    for i in range(len(frames)):
        got += reader.feed(frames[i:i + 1])
    assert [m["version"] for m in got] == [1, 3]


def test_oversized_length_prefix_is_refused_before_the_body_arrives():
    reader = PROTO.reader()
    with pytest.raises(FrameError, match="over the 1024-byte limit"):
        reader.feed(HEADER.pack(10_000_000))
    assert reader.pending() == 0


def test_unknown_type_is_named_in_the_error():
    with pytest.raises(FrameError, match="unknown message type 'nope'"):
        PROTO.decode(body({"t": "nope"}))


@pytest.mark.parametrize("obj, match", [
    ({"t": "hello", "name": "a"}, "'version' is missing"),
    ({"t": "hello", "version": "2", "name": "a"}, "should be integer, got text"),
    ({"t": "hello", "version": True, "name": "a"}, "should be integer"),
    ({"t": "hello", "version": 11, "name": "a"}, "above the maximum 10"),
    ({"t": "hello", "version": 1, "name": "x" * 17}, "too long"),
    ({"t": "batch", "items": [{"n": 1}, {"n": "x"}]}, r"items'\[1\]: field 'n' should be integer"),
    ({"t": "batch", "items": [{"n": 1}] * 4}, "too long"),
    ([1, 2], "should be a map"),
    ({"x": 1}, "no message type"),
])
def test_ill_formed_messages_are_refused_with_a_readable_reason(obj, match):
    with pytest.raises(FrameError, match=match):
        PROTO.decode(body(obj))


def test_garbage_and_extension_types_are_refused():
    with pytest.raises(FrameError, match="not valid msgpack"):
        PROTO.decode(b"\xc1\xc1\xc1")
    with pytest.raises(FrameError, match="extension type"):
        PROTO.decode(msgpack.packb({"t": "hello", "version": msgpack.ExtType(5, b"x"), "name": "a"}))
    with pytest.raises(FrameError, match="empty frame"):
        PROTO.reader().feed(HEADER.pack(0))


def test_unknown_fields_are_dropped_not_passed_on():
    msg = PROTO.decode(body({"t": "hello", "version": 1, "name": "a", "evil": 1}))
    assert "evil" not in msg.fields


def test_outgoing_messages_are_validated_too():
    with pytest.raises(FrameError):
        PROTO.encode("hello", version=99, name="a")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_frame_error(data):
    reader = PROTO.reader()
    try:
        reader.feed(data)
    except FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5)
                    | st.binary(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                    max_leaves=20))
def test_arbitrary_msgpack_values_never_raise_anything_but_frame_error(obj):
    try:
        PROTO.decode(body(obj))
    except FrameError:
        pass


BIG = Protocol("big", {"blob": {"data": Field(bytes)}}, max_frame=4 * 1024 * 1024)


def test_a_large_frame_is_received_into_its_own_buffer_in_place_or_fed_in_pieces_alike():
    """Past BODY_BUFFER the reader offers the rest of the frame as one writable space (the socket reads into
    it); bytes fed instead land there too, and what follows the frame is read as usual."""
    data = bytes(range(256)) * 1024
    frame, small = BIG.encode("blob", data=data), BIG.encode("blob", data=b"tail")
    reader = BIG.reader()
    reader.buffer_limit = BIG.max_frame              # a peer its owner vouched for
    assert reader.feed(frame[:1000]) == [] and reader.pending() == 996 and reader.next_frame_size() == len(frame) - 4
    space = reader.space()
    assert space is not None and len(space) == len(frame) - 1000
    space[:5000] = frame[1000:6000]
    assert reader.wrote(5000) == [] and reader.pending() == 5996
    (msg, tail) = reader.feed(frame[6000:] + small)       # the rest and the next frame in one piece
    assert msg["data"] == data and tail["data"] == b"tail"
    assert reader.space() is None and reader.pending() == 0


def test_a_large_frame_gets_a_buffer_of_its_own_only_from_a_vouched_peer_and_within_the_limits():
    """A stranger's reader (buffer_limit 0) and a reader that is only fed hold what arrived, never what a header
    announced; no frame over the limit ever gets a buffer."""
    stranger = BIG.reader()
    assert stranger.feed(HEADER.pack(3_000_000) + b"x") == [] and stranger.space() is None
    assert stranger.pending() == 1
    vouched = BIG.reader()
    vouched.buffer_limit = 2_000_000
    assert vouched.feed(HEADER.pack(2_000_001) + b"x") == [] and vouched.space() is None   # over what it vouched
    vouched = BIG.reader()
    vouched.buffer_limit = 2_000_000
    assert vouched.feed(HEADER.pack(BODY_BUFFER) + b"x") == [] and vouched.space() is None  # small: fed as usual
    reader = BIG.reader()
    reader.limit = reader.buffer_limit = 100_000
    with pytest.raises(FrameError, match="over the 100000-byte limit"):
        reader.feed(HEADER.pack(100_001) + b"x")
    assert reader.space() is None
