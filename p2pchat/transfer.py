"""File transfer inside an established chat channel, as a sans-IO state machine (docs/protocol.md §5.7).

One :class:`TransferCore` serves one session, both directions. It makes and checks the ``file_*`` inner
messages; the channel seals them, the IO layer (:mod:`p2pchat.file_driver`) moves them and owns the disk through
the two seams :class:`Source` (the file being sent) and :class:`Sink` (the partial download,
:mod:`p2pchat.downloads`). Nothing here reads a clock or the network: ``now`` is passed in.

API::

    TransferCore(*, max_window=MAX_WINDOW, stall_timeout=STALL_TIMEOUT, max_chunk=MAX_CHUNK)
    .offer(source, name, size, digest, now, root=False) -> (tid, [Out])   # we send a file
    .accept(tid, sink, now) -> [Out]          # the user (or the resume rule) takes an offer; sink.offset = resume
    .decline(tid, reason) -> [Out]
    .cancel(tid, reason) -> [Out]             # either side, any time before the end
    .next_chunk(now) -> Out | None            # the next chunk the window allows (the writer asks when idle)
    .receive(kind, fields, now) -> [Out | TransferEvent]   # a file_* message from the peer
    .sink_progressed(tid, now) -> [Out | TransferEvent]     # the sink wrote more (or failed): acknowledge it
    .poll(now) -> [Out | TransferEvent]       # a peer that stopped mid-transfer is timed out
    .close(reason) -> [TransferEvent]         # the session ended: partials are kept for resume

``Out(kind, fields)`` is one inner message to seal and send. Events: :class:`Offered` (ask the user),
:class:`Progress`, :class:`Finished` (ok or not, with a plain sentence, never text from the network).

Flow control: the receiver acknowledges the bytes its sink has *written* (on disk and hashed), not the ones it
was handed: the sink's writer may be behind (a throttled disk), and :meth:`Sink.write` never waits for it, so the
session's reader goes back to the socket at once and a text behind a chunk is read at once. When the sink wrote
a chunk on the spot it is acknowledged at once; otherwise the sink reports its progress and the IO layer calls
:meth:`TransferCore.sink_progressed`, which acknowledges everything written so far in one ``file_ack`` (a writer
that has more queued reports every :data:`ACK_EVERY` chunks, so one acknowledgement may cover two; the file's last
chunk is reported at once). The sender keeps at most a window of bytes sent and not acknowledged, sized from the
rate acknowledgements come back at (:class:`Pace`): about :data:`TARGET_DELAY` of transfer, so that a text typed
meanwhile (the writer pulls chunks only when nothing else waits for the wire) waits behind about that much whatever
the path — a fast loopback, a rate-limited relay, or a receiver's slow disk (its acknowledgements come at the
disk's rate; a session's first file starts with slow start, later ones at the rate the last one measured). A
sender with more than ``max_window + max_chunk`` bytes unacknowledged ignored flow control: the
receiver ends the transfer (:data:`MAX_UNACKED` by default), which also bounds what waits for its disk.
Chunks shrink on slow paths for the same reason, and grow on fast ones up to what the receiver announced in its
``file_accept`` (``max_chunk``: 1 MiB less 128 bytes here; a receiver that announces nothing, an older version,
gets chunks of at most :data:`BASE_CHUNK`): per chunk, each side pays a fixed cost (two AES-GCM key setups, the
acknowledgement's seal and open, the Python path), so fewer, larger chunks cost less CPU per byte.

The offer's digest (:mod:`p2pchat.file_digest`) is the file's plain SHA-256 (field ``sha256``) or its root over
1 MiB pieces (``root``, which a sender hashes on several cores); a receiver of this version checks either and
says so in every ``file_accept`` (``root: true``), which the IO layer remembers per peer to offer roots later (it
usually knows before the first offer: step 1's ``features``, protocol.md §3.1).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pchat.chat_protocol import BASE_CHUNK, FILE_TYPES, MAX_CHUNK, PAD_STEP, TRANSFER_ID_LEN
from p2pchat.file_digest import DIGEST_LEN
from p2pchat.foundation import crypto

CHUNK_SIZE = MAX_CHUNK                      # 1 048 448 bytes: a chunk message pads to exactly 16 × 64 KiB
BUCKET = PAD_STEP                           # chunks are a whole number of 64 KiB buckets, less 128 bytes
MIN_CHUNK = BUCKET - 128                    # 65 408: the chunk of a slow path (or before any rate is known)
TARGET_DELAY = 0.025                        # seconds of transfer kept in flight: what a text waits behind
CHUNK_TIME = 0.01                           # a chunk takes about this long on the path (64 KiB–1 MiB)
MIN_WINDOW = 2 * MIN_CHUNK
START_WINDOW = 4 * MIN_CHUNK
MAX_WINDOW = 8 * 1024 * 1024
RATE_SAMPLE = 0.02                          # seconds of acknowledgements per rate sample
STARTUP_GROWTH = 1.25                       # slow start goes on while each rate sample is this much above the last
MAX_NAME_BYTES = 255                        # a file name in an offer, UTF-8
MAX_FILE_SIZE = 2**63 - 1                   # what the wire carries; the receiver's own limit is lower
DEFAULT_MAX_SIZE = 2 * 1024**3              # a receiver's default limit: 2 GiB
MAX_PENDING_OFFERS = 4                      # offers from one peer waiting for the user's answer
MAX_ACTIVE = 8                              # transfers per direction and session
STALL_TIMEOUT = 60.0                        # seconds without progress before a transfer is given up
ACK_EVERY = 2                               # chunks one acknowledgement covers at most (the sink has more queued)
MAX_UNACKED = MAX_WINDOW + CHUNK_SIZE       # receiver: bytes a sender may have sent and not had acknowledged


class State(enum.Enum):
    OFFERED = "offered"         # sent an offer / received one: waiting for the answer
    SENDING = "sending"         # accepted: chunks flow (sender) or are taken (receiver)
    VERIFYING = "verifying"     # sender: every byte sent, waiting for file_done
    DONE = "done"
    DECLINED = "declined"
    CANCELLED = "cancelled"     # by us or the peer
    FAILED = "failed"           # a check failed, a disk filled up, the peer stopped


ENDED = frozenset({State.DONE, State.DECLINED, State.CANCELLED, State.FAILED})


class Source(Protocol):
    """The file being sent."""

    def read(self, offset: int, n: int) -> bytes: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where an accepted file is written (:class:`p2pchat.downloads.Partial`). ``offset`` is what is already
    verified on disk (the resume point). :meth:`write` takes the next bytes in order and never waits for the
    disk; it may leave them to a writer of its own, which records the verified offset as it goes and tells the IO
    layer when it made progress (which then calls :meth:`TransferCore.sink_progressed`). A failed write (a full
    disk) is raised as :class:`SinkError` by a later :meth:`write`, or by :meth:`progress`, :meth:`checkpoint` or
    :meth:`finish`."""

    offset: int

    def write(self, data: bytes | memoryview) -> None: ...

    def progress(self) -> int:
        """Bytes from the file's start that are on disk and hashed (never waits); raises :class:`SinkError` when
        a write failed."""
        ...

    def checkpoint(self) -> None:
        """Wait until every byte written so far is on disk and recorded as verified."""
        ...

    def finish(self) -> str | None:
        """Check the whole file against the offer's digest; the saved path, or None on a mismatch (the
        partial is gone)."""
        ...

    def keep(self) -> None: ...

    def discard(self) -> None: ...


class SinkError(Exception):
    """The sink could not take the data (disk full, folder gone); the partial stays for a resume."""


@dataclass(frozen=True)
class Out:
    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Offered:
    tid: bytes
    name: str          # as the peer sent it: display through visible(); never a path
    size: int
    sha256: bytes      # the offer's digest: the plain SHA-256, or the root when ``root``
    root: bool = False


@dataclass(frozen=True)
class Progress:
    tid: bytes
    outgoing: bool
    name: str
    done: int           # bytes through (sent and acknowledged / written), from the start of the file
    size: int
    session_bytes: int  # bytes moved in this session (a resume starts at 0)


@dataclass(frozen=True)
class Finished:
    tid: bytes
    outgoing: bool
    name: str
    state: State
    text: str                  # one plain sentence, our own words
    path: str | None = None    # receiver: where the verified file is
    session_bytes: int = 0
    resumed_from: int = 0


TransferEvent = Offered | Progress | Finished


class Pace:
    """The sender's window and chunk size from the acknowledged rate (bytes per second, sampled over at least
    :data:`RATE_SAMPLE`). While the window limits the rate, a round trip shorter than :data:`TARGET_DELAY` makes
    the window grow; a queue on the path (a rate-limited relay) lengthens the round trip and holds it near
    ``rate × TARGET_DELAY``.

    Every file of a session starts from nothing known, and the start is a fixed cost of each file (a 50 MiB file
    on a fast loopback takes about 150 ms, and the window used to need about 90 of them to grow to its size). So,
    as TCP does, the window first grows by every byte acknowledged (it doubles per round trip: *slow start*;
    chunks a quarter of it), for as long as each rate sample is at least :data:`STARTUP_GROWTH` times the one
    before — the window, not the path, holds the transfer back — and at most to ``max_window``; the first sample
    that grew less ends it (the path is full: its rate is the sample). After that a higher sample is taken at once
    and a lower one only halves the distance (one slow sample is not a slow path). Slow start adds only what the
    path acknowledged, so on a slow path (a relay limited to 4 MB/s) it ends after two samples with the window
    grown by about 160 KB."""

    def __init__(self, max_window: int = MAX_WINDOW, rate: float = 0.0) -> None:
        """``rate``: what an earlier file of the same session measured (its path), so this one needs no start."""
        self.max_window = max_window
        self.rate = rate
        self.starting = rate == 0   # slow start: nothing is known of the path yet
        self._since: float | None = None
        self._bytes = 0
        self._acked = 0             # every byte acknowledged so far (slow start's window)
        self._last_sample = 0.0

    def acked(self, n: int, now: float) -> None:
        self._acked += n
        if self._since is None:
            self._since = now
            return
        self._bytes += n
        elapsed = now - self._since
        if elapsed >= RATE_SAMPLE:
            sample = self._bytes / elapsed
            if self.starting:
                if sample < STARTUP_GROWTH * self._last_sample:
                    self.starting, self.rate = False, sample
                self._last_sample = sample
            else:
                self.rate = sample if sample > self.rate else 0.5 * self.rate + 0.5 * sample
            self._since, self._bytes = now, 0

    @property
    def window(self) -> int:
        if self.starting:
            return min(START_WINDOW + self._acked, self.max_window)
        return int(min(self.max_window, max(MIN_WINDOW, self.rate * TARGET_DELAY)))

    @property
    def chunk(self) -> int:
        per_rate = self.window // 4 if self.starting else int(self.rate * CHUNK_TIME)
        buckets = max(1, min(CHUNK_SIZE // BUCKET + 1, per_rate // BUCKET))
        return min(buckets * BUCKET - 128, CHUNK_SIZE)


@dataclass
class _Transfer:
    tid: bytes
    outgoing: bool
    name: str
    size: int
    sha256: bytes               # the offer's digest: the plain SHA-256, or the root when ``root``
    root: bool = False
    state: State = State.OFFERED
    source: Source | None = None
    sink: Sink | None = None
    chunk_limit: int = BASE_CHUNK   # sender: the largest chunk the receiver takes (its file_accept's max_chunk)
    start: int = 0              # the resume offset this session started at
    sent: int = 0               # sender: next offset to send; receiver: next offset expected
    acked: int = 0              # sender: acknowledged by the receiver; receiver: last acknowledged (at the end: kept)
    touched: float = 0.0        # last progress (the stall timer)
    pace: Pace = field(default_factory=Pace)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def session_bytes(self) -> int:
        return self.acked - self.start      # acknowledged: by the receiver, or (receiving) written by our sink


class TransferError(Exception):
    """The user asked for something impossible (an unknown transfer, a finished one)."""


def check_offer_fields(name: str, size: int, digest: bytes | None) -> str | None:
    """Why an offer's fields are unusable on the wire, or None."""
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"a file name must be 1 to {MAX_NAME_BYTES} bytes of UTF-8"
    if not 0 <= size <= MAX_FILE_SIZE:
        return "the file size is out of range"
    if digest is None:
        return "it carries neither a SHA-256 nor a root of the file"
    if len(digest) != DIGEST_LEN:
        return f"the file's digest must be {DIGEST_LEN} bytes"
    return None


def offer_digest(f: dict[str, Any]) -> tuple[bytes | None, bool]:
    """The digest an offer's fields carry and whether it is a root: ``root`` when present (preferred), else
    ``sha256``; (None, False) when it has neither."""
    if f.get("root") is not None:
        return f["root"], True
    return f.get("sha256"), False


class TransferCore:
    """Every file transfer of one session (see the module docstring)."""

    def __init__(self, *, max_window: int = MAX_WINDOW, stall_timeout: float = STALL_TIMEOUT,
                 id_factory: Callable[[], bytes] | None = None, max_chunk: int = MAX_CHUNK) -> None:
        if not BASE_CHUNK <= max_chunk <= MAX_CHUNK:
            raise ValueError(f"max_chunk must be {BASE_CHUNK} to {MAX_CHUNK} bytes")
        self.max_window = max_window
        self.stall_timeout = stall_timeout
        self.max_chunk = max_chunk          # receiver: the largest chunk we take, announced in file_accept
        self._new_id = id_factory or (lambda: crypto.random_bytes(TRANSFER_ID_LEN))
        self._out: dict[bytes, _Transfer] = {}
        self._in: dict[bytes, _Transfer] = {}
        self._turn = 0           # round robin between outgoing transfers
        self._rate = 0.0         # the last acknowledged rate an outgoing transfer measured: the next one starts there

    # --- what the IO layer looks at ----------------------------------------------------------------------

    def transfers(self) -> list[_Transfer]:
        return [*self._out.values(), *self._in.values()]

    def get(self, tid: bytes) -> _Transfer | None:
        return self._out.get(tid) or self._in.get(tid)

    def pending_offers(self) -> list[bytes]:
        return [t.tid for t in self._in.values() if t.state is State.OFFERED]

    @property
    def has_chunk(self) -> bool:
        """A chunk is ready for the wire (the window of some sending transfer has room)."""
        return any(self._can_send(t) for t in self._out.values())

    def _can_send(self, t: _Transfer) -> bool:
        return (t.state is State.SENDING and t.sent < t.size
                and t.sent - t.acked + self._chunk_for(t) <= t.pace.window)

    @staticmethod
    def _chunk_for(t: _Transfer) -> int:
        """The next chunk's size: the pace's, no larger than the receiver takes or than what is left."""
        return min(t.pace.chunk, t.chunk_limit, t.size - t.sent)

    # --- our commands ------------------------------------------------------------------------------------

    def offer(self, source: Source, name: str, size: int, sha256: bytes, now: float, *,
              root: bool = False) -> tuple[bytes, list[Out]]:
        """Offer a file whose digest is ``sha256``: its plain SHA-256, or its root when ``root`` (only to a peer
        that announced it checks roots)."""
        problem = check_offer_fields(name, size, sha256)
        if problem is not None:
            raise TransferError(problem)
        if sum(t.state not in ENDED for t in self._out.values()) >= MAX_ACTIVE:
            raise TransferError(f"{MAX_ACTIVE} files are already on their way in this chat; wait for one to end")
        self._forget_ended(self._out)
        tid = self._new_id()
        self._out[tid] = _Transfer(tid, True, name, size, sha256, root, source=source, touched=now,
                                   pace=Pace(self.max_window, self._rate))
        return tid, [Out("file_offer", {"id": tid, "name": name, "size": size, "root" if root else "sha256": sha256})]

    def accept(self, tid: bytes, sink: Sink, now: float) -> list[Out | TransferEvent]:
        t = self._in.get(tid)
        if t is None or t.state is not State.OFFERED:
            sink.keep()
            raise TransferError("there is no file offer waiting with that number")
        if not 0 <= sink.offset <= t.size:
            sink.discard()
            raise TransferError("the partial file is longer than the offered file")
        t.sink, t.state, t.touched = sink, State.SENDING, now
        t.start = t.sent = t.acked = sink.offset
        out: list[Out | TransferEvent] = [Out("file_accept", {"id": tid, "offset": sink.offset,
                                                              "max_chunk": self.max_chunk, "root": True})]
        if t.sent == t.size:        # everything was already here: check it at once
            out += self._complete(t)
        return out

    def decline(self, tid: bytes, reason: str = "") -> list[Out]:
        t = self._in.get(tid)
        if t is None or t.state is not State.OFFERED:
            raise TransferError("there is no file offer waiting with that number")
        t.state = State.DECLINED
        return [Out("file_decline", {"id": tid, "reason": reason[:1000]})]

    def cancel(self, tid: bytes, reason: str = "cancelled") -> tuple[list[Out], Finished]:
        t = self.get(tid)
        if t is None or t.state in ENDED:
            raise TransferError("there is no file transfer under way with that number")
        # our own user's cancel: a partial download is not wanted any more
        fin = self._end(t, State.CANCELLED, "you cancelled the transfer", discard=True)
        return [Out("file_cancel", {"id": tid, "reason": reason[:1000]})], fin

    def next_chunk(self, now: float) -> Out | None:
        sending = [t for t in self._out.values() if self._can_send(t)]
        if not sending:
            return None
        self._turn = (self._turn + 1) % len(sending)
        t = sending[self._turn]
        n = self._chunk_for(t)
        assert t.source is not None
        try:
            data = t.source.read(t.sent, n)
        except OSError as exc:
            data = b""
            t.extra["read_error"] = exc.strerror or str(exc)
        if len(data) != n:
            # the file shrank or became unreadable under us: the offer's size was a promise we cannot keep
            why = t.extra.get("read_error") or "the file changed while it was being sent"
            t.extra["finished"] = self._end(t, State.FAILED, f"sending stopped: {why}")
            return Out("file_cancel", {"id": t.tid, "reason": "the sender could not read the file any more"})
        offset = t.sent
        t.sent += n
        return Out("file_chunk", {"id": t.tid, "offset": offset, "data": data})

    def take_finished(self) -> list[Finished]:
        """Ends decided while making chunks (a file that could not be read any more)."""
        done = []
        for t in self._out.values():
            fin = t.extra.pop("finished", None)
            if fin is not None:
                done.append(fin)
        return done

    # --- the peer's messages -------------------------------------------------------------------------------

    def receive(self, kind: str, f: dict[str, Any], now: float) -> list[Out | TransferEvent]:
        tid = f["id"]
        if kind == "file_offer":
            digest, root = offer_digest(f)
            return self._on_offer(tid, f["name"], f["size"], digest, root, now)
        if kind == "file_chunk":
            return self._on_chunk(tid, f["offset"], f["data"], now)
        if kind == "file_cancel":
            return self._on_cancel(tid)
        t = self._out.get(tid)
        if t is None or t.state in ENDED:
            return []       # a late answer to a transfer that already ended here (a crossing cancel)
        if kind == "file_accept":
            return self._on_accept(t, f["offset"], f.get("max_chunk"), now)
        if kind == "file_decline":
            if t.state is not State.OFFERED:
                return self._fail(t, "the receiver declined a transfer it had accepted")
            return [self._end(t, State.DECLINED, "the receiver declined the file")]
        if kind == "file_ack":
            return self._on_ack(t, f["offset"], now)
        if kind == "file_done":
            if t.state is not State.VERIFYING:
                return self._fail(t, "the receiver reported the file complete before it was all sent")
            return [self._end(t, State.DONE, "delivered: the receiver checked the whole file against its "
                                             + ("root" if t.root else "SHA-256"))]
        raise ValueError(f"not a file message: {kind}")

    def _on_offer(self, tid: bytes, name: str, size: int, sha: bytes | None, root: bool,
                  now: float) -> list[Out | TransferEvent]:
        if tid in self._in:
            return [Out("file_decline", {"id": tid, "reason": "that transfer number is already in use"})]
        problem = check_offer_fields(name, size, sha)
        if problem is not None:
            return [Out("file_decline", {"id": tid, "reason": f"unusable offer: {problem}"})]
        if len(self.pending_offers()) >= MAX_PENDING_OFFERS:
            return [Out("file_decline", {"id": tid, "reason": f"{MAX_PENDING_OFFERS} offers already wait for an "
                                                              "answer; offer it again later"})]
        if sum(t.state is State.SENDING for t in self._in.values()) >= MAX_ACTIVE:
            return [Out("file_decline", {"id": tid, "reason": f"{MAX_ACTIVE} files are already on their way"})]
        assert sha is not None      # check_offer_fields refused an offer without a digest
        self._forget_ended(self._in)
        self._in[tid] = _Transfer(tid, False, name, size, sha, root, touched=now)
        return [Offered(tid, name, size, sha, root)]

    def _on_accept(self, t: _Transfer, offset: int, max_chunk: int | None, now: float) -> list[Out | TransferEvent]:
        if t.state is not State.OFFERED:
            return self._fail(t, "the receiver accepted the file twice")
        if not 0 <= offset <= t.size:
            return self._fail(t, "the receiver asked to resume beyond the end of the file")
        # no max_chunk: an older receiver, which takes BASE_CHUNK; more than we would send is simply not used
        t.chunk_limit = BASE_CHUNK if max_chunk is None else max(BASE_CHUNK, min(max_chunk, CHUNK_SIZE))
        t.state, t.touched = State.SENDING, now
        t.start = t.sent = t.acked = offset
        if offset == t.size:
            t.state = State.VERIFYING
        return []

    def _on_ack(self, t: _Transfer, offset: int, now: float) -> list[Out | TransferEvent]:
        if t.state not in (State.SENDING, State.VERIFYING) or not t.acked <= offset <= t.sent:
            return self._fail(t, "the receiver acknowledged bytes that were never sent")
        if offset > t.acked:
            t.pace.acked(offset - t.acked, now)
            self._rate = t.pace.rate or self._rate
            t.acked, t.touched = offset, now
        if t.acked == t.size:
            t.state = State.VERIFYING
        return [Progress(t.tid, True, t.name, t.acked, t.size, t.session_bytes)]

    def sink_progressed(self, tid: bytes, now: float) -> list[Out | TransferEvent]:
        """The sink of the incoming transfer ``tid`` wrote more (or failed): acknowledge what is written, and
        check the whole file once all of it is."""
        t = self._in.get(tid)
        if t is None or t.state is not State.SENDING or t.sink is None:
            return []       # ended meanwhile (a cancel, a check that failed): nothing more is acknowledged
        return self._acknowledge(t, now)

    def _acknowledge(self, t: _Transfer, now: float) -> list[Out | TransferEvent]:
        assert t.sink is not None
        try:
            written = t.sink.progress()
        except SinkError as exc:
            return self._sink_failed(t, exc)
        if not t.acked < written <= t.sent:
            return []
        t.acked, t.touched = written, now
        out: list[Out | TransferEvent] = [Out("file_ack", {"id": t.tid, "offset": written}),
                                          Progress(t.tid, False, t.name, written, t.size, t.session_bytes)]
        if written == t.size:
            out += self._complete(t)
        return out

    def _on_chunk(self, tid: bytes, offset: int, data: bytes | memoryview, now: float) -> list[Out | TransferEvent]:
        t = self._in.get(tid)
        if t is None or t.state in ENDED:
            return []       # a chunk already on the wire when we cancelled or declined
        if t.state is not State.SENDING:
            return self._fail(t, "the sender sent file data before the file was accepted")
        if offset != t.sent:
            return self._fail(t, f"the sender sent file data out of order (at byte {offset:,}, expected "
                                 f"{t.sent:,})")
        if not data or offset + len(data) > t.size:
            return self._fail(t, "the sender sent more data than the size it offered")
        if len(data) > self.max_chunk:
            return self._fail(t, f"the sender sent a chunk of {len(data):,} bytes, more than the {self.max_chunk:,} "
                                 "this side announced it takes")
        unacked = t.sent + len(data) - t.acked
        if unacked > self.max_window + self.max_chunk:
            return self._fail(t, f"the sender ignored flow control: {unacked:,} bytes unacknowledged, more than the "
                                 f"{self.max_window + self.max_chunk:,} it may send ahead" + self._kept(t),
                              peer_reason="the sender sent more than the flow-control window allows")
        assert t.sink is not None
        try:
            t.sink.write(data)
        except SinkError as exc:
            return self._sink_failed(t, exc)
        t.sent += len(data)
        t.touched = now
        # acknowledged once written: at once when the sink wrote it on the spot, else when the sink reports
        return self._acknowledge(t, now) if self._caught_up(t) else []

    @staticmethod
    def _caught_up(t: _Transfer) -> bool:
        assert t.sink is not None
        try:
            return t.sink.progress() == t.sent
        except SinkError:
            return True         # _acknowledge reports it
    def _complete(self, t: _Transfer) -> list[Out | TransferEvent]:
        assert t.sink is not None
        try:
            path = t.sink.finish()
        except SinkError as exc:
            return self._sink_failed(t, exc)
        if path is None:
            t.sink = None
            what = "root" if t.root else "SHA-256"
            return self._fail(t, f"the file received does not match the {what} the sender announced; it was "
                                 "deleted", peer_reason=f"the file received did not match its {what}")
        fin = self._end(t, State.DONE, f"saved as {path}")
        fin = Finished(fin.tid, False, t.name, State.DONE, fin.text, path, fin.session_bytes, fin.resumed_from)
        return [Out("file_done", {"id": t.tid}), fin]

    def _on_cancel(self, tid: bytes) -> list[Out | TransferEvent]:
        t = self._in.get(tid)
        if t is None or t.state in ENDED:
            t = self._out.get(tid)
        if t is None or t.state in ENDED:
            return []
        return [self._end(t, State.CANCELLED, "the other side cancelled the transfer" + self._kept(t))]

    # --- the timer and the end ------------------------------------------------------------------------------

    def poll(self, now: float) -> list[Out | TransferEvent]:
        out: list[Out | TransferEvent] = []
        for t in self.transfers():
            if t.state in (State.SENDING, State.VERIFYING) and now - t.touched > self.stall_timeout:
                who = ("the receiver" if t.outgoing else "the disk of the downloads folder" if t.acked < t.sent
                       else "the sender")
                out += self._fail(t, f"{who} made no progress for {self.stall_timeout:g} s",
                                  peer_reason="no progress for too long")
            elif t.outgoing and t.state is State.OFFERED and now - t.touched > 24 * 3600:
                out += self._fail(t, "the offer was not answered for a day")
        return out

    def close(self, reason: str) -> list[TransferEvent]:
        """The session is over: every transfer under way ends; partial downloads stay for a resume."""
        ended: list[TransferEvent] = []
        for t in self.transfers():
            if t.state not in ENDED:
                ended.append(self._end(t, State.FAILED, f"interrupted ({reason})" + self._kept(t)))
        return ended

    def _fail(self, t: _Transfer, text: str, *, peer_reason: str | None = None) -> list[Out | TransferEvent]:
        fin = self._end(t, State.FAILED, text)
        return [Out("file_cancel", {"id": t.tid, "reason": (peer_reason or text)[:1000]}), fin]

    def _sink_failed(self, t: _Transfer, exc: SinkError) -> list[Out | TransferEvent]:
        return self._fail(t, f"{exc}; the part received is kept and resumes when the file is offered again",
                          peer_reason="the receiver could not store the file (its disk is full?)")

    def _kept(self, t: _Transfer) -> str:
        if not t.outgoing and t.sink is not None and t.sent > 0:
            return f"; the {t.sent:,} bytes received are kept and resume when the file is offered again"
        return ""

    def _end(self, t: _Transfer, state: State, text: str, *, discard: bool = False) -> Finished:
        t.state = state
        if t.source is not None:
            t.source.close()
            t.source = None
        if t.sink is not None:
            if discard:
                t.sink.discard()
            elif state is not State.DONE:
                t.sink.keep()       # writes what was queued: the session's bytes are what is on disk now
                try:
                    t.acked = max(t.acked, t.sink.progress())
                except SinkError:
                    pass            # a failed write: what was acknowledged is what is on disk
            t.sink = None
        return Finished(t.tid, t.outgoing, t.name, state, text, None, t.session_bytes, t.start)

    @staticmethod
    def _forget_ended(table: dict[bytes, _Transfer]) -> None:
        for tid in [tid for tid, t in table.items() if t.state in ENDED][:-32]:
            del table[tid]


FILE_KINDS = FILE_TYPES

__all__ = [
    "ACK_EVERY",
    "BASE_CHUNK",
    "CHUNK_SIZE",
    "DEFAULT_MAX_SIZE",
    "FILE_KINDS",
    "MAX_ACTIVE",
    "MAX_NAME_BYTES",
    "MAX_PENDING_OFFERS",
    "MAX_UNACKED",
    "MAX_WINDOW",
    "STALL_TIMEOUT",
    "Finished",
    "Offered",
    "Out",
    "Pace",
    "Progress",
    "Sink",
    "SinkError",
    "Source",
    "State",
    "TransferCore",
    "TransferError",
    "TransferEvent",
    "check_offer_fields",
    "offer_digest",
]
