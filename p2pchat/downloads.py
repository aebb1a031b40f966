"""The downloads folder: safe names for files peers send, partial files with their resume state, disk checks.

Nothing a peer names is ever used as a path: :func:`safe_name` keeps one name (no directory parts, no control or
bidirectional-override characters, no leading dot), and a finished file gets a name no file has yet
(``name (1).ext``), created with ``O_EXCL`` and mode 0644 (never executable). Partial files live in the folder's
``.p2pchat-partial`` directory as ``KEY.part`` with a small ``KEY.json`` state (sender fingerprint, SHA-256, size,
verified offset), where ``KEY`` is derived from the sender's fingerprint, the SHA-256 and the size: when the same
sender offers the same file again (a new session after a dropped connection or a restart), the receiver finds
the partial and answers with its verified offset.

A :class:`Partial` writes and hashes on a thread of its own behind a queue that never makes the session's
reader wait (bounded in bytes by what flow control lets a sender have unacknowledged), so the reader goes back
to the socket (and reads the next chunk, or a text) while the disk takes this one, however long a throttled
write takes. The writer tells the session when it wrote more (``on_progress``), and only what it wrote is
acknowledged to the sender; the partial joins that thread whenever it ends (finished, kept or discarded).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import queue
import shutil
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path

from p2pchat.file_digest import PIECE, RootHasher, new_hasher, piece_digests
from p2pchat.foundation.errors import LocalFault, UsageError
from p2pchat.transfer import ACK_EVERY, MAX_UNACKED, SinkError

log = logging.getLogger(__name__)

PARTIAL_DIR = ".p2pchat-partial"
MAX_SAFE_NAME_BYTES = 200          # room for " (123)" and the file system's 255-byte limit
SPACE_MARGIN = 16 * 1024 * 1024    # free space kept beyond the file itself
STATE_RECORD = 1024                # bytes of a partial's state record (JSON padded with spaces)
CHECKPOINT_BYTES = 4 * 1024 * 1024  # the state record is rewritten at least this often while the queue stays full
_DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}     # controls, format (bidi), unassigned, separators
_BIDI_AND_INVISIBLE = {"\u061c", "\u200e", "\u200f", "\u2028", "\u2029", "\ufeff",
                       *(chr(c) for c in range(0x202A, 0x202F)), *(chr(c) for c in range(0x2066, 0x206A))}


def safe_name(raw: str) -> str:
    """One harmless file name from what a peer called its file."""
    name = raw.replace("\\", "/").split("/")[-1]            # no directory parts, of either system
    name = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in name
                   if ch not in _BIDI_AND_INVISIBLE and unicodedata.category(ch) not in _DROPPED)
    name = name.strip().lstrip(".").rstrip(". ")              # no hidden files, no "..", no trailing dots
    if not name:
        name = "file"
    if len(name.encode("utf-8")) > MAX_SAFE_NAME_BYTES:
        stem, ext = _split(name)
        ext = ext if len(ext.encode("utf-8")) <= 16 else ""
        budget = MAX_SAFE_NAME_BYTES - len(ext.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = stem + ext
    return name


def _split(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def reserve(folder: Path, name: str) -> Path:
    """Create an empty file for ``name`` in ``folder`` that did not exist before: ``name``, else ``name (1).ext``,
    ``name (2).ext``, … (``O_EXCL``: an existing file or symlink is never opened)."""
    stem, ext = _split(name)
    for n in range(10_000):
        candidate = folder / (name if n == 0 else f"{stem} ({n}){ext}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise LocalFault(f"no free name for {name} in {folder}")


def partial_key(sender_fp: str, sha256: bytes, size: int, root: bool = False) -> str:
    """The name of a partial: the sender, the offer's digest (a root marked as one) and the size."""
    digest = f"root:{sha256.hex()}" if root else sha256.hex()
    return hashlib.sha256(f"{sender_fp}|{digest}|{size}".encode()).hexdigest()[:32]


def _digest_key(root: bool) -> str:
    """The state record's key for the offer's digest."""
    return "root" if root else "sha256"


class Downloads:
    """One node's downloads folder (shared by its sessions)."""

    def __init__(self, folder: Path, *, max_size: int) -> None:
        self.folder = Path(folder)
        self.max_size = max_size
        self._lock = threading.Lock()
        self._open: set[str] = set()      # partials a session is writing now

    @property
    def partial_dir(self) -> Path:
        return self.folder / PARTIAL_DIR

    def resume_offset(self, sender_fp: str, sha256: bytes, size: int, *, root: bool = False) -> int | None:
        """The verified offset of a partial of this file (offered with this digest: its SHA-256, or its root
        when ``root``) from this sender, or None."""
        key = partial_key(sender_fp, sha256, size, root)
        state = self._read_state(key)
        if state is None or state.get(_digest_key(root)) != sha256.hex() or state.get("size") != size:
            return None
        part = self.partial_dir / f"{key}.part"
        try:
            on_disk = part.lstat().st_size
        except OSError:
            return None
        verified = state.get("verified")
        if not isinstance(verified, int) or verified < 0:
            return None
        return min(verified, on_disk, size)

    def check(self, size: int, offset: int = 0) -> None:
        """Refuse (UsageError, plain words) a file over the limit or one the disk has no room for."""
        if size > self.max_size:
            raise UsageError(f"the file is {human(size)}, over your limit of {human(self.max_size)} "
                             "(--max-file-size)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.folder).free
        except OSError as exc:
            raise LocalFault(f"the downloads folder {self.folder} cannot be used: {exc.strerror}") from None
        if size - offset + SPACE_MARGIN > free:
            raise UsageError(f"the disk of {self.folder} has {human(free)} free; the file needs "
                             f"{human(size - offset)}")

    def open(self, sender_fp: str, name: str, sha256: bytes, size: int, *, root: bool = False,
             on_progress: Callable[[], None] | None = None) -> Partial:
        """The partial file for an accepted offer (whose digest is a root when ``root``), resumed at its verified
        offset when there is one. ``on_progress`` is called on the partial's writer thread when it wrote more or
        a write failed (see :class:`Partial`)."""
        offset = self.resume_offset(sender_fp, sha256, size, root=root) or 0
        self.check(size, offset)
        key = partial_key(sender_fp, sha256, size, root)
        with self._lock:
            if key in self._open:
                raise UsageError("this file is already being received in another chat")
            self._open.add(key)
        try:
            return Partial(self, key, sender_fp, safe_name(name), sha256, size, offset, root=root,
                           on_progress=on_progress)
        except BaseException:
            self._release(key)
            raise

    def _release(self, key: str) -> None:
        with self._lock:
            self._open.discard(key)

    def _read_state(self, key: str) -> dict[str, object] | None:
        try:
            with open(self.partial_dir / f"{key}.json", encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None


class Partial:
    """One download being written (a :class:`p2pchat.transfer.Sink`).

    :meth:`write` queues authenticated chunks for the partial's own writer thread and never waits: the queue
    holds at most ``max_queued`` bytes (what a sender may have unacknowledged, :data:`MAX_UNACKED`; more is
    refused with :class:`SinkError`). The writer appends, hashes and records the verified offset whenever it has
    caught up (and every :data:`CHECKPOINT_BYTES`), and calls ``on_progress`` (which must not wait: it hands the
    acknowledgement to another thread) when it has caught up, every :data:`ACK_EVERY` chunks while more are
    queued, at the file's end, and when a write failed. A failed write stops it, and the error (a full disk) is
    raised by the next :meth:`write`, :meth:`progress`, :meth:`checkpoint` or :meth:`finish`."""

    def __init__(self, owner: Downloads, key: str, sender_fp: str, name: str, sha256: bytes, size: int,
                 offset: int, *, root: bool = False, on_progress: Callable[[], None] | None = None,
                 max_queued: int = MAX_UNACKED) -> None:
        self.owner, self.key, self.sender_fp, self.name = owner, key, sender_fp, name
        self.sha256, self.size, self.root = sha256, size, root     # the offer's digest (a root when ``root``)
        directory = owner.partial_dir
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path = directory / f"{key}.part"
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise LocalFault(f"cannot write in the downloads folder {owner.folder}: {exc.strerror}") from None
        # unbuffered: a chunk goes to the file in one write from where it lies (a buffered file copied each
        # chunk's last few KiB into its buffer and wrote them with the next chunk, one system call more)
        self._fh = os.fdopen(fd, "r+b", buffering=0)
        self._state_fd = -1
        try:
            # [redstate] the resume record: a directory or a link in its place, or a disk that cannot take it, is
            # a local fault in plain words (it escaped as an OSError, an internal error, with both files left open)
            self._state_fd = os.open(self._state_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                                     0o600)
        except OSError as exc:
            self._close()
            raise LocalFault(f"cannot write the resume record {self._state_path} of a download: "
                             f"{exc.strerror or exc}") from None
        self._hash = new_hasher(size, root)
        # the verified prefix is hashed again (a hash state cannot be stored); anything after it is cut off. For a
        # root its whole pieces are hashed on every core (file_digest.piece_digests), the rest in order below
        remaining = offset
        if root and offset >= PIECE:
            whole = offset // PIECE * PIECE
            try:
                self._hash = RootHasher.after_pieces(size, piece_digests(fd, whole))
            except OSError as exc:
                self._close()
                raise LocalFault(f"cannot read the partial download {self.path}: {exc.strerror}") from None
            self._fh.seek(whole)
            remaining = offset - whole
        while remaining:
            block = self._fh.read(min(remaining, 1 << 20))
            if not block:
                break
            self._hash.update(block)
            remaining -= len(block)
        self.offset = offset - remaining
        self._fh.seek(self.offset)
        if os.fstat(fd).st_size != self.offset:
            # only when something is to be cut: ext4 takes a truncation to 0 for "the file is being replaced"
            # and writes the whole file out when it is closed (auto_da_alloc), seconds of disk for a big file
            self._fh.truncate()
        self.written = self.offset          # on disk and hashed (the writer thread's)
        self._recorded = self.offset        # in the state record
        try:
            self._save_state()
        except OSError as exc:
            self._close()
            raise LocalFault(f"cannot write the resume record {self._state_path} of a download: "
                             f"{exc.strerror or exc}") from None
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue()
        self._queued = 0                    # bytes in the queue (the reader adds, the writer takes away)
        self._queued_lock = threading.Lock()
        self._max_queued = max_queued
        self._on_progress = on_progress
        self._unreported = 0                # chunks written since on_progress was last called
        self._error: SinkError | None = None
        self._writer: threading.Thread | None = threading.Thread(target=self._write_loop, name="download-writer",
                                                                 daemon=True)
        self._writer.start()

    def write(self, data: bytes | memoryview) -> None:
        self._raise_error()
        if self._writer is None:
            raise SinkError("the download was already closed")
        with self._queued_lock:
            if self._queued + len(data) > self._max_queued:
                raise SinkError(f"more than {human(self._max_queued)} of the file waited for the disk (the sender "
                                "ignored flow control)")
            self._queued += len(data)
        self._queue.put(data)

    def progress(self) -> int:
        self._raise_error()
        return self.written

    def checkpoint(self) -> None:
        """Wait until everything handed to :meth:`write` is on disk and recorded as verified (each chunk came
        authenticated)."""
        self._queue.join()
        self._raise_error()

    def finish(self) -> str | None:
        self._stop_writer()
        self._close()
        if self._error is not None:
            self.owner._release(self.key)
            raise self._error
        if self._hash.digest() != self.sha256 or self.written != self.size:
            self._remove()
            return None
        final = reserve(self.owner.folder, self.name)
        os.replace(self.path, final)
        os.chmod(final, 0o644)
        self._state_path.unlink(missing_ok=True)
        self.owner._release(self.key)
        return str(final)

    def keep(self) -> None:
        self._stop_writer()     # what was queued is written and recorded (or the error stopped it)
        self._close()
        self.owner._release(self.key)

    def discard(self) -> None:
        self._stop_writer(drop=True)
        self._close()
        self._remove()

    # --- the writer thread ---------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                if self._error is None:     # after a failed write nothing more is written: drain until stopped
                    self._append(data)
            finally:
                with self._queued_lock:
                    self._queued -= len(data)
                self._queue.task_done()
        self._queue.task_done()
        if self._error is None:
            try:
                self._record()
            except OSError as exc:
                self._error = _sink_error(exc)

    def _append(self, data: bytes | memoryview) -> None:
        try:
            _write_all(self._fh, data)
            self._hash.update(data)
            self.written += len(data)
            caught_up = self._queue.empty()
            if caught_up or self.written - self._recorded >= CHECKPOINT_BYTES:
                self._record()
            self._unreported += 1
            if caught_up or self._unreported >= ACK_EVERY or self.written == self.size:
                self._unreported = 0
                self._report()
        except OSError as exc:
            self._error = _sink_error(exc)
            self._record_after_error()
            self._report()
        except Exception as exc:        # a programming error: logged, and the transfer fails with it
            log.exception("writing the download %s failed", self.name)
            self._error = SinkError(f"the download could not be written (an error in this program: "
                                    f"{type(exc).__name__})")
            self._record_after_error()
            self._report()

    def _report(self) -> None:
        """Tell the session the writer made progress (or failed); a fault of the callback fails the download."""
        if self._on_progress is None:
            return
        try:
            self._on_progress()
        except Exception as exc:
            log.exception("reporting the progress of the download %s failed", self.name)
            self._error = self._error or SinkError(f"the download could not be acknowledged (an error in this "
                                                   f"program: {type(exc).__name__})")

    def _record_after_error(self) -> None:
        """Record what was written before the failed write (a resume reads no further than the file's length,
        so bytes still in a buffer that could not be flushed are never taken as verified)."""
        try:
            self._save_state()
            self._recorded = self.written
        except OSError:
            pass            # the record keeps an earlier verified offset

    def _record(self) -> None:
        self._save_state()
        self._recorded = self.written

    def _stop_writer(self, *, drop: bool = False) -> None:
        """Let the writer finish what is queued (or drop it), record, and join it."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if drop:
            self._error = self._error or SinkError("the download was discarded")
        self._queue.put(None)
        writer.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def _state_path(self) -> Path:
        return self.owner.partial_dir / f"{self.key}.json"

    def _save_state(self) -> None:
        """Rewrite the state record in place, padded to a fixed length with spaces (JSON ignores them): one
        write, no rename per checkpoint (a rename costs milliseconds on some file systems). A record torn by a
        power cut does not parse, and the file then starts again from zero, never from a wrong offset."""
        state = {"version": 1, "sender": self.sender_fp, _digest_key(self.root): self.sha256.hex(), "size": self.size,
                 "verified": self.written, "name": self.name}
        record = json.dumps(state).encode().ljust(STATE_RECORD, b" ")
        os.pwrite(self._state_fd, record, 0)
        os.ftruncate(self._state_fd, len(record))

    def _close(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError:
                pass
        if self._state_fd >= 0:
            os.close(self._state_fd)
            self._state_fd = -1

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self._state_path.unlink(missing_ok=True)
        self.owner._release(self.key)


def _write_all(fh: io.RawIOBase, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to the unbuffered ``fh`` (a raw write may take only part of it)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            n = fh.write(view[done:])
            if not n:
                raise OSError(errno.EIO, "the file took no bytes")
            done += n


def _sink_error(exc: OSError) -> SinkError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SinkError("the disk is full")
    return SinkError(f"the download could not be written ({exc.strerror or exc})")


def human(n: float) -> str:
    """Bytes for people: 1.5 MiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


__all__ = ["PARTIAL_DIR", "Downloads", "Partial", "human", "partial_key", "reserve", "safe_name"]
