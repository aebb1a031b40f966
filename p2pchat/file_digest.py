"""The digest a file offer carries (docs/protocol.md §5.7 "The file's digest"): the plain SHA-256 of the whole
file, or its *root*, a SHA-256 over the SHA-256s of its 1 MiB pieces, which two cores can compute at once.

    root = SHA-256(ROOT_LABEL ‖ u64 size ‖ SHA-256(piece 0) ‖ … ‖ SHA-256(piece n−1))

with piece i the bytes ``i × PIECE … min((i + 1) × PIECE, size)`` and n = ⌈size / PIECE⌉ (no piece for an empty
file). Both bind every byte and the size; the sender of a file picks one (the root when the receiver announced
that it checks roots) and hashes the file once.

API::

    new_hasher(size, root) -> Hasher          # incremental: .update(data), .digest()
    file_digest(path, root) -> (size, digest) # the sender's pass over a file; pieces on several threads
    sha256_of(path) -> (size, sha256)
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import threading
from typing import Protocol

PIECE = 1 << 20                             # bytes per piece of the root
ROOT_LABEL = b"p2pchat/file-root/v1\x00"
DIGEST_LEN = 32
BLOCK = 1 << 20                             # bytes per read of the plain SHA-256
PARALLEL_FROM = 4 * PIECE                   # smaller files are hashed on the calling thread
MAX_WORKERS = 4


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class RootHasher:
    """The root of a file of ``size`` bytes, fed in order in pieces of any length (the receiver's chunks)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._root = hashlib.sha256(ROOT_LABEL + size.to_bytes(8, "big"))
        self._piece = hashlib.sha256()
        self._in_piece = 0          # bytes of the current piece hashed so far
        self._done = 0

    @classmethod
    def after_pieces(cls, size: int, digests: list[bytes]) -> RootHasher:
        """A hasher that has been fed the whole pieces whose SHA-256s are ``digests`` (a kept prefix hashed again,
        :func:`piece_digests`); the next byte fed is the first of the piece after them."""
        h = cls(size)
        if len(digests) * PIECE > size:
            raise ValueError("more pieces than the file has")
        for d in digests:
            h._root.update(d)
        h._done = len(digests) * PIECE
        return h

    def update(self, data: bytes | memoryview, /) -> None:
        with memoryview(data) as view:
            if self._done + len(view) > self.size:
                raise ValueError("more bytes than the file's size")
            at = 0
            while at < len(view):
                take = min(PIECE - self._in_piece, len(view) - at)
                self._piece.update(view[at:at + take])
                self._in_piece += take
                at += take
                self._done += take
                if self._in_piece == PIECE or self._done == self.size:
                    self._root.update(self._piece.digest())
                    self._piece, self._in_piece = hashlib.sha256(), 0

    def digest(self) -> bytes:
        """The root; only meaningful once all ``size`` bytes were fed (else it names no file)."""
        return self._root.copy().digest()


def new_hasher(size: int, root: bool) -> Hasher:
    """The incremental hash of an offer's digest: its root, or the plain SHA-256."""
    return RootHasher(size) if root else hashlib.sha256()


def root_of_digests(size: int, piece_digests: list[bytes]) -> bytes:
    """The root from the SHA-256 of every piece, in order."""
    if len(piece_digests) != -(-size // PIECE):
        raise ValueError("the piece digests do not cover the file")
    h = hashlib.sha256(ROOT_LABEL + size.to_bytes(8, "big"))
    for d in piece_digests:
        h.update(d)
    return h.digest()


def sha256_of(path: str, *, block: int = BLOCK) -> tuple[int, bytes]:
    """Size and SHA-256 of a file, read in blocks into one reused buffer."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(block)
    with memoryview(buf) as view, open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return size, h.digest()


def file_digest(path: str, root: bool, *, workers: int | None = None) -> tuple[int, bytes]:
    """Size and offer digest of the file at ``path``: the root (its pieces hashed on up to :data:`MAX_WORKERS`
    threads: hashlib and reads release the GIL) or the plain SHA-256 (one thread: it is sequential). An
    :class:`OSError` when it cannot be read, or when it shrank while being read."""
    if not root:
        return sha256_of(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return size, root_of_digests(size, piece_digests(fd, size, workers=workers))
    finally:
        os.close(fd)


def piece_digests(fd: int, size: int, *, workers: int | None = None) -> list[bytes]:
    """The SHA-256 of every piece of the first ``size`` bytes of the open file ``fd`` (the last piece may be
    short), hashed on up to :data:`MAX_WORKERS` threads (one below :data:`PARALLEL_FROM` bytes). An
    :class:`OSError` when the file cannot be read or has fewer bytes."""
    pieces = -(-size // PIECE)
    n = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    n = max(1, min(n, pieces)) if size >= PARALLEL_FROM else 1
    digests: list[bytes] = [b""] * pieces
    errors: list[BaseException] = []     # a worker's failure, raised here (a programming error too)
    # each thread takes the next piece nobody took (next() on a count is atomic): a thread the scheduler holds
    # back (the other core busy) leaves the rest to the others instead of a fixed share
    claim = itertools.count()

    def work() -> None:
        buf = bytearray(PIECE)
        with memoryview(buf) as view:
            while (i := next(claim)) < pieces:
                if errors:
                    return
                want = min(PIECE, size - i * PIECE)
                try:
                    got = os.preadv(fd, [view[:want]], i * PIECE)
                    while got < want:       # a short read: go on, and stop at the file's end
                        more = os.preadv(fd, [view[got:want]], i * PIECE + got)
                        if not more:
                            raise OSError(errno.EIO, "the file shrank while it was being read")
                        got += more
                    digests[i] = hashlib.sha256(view[:want]).digest()
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=work, name=f"file-digest-{k}") for k in range(1, n)]
    for t in threads:
        t.start()
    try:
        work()
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return digests


__all__ = ["DIGEST_LEN", "PIECE", "ROOT_LABEL", "Hasher", "RootHasher", "file_digest", "new_hasher",
           "piece_digests", "root_of_digests", "sha256_of"]
