"""Framing (protocol.md §1, ledger-protocol.md §1): ``u32 length | msgpack map`` with the type in ``t`` first."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack


class SpecError(Exception):
    """The peer broke the documented protocol (or this implementation of it)."""


def pack(t: str, **fields: Any) -> bytes:
    """One frame: ``t`` first, then the fields in the order given (protocol.md §1)."""
    body = msgpack.packb({"t": t, **fields}, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def unpack_body(body: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_no_ext)
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise SpecError(f"a frame body must be a map with a text 't', got {value!r:.80}")
    return value


def _no_ext(code: int, data: bytes) -> Any:
    raise SpecError("msgpack extension types are refused")


class Stream:
    """Reads frames from a byte source: ``recv()`` returns bytes (b"" at the end), or None after it ``feed``s
    this stream itself (a relay link, whose records carry two streams)."""

    def __init__(self, recv: Any, max_frame: int) -> None:
        self._recv = recv
        self._buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def _fill(self, n: int) -> None:
        while len(self._buffer) < n:
            chunk = self._recv()
            if chunk is None:               # the source fed this stream itself (a relay's records)
                continue
            if not chunk:
                raise SpecError("the connection closed")
            self._buffer += chunk

    def read_raw(self) -> bytes:
        """The next whole frame, length prefix included."""
        self._fill(4)
        (length,) = struct.unpack(">I", self._buffer[:4])
        if length > self.max_frame:
            raise SpecError(f"announced frame length {length} above {self.max_frame}")
        self._fill(4 + length)
        frame = bytes(self._buffer[:4 + length])
        del self._buffer[:4 + length]
        return frame

    def buffered_frame(self) -> bytes | None:
        """A whole frame already buffered, or None (reads nothing)."""
        if len(self._buffer) < 4:
            return None
        (length,) = struct.unpack(">I", self._buffer[:4])
        if length > self.max_frame or len(self._buffer) < 4 + length:
            return None
        return self.read_raw()

    def read(self) -> dict[str, Any]:
        return unpack_body(self.read_raw()[4:])


def socket_stream(sock: socket.socket, max_frame: int) -> Stream:
    return Stream(lambda: sock.recv(65536), max_frame)
