"""Sans-IO pieces of headers-first sync: the light client's verified header chain and the progress a sync
reports.

A full node asks a peer for the headers after its block locator, checks them as a batch
(:meth:`ledger.chain.Chain.check_headers`), then downloads the bodies it lacks from all its peers at once
(:mod:`ledger.block_download`) and asks for more headers until the peer has none left. A light client keeps only
headers (:class:`HeaderChain`): it checks linkage, proof of work, the network's fixed target, timestamps and
that the chain starts at the genesis block of the network's parameters, and follows a peer's switch to a branch
only when that branch has more cumulative work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.blocks import BlockHeader, better_chain, work_for
from ledger.errors import LedgerError
from ledger.header_store import HeaderStore
from ledger.params import NetworkParams


@dataclass(frozen=True)
class SyncProgress:
    """Where a sync stands, for logs, the CLI and the GUI.

    ``phase`` is ``"headers"`` while headers are fetched, ``"blocks"`` while bodies are fetched, ``"done"``
    when the peer has nothing more, ``"interrupted"`` when the peer went away (the node then syncs from another
    one); ``height`` is our tip height, ``target`` the best height we know of; while bodies are fetched,
    ``peers`` is how many peers delivered some and ``rate`` the blocks applied per second since the sync began.
    """

    peer: str
    phase: str
    height: int
    target: int
    peers: int = 1
    rate: float = 0.0

    @property
    def fraction(self) -> float:
        return 1.0 if self.target <= 0 else min(1.0, self.height / self.target)

    def describe(self) -> str:
        if self.phase == "done":
            return f"in sync with {self.peer} at height {self.height}"
        if self.phase == "interrupted":
            return f"sync from {self.peer} interrupted at height {self.height} of {self.target}"
        if self.phase == "blocks":
            return (f"blocks {self.height:,} of {self.target:,} from {self.peers} peer{'s' if self.peers != 1 else ''}"
                    f", {self.rate:,.0f}/s ({self.fraction:.0%}; headers from {self.peer})")
        return (f"syncing from {self.peer}: {self.phase}, height {self.height} of {self.target} "
                f"({self.fraction:.0%})")


class FinalityConflict(LedgerError):
    """A branch forks below a block a server already reported final to this client."""


class HeaderChain:
    """A light client's verified main chain of headers, from the network's genesis block, kept in a
    :class:`HeaderStore` (a file in the data directory, or memory): only SQLite's bounded page cache is held in
    memory, whatever the chain's length.

    Every header is checked like a full node checks it without the body: network id, version, the network's
    fixed target, proof of work, height and linkage, timestamp above the median of the previous
    ``median_window`` headers and at most ``max_future_seconds`` ahead of ``now``. A branch replaces the chain
    only with more work (:func:`ledger.blocks.better_chain`), and never when it forks below the final block
    recorded with :meth:`note_final` (:class:`FinalityConflict`).
    """

    def __init__(self, params: NetworkParams, store: HeaderStore | None = None) -> None:
        self.params = params
        self.store = store if store is not None else HeaderStore(params)
        self._unit = work_for(params.difficulty_bits)

    @property
    def height(self) -> int:
        return self.store.height

    @property
    def tip(self) -> BlockHeader:
        with self.store.reading():
            tip = self.store.at(self.store.height)
        assert tip is not None
        return tip

    @property
    def work(self) -> int:
        return self.work_at(self.height)

    def work_at(self, height: int) -> int:
        """Cumulative work up to ``height``: every header of the network carries its fixed target."""
        return height * self._unit

    def at(self, height: int) -> BlockHeader | None:
        return self.store.at(height)

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of a header of our chain by hash. A scan (no hash index is kept: the client looks headers up by
        height), for tests and tools, not for hot paths."""
        with self.store.reading():
            top = self.store.height
            for header in self.store.range(0, top + 1):
                if header.hash == block_hash:
                    return header.height
        return None

    def confirmations(self, height: int) -> int:
        return max(0, self.height - height + 1)

    def final(self) -> tuple[int, bytes] | None:
        return self.store.final()

    def note_final(self, height: int, block_hash: bytes) -> None:
        """Record that a server reported block ``(height, hash)`` final; kept only if it is on our chain."""
        self.store.set_final(height, block_hash)

    def locator(self) -> list[bytes]:
        """Our last 10 hashes, then exponentially sparser back to genesis (as :meth:`Chain.locator`)."""
        heights: list[int] = []
        with self.store.reading():
            height, step = self.store.height, 1
            while height > 0:
                heights.append(height)
                if len(heights) >= 10:
                    step *= 2
                height -= step
            heights.append(0)
            headers = [self.store.at(h) for h in heights]
        return [h.hash for h in headers if h is not None]

    def _check(self, header: BlockHeader, prev: BlockHeader, before: Sequence[BlockHeader], now: float) -> None:
        # The description is built only when a header is refused: this runs for every header synced.
        p = self.params
        problem: str | None = None
        if header.network_id != p.network_id:
            problem = "belongs to another network"
        elif header.version != p.version:
            problem = f"has ledger version {header.version}; this network uses {p.version}"
        elif header.target_bits != p.difficulty_bits:
            problem = f"has target {header.target_bits} bits; this network requires {p.difficulty_bits}"
        elif not header.meets_target():
            problem = "has too little proof of work"
        elif header.prev_hash != prev.hash or header.height != prev.height + 1:
            problem = f"does not link to block {prev.height}"
        elif header.timestamp <= _median(before, p.median_window):
            problem = "is dated before the median of the blocks before it"
        elif header.timestamp > now + p.max_future_seconds:
            problem = f"is dated {int(header.timestamp - now)} s in the future"
        if problem is not None:
            raise LedgerError(f"{header.describe()} {problem}")

    def branch_from(self, first: BlockHeader) -> PendingBranch:
        """Start checking a competing branch whose first header is ``first`` (it must build on a header we hold),
        batch by batch as it arrives: a node cannot make the client hold or ask for headers that fail a check."""
        with self.store.reading():
            fork = first.height - 1
            prev = self.store.at(fork)
            if prev is None or prev.hash != first.prev_hash:
                raise LedgerError(f"{first.describe()} builds on a block this client does not know")
            before = self.store.range(fork + 1 - self.params.median_window, fork + 1)
        return PendingBranch(self, prev, before)

    def extend(self, headers: Sequence[BlockHeader], now: float) -> tuple[int, int]:
        """Check ``headers`` (consecutive, the first building on one of ours) and adopt them if their branch
        has more work than ours from the fork point on. Returns (fork height, new height).

        Raises :class:`LedgerError` if a header is invalid or the first links to nothing we know, and
        :class:`FinalityConflict` if a preferred branch forks below the recorded final block.
        A valid branch with less or equal work is ignored (the chain stays as it is).
        """
        if not headers:
            height = self.height
            return height, height
        store = self.store
        with store.transaction():
            ours = store.height
            skip = 0  # headers we hold already (a node resending part of our chain before a switch)
            while skip < len(headers) and headers[skip].height <= ours:
                held = store.at(headers[skip].height)
                if held is None or held.hash != headers[skip].hash:
                    break
                skip += 1
            headers = headers[skip:]
            if not headers:
                return ours, ours
            fork = headers[0].height - 1
            prev = store.at(fork)
            if prev is None or prev.hash != headers[0].prev_hash:
                raise LedgerError(f"{headers[0].describe()} builds on a block this client does not know")
            before = store.range(fork + 1 - self.params.median_window, fork + 1)
            for header in headers:
                self._check(header, prev, before, now)
                before.append(header)
                if len(before) > self.params.median_window:
                    del before[0]
                prev = header
            new_height = prev.height
            if fork != ours:
                # The node's fork choice exactly (ledger.blocks.chain_preference): more work, or equal work and a
                # lower tip hash; anything else (our own headers again included) leaves the chain as it is.
                tip = store.at(ours)
                assert tip is not None
                if not better_chain(self.work_at(new_height), prev.hash, self.work_at(ours), tip.hash):
                    return fork, ours
                final = store.final()
                if final is not None and fork < final[0]:
                    raise FinalityConflict(
                        f"a branch forking at block {fork} (tip {prev.describe()}) would replace block {final[0]} "
                        f"({final[1].hex()[:16]}), which a ledger node reported final to this client; not following "
                        "it (delete the light client's header file to accept it)")
            store.replace_from(fork, headers)
        return fork, new_height


class PendingBranch:
    """A competing branch being received (:meth:`HeaderChain.branch_from`): every header is checked on arrival
    against the one before it (the header rules of :meth:`HeaderChain.extend`); :meth:`HeaderChain.extend` decides
    by work once the branch is complete."""

    def __init__(self, chain: HeaderChain, prev: BlockHeader, before: list[BlockHeader]) -> None:
        self._chain = chain
        self.headers: list[BlockHeader] = []
        self._prev = prev
        self._before = before

    @property
    def tip(self) -> BlockHeader:
        return self._prev

    def add(self, headers: Sequence[BlockHeader], now: float) -> None:
        """Check ``headers`` (the next ones of the branch) and keep them; raises :class:`LedgerError` on the first
        that fails, keeping none of the batch."""
        window = self._chain.params.median_window
        prev, before = self._prev, list(self._before)
        for header in headers:
            self._chain._check(header, prev, before, now)
            before.append(header)
            if len(before) > window:
                del before[0]
            prev = header
        self.headers.extend(headers)
        self._prev, self._before = prev, before


def _median(headers: Sequence[BlockHeader], window: int) -> int:
    stamps = sorted(h.timestamp for h in headers[-window:])
    return stamps[len(stamps) // 2]
