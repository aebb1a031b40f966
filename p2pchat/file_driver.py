"""Drives each session's :class:`~p2pchat.transfer.TransferCore`: the user's file commands go in, ``file_*``
messages from the channel go in, sealed frames and UI events come out; the disk is :mod:`p2pchat.downloads`.

Chunks never wait in the outbox: the session's writer asks :class:`ChunkPump` for one only when nothing else is
queued for the wire, so a text typed during a transfer is sealed and sent ahead of every chunk not yet made, and
at most the transfer window (plus one coalesced write) is ahead of it.

A download's chunks are acknowledged when its writer thread has written them, not when the reader handed them
over: the writer reports progress (:meth:`FileDriver._sink_reported`, which never waits and takes no lock of the
session), and a pool thread makes the acknowledgement under ``session.lock`` and kicks the session's writer. So a
slow disk slows the sender's window, never the reader, and texts are read while chunks wait for the disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.chat_protocol import FEATURE_FILE_ROOT
from p2pchat.downloads import Downloads, human, safe_name
from p2pchat.events import Event, FileFinished, FileOffer, FileProgress
from p2pchat.file_digest import file_digest
from p2pchat.foundation.allocator import keep_freed_buffers
from p2pchat.foundation.codec import Frame
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.transfer import (
    Finished,
    Offered,
    Out,
    Progress,
    State,
    TransferCore,
    TransferError,
    TransferEvent,
)

if TYPE_CHECKING:
    from p2pchat.session import Session

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.25       # seconds between progress events of one transfer
MAX_PLAIN_OFFERS = 1024     # files remembered as offered with their plain SHA-256


class FileHost(Protocol):
    def emit(self, event: Event) -> None: ...

    def submit(self, fn: Callable[..., None], *args: Any) -> None: ...


class OfferTags(Protocol):
    """[groups, issue 18] Which group's file an offer is, and the end of every transfer (the group service)."""

    def tag_offer(self, peer_fp: str, tid: bytes, sha256: bytes, size: int) -> tuple[str, str, int] | None: ...

    def file_finished(self, peer_fp: str, tid: bytes, outgoing: bool, state: str) -> None: ...


class _FileSource:
    """A file being sent, read by offset."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "rb")   # closed by the core when the transfer ends

    def read(self, offset: int, n: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(n)

    def close(self) -> None:
        self._fh.close()


class OfferDigests:
    """Which digest a file is offered with (protocol.md §5.7 "The file's digest"): its root, hashed on every core,
    to a peer that announced it checks roots — in step 1 of a session (``features``), or in a ``file_accept`` (a
    peer that announces it only there); learned anew after a restart — its plain SHA-256 to any other, and again
    to the same peer while a file offered that way is not delivered (its partial there is kept under that
    digest)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root_peers: set[str] = set()                # key fingerprints, lower case
        # (peer, path, size, mtime) -> its transfer: offered with the plain SHA-256, not delivered yet
        self._plain: OrderedDict[tuple[str, str, int, int], bytes] = OrderedDict()

    def peer_takes_root(self, peer_fp: str | None) -> None:
        if peer_fp is not None:
            with self._lock:
                self._root_peers.add(peer_fp.lower())

    def takes_root(self, peer_fp: str | None) -> bool:
        with self._lock:
            return peer_fp is not None and peer_fp.lower() in self._root_peers

    def prepare_for(self, peer_fp: str | None, path: str) -> tuple[str, int, bytes, bool]:
        """Check and hash a file to offer to ``peer_fp``: (absolute path, size, digest, whether it is the root)."""
        key = _file_key(peer_fp, path)
        with self._lock:
            root = key is not None and key[0] in self._root_peers and key not in self._plain
        full, size, digest = prepare(path, root=root)
        return full, size, digest, root

    def offered_plain(self, peer_fp: str | None, path: str, tid: bytes) -> None:
        key = _file_key(peer_fp, path)
        if key is None:
            return
        with self._lock:
            self._plain[key] = tid
            self._plain.move_to_end(key)
            while len(self._plain) > MAX_PLAIN_OFFERS:
                self._plain.popitem(last=False)

    def delivered(self, tid: bytes) -> None:
        with self._lock:
            for key in [k for k, t in self._plain.items() if t == tid]:
                del self._plain[key]


class ChunkPump:
    """The writer's filler for one session: the next sealed chunk when the window has room (``session.lock``
    held by the writer)."""

    def __init__(self, driver: FileDriver, session: Session) -> None:
        self.driver = driver
        self.session = session

    def ready(self) -> bool:
        core = self.session.files
        return core is not None and core.has_chunk and self.session.channel is not None and not self.session.ended

    def take(self) -> list[Frame]:
        return self.driver.next_frames(self.session)


class FileDriver:
    """One instance serves every session of a node."""

    def __init__(self, host: FileHost, downloads: Downloads | None, *, auto_accept: bool = False,
                 stall_timeout: float | None = None) -> None:
        self.host = host
        self.downloads = downloads
        self.auto_accept = auto_accept
        self.stall_timeout = stall_timeout
        self._shown: dict[bytes, float] = {}      # last progress event per transfer
        self._started: dict[bytes, float] = {}    # when this session's part of a transfer began
        # [file resume] told when an outgoing transfer ends: (session, transfer, state, cut with its chat)
        self.outgoing_ended: Callable[[str, str, State, bool], None] | None = None
        self.tags: OfferTags | None = None        # [groups, issue 18]
        self._ack_due: set[tuple[str, bytes]] = set()   # (session, transfer) whose acknowledgement task is queued
        self._ack_lock = threading.Lock()
        self.digests = OfferDigests()

    def takes_root(self, peer_fp: str | None) -> bool:
        """Whether the peer ``peer_fp`` announced that it checks an offer's root."""
        return self.digests.takes_root(peer_fp)

    def session_ready(self, session: Session, peer_features: frozenset[str]) -> None:
        """A session's four steps are done (``session.peer_fp`` set): what the peer announced in step 1, bound by
        the transcript, tells before any offer whether it checks roots (its first file goes with one too)."""
        if FEATURE_FILE_ROOT in peer_features:
            self.digests.peer_takes_root(session.peer_fp)

    def prepare_for(self, peer_fp: str | None, path: str) -> tuple[str, int, bytes, bool]:
        """Check and hash a file to offer to ``peer_fp`` (:meth:`OfferDigests.prepare_for`)."""
        return self.digests.prepare_for(peer_fp, path)

    def core(self, session: Session) -> TransferCore:
        if session.files is None:
            keep_freed_buffers()        # chunks' buffers are reused, not mapped and unmapped each time
            kw: dict[str, Any] = {} if self.stall_timeout is None else {"stall_timeout": self.stall_timeout}
            session.files = TransferCore(**kw)
            session.writer.filler = ChunkPump(self, session)
        return session.files

    # --- the user's commands (session.lock held) -------------------------------------------------------------

    def offer(self, session: Session, path: str, size: int, sha256: bytes, *, root: bool = False) -> str:
        if session.channel is None or session.ended:
            raise UsageError("the chat is not ready for files: finish the four steps first")
        try:
            source = _FileSource(path)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        try:
            tid, out = self.core(session).offer(source, os.path.basename(path), size, sha256, time.monotonic(),
                                                root=root)
        except TransferError as exc:
            source.close()
            raise UsageError(str(exc)) from None
        if not root:
            self.digests.offered_plain(session.peer_fp, path, tid)
        self._send(session, out)
        return tid.hex()

    def answer(self, session: Session, transfer: str, accept: bool) -> None:
        """The user's answer to an offer (``session.lock`` not held: accepting may read a kept partial)."""
        tid = _tid(transfer)
        if accept:
            self.accept_offer(session, tid)
            return
        with session.writer.deferred():
            core = self.core(session)
            t = core.get(tid)
            try:
                self._send(session, core.decline(tid, "the receiver declined"))
            except TransferError as exc:
                raise UsageError(str(exc)) from None
            assert t is not None
            self._emit_finished(session, Finished(tid, False, t.name, t.state, "you declined the file"))

    def accept_offer(self, session: Session, tid: bytes) -> None:
        """Open the download (hashing a kept partial again, which may take seconds for a big one) with no lock
        held, then accept under the lock if the offer still waits (a user command or a pool task)."""
        with session.lock:
            t = session.files.get(tid) if session.files is not None else None
            if t is None or t.state is not State.OFFERED or session.ended:
                raise UsageError("there is no file offer waiting with that number")
            name, sha, size, root, sender = t.name, t.sha256, t.size, t.root, _sender(session)
        try:
            if self.downloads is None:
                raise UsageError("this node has no downloads folder; files cannot be received")
            sink = self.downloads.open(sender, name, sha, size, root=root,
                                       on_progress=lambda: self._sink_reported(session, tid))
        except UserError as exc:
            with session.writer.deferred():
                core = session.files
                t = core.get(tid) if core is not None else None
                if core is not None and t is not None and t.state is State.OFFERED and not session.ended:
                    self._send(session, core.decline(tid, "the receiver cannot take the file now"))
                    self._emit_finished(session, Finished(tid, False, name, t.state, f"not accepted: {exc}"))
            return
        with session.writer.deferred():
            core = session.files
            t = core.get(tid) if core is not None else None
            if core is None or t is None or t.state is not State.OFFERED or session.ended:
                sink.keep()         # cancelled or cut meanwhile: the partial stays for the next offer
                return
            self._started[tid] = time.monotonic()
            self._handle(session, core.accept(tid, sink, time.monotonic()))

    def cancel(self, session: Session, transfer: str) -> None:
        core = self.core(session)
        try:
            out, fin = core.cancel(_tid(transfer))
        except TransferError as exc:
            raise UsageError(str(exc)) from None
        self._send(session, out)
        self._emit_finished(session, fin)

    # --- the peer's side and the timer (session.lock held) ---------------------------------------------------

    def on_message(self, session: Session, kind: str, fields: dict[str, Any]) -> None:
        core = self.core(session)
        now = time.monotonic()
        if kind == "file_accept":
            self._started[fields["id"]] = now
            if fields.get("root") is True:
                self.digests.peer_takes_root(session.peer_fp)
        self._handle(session, core.receive(kind, fields, now))

    def poll(self, session: Session) -> None:
        """The reader's turn between frames: stalled transfers time out."""
        core = session.files
        if core is None or session.ended:
            return
        self._handle(session, core.poll(time.monotonic()))

    # --- a download's writer thread reports (no lock held) -------------------------------------------------

    def _sink_reported(self, session: Session, tid: bytes) -> None:
        """The writer thread of ``tid``'s download wrote more or failed: one pool task acknowledges it (reports
        that come while that task is still queued are covered by it). Never waits and never takes
        ``session.lock``: the partial's end joins this thread, possibly under that lock."""
        key = (session.id, tid)
        with self._ack_lock:
            if key in self._ack_due:
                return
            self._ack_due.add(key)
        self.host.submit(self._acknowledge, session, tid)

    def _acknowledge(self, session: Session, tid: bytes) -> None:
        """Pool task: acknowledge what the download's writer has written (and check the file once all is)."""
        with self._ack_lock:
            self._ack_due.discard((session.id, tid))
        with session.writer.deferred():
            core = session.files
            if core is None or session.ended:
                return
            self._handle(session, core.sink_progressed(tid, time.monotonic()))

    def session_ended(self, session: Session, reason: str) -> None:
        with self._ack_lock:        # (a task the closing pool dropped would leave its key behind)
            self._ack_due = {key for key in self._ack_due if key[0] != session.id}
        if session.files is not None:
            for ev in session.files.close(reason):
                if isinstance(ev, Finished):
                    self._emit_finished(session, ev, interrupted=True)
                else:
                    self._event(session, ev)
            session.writer.filler = None

    def next_frames(self, session: Session) -> list[Frame]:
        """Writer: the next chunk frame (and any end it caused), sealed; [] when none is due."""
        core, ch = session.files, session.channel
        if core is None or ch is None or session.ended:
            return []
        out = core.next_chunk(time.monotonic())
        frames: list[Frame] = []
        if out is not None:
            frames = ch.send_file_message(out.kind, out.fields)
        for fin in core.take_finished():
            self._event(session, fin)
        return frames

    # --- plumbing -------------------------------------------------------------------------------------------

    def _handle(self, session: Session, items: Sequence[Out | TransferEvent]) -> None:
        outs = [item for item in items if isinstance(item, Out)]
        self._send(session, outs)
        for item in items:
            if not isinstance(item, Out):
                self._event(session, item)
        if session.files is not None and session.files.has_chunk:
            session.writer.schedule_flush()

    def _send(self, session: Session, outs: list[Out]) -> None:
        ch = session.channel
        if ch is None or not outs:
            return
        for out in outs:
            session.writer.queue_all(ch.send_file_message(out.kind, out.fields))
        session.writer.schedule_flush()

    def _event(self, session: Session, ev: TransferEvent) -> None:
        match ev:
            case Offered(tid=tid, name=name, size=size, sha256=sha, root=root):
                sender = session.info.peer_nickname or "the peer"
                resumes = (self.downloads.resume_offset(_sender(session), sha, size, root=root) if self.downloads
                           else None)
                # a group's file is announced with its plain SHA-256 (docs/groups.md): a root never matches one
                tag = (self.tags.tag_offer(session.peer_fp, tid, sha, size)
                       if self.tags is not None and session.peer_fp is not None and not root else None)
                group, group_name, counter = tag or ("", "", 0)
                self.host.emit(FileOffer(session.id, tid.hex(), name, safe_name(name), size, sender, resumes,
                                         group=group, group_name=group_name, counter=counter))
                self._maybe_auto_accept(session, ev, resumes is not None)
            case Progress():
                now = time.monotonic()
                if ev.done < ev.size and now - self._shown.get(ev.tid, 0.0) < PROGRESS_EVERY:
                    return
                self._shown[ev.tid] = now
                started = self._started.get(ev.tid, now)
                self.host.emit(FileProgress(session.id, ev.tid.hex(), ev.outgoing, ev.name, ev.done, ev.size,
                                            ev.session_bytes, now - started))
            case Finished():
                self._emit_finished(session, ev)

    def _maybe_auto_accept(self, session: Session, ev: Offered, resumable: bool) -> None:
        """Accept at once when the user said so (``--accept-files``), or when a partial of this very file from
        this sender waits: the user accepted it before, and it resumes from its verified offset."""
        core = session.files
        if core is None or self.downloads is None:
            return
        if self.auto_accept or resumable:
            self.host.submit(self.accept_offer, session, ev.tid)     # not on the reader thread, not under the lock

    def _emit_finished(self, session: Session, fin: Finished, *, interrupted: bool = False) -> None:
        if fin.outgoing and self.outgoing_ended is not None:       # [file resume] before the UI hears of it
            self.outgoing_ended(session.id, fin.tid.hex(), fin.state, interrupted)
        if fin.outgoing and fin.state is State.DONE:
            self.digests.delivered(fin.tid)
        self._shown.pop(fin.tid, None)
        self._started.pop(fin.tid, None)
        if self.tags is not None and session.peer_fp is not None:
            self.tags.file_finished(session.peer_fp, fin.tid, fin.outgoing, fin.state.value)
        self.host.emit(FileFinished(session.id, fin.tid.hex(), fin.outgoing, fin.name, fin.state.value == "done",
                                    fin.state.value, fin.text, fin.path, fin.session_bytes, fin.resumed_from))


def prepare(path: str, *, root: bool = False) -> tuple[str, int, bytes]:
    """Check a file the user wants to send and hash it: (absolute path, size, digest): its SHA-256, or its root
    when ``root`` (:mod:`p2pchat.file_digest`, for a peer that checks roots)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{path} is not a file that can be sent")
    try:
        size, digest = file_digest(str(p), root)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return str(p.resolve()), size, digest


def _file_key(peer_fp: str | None, path: str) -> tuple[str, str, int, int] | None:
    """What names a file offered to a peer in :meth:`FileDriver.prepare_for`'s memory (None: no peer, or no
    file to stat: :func:`prepare` says why)."""
    if peer_fp is None:
        return None
    try:
        full = str(Path(path).expanduser().resolve())
        st = os.stat(full)
    except (OSError, RuntimeError):
        return None
    return peer_fp.lower(), full, st.st_size, st.st_mtime_ns


def _tid(transfer: str) -> bytes:
    try:
        tid = bytes.fromhex(transfer)
    except ValueError:
        raise UsageError(f"{transfer!r} is not a transfer number") from None
    return tid


def _sender(session: Session) -> str:
    """Whose partials are whose: the peer's key fingerprint."""
    return (session.pinned_fp or session.info.peer_fingerprint or session.info.peer_query).replace(" ", "")


def describe(ev: FileProgress) -> str:
    """A progress line: bytes, rate and time left."""
    rate = ev.session_bytes / ev.elapsed if ev.elapsed > 0 else 0.0
    left = f", {(ev.size - ev.done) / rate:.0f} s left" if rate > 0 and ev.done < ev.size else ""
    pct = 100.0 * ev.done / ev.size if ev.size else 100.0
    return f"{human(ev.done)} of {human(ev.size)} ({pct:.0f} %), {human(rate)}/s{left}"


__all__ = ["ChunkPump", "FileDriver", "OfferDigests", "describe", "prepare"]
