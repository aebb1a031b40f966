"""The offer's digest (docs/protocol.md §5.7 "The file's digest"): the root over 1 MiB pieces against the spec's
vectors, fed in any split, hashed on several threads, and the plain SHA-256."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat import chat_protocol as cp
from p2pchat import file_digest
from p2pchat.file_digest import PIECE, RootHasher, new_hasher, root_of_digests, sha256_of
from p2pchat.file_digest import file_digest as digest_of
from tests.p2pchat.test_protocol_vectors import V, hx


def spec_root(data: bytes) -> bytes:
    """The root as §5.7 writes it."""
    pieces = b"".join(hashlib.sha256(data[i:i + PIECE]).digest() for i in range(0, len(data), PIECE))
    return hashlib.sha256(b"p2pchat/file-root/v1\x00" + len(data).to_bytes(8, "big") + pieces).digest()


def vector_file() -> bytes:
    return bytes(i % 251 for i in range(int(V["file-messages"]["pieces_size"])))


def test_root_vectors_match_the_spec_and_the_code():
    f = V["file-messages"]
    content = f["content"].encode()
    assert spec_root(content) == hx("file-messages", "root")
    h = RootHasher(len(content))
    h.update(content)
    assert h.digest() == hx("file-messages", "root")
    assert spec_root(b"") == root_of_digests(0, []) == RootHasher(0).digest() == hx("file-messages", "root_empty")
    data = vector_file()
    pieces = [hx("file-messages", f"pieces_piece{i}") for i in range(3)]
    assert [hashlib.sha256(data[i:i + PIECE]).digest() for i in range(0, len(data), PIECE)] == pieces
    assert spec_root(data) == root_of_digests(len(data), pieces) == hx("file-messages", "pieces_root")


def test_root_offer_and_accept_vectors_match_msgpack_and_the_schema():
    tid, content = hx("file-messages", "id"), V["file-messages"]["content"].encode()
    offer = {"id": tid, "name": "report.pdf", "size": len(content), "root": hx("file-messages", "root")}
    inner = hx("file-messages", "offer_root_inner")
    assert msgpack.unpackb(inner) == {"t": "file_offer", **offer}
    assert cp.SEALED_CONTENT.encode_body("file_offer", **offer) == inner
    accept = {"id": tid, "offset": 0, "max_chunk": cp.MAX_CHUNK, "root": True}
    inner = hx("file-messages", "accept_root_inner")
    assert msgpack.unpackb(inner) == {"t": "file_accept", **accept}
    assert cp.SEALED_CONTENT.encode_body("file_accept", **accept) == inner


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 3 * PIECE + 7), cuts=st.lists(st.integers(1, 2 * PIECE), max_size=12))
def test_the_root_is_the_same_whatever_the_chunks_it_is_fed_in(size: int, cuts: list[int]) -> None:
    data = (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]
    h = RootHasher(size)
    at = 0
    for cut in cuts:
        h.update(memoryview(data)[at:at + cut])
        at = min(size, at + cut)
    h.update(data[at:])
    assert h.digest() == spec_root(data)


def test_a_root_hasher_refuses_bytes_beyond_the_size():
    h = RootHasher(3)
    h.update(b"ab")
    with pytest.raises(ValueError):
        h.update(b"cd")


def test_new_hasher_gives_the_plain_sha256_or_the_root():
    assert new_hasher(3, False).digest() == hashlib.sha256().digest()
    assert isinstance(new_hasher(3, True), RootHasher)


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_the_file_root_on_several_threads_equals_the_spec(tmp_path: Path, workers: int) -> None:
    data = vector_file() + os.urandom(PIECE * 3)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert digest_of(str(path), True, workers=workers) == (len(data), spec_root(data))
    assert digest_of(str(path), False) == sha256_of(str(path)) == (len(data), hashlib.sha256(data).digest())


def test_small_and_empty_files_get_their_root(tmp_path: Path) -> None:
    for size in (0, 1, PIECE, PIECE + 1):
        path = tmp_path / f"{size}.bin"
        data = os.urandom(size)
        path.write_bytes(data)
        assert digest_of(str(path), True) == (size, spec_root(data))


def test_a_file_that_shrinks_while_its_root_is_hashed_is_an_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(8 * PIECE))
    real = os.preadv
    lock, cut = threading.Lock(), []

    def preadv(fd: int, buffers: list, offset: int) -> int:
        with lock:                              # no read before the cut, whichever thread comes first
            if not cut:
                os.truncate(path, 2 * PIECE)    # cut under the readers, after the size was taken
                cut.append(True)
        return real(fd, buffers, offset)

    monkeypatch.setattr(file_digest.os, "preadv", preadv)
    with pytest.raises(OSError, match="shrank"):
        digest_of(str(path), True, workers=2)


def test_a_programming_error_in_a_digest_thread_is_raised_not_swallowed(tmp_path: Path, monkeypatch) -> None:
    """Whichever thread hashes the sixth piece fails; the caller gets the error, and every thread is joined."""
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(8 * PIECE))
    before = set(threading.enumerate())

    def preadv(fd: int, buffers: list, offset: int) -> int:
        if offset == 5 * PIECE:
            raise ZeroDivisionError("a bug")
        return _read_into(fd, buffers[0], offset)

    monkeypatch.setattr(file_digest.os, "preadv", preadv)
    with pytest.raises(ZeroDivisionError):
        digest_of(str(path), True, workers=2)
    assert set(threading.enumerate()) == before


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


def test_offer_digests_give_a_root_only_to_a_peer_that_checks_roots_and_keep_an_undelivered_plain_offer(
        tmp_path: Path) -> None:
    from p2pchat.file_driver import OfferDigests

    path = tmp_path / "f.bin"
    data = os.urandom(5 * PIECE + 3)
    path.write_bytes(data)
    d = OfferDigests()
    bob = "AB" * 32
    full, size, digest, root = d.prepare_for(bob, str(path))
    assert (full, size, digest, root) == (str(path.resolve()), len(data), hashlib.sha256(data).digest(), False)
    d.offered_plain(bob, full, b"t1")               # went with its SHA-256 and was cut: a partial may wait
    d.peer_takes_root(bob.lower())                  # bob's file_accept said root: true
    assert d.takes_root(bob) and not d.takes_root("cd" * 32) and not d.takes_root(None)
    assert d.prepare_for(bob, str(path))[3] is False            # offered again as before, so it resumes
    assert d.prepare_for("cd" * 32, str(path))[3] is False      # a peer that never said so
    d.delivered(b"t1")
    assert d.prepare_for(bob, str(path))[2:] == (spec_root(data), True)
    assert d.prepare_for(None, str(path))[3] is False            # no peer known: the plain SHA-256
