"""Files that wait for their contact, and outgoing transfers that resume by themselves (issue 16).

Every file this node sends to a known contact (a chat past step 4, or a contact with no chat open) is first kept
as a :class:`PendingFile` in the data directory's ``outgoing-files.bin`` (sealed under the data directory's
:class:`~p2pchat.vault.Vault`, so encrypted at rest when it has a passphrase) until the transfer ends for good:
delivered, declined, cancelled by either side, or failed for a reason a new attempt would not fix. A transfer cut
with its chat (a dropped connection, a relay restart, either app stopped) keeps its record: whenever a chat with
that contact reaches step 4 again (the outbox dials it, or it calls in), the file is offered again by itself.
The receiver finds the partial of this file from this sender (:mod:`p2pchat.downloads`), accepts without asking
again and answers with its verified offset, so only the missing bytes travel.

Before offering again the sender checks the file on disk: the same size and modification time, or else the same
digest (read again: its SHA-256, or its root when it was offered with one; it is offered again with the same).
A file that changed or went away is dropped with a plain message; the contact never gets bytes of another file
under the old offer.

Threads: :class:`FileResume` is a session watcher (called with a session lock possibly held: bookkeeping only)
and the file driver's end hook; the offers themselves (a stat, perhaps a hash, the offer frame) run on the node's
worker pool. One lock guards the table; the sealed file is rewritten whole (atomically) on every change, which is
rare (a send, an end), never per chunk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import msgpack

from p2pchat.events import FileWaiting
from p2pchat.file_digest import file_digest
from p2pchat.foundation.datadir import slot_problem
from p2pchat.foundation.errors import LocalFault, UsageError, UserError
from p2pchat.transfer import State
from p2pchat.vault import Vault

log = logging.getLogger(__name__)

FILE_NAME = "outgoing-files.bin"
FORMAT = 1
_AAD = b"p2pchat/outgoing-files/v1\x00"
MAX_FILES_PER_CONTACT = 64        # files that may wait for one contact
MAX_FILES = 512                   # files that may wait in all
OFFERED_AT_ONCE = 2               # kept files of one contact offered at a time (a receiver takes 4 unanswered)
_EARLY_KEPT = 64                  # ends seen before their offer was linked (a very quick decline)


@dataclass(frozen=True)
class PendingFile:
    """One file on its way to a contact, kept until the transfer ends for good."""

    ref: int            # the number the user sees (``w3``) and cancels it by
    fp: str             # the contact's key fingerprint (64 hex digits)
    path: str           # absolute path of the file on this computer
    name: str           # the name offered (the file's base name)
    size: int
    sha256: bytes       # the offer's digest: the plain SHA-256, or the root when ``root``
    mtime_ns: int       # the file's modification time when it was hashed
    queued_at: float    # wall-clock time the user sent it
    root: bool = False  # [file digest] offered with its root (a record saved before has no such key: False)


class ResumeHost(Protocol):
    """What :class:`FileResume` needs of the chat node."""

    def live_session_with(self, fp: str) -> str | None: ...

    def offer_file(self, session: str, path: str, size: int, sha256: bytes, *, root: bool = False) -> str:
        """Offer a hashed file in ``session`` (``root``: the digest is its root); the transfer number (hex). A
        :class:`UserError` when it cannot."""

    def cancel_file(self, session: str, transfer: str) -> None: ...

    def want_contact(self, fp: str) -> None:
        """Dial ``fp`` as the outbox's schedule allows: something waits for it."""


class PendingFileStore:
    """The sealed file of one data directory (whole-file rewrites; one process uses it at a time)."""

    def __init__(self, path: Path, vault: Vault) -> None:
        self.path = Path(path)
        self.vault = vault

    def load(self) -> tuple[int, list[PendingFile]]:
        """(next ref, the files) as last saved; nothing when there is no file."""
        problem = slot_problem(self.path)
        if problem is not None:
            raise LocalFault(f"the list of files waiting to be sent, {self.path}, {problem}")
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return 1, []
        except OSError as exc:
            raise LocalFault(f"cannot read the waiting files in {self.path}: {exc.strerror}") from None
        try:
            # with a passphrase only a sealed list is taken: a plain one put here would name files to send
            plain = self.vault.open_sealed(_AAD, blob) if self.vault.encrypted else blob
            state = msgpack.unpackb(plain, raw=False)
            written = state.get("format")
            if written != FORMAT:       # [redstate] a newer p2pchat's list is not read as this one's
                raise ValueError(f"it was written by a newer p2pchat (format {written}; this one reads format "
                                 f"{FORMAT})" if isinstance(written, int) and written > FORMAT
                                 else f"unknown format {written!r}")
            files = [PendingFile(**{**f, "sha256": bytes(f["sha256"])}) for f in state["files"]]
            return int(state["next"]), files
        except Exception as exc:     # a torn, altered or foreign file: refused, never overwritten
            raise LocalFault(f"the list of files waiting to be sent, {self.path}, cannot be read ({exc}); p2pchat "
                             f"did not change it. Move it aside to start an empty one (the files waiting for "
                             f"your contacts are then forgotten)") from None

    def save(self, next_ref: int, files: list[PendingFile]) -> None:
        plain = msgpack.packb({"format": FORMAT, "next": next_ref, "files": [asdict(f) for f in files]},
                              use_bin_type=True)
        blob = self.vault.seal(_AAD, plain)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            # a half-written copy would hold the last bytes of a full disk; the list itself is left as it was
            tmp.unlink(missing_ok=True)
            raise LocalFault(f"could not write the list of files waiting to be sent, {self.path}: "
                             f"{exc.strerror or exc}") from None


def file_unchanged(f: PendingFile) -> str | None:
    """Why ``f`` cannot be offered as it was (changed or gone), or None. Reads the file again only when its size
    or modification time moved."""
    try:
        st = os.stat(f.path)
    except OSError as exc:
        return f"{f.name} cannot be read any more ({exc.strerror})"
    if st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
        return None
    if st.st_size == f.size:
        try:
            if file_digest(f.path, f.root)[1] == f.sha256:
                return None
        except OSError as exc:
            return f"{f.name} cannot be read any more ({exc.strerror})"
    return f"{f.name} changed on disk since you sent it"


class FileResume:
    """The files waiting for contacts and the transfers carrying them (see the module docstring)."""

    def __init__(self, host: ResumeHost, store: PendingFileStore, *, submit: Callable[..., None],
                 emit: Callable[[FileWaiting], None]) -> None:
        self._host = host
        self._store = store
        self._submit = submit       # the node's worker pool: fn, *args
        self._emit = emit
        self._lock = threading.Lock()
        self._next, files = store.load()
        self._files: dict[int, PendingFile] = {f.ref: f for f in files}
        self._live: dict[int, tuple[str, str]] = {}         # ref -> (session, transfer) of its offer under way
        self._offering: set[int] = set()                    # refs an offer job is running for
        # refs whose transfer ended for good, until _finish forgets them: never offered again meanwhile (another
        # transfer's end, on another pool thread, would otherwise find them neither live nor being offered)
        self._ending: set[int] = set()
        self._early: dict[tuple[str, str], State | None] = {}   # ended before linked: its end (None: cut)
        self._closed = False

    @classmethod
    def in_data_dir(cls, host: ResumeHost, data_dir: Path, vault: Vault, *, submit: Callable[..., None],
                    emit: Callable[[FileWaiting], None]) -> FileResume:
        return cls(host, PendingFileStore(Path(data_dir) / FILE_NAME, vault), submit=submit, emit=emit)

    def start(self) -> None:
        """Call the contacts files wait for (those an earlier run left)."""
        for fp in sorted({f.fp for f in self.waiting()}):
            self._host.want_contact(fp)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # --- the user's side ---------------------------------------------------------------------------------

    def queue(self, fp: str, path: str, size: int, sha256: bytes, *, root: bool = False) -> PendingFile:
        """Keep a hashed file for ``fp`` (``root``: the digest is its root) and offer it in its open chat, or once
        it can be reached."""
        f = self._add(fp, path, size, sha256, root)
        live = self._host.live_session_with(fp)
        self._emit(FileWaiting(fp, f.ref, f.name, f.size, "waiting",
                               "waits for the contact" if live is None else "goes out in the open chat"))
        if live is not None:
            self._offer_next(fp, live)
        else:
            self._host.want_contact(fp)
        return f

    def offered(self, fp: str, session: str, path: str, size: int, sha256: bytes, send: Callable[[], str], *,
                root: bool = False) -> str:
        """The user sends a file in a chat with the contact ``fp``: keep it, then ``send()`` the offer (which
        returns its transfer number) and follow that transfer."""
        f = self._add(fp, path, size, sha256, root)
        with self._lock:
            self._offering.add(f.ref)
        try:
            tid = send()
        except BaseException:
            self._remove(f.ref)
            raise
        self._link(f.ref, session, tid)
        return tid

    def cancel(self, ref: int) -> PendingFile:
        """Take back a waiting file; one under way is cancelled in its chat (the peer is told)."""
        with self._lock:
            f = self._files.get(ref)
            live = self._live.get(ref)
        if f is None:
            raise UsageError(f"file w{ref} is not waiting any more (it was delivered, cancelled, or never existed)")
        self._remove(ref)
        if live is not None:
            try:
                self._host.cancel_file(*live)
            except UserError:
                pass        # it ended meanwhile
        self._emit(FileWaiting(f.fp, ref, f.name, f.size, "cancelled", "you cancelled it"))
        return f

    def waiting(self, fp: str | None = None) -> list[PendingFile]:
        with self._lock:
            return [f for f in self._files.values() if fp is None or f.fp == fp]

    def has_pending(self, fp: str) -> bool:
        with self._lock:
            return any(f.fp == fp for f in self._files.values())

    def under_way(self, ref: int) -> bool:
        with self._lock:
            return ref in self._live

    # --- the node's hooks (bookkeeping only; IO goes to the pool) -----------------------------------------

    def chat_ready(self, fp: str, session: str) -> None:
        self._offer_next(fp, session)

    def _offer_next(self, fp: str, session: str) -> None:
        """Offer ``fp``'s kept files in ``session``, at most :data:`OFFERED_AT_ONCE` at a time (the receiver takes
        only a few unanswered offers; the next goes out when one ends)."""
        with self._lock:
            if self._closed:
                return
            busy = sum(self._files[r].fp == fp for r in (*self._live, *self._offering) if r in self._files)
            refs = [r for r, f in self._files.items() if f.fp == fp and r not in self._live
                    and r not in self._offering and r not in self._ending][:max(0, OFFERED_AT_ONCE - busy)]
            self._offering.update(refs)
        for ref in refs:
            self._submit(self._offer, ref, session)

    def chat_ended(self, fp: str | None, session: str, *, dropped: bool, ours: bool) -> None:
        with self._lock:
            for ref in [r for r, (s, _t) in self._live.items() if s == session]:
                del self._live[ref]
            self._early = {k: v for k, v in self._early.items() if k[0] != session}
            # a dropped chat is called again at once; after a goodbye the files wait for the next chat (either
            # side's call, or this node's next start), so a contact that hangs up is not redialled in a loop
            again = dropped and fp is not None and not self._closed and any(f.fp == fp for f in self._files.values())
        if again and fp is not None:
            self._host.want_contact(fp)

    def transfer_ended(self, session: str, transfer: str, state: State, interrupted: bool) -> None:
        """The file driver: an outgoing transfer ended (``interrupted``: its chat ended under it)."""
        with self._lock:
            ref = next((r for r, lt in self._live.items() if lt == (session, transfer)), None)
            if ref is None:
                self._early[(session, transfer)] = None if interrupted else state
                while len(self._early) > _EARLY_KEPT:
                    self._early.pop(next(iter(self._early)))
                return
            del self._live[ref]
            if not interrupted:
                self._ending.add(ref)
        if not interrupted:       # forgotten on the pool: the file is rewritten, not under the session's lock
            self._submit(self._finish, ref, state, session)

    # --- inside ---------------------------------------------------------------------------------------------

    def _add(self, fp: str, path: str, size: int, sha256: bytes, root: bool = False) -> PendingFile:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        with self._lock:
            if sum(f.fp == fp for f in self._files.values()) >= MAX_FILES_PER_CONTACT:
                raise UsageError(f"{MAX_FILES_PER_CONTACT} files already wait for this contact; cancel some or "
                                 "wait until they are delivered")
            if len(self._files) >= MAX_FILES:
                raise UsageError(f"{MAX_FILES} files already wait to be sent; cancel some first")
            f = PendingFile(self._next, fp, path, os.path.basename(path), size, sha256, mtime, time.time(), root)
            self._files[f.ref] = f
            self._next += 1
            try:
                self._save_locked()
            except LocalFault as exc:       # [redrelay] not kept, so not sent: the user is told and nothing else
                del self._files[f.ref]
                self._next -= 1
                raise LocalFault(f"{exc}; {f.name} was not sent") from None
        return f

    def _remove(self, ref: int) -> PendingFile | None:
        with self._lock:
            f = self._files.pop(ref, None)
            self._live.pop(ref, None)
            self._offering.discard(ref)
            self._ending.discard(ref)
            if f is not None:
                try:
                    self._save_locked()
                except LocalFault as exc:
                    # [redrelay] forgotten here all the same (delivered, cancelled or dropped: never offered
                    # again in this run); the list on disk is corrected by the next write that fits
                    log.warning("%s; a file that no longer waits is still listed there until then", exc)
        return f

    def _save_locked(self) -> None:
        self._store.save(self._next, list(self._files.values()))

    def _link(self, ref: int, session: str, tid: str) -> None:
        with self._lock:
            self._offering.discard(ref)
            key = (session, tid)
            ended = key in self._early
            state = self._early.pop(key, None)
            if not ended and ref in self._files:
                self._live[ref] = key
            elif state is not None:
                self._ending.add(ref)
        if state is not None:
            self._finish(ref, state, session)

    def _finish(self, ref: int, state: State, session: str) -> None:
        """The transfer of ``ref`` ended for good: forget the file, and offer the contact's next one."""
        f = self._remove(ref)
        if f is not None:
            status = "done" if state is State.DONE else "ended"
            self._emit(FileWaiting(f.fp, ref, f.name, f.size, status, state.value))
            self._offer_next(f.fp, session)

    def _offer(self, ref: int, session: str) -> None:
        """Pool task: offer a kept file again in ``session`` (a chat with its contact past step 4)."""
        with self._lock:
            f = self._files.get(ref)
        if f is None or ref in self._live:
            with self._lock:
                self._offering.discard(ref)
            return
        problem = file_unchanged(f)
        if problem is not None:
            self._remove(ref)
            log.info("dropped a waiting file: %s", problem)
            self._emit(FileWaiting(f.fp, ref, f.name, f.size, "dropped",
                                   f"{problem}; it was not sent. Send it again if you still want to."))
            self._offer_next(f.fp, session)
            return
        try:
            tid = self._host.offer_file(session, f.path, f.size, f.sha256, root=f.root)
        except UserError as exc:     # the chat ended meanwhile, or it is full: the next chat tries again
            with self._lock:
                self._offering.discard(ref)
            log.info("a waiting file was not offered yet: %s", exc)
            return
        self._link(ref, session, tid)
        self._emit(FileWaiting(f.fp, ref, f.name, f.size, "offered", "a part received before is not sent again"))


__all__ = ["FILE_NAME", "FileResume", "PendingFile", "PendingFileStore", "ResumeHost", "file_unchanged"]
