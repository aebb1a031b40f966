"""Parallel block download (sans-IO): which block bodies to ask which peer for, after headers-first sync.

The node's sync peer (the *leader*) supplies checked headers; their bodies are fetched from every connected peer
that may hold them at once, the way Bitcoin Core's block download works (a bounded number of blocks in flight per
peer, a moving window ahead of the next height to apply, a peer holding the window back is cut off):

- :meth:`DownloadScheduler.want` queues the checked headers of the branch (consecutive heights);
- :meth:`~DownloadScheduler.assign` hands each peer up to ``requests_per_peer`` requests of up to ``batch``
  hashes, lowest heights first, only heights inside the window (``window`` heights from the next one to apply,
  and no new ones while ``max_buffered_bytes`` of bodies wait to be applied, except the lowest missing one);
- :meth:`~DownloadScheduler.received` matches an answer against that peer's oldest request (answers come in
  request order) and checks every body against its header (same hash, Merkle root of its records);
- :meth:`~DownloadScheduler.take_ready` gives the bodies in height order, for the ledger to apply;
- :meth:`~DownloadScheduler.expired` names the peers that stalled: an answer late past ``request_timeout`` (an
  answer that leaves asked blocks out without filling its byte budget does not move that deadline on, so a peer
  dripping a block per answer still misses it), or the holder of the lowest missing height while more heights
  wait beyond the window and another peer could take the work, past ``stall_timeout`` (doubled each time it fires, up to
  ``max_stall_timeout``, and eased back while the window moves).

A peer answering none of the blocks asked does not have them (a pruned peer, a peer on another branch): those
heights are never asked of it again in this download and go to the others. When no peer left can serve the
lowest missing height, :attr:`~DownloadScheduler.stuck` says so (the leader does not have the blocks it
announced). Nothing here does IO or reads a clock: the caller passes ``now``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from ledger.blocks import Block, BlockHeader

P = TypeVar("P", bound=Hashable)

DEFAULT_BATCH = 32
DEFAULT_REQUESTS_PER_PEER = 2
DEFAULT_WINDOW = 1024
DEFAULT_BUFFERED_BYTES = 32_000_000


class Height(Enum):
    """Where one wanted height stands."""

    QUEUED = "queued"        # nobody has been asked for it (or its last request came back without it)
    ASKED = "asked"          # in a request out to one peer
    RECEIVED = "received"    # its body is here, checked against its header, waiting to be applied in order


@dataclass
class _Request:
    heights: list[int]
    hashes: list[bytes]
    sent: float
    cancelled: bool = False      # the download it belonged to was reset: its answer is read and dropped


@dataclass
class _Peer:
    highest: int                 # the highest height it may serve (what its headers or hello showed)
    lowest: int = 0              # the lowest height it serves (a pruned peer advertises it)
    requests: deque[_Request] = field(default_factory=deque)
    deadline: float | None = None    # its oldest request must be answered by then
    refused: set[int] = field(default_factory=set)   # heights it answered without: not asked of it again
    delivered: int = 0


@dataclass(frozen=True)
class Receipt:
    """What an answer brought. ``unexpected``: why it breaks the protocol (nothing was asked of the peer, or it
    holds a block not asked for);
    ``wrong``: why a body does not match its header (the peer served a bad body); ``dropped``: the answer to a
    cancelled request (read, not used). ``refused``: heights it answered without (not available there)."""

    accepted: int = 0
    unexpected: str | None = None
    wrong: str | None = None
    dropped: bool = False
    refused: int = 0


class DownloadScheduler(Generic[P]):
    """The parallel block download plan (see the module docstring). Not thread-safe: the node holds its lock."""

    def __init__(self, *, batch: int = DEFAULT_BATCH, requests_per_peer: int = DEFAULT_REQUESTS_PER_PEER,
                 window: int = DEFAULT_WINDOW, max_buffered_bytes: int = DEFAULT_BUFFERED_BYTES,
                 request_timeout: float = 10.0, stall_timeout: float = 2.0, max_stall_timeout: float = 64.0,
                 full_answer_bytes: int = 3_000_000) -> None:
        self.batch = batch
        self.requests_per_peer = requests_per_peer
        self.window = window
        self.max_buffered_bytes = max_buffered_bytes
        self.request_timeout = request_timeout
        self.base_stall_timeout = stall_timeout
        self.stall_timeout = stall_timeout
        self.max_stall_timeout = max_stall_timeout
        self.full_answer_bytes = full_answer_bytes   # an answer this big was cut by the sender's byte budget
        self._peers: dict[P, _Peer] = {}
        self._headers: dict[int, BlockHeader] = {}
        self._by_hash: dict[bytes, int] = {}
        self._state: dict[int, Height] = {}
        self._owner: dict[int, P] = {}
        self._bodies: dict[int, tuple[Block, P]] = {}
        self._queued: list[int] = []                  # heap of QUEUED heights
        self._next = 0                                # the next height to apply
        self._end = -1                                # the last height wanted
        self.buffered_bytes = 0
        self.taken = 0                                # bodies handed out by take_ready since the last reset

    # --- the branch ------------------------------------------------------------------------------------------

    def want(self, headers: Sequence[BlockHeader]) -> None:
        """Queue the bodies of ``headers`` (consecutive; they continue what is wanted, or start a download)."""
        if not headers:
            return
        if self._end < self._next:   # a new download
            self._next, self._end = headers[0].height, headers[0].height - 1
        for header in headers:
            h = header.height
            if h != self._end + 1:
                raise ValueError(f"header {h} does not continue the download at height {self._end}")
            self._headers[h] = header
            self._by_hash[header.hash] = h
            self._state[h] = Height.QUEUED
            heapq.heappush(self._queued, h)
            self._end = h

    def reset(self) -> None:
        """Forget the branch (the sync ended or moved to another peer). Requests still out are cancelled: their
        answers are read and dropped, not held against anyone."""
        for state in self._peers.values():
            for request in state.requests:
                request.cancelled = True
            state.refused.clear()
        self._headers.clear()
        self._by_hash.clear()
        self._state.clear()
        self._owner.clear()
        self._bodies.clear()
        self._queued.clear()
        self._next, self._end = 0, -1
        self.buffered_bytes = 0
        self.taken = 0

    @property
    def active(self) -> bool:
        """Some body is still to fetch or to apply."""
        return self._end >= self._next

    @property
    def remaining(self) -> int:
        return max(0, self._end - self._next + 1)

    @property
    def next_height(self) -> int:
        return self._next

    @property
    def end_height(self) -> int:
        return self._end

    def state(self, height: int) -> Height | None:
        return self._state.get(height)

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of a wanted (not yet applied) block by hash."""
        return self._by_hash.get(block_hash)

    def hash_at(self, height: int) -> bytes | None:
        header = self._headers.get(height)
        return None if header is None else header.hash

    # --- peers -------------------------------------------------------------------------------------------------

    def add_peer(self, peer: P, *, highest: int, lowest: int = 0) -> None:
        """Let ``peer`` serve heights ``lowest``..``highest`` (raised, never lowered, when called again)."""
        state = self._peers.get(peer)
        if state is None:
            self._peers[peer] = _Peer(highest=highest, lowest=lowest)
        else:
            state.highest = max(state.highest, highest)
            state.lowest = lowest

    def remove_peer(self, peer: P) -> None:
        """``peer`` is gone: what it was asked for goes to the others (bodies it delivered stay)."""
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for request in state.requests:
            if not request.cancelled:
                self._requeue([h for h in request.heights if self._owner.get(h) == peer])

    def peers(self) -> list[P]:
        return list(self._peers)

    def in_flight(self, peer: P) -> int:
        state = self._peers.get(peer)
        return 0 if state is None else sum(len(r.heights) for r in state.requests if not r.cancelled)

    def delivered(self, peer: P) -> int:
        state = self._peers.get(peer)
        return 0 if state is None else state.delivered

    def serving(self) -> int:
        """Peers that delivered bodies in this download."""
        return sum(1 for s in self._peers.values() if s.delivered)

    def _serves(self, state: _Peer, height: int) -> bool:
        return state.lowest <= height <= state.highest and height not in state.refused

    # --- requests --------------------------------------------------------------------------------------------

    def assign(self, now: float) -> list[tuple[P, list[bytes]]]:
        """The requests to send now: ``(peer, hashes)``, each peer filled up to ``requests_per_peer`` requests,
        the least busy peer first."""
        out: list[tuple[P, list[bytes]]] = []
        window_end = self._next + self.window
        order = sorted(self._peers.items(), key=lambda item: len(item[1].requests))
        progress = True
        while progress and self._queued:
            progress = False
            for peer, state in order:
                if len(state.requests) >= self.requests_per_peer or not self._queued:
                    continue
                heights = self._pick(state, window_end)
                if not heights:
                    continue
                hashes = [self._headers[h].hash for h in heights]
                for h in heights:
                    self._state[h] = Height.ASKED
                    self._owner[h] = peer
                state.requests.append(_Request(heights, hashes, now))
                if state.deadline is None:
                    state.deadline = now + self.request_timeout
                out.append((peer, hashes))
                progress = True
        for state in self._peers.values():
            if not state.requests:
                state.deadline = None   # nothing out: no answer is owed (a carried drip deadline ends here)
        return out

    def _pick(self, state: _Peer, window_end: int) -> list[int]:
        """Up to ``batch`` queued heights this peer serves, lowest first, inside the window and byte budget."""
        picked: list[int] = []
        skipped: list[int] = []
        lowest_missing = self._lowest_missing()
        while self._queued and len(picked) < self.batch:
            h = self._queued[0]
            if h >= window_end or (self.buffered_bytes >= self.max_buffered_bytes and h != lowest_missing):
                break
            heapq.heappop(self._queued)
            if self._state.get(h) is not Height.QUEUED:
                continue   # a stale heap entry
            (picked if self._serves(state, h) else skipped).append(h)
        for h in skipped:
            heapq.heappush(self._queued, h)
        return picked

    def _requeue(self, heights: Sequence[int]) -> None:
        for h in heights:
            if self._state.get(h) is Height.ASKED:
                self._state[h] = Height.QUEUED
                self._owner.pop(h, None)
                heapq.heappush(self._queued, h)

    # --- answers ---------------------------------------------------------------------------------------------

    def received(self, peer: P, blocks: Sequence[Block], answer_bytes: int, now: float) -> Receipt:
        """Account for ``peer``'s answer to its oldest request (``answer_bytes``: the bodies' total size)."""
        state = self._peers.get(peer)
        if state is None or not state.requests:
            return Receipt(unexpected="blocks were sent without being asked for")
        request = state.requests.popleft()
        asked = dict(zip(request.hashes, request.heights, strict=True))
        if any(b.hash not in asked for b in blocks):
            if not request.cancelled:
                self._requeue(request.heights)
            return Receipt(unexpected="the blocks answer holds blocks that were not asked for")
        if request.cancelled:
            self._after_answer(state, now, moved=True)
            return Receipt(dropped=True)
        for block in blocks:
            # The hash was asked for, so the header is the one we checked; the records must be the ones it names.
            if block.computed_merkle_root() != block.header.merkle_root:
                self._requeue(request.heights)
                return Receipt(wrong=f"{block.header.describe()}: its records do not match its Merkle root")
        got: set[int] = set()
        lowest_missing = self._lowest_missing()
        for block in blocks:
            h = asked[block.hash]
            if self._state.get(h) is Height.ASKED and self._owner.get(h) == peer:
                self._state[h] = Height.RECEIVED
                self._owner.pop(h, None)
                self._bodies[h] = (block, peer)
                self.buffered_bytes += block.size
                got.add(h)
        state.delivered += len(got)
        missing = [h for h in request.heights if h not in got and self._owner.get(h) == peer]
        refused = 0
        if not blocks:
            state.refused.update(missing)     # it has none of them: not available from this peer
            refused = len(missing)
        self._requeue(missing)
        complete = not missing or answer_bytes >= self.full_answer_bytes
        self._after_answer(state, now, moved=complete or not blocks)
        if lowest_missing is not None and lowest_missing in got and now - request.sent < self.stall_timeout:
            # The window moved in time: ease the stall timeout back towards its base (Bitcoin Core: × 0.85).
            self.stall_timeout = max(self.base_stall_timeout, self.stall_timeout * 0.85)
        return Receipt(accepted=len(got), refused=refused)

    def _after_answer(self, state: _Peer, now: float, *, moved: bool) -> None:
        if moved:
            state.deadline = now + self.request_timeout if state.requests else None
        # else: a short answer leaves the deadline where it was (carried to the next request)

    def take_ready(self, limit: int) -> list[tuple[Block, P]]:
        """Up to ``limit`` bodies that continue the applied chain, in height order, with who sent each."""
        out: list[tuple[Block, P]] = []
        while len(out) < limit and self._next in self._bodies:
            h = self._next
            block, peer = self._bodies.pop(h)
            self.buffered_bytes -= block.size
            del self._state[h]
            del self._by_hash[self._headers.pop(h).hash]
            out.append((block, peer))
            self._next += 1
        self.taken += len(out)
        return out

    @property
    def ready(self) -> bool:
        return self._next in self._bodies

    def _lowest_missing(self) -> int | None:
        """The lowest wanted height whose body is not here yet."""
        h = self._next
        while h <= self._end and self._state.get(h) is Height.RECEIVED:
            h += 1
        return h if h <= self._end else None

    # --- stalls ----------------------------------------------------------------------------------------------

    @property
    def stuck(self) -> bool:
        """No peer left can serve the lowest missing height, and nobody is asked for it."""
        h = self._lowest_missing()
        if h is None or self._state.get(h) is not Height.QUEUED:
            return False
        return not any(self._serves(state, h) for state in self._peers.values())

    def expired(self, now: float) -> list[tuple[P, str]]:
        """Peers that stalled, with why; the caller cuts them off and calls :meth:`remove_peer`."""
        out = [(peer, "late") for peer, state in self._peers.items()
               if state.requests and state.deadline is not None and now > state.deadline]
        staller = self._window_staller(now)
        if staller is not None and all(peer != staller for peer, _ in out):
            out.append((staller, "window"))
            self.stall_timeout = min(self.max_stall_timeout, self.stall_timeout * 2)
        return out

    def _window_staller(self, now: float) -> P | None:
        """The peer holding the lowest missing height past ``stall_timeout`` while queued heights wait beyond
        the window (or the byte budget) and another peer has room for a request."""
        h = self._lowest_missing()
        if h is None or self._state.get(h) is not Height.ASKED:
            return None
        # Only when the window is what holds the others back: queued heights wait beyond it (or behind the byte
        # budget). At the end of the headers there is nothing more to hand out, and nobody is cut for being last.
        if not self._queued or (self._queued[0] < self._next + self.window
                                and self.buffered_bytes < self.max_buffered_bytes):
            return None
        holder = self._owner[h]
        if not any(p != holder and len(s.requests) < self.requests_per_peer and self._serves(s, h)
                   for p, s in self._peers.items()):
            return None
        sent = next((r.sent for r in self._peers[holder].requests if h in r.heights and not r.cancelled), now)
        return holder if now - sent > self.stall_timeout else None
