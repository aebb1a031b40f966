"""Sans-IO pieces of headers-first sync: the light client's verified header chain, the block download plan of a
full node, and the progress it reports.

A full node asks a peer for the headers after its block locator, checks them as a batch
(:meth:`ledger.chain.Chain.check_headers`), then downloads the bodies it lacks in order, a batch at a time
(:class:`BlockDownload`), and asks for more headers until the peer has none left. A light client keeps only
headers (:class:`HeaderChain`): it checks linkage, proof of work, the network's fixed target, timestamps and
that the chain starts at the genesis block of the network's parameters, and follows a peer's switch to a branch
only when that branch has more cumulative work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.blocks import BlockHeader, better_chain
from ledger.errors import LedgerError
from ledger.params import NetworkParams

DEFAULT_BLOCK_BATCH = 250


@dataclass(frozen=True)
class SyncProgress:
    """Where a sync stands, for logs, the CLI and the GUI.

    ``phase`` is ``"headers"`` while headers are fetched, ``"blocks"`` while bodies are fetched, ``"done"``
    when the peer has nothing more, ``"interrupted"`` when the peer went away (the node then syncs from another
    one); ``height`` is our tip height, ``target`` the best height we know of.
    """

    peer: str
    phase: str
    height: int
    target: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.target <= 0 else min(1.0, self.height / self.target)

    def describe(self) -> str:
        if self.phase == "done":
            return f"in sync with {self.peer} at height {self.height}"
        if self.phase == "interrupted":
            return f"sync from {self.peer} interrupted at height {self.height} of {self.target}"
        return (f"syncing from {self.peer}: {self.phase}, height {self.height} of {self.target} "
                f"({self.fraction:.0%})")


class BlockDownload:
    """Which block bodies to ask a peer for next, in chain order, with up to ``window`` batches in flight.

    ``want`` queues hashes (from checked headers); ``next_request`` hands out the next batch while fewer than
    ``window`` are out (so the peer prepares the next batch while we validate this one); ``received`` takes the
    hashes of the oldest outstanding answer and returns the ones that were not asked for (a protocol violation).
    Anything asked for but missing from an answer goes back to the front of the queue; a peer that answers a
    request with none of the asked blocks is ``stalled``.
    """

    def __init__(self, batch: int = DEFAULT_BLOCK_BATCH, window: int = 2) -> None:
        self.batch = batch
        self.window = window
        self._queue: deque[bytes] = deque()
        self._queued: set[bytes] = set()
        self._flight: deque[list[bytes]] = deque()
        self.stalled = False

    def want(self, hashes: Sequence[bytes]) -> None:
        out = {h for batch in self._flight for h in batch}
        for h in hashes:
            if h not in self._queued and h not in out:
                self._queue.append(h)
                self._queued.add(h)

    @property
    def in_flight(self) -> list[bytes]:
        return [h for batch in self._flight for h in batch]

    @property
    def oldest_request(self) -> list[bytes]:
        """The hashes of the oldest request still out (what the next answer must be about)."""
        return list(self._flight[0]) if self._flight else []

    @property
    def remaining(self) -> int:
        return len(self._queue) + sum(len(b) for b in self._flight)

    @property
    def idle(self) -> bool:
        return not self._flight

    @property
    def done(self) -> bool:
        return not self._flight and not self._queue

    def next_request(self) -> list[bytes]:
        """The next batch to ask for (empty while ``window`` batches are out or nothing is queued)."""
        if len(self._flight) >= self.window or not self._queue:
            return []
        batch: list[bytes] = []
        while self._queue and len(batch) < self.batch:
            h = self._queue.popleft()
            self._queued.discard(h)
            batch.append(h)
        self._flight.append(batch)
        return list(batch)

    def received(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Account for the answer to the oldest request; returns the hashes in it that were not asked for."""
        asked_list = self._flight.popleft() if self._flight else []
        asked = set(asked_list)
        unexpected = [h for h in hashes if h not in asked]
        got = set(hashes)
        missing = [h for h in asked_list if h not in got]
        self.stalled = bool(asked_list) and not (got & asked)
        for h in reversed(missing):
            self._queue.appendleft(h)
            self._queued.add(h)
        return unexpected

    def clear(self) -> None:
        self._queue.clear()
        self._queued.clear()
        self._flight.clear()


class HeaderChain:
    """A light client's verified main chain of headers, from the network's genesis block.

    Every header is checked like a full node checks it without the body: network id, version, the network's
    fixed target, proof of work, height and linkage, timestamp above the median of the previous
    ``median_window`` headers and at most ``max_future_seconds`` ahead of ``now``.
    """

    def __init__(self, params: NetworkParams) -> None:
        self.params = params
        genesis = params.genesis().header
        self._headers: list[BlockHeader] = [genesis]
        self._work: list[int] = [0]
        self._index: dict[bytes, int] = {genesis.hash: 0}

    @property
    def height(self) -> int:
        return len(self._headers) - 1

    @property
    def tip(self) -> BlockHeader:
        return self._headers[-1]

    @property
    def work(self) -> int:
        return self._work[-1]

    def at(self, height: int) -> BlockHeader | None:
        return self._headers[height] if 0 <= height < len(self._headers) else None

    def height_of(self, block_hash: bytes) -> int | None:
        return self._index.get(block_hash)

    def confirmations(self, height: int) -> int:
        return max(0, self.height - height + 1)

    def locator(self) -> list[bytes]:
        """Our last 10 hashes, then exponentially sparser back to genesis (as :meth:`Chain.locator`)."""
        hashes: list[bytes] = []
        height, step = self.height, 1
        while height > 0:
            hashes.append(self._headers[height].hash)
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self._headers[0].hash)
        return hashes

    def _median_before(self, headers: Sequence[BlockHeader]) -> int:
        window = sorted(h.timestamp for h in headers[-self.params.median_window:])
        return window[len(window) // 2]

    def _check(self, header: BlockHeader, prev: BlockHeader, before: Sequence[BlockHeader], now: float) -> None:
        p = self.params
        desc = header.describe()
        if header.network_id != p.network_id:
            raise LedgerError(f"{desc} belongs to another network")
        if header.version != p.version:
            raise LedgerError(f"{desc} has ledger version {header.version}; this network uses {p.version}")
        if header.target_bits != p.difficulty_bits:
            raise LedgerError(f"{desc} has target {header.target_bits} bits; this network requires "
                              f"{p.difficulty_bits}")
        if not header.meets_target():
            raise LedgerError(f"{desc} has too little proof of work")
        if header.prev_hash != prev.hash or header.height != prev.height + 1:
            raise LedgerError(f"{desc} does not link to block {prev.height}")
        if header.timestamp <= self._median_before(before):
            raise LedgerError(f"{desc} is dated before the median of the blocks before it")
        if header.timestamp > now + p.max_future_seconds:
            raise LedgerError(f"{desc} is dated {int(header.timestamp - now)} s in the future")

    def extend(self, headers: Sequence[BlockHeader], now: float) -> tuple[int, int]:
        """Check ``headers`` (consecutive, the first building on one of ours) and adopt them if their branch
        has more work than ours from the fork point on. Returns (fork height, new height).

        Raises :class:`LedgerError` if a header is invalid or the first links to nothing we know.
        A valid branch with less or equal work is ignored (the chain stays as it is).
        """
        if not headers:
            return self.height, self.height
        fork = self._index.get(headers[0].prev_hash)
        if fork is None:
            raise LedgerError(f"{headers[0].describe()} builds on a block this client does not know")
        before = list(self._headers[max(0, fork + 1 - self.params.median_window):fork + 1])
        prev = self._headers[fork]
        work = self._work[fork]
        for header in headers:
            self._check(header, prev, before, now)
            before.append(header)
            if len(before) > self.params.median_window:
                del before[0]
            work += header.work
            prev = header
        # The node's fork choice exactly (ledger.blocks.chain_preference): more work, or equal work and a lower
        # tip hash; anything else (our own headers again included) leaves the chain as it is.
        if fork != self.height and not better_chain(work, prev.hash, self.work, self.tip.hash):
            return fork, self.height
        for old in self._headers[fork + 1:]:
            del self._index[old.hash]
        del self._headers[fork + 1:]
        del self._work[fork + 1:]
        total = self._work[fork]
        for header in headers:
            total += header.work
            self._index[header.hash] = len(self._headers)
            self._headers.append(header)
            self._work.append(total)
        return fork, self.height
