"""The one frame codec: 4-byte big-endian length, then one msgpack map with a ``t`` (type) field.

Every byte on every socket of the project goes through a :class:`Protocol` defined here. Limits are checked
before allocation: the length prefix against ``max_frame`` before the body is buffered, and msgpack's own
string/bytes/array/map limits while unpacking. Each message type has a schema; unknown types, missing or
ill-typed fields are refused with a :class:`FrameError` whose text is meant for a person. Fields not in the
schema are dropped, so a newer peer may add optional fields without breaking older ones.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from p2pchat.foundation.errors import FrameError

HEADER = struct.Struct(">I")
TYPE_KEY = "t"
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
MAX_ARRAY_LEN = 100_000
MAX_MAP_LEN = 1_000
BODY_BUFFER = 64 * 1024      # frames larger than this are received into a buffer of their own (FrameReader)
ERROR_TYPE = "error"

_KIND_NAMES = {str: "text", bytes: "bytes", int: "integer", bool: "true/false", list: "list", dict: "map",
               float: "number"}


class Field(NamedTuple):
    """Schema of one field: its Python type and bounds.

    ``max_len`` bounds str (characters), bytes, list and dict sizes; ``lo``/``hi`` bound integers;
    ``items`` is the schema of list elements; ``fields`` the schema of a nested map.
    (A named tuple and a plain class below, not dataclasses: importing :mod:`dataclasses` costs every command's
    start-up several milliseconds, bench/startup_bench.py.)
    """

    kind: type
    required: bool = True
    nullable: bool = False
    max_len: int | None = None
    min_len: int = 0
    lo: int | None = None
    hi: int | None = None
    items: Field | None = None
    fields: Mapping[str, Field] | None = None


def opt(kind: type, **kw: Any) -> Field:
    """Shorthand for an optional field (absent or ``None``)."""
    return Field(kind, required=False, nullable=True, **kw)


def check_value(value: Any, spec: Field, where: str) -> Any:
    """Validate ``value`` against ``spec``; returns the value (nested maps reduced to known keys)."""
    if value is None:
        if spec.nullable:
            return None
        raise FrameError(f"{where} is missing")
    kind = spec.kind
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise FrameError(f"{where} should be {_KIND_NAMES.get(kind, kind.__name__)}, "
                         f"got {_KIND_NAMES.get(type(value), type(value).__name__)}")
    if kind is int:
        if spec.lo is not None and value < spec.lo:
            raise FrameError(f"{where} is {value}, below the minimum {spec.lo}")
        if spec.hi is not None and value > spec.hi:
            raise FrameError(f"{where} is {value}, above the maximum {spec.hi}")
    if kind in (str, bytes, list, dict):
        if spec.max_len is not None and len(value) > spec.max_len:
            raise FrameError(f"{where} is too long ({len(value)} > {spec.max_len})")
        if len(value) < spec.min_len:
            raise FrameError(f"{where} is too short ({len(value)} < {spec.min_len})")
    if kind is list and spec.items is not None:
        return [check_value(v, spec.items, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is dict and spec.fields is not None:
        return check_fields(value, spec.fields, where)
    return value


def check_fields(values: Mapping[str, Any], schema: Mapping[str, Field], where: str) -> dict[str, Any]:
    """Validate a map against a field schema; unknown keys are dropped."""
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if name not in values or values[name] is None:
            if spec.required and not spec.nullable:
                raise FrameError(f"{where}: field '{name}' is missing")
            out[name] = None
            continue
        out[name] = check_value(values[name], spec, f"{where}: field '{name}'")
    return out


class Message:
    """A decoded, schema-checked frame."""

    __slots__ = ("fields", "type")

    def __init__(self, type: str, fields: dict[str, Any] | None = None) -> None:
        self.type = type
        self.fields: dict[str, Any] = {} if fields is None else fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.type, self.fields) == (other.type, other.fields)

    def __repr__(self) -> str:
        return f"Message(type={self.type!r}, fields={self.fields!r})"

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.fields.get(key)
        return default if value is None else value


class BoxedFrame(bytearray):
    """One whole frame (length prefix included) whose bytes from ``box_at`` to its end are an end-to-end sealed
    box: ciphertext only the two chat peers can open. The chat channel makes them; a relay link may carry such a
    box without sealing it once more (a box record, docs/relay.md). Anything else is plain ``bytes``, sealed whole.

    A ``bytearray``: the channel seals the box into the frame where it will be written from
    (:func:`p2pchat.chat_protocol.sealed_frame`), so a megabyte frame is never copied into ``bytes`` (a ``bytes``
    subclass made from a buffer costs three passes over it). Nothing changes a frame once it is sealed.
    """

    box_at: int

    def __init__(self, frame: bytes | bytearray | memoryview | int, box_at: int) -> None:
        """A copy of ``frame`` (or ``frame`` zero bytes, to be filled in place)."""
        super().__init__(frame)
        if not 0 < box_at < len(self):
            raise ValueError("a boxed frame's box starts after its first byte and before its end")
        self.box_at = box_at

    @property
    def box_len(self) -> int:
        return len(self) - self.box_at


Frame = bytes | bytearray     # what goes on the wire: ``bytes``, or a :class:`BoxedFrame` sealed in place


CLEAR_BOX_MIN = 16 * 1024   # a box this long is worth a record of its own (smaller ones are sealed with the rest)


def _reject_ext(code: int, data: bytes) -> Any:
    raise FrameError(f"msgpack extension type {code} is not allowed")


# [red team, 2026-12-07 night] what a frame may make msgpack build, beyond what its schemas allow
SHAPE_SLACK = 16          # maps and lists a frame may hold beyond the most its schemas allow (newer optional fields)
ITEM_SLACK = 32           # entries a map or list may have beyond the longest its schemas allow (a newer peer's
                          # optional fields; a list a few entries too long is refused by its schema, naming it)
CONTAINER_FLOOR = 1024    # maps and lists any frame may hold under ``bytes_per_container`` (status maps, peer lists)


def _containers(spec: Field) -> int:
    """Maps and lists a value of ``spec`` may hold, itself included (a list of unspecified items: scalars)."""
    if spec.kind is list:
        inner = _containers(spec.items) if spec.items is not None else 0
        return 1 + (spec.max_len if spec.max_len is not None else MAX_ARRAY_LEN) * inner
    if spec.kind is dict:
        return 1 + sum(_containers(f) for f in (spec.fields or {}).values())
    return 0


def _items(spec: Field) -> int:
    """The longest list or map a value of ``spec`` may hold."""
    if spec.kind is list:
        longest = spec.max_len if spec.max_len is not None else MAX_ARRAY_LEN
        return max(longest, _items(spec.items) if spec.items is not None else 0)
    if spec.kind is dict:
        fields = spec.fields or {}
        return max([len(fields), *(_items(f) for f in fields.values())])
    return 0


class _ShapeBudget:
    """msgpack's hook for every map and list it builds: past ``budget`` of them the frame is refused, so a frame
    of nested empty containers (each byte a 56–64-byte Python object, and the time to make it) costs what the
    schemas allow, not 70 times its size."""

    __slots__ = ("left", "protocol")

    def __init__(self, budget: int, protocol: str) -> None:
        self.left, self.protocol = budget, protocol

    def __call__(self, obj: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise FrameError(f"frame holds more maps and lists than any {self.protocol} message may")
        return obj


class Protocol:
    """A named set of message schemas with a frame size limit.

    Every protocol also knows the ``error`` message (``reason``: text), sent before closing a connection.
    ``bounded_shape``: a frame may hold only as many maps and lists, and lists and maps only as long, as the
    schemas allow (plus :data:`SHAPE_SLACK` containers and :data:`ITEM_SLACK` entries for a newer peer's optional
    fields); anything more is refused while msgpack reads it, before it is built. ``bytes_per_container``: for a
    protocol whose schemas allow many nested values (a block's records), a frame may hold at most
    :data:`CONTAINER_FLOOR` maps and lists plus one per that many bytes of its body, so what msgpack builds stays
    proportional to the bytes received.
    """

    def __init__(self, name: str, messages: Mapping[str, Mapping[str, Field]],
                 max_frame: int = DEFAULT_MAX_FRAME, *, bounded_shape: bool = False,
                 bytes_per_container: int | None = None) -> None:
        self.name = name
        self.max_frame = max_frame
        self.bytes_per_container = bytes_per_container
        self.messages: dict[str, Mapping[str, Field]] = {ERROR_TYPE: {"reason": Field(str, max_len=1000)}}
        self.messages.update(messages)
        self.max_containers: int | None = None
        self.max_items = MAX_ARRAY_LEN
        if bounded_shape:
            shapes = [Field(dict, fields={TYPE_KEY: Field(str), **schema}) for schema in self.messages.values()]
            self.max_containers = SHAPE_SLACK + max(_containers(shape) for shape in shapes)
            self.max_items = ITEM_SLACK + max(_items(shape) for shape in shapes)

    def encode_body(self, type_: str, **fields: Any) -> bytes:
        """Validate and pack one message without the length prefix."""
        schema = self.messages.get(type_)
        if schema is None:
            raise ValueError(f"{self.name}: no message type {type_!r}")
        checked = check_fields(fields, schema, f"outgoing {type_!r}")
        body = msgpack.packb({TYPE_KEY: type_, **{k: v for k, v in checked.items() if v is not None}},
                             use_bin_type=True)
        if len(body) > self.max_frame:
            raise FrameError(f"the {type_} message is {len(body)} bytes, over the {self.max_frame}-byte limit")
        return body

    def encode(self, type_: str, **fields: Any) -> bytes:
        """Validate and pack one message as a complete frame (length prefix + body)."""
        body = self.encode_body(type_, **fields)
        return HEADER.pack(len(body)) + body

    def decode(self, body: bytes | bytearray | memoryview) -> Message:
        """Unpack and schema-check one frame body."""
        if len(body) > self.max_frame:
            raise FrameError(f"frame of {len(body)} bytes is over the {self.max_frame}-byte limit")
        if not body:
            raise FrameError("empty frame")
        hooks: dict[str, Any] = {}
        limit = self.max_containers
        if self.bytes_per_container is not None:
            by_size = CONTAINER_FLOOR + len(body) // self.bytes_per_container
            limit = by_size if limit is None else min(limit, by_size)
        if limit is not None:
            budget = _ShapeBudget(limit, self.name)
            hooks = {"object_hook": budget, "list_hook": budget}
        try:
            obj = msgpack.unpackb(
                body, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext,
                max_str_len=len(body), max_bin_len=len(body),
                max_array_len=min(self.max_items, len(body)), max_map_len=min(MAX_MAP_LEN, self.max_items, len(body)),
                **hooks)
        except FrameError:
            raise
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            # UnicodeDecodeError and ExtraData are ValueErrors.
            if "exceeds max_array_len" in str(exc) or "exceeds max_map_len" in str(exc):
                raise FrameError(f"frame has a list or map longer than any {self.name} message may hold") from None
            raise FrameError(f"frame is not valid msgpack ({type(exc).__name__})") from None
        if not isinstance(obj, dict):
            raise FrameError(f"frame should be a map, got {_KIND_NAMES.get(type(obj), type(obj).__name__)}")
        type_ = obj.get(TYPE_KEY)
        if not isinstance(type_, str):
            raise FrameError("frame has no message type")
        schema = self.messages.get(type_)
        if schema is None:
            shown = type_ if len(type_) <= 40 else type_[:40] + "…"
            # repr: the sender's words escape rather than close the quote ("x'); ✓ verified ('" cannot end it)
            raise FrameError(f"unknown message type {shown!r} for the {self.name} protocol")
        return Message(type_, check_fields(obj, schema, f"{type_!r} message"))

    def decode_buffer(self, body: bytearray | memoryview) -> Message:
        """:meth:`decode` of a body the caller gives away (the reader's own buffer of one frame): a protocol may
        return fields that are writable views into it (:data:`p2pchat.chat_protocol.CHAT` does for a sealed
        frame's box, which the channel then decrypts in place). The same result and errors as :meth:`decode`
        otherwise."""
        return self.decode(body)

    def reader(self) -> FrameReader:
        return FrameReader(self)


class AheadBudget:
    """Bytes that frame buffers made ahead of their bytes (:meth:`FrameReader.space`) may hold at once, over every
    reader of the process: each vouched-for peer may have one frame's buffer, and this bounds what many of them
    (many sessions of one verified peer) commit together. A frame over the budget is buffered as it arrives."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._lock = threading.RLock()      # (give() may run from a dropped reader's __del__, on any thread)

    def take(self, n: int) -> bool:
        with self._lock:
            if n > self._free:
                return False
            self._free -= n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self._free += n

    @property
    def free(self) -> int:
        return self._free


AHEAD = AheadBudget(64 * 1024 * 1024)


class FrameReader:
    """Sans-IO incremental frame splitter: feed bytes, get checked messages.

    The buffer never holds more than one frame's worth of bytes beyond what the length prefix allowed.
    After a :class:`FrameError` the stream is unusable and the connection must be closed.

    A frame over :data:`BODY_BUFFER` bytes (and within :attr:`buffer_limit`, a vouched-for peer's) may be received
    into a buffer of its own size once its length prefix arrived: the IO layer reads straight into :meth:`space`
    and reports with :meth:`wrote`, so a 1 MiB frame is copied once, by the kernel, and decoded from that buffer
    (:meth:`Protocol.decode_buffer`). Any other frame is buffered as its bytes arrive, so what a stranger makes
    the reader hold is what it sent; so is a large frame once the buffers made ahead of their bytes hold
    :data:`AHEAD`'s budget over every reader of the process (many sessions of one verified peer).
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.limit = protocol.max_frame     # may be lowered per connection (e.g. before a peer authenticated)
        self._buf = bytearray()
        self._need: int | None = None
        # Frames over BODY_BUFFER and up to this size may get a buffer of their own (space()), made when the
        # header arrives and so committed before the bytes are: only for a peer the owner vouched for (the chat
        # node, once step 3 verified the peer), never for a stranger (0).
        self.buffer_limit = 0
        self._body: bytearray | None = None     # a large frame's own buffer, filled up to _have
        self._have = 0
        self._ahead = 0                         # bytes of AHEAD this reader's own buffer holds

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        if self._body is not None:
            with memoryview(data) as view:
                n = min(len(view), len(self._body) - self._have)
                self._body[self._have:self._have + n] = view[:n]
                self._have += n
                out = self._finish_body()
                self._buf += view[n:]
            return out + list(self._drain()) if self._buf else out
        self._buf += data
        return list(self._drain())

    def space(self) -> memoryview | None:
        """The rest of the large frame being received, to be written in place (then :meth:`wrote`); None when
        no large frame is under way or the peer was not vouched for (bytes then go to :meth:`feed`). The frame's
        buffer is made on the first call, not when its header arrives, so a reader that is only fed (a relayed
        link) buffers what arrived, as before."""
        if self._body is None:
            if self._need is None or not BODY_BUFFER < self._need <= self.buffer_limit:
                return None
            if not AHEAD.take(self._need):      # many vouched-for peers' frames under way at once: as they arrive
                return None
            self._ahead = self._need
            from p2pchat.foundation.allocator import keep_freed_buffers  # (ctypes: not at start-up)

            keep_freed_buffers()      # the megabyte buffers of a stream reuse the heap's pages
            self._body = bytearray(self._need)
            self._have = len(self._buf)
            self._body[:self._have] = self._buf
            self._buf = bytearray()
        return memoryview(self._body)[self._have:]

    def wrote(self, n: int) -> list[Message]:
        """``n`` bytes were written at the start of :meth:`space`; returns the frame once it is complete."""
        assert self._body is not None and 0 <= n <= len(self._body) - self._have
        self._have += n
        return self._finish_body()

    def next_frame_size(self) -> int | None:
        """Size of the frame being received, once its header has arrived."""
        return self._need

    def pending(self) -> int:
        return len(self._buf) + self._have

    def held(self) -> int:
        """Bytes this reader holds for the frame under way: what arrived, or a large frame's own buffer (made
        ahead of its bytes, for a peer within :attr:`buffer_limit` only)."""
        return len(self._buf) + (len(self._body) if self._body is not None else 0)

    def _finish_body(self) -> list[Message]:
        body = self._body
        if body is None or self._have < len(body):
            return []
        self._body, self._have, self._need = None, 0, None
        self.release()
        return [self.protocol.decode_buffer(body)]

    def release(self) -> None:
        """Give back this reader's share of :data:`AHEAD` (its frame handed on, or the reader dropped)."""
        ahead, self._ahead = self._ahead, 0
        if ahead:
            AHEAD.give(ahead)

    def __del__(self) -> None:
        self.release()        # a reader dropped mid-frame (its connection ended) returns its share

    def _drain(self) -> Iterator[Message]:
        while True:
            if self._need is None:
                if len(self._buf) < HEADER.size:
                    return
                (size,) = HEADER.unpack_from(self._buf)
                if size > self.limit:
                    self._buf.clear()
                    raise FrameError(f"peer announced a frame of {size} bytes, over the "
                                     f"{self.limit}-byte limit")
                if size == 0:
                    raise FrameError("empty frame")
                del self._buf[:HEADER.size]
                self._need = size
            if len(self._buf) < self._need:
                return
            body: bytes | bytearray
            if len(self._buf) == self._need:    # the buffer is this frame (the usual case): no copy at all
                body, self._buf = self._buf, bytearray()
            else:
                with memoryview(self._buf) as view:  # one copy of the body, not two
                    body = bytes(view[:self._need])
                del self._buf[:self._need]
            self._need = None
            yield self.protocol.decode_buffer(body) if isinstance(body, bytearray) else self.protocol.decode(body)
