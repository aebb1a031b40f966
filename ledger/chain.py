"""The chain: block validation, most-work fork choice and reorgs. Sans-IO: time is always passed in.

Every block received goes through :meth:`Chain.add_block`:

1. context-free header checks: version, network id, target (= the network's difficulty), height ≥ 1, proof
   of work, timestamp at most ``max_future_seconds`` after ``now``;
2. body checks: record count and size limits, Merkle root, no record twice, every record's signatures
   (verified once per record id, see :mod:`ledger.records`);
3. linkage: the parent must be known (else the block waits in a small orphan pool until it arrives), the
   height must be the parent's + 1 and the timestamp above the median of the last ``median_window`` blocks;
4. the block joins the block tree. If some branch is now preferred to the current tip — strictly more
   cumulative work, or equal work and a lower tip hash (:func:`ledger.blocks.chain_preference`) — the chain
   switches to it: blocks are disconnected back to the fork point (their binding changes
   undone) and the branch's blocks connected one by one, each applying its records to the binding state
   (sequence numbers, binding rules, no record already in the chain). A branch block that breaks a rule is
   marked invalid together with its descendants, the previous chain is restored and the next best branch
   tried.

Every step is proportional to the blocks involved (no re-walk of the chain), so syncing long chains is linear.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ledger.bindings import Bindings, UndoLog
from ledger.blocks import Block, BlockHeader, chain_preference
from ledger.errors import LedgerError
from ledger.merkle import merkle_path
from ledger.params import NetworkParams
from ledger.records import Record

AddStatus = Literal["added", "duplicate", "orphan", "invalid"]
MAX_ORPHANS = 256
MAX_REMEMBERED_INVALID = 10_000
MAX_HEADERS = 2000


@dataclass
class AddResult:
    """Outcome of :meth:`Chain.add_block`.

    ``connected`` (oldest first) and ``disconnected`` (newest first) describe how the main chain moved;
    ``accepted`` lists every block that joined the block tree and stayed there (this one and any orphans it
    unlocked, parents first) — what a store must persist; ``invalidated`` the hashes of blocks found invalid
    while connecting them (possibly blocks accepted earlier as a side branch) — what a store must delete.
    The status is "invalid" when this block itself broke a rule, even if it was first accepted into the tree
    (a record rule can only be checked when the block is connected); the main chain may still have moved
    (e.g. to the valid part of the branch), so ``became_tip``/``connected`` are filled in either case.
    """

    status: AddStatus
    reason: str = ""
    became_tip: bool = False
    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)
    accepted: list[Block] = field(default_factory=list)
    invalidated: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("added", "duplicate")


class _Node:
    """A block in the tree with its cumulative work; ``undo`` is set while it is on the main chain."""

    __slots__ = ("block", "children", "hash", "header", "height", "parent", "preference", "undo", "work")

    def __init__(self, block: Block, parent: _Node | None) -> None:
        self.block = block
        self.header = block.header
        self.hash = block.hash
        self.height = block.header.height
        self.parent = parent
        self.work: int = (parent.work + block.header.work) if parent is not None else 0
        self.preference = chain_preference(self.work, self.hash)
        self.children: list[_Node] = []
        self.undo: UndoLog | None = None


class Chain:
    """Block tree, main chain and binding state of one network (see the module docstring)."""

    def __init__(self, params: NetworkParams) -> None:
        self.params = params
        self.genesis = params.genesis()
        root = _Node(self.genesis, None)
        self._nodes: dict[bytes, _Node] = {root.hash: root}
        self._main: list[_Node] = [root]
        self._tips: set[_Node] = {root}
        self._record_loc: dict[bytes, tuple[int, int]] = {}
        self._orphans: OrderedDict[bytes, Block] = OrderedDict()
        self._orphans_by_prev: dict[bytes, set[bytes]] = {}
        self._invalid: OrderedDict[bytes, str] = OrderedDict()
        self.bindings = Bindings(params)

    # --- read access ---------------------------------------------------------------------------------------

    @property
    def tip(self) -> BlockHeader:
        return self._main[-1].header

    @property
    def tip_hash(self) -> bytes:
        return self._main[-1].hash

    @property
    def tip_block(self) -> Block:
        return self._main[-1].block

    @property
    def height(self) -> int:
        return len(self._main) - 1

    @property
    def tip_work(self) -> int:
        """Cumulative work of the main chain (sum of ``2**target_bits`` over its blocks after genesis)."""
        return self._main[-1].work

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._nodes

    def get(self, block_hash: bytes) -> Block | None:
        """Any accepted block (main chain or side branch) by hash."""
        node = self._nodes.get(block_hash)
        return node.block if node is not None else None

    def get_header(self, block_hash: bytes) -> BlockHeader | None:
        node = self._nodes.get(block_hash)
        return node.header if node is not None else None

    def chain_work(self, block_hash: bytes) -> int | None:
        """Cumulative work up to and including the given accepted block."""
        node = self._nodes.get(block_hash)
        return node.work if node is not None else None

    def main_at(self, height: int) -> Block | None:
        """The main chain's block at ``height``."""
        return self._main[height].block if 0 <= height < len(self._main) else None

    def is_main(self, block_hash: bytes) -> bool:
        node = self._nodes.get(block_hash)
        return node is not None and self._on_main(node)

    def _on_main(self, node: _Node) -> bool:
        return node.height < len(self._main) and self._main[node.height] is node

    def block_count(self) -> int:
        """Accepted blocks including side branches and genesis."""
        return len(self._nodes)

    def is_orphan(self, block_hash: bytes) -> bool:
        return block_hash in self._orphans

    def confirmations(self, height: int) -> int:
        """Blocks on top of (and including) the main-chain block at ``height``; 0 if beyond the tip."""
        return max(0, self.height - height + 1)

    def has_record(self, record_id: bytes) -> bool:
        """True if the record is in a main-chain block."""
        return record_id in self._record_loc

    def record_location(self, record_id: bytes) -> tuple[int, int] | None:
        """``(height, index)`` of a main-chain record."""
        return self._record_loc.get(record_id)

    def proof(self, record_id: bytes) -> tuple[BlockHeader, int, list[bytes]] | None:
        """Inclusion proof of a main-chain record: its block header, index and Merkle path."""
        loc = self._record_loc.get(record_id)
        if loc is None:
            return None
        height, index = loc
        block = self._main[height].block
        return block.header, index, merkle_path(block.record_ids, index)

    def locator(self) -> list[bytes]:
        """Block locator of the main chain: the last 10 hashes, then exponentially sparser, ending at genesis."""
        hashes: list[bytes] = []
        height, step = self.height, 1
        while height > 0:
            hashes.append(self._main[height].hash)
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self._main[0].hash)
        return hashes

    def headers_after(self, locator: Sequence[bytes], limit: int = MAX_HEADERS) -> list[BlockHeader]:
        """Main-chain headers after the first locator hash we have on our main chain (from genesis if none)."""
        start = 0
        for block_hash in locator:
            if not isinstance(block_hash, bytes):
                continue
            node = self._nodes.get(block_hash)
            if node is not None and self._on_main(node):
                start = node.height
                break
        end = min(len(self._main), start + 1 + max(0, min(limit, MAX_HEADERS)))
        return [self._main[h].header for h in range(start + 1, end)]

    def median_time_past(self, block_hash: bytes | None = None) -> int:
        """Median timestamp of the last ``median_window`` blocks ending at ``block_hash`` (default: the tip)."""
        node = self._nodes[block_hash] if block_hash is not None else self._main[-1]
        return self._median_from(node)

    def _median_from(self, node: _Node | None) -> int:
        stamps: list[int] = []
        while node is not None and len(stamps) < self.params.median_window:
            stamps.append(node.header.timestamp)
            node = node.parent
        stamps.sort()
        return stamps[len(stamps) // 2]

    def template(self, records: Sequence[Record], now: float) -> Block:
        """An unmined block (nonce 0) on the tip with ``records`` and a valid timestamp for ``now``."""
        tip = self._main[-1]
        header = BlockHeader(version=self.params.version, network_id=self.params.network_id, height=tip.height + 1,
                             prev_hash=tip.hash, merkle_root=b"\x00" * 32,
                             timestamp=max(int(now), self._median_from(tip) + 1),
                             target_bits=self.params.difficulty_bits, nonce=0)
        return Block.assemble(header, records)

    # --- validation pieces ---------------------------------------------------------------------------------

    def _check_header_fields(self, header: BlockHeader) -> None:
        p = self.params
        if header.network_id != p.network_id:
            raise LedgerError(f"{header.describe()} belongs to another network")
        if header.version != p.version:
            raise LedgerError(f"{header.describe()} has ledger version {header.version}; "
                              f"this network uses version {p.version}")
        if header.target_bits != p.difficulty_bits:
            raise LedgerError(f"{header.describe()} has target {header.target_bits} bits; "
                              f"this network requires {p.difficulty_bits}")
        if header.height < 1:
            raise LedgerError(f"{header.describe()}: height 0 is reserved for the genesis block")
        if not header.meets_target():
            raise LedgerError(f"{header.describe()} has too little proof of work")

    def _check_not_future(self, header: BlockHeader, now: float) -> None:
        if header.timestamp > now + self.params.max_future_seconds:
            raise LedgerError(f"{header.describe()} is dated {int(header.timestamp - now)} s in the future "
                              f"(at most {self.params.max_future_seconds} s allowed)")

    def _check_linkage(self, header: BlockHeader, parent_height: int, median: int) -> None:
        if header.height != parent_height + 1:
            raise LedgerError(f"{header.describe()} claims height {header.height} but its parent is at "
                              f"height {parent_height}")
        if header.timestamp <= median:
            raise LedgerError(f"{header.describe()} is dated {header.timestamp}, not after the median "
                              f"{median} of the blocks before it")

    def _check_body(self, block: Block, trusted: bool) -> None:
        p, desc = self.params, block.header.describe()
        if len(block.records) > p.max_block_records:
            raise LedgerError(f"{desc} has {len(block.records)} records (at most {p.max_block_records})")
        if block.size > p.max_block_bytes:
            raise LedgerError(f"{desc} is {block.size} bytes (at most {p.max_block_bytes})")
        if block.computed_merkle_root() != block.header.merkle_root:
            raise LedgerError(f"{desc} has a wrong Merkle root (its records do not match its header)")
        if len(set(block.record_ids)) != len(block.records):
            raise LedgerError(f"{desc} contains the same record twice")
        if not trusted:
            for record in block.records:
                try:
                    record.verify_signatures(p.name)
                except LedgerError as exc:
                    raise LedgerError(f"{desc}: {exc}") from None

    def check_header(self, header: BlockHeader, now: float, prev: BlockHeader | None = None) -> None:
        """Check a header without its body (headers-first sync): fields, proof of work, time, linkage.

        ``prev`` is the previous header when it is not (yet) in the chain, e.g. the previous one of a batch
        being synced; the median-time rule is then checked by :meth:`check_headers` or when the block arrives.
        """
        self._check_header_fields(header)
        self._check_not_future(header, now)
        if prev is not None:
            if header.prev_hash != prev.hash:
                raise LedgerError(f"{header.describe()} does not link to the header before it")
            if header.height != prev.height + 1:
                raise LedgerError(f"{header.describe()} claims height {header.height} after block {prev.height}")
            return
        parent = self._nodes.get(header.prev_hash)
        if parent is None:
            raise LedgerError(f"{header.describe()} builds on a block this node does not know")
        self._check_linkage(header, parent.height, self._median_from(parent))

    def check_headers(self, headers: Sequence[BlockHeader], now: float) -> int:
        """Check a consecutive batch of headers whose first builds on a known block; returns the cumulative
        work the chain would have at the last header. Raises :class:`LedgerError` on the first bad header."""
        if not headers:
            raise LedgerError("no headers to check")
        parent = self._nodes.get(headers[0].prev_hash)
        if parent is None:
            raise LedgerError(f"{headers[0].describe()} builds on a block this node does not know")
        window: list[int] = []
        node: _Node | None = parent
        while node is not None and len(window) < self.params.median_window:
            window.append(node.header.timestamp)
            node = node.parent
        window.reverse()  # oldest first
        work, prev_hash, prev_height = parent.work, parent.hash, parent.height
        for header in headers:
            self._check_header_fields(header)
            self._check_not_future(header, now)
            if header.prev_hash != prev_hash:
                raise LedgerError(f"{header.describe()} does not link to the header before it")
            stamps = sorted(window)
            self._check_linkage(header, prev_height, stamps[len(stamps) // 2])
            window.append(header.timestamp)
            if len(window) > self.params.median_window:
                del window[0]
            work += header.work
            prev_hash, prev_height = header.hash, header.height
        return work

    def check_record(self, record: Record, now: float) -> None:
        """Raise :class:`LedgerError` unless ``record`` is valid on top of the tip at ``now``."""
        if record.id in self._record_loc:
            raise LedgerError(f"{record.describe()}: already in the ledger")
        record.verify_signatures(self.params.name)
        self.bindings.check(record, int(now))

    # --- adding blocks -------------------------------------------------------------------------------------

    def add_block(self, block: Block, now: float, *, trusted: bool = False) -> AddResult:
        """Validate ``block`` and add it to the tree, switching to the preferred (most-work) branch.

        ``trusted`` skips the signature and future-timestamp checks (only for blocks this node validated before
        and read back from its own store, possibly after the clock went back); every other rule is still checked.
        """
        block_hash = block.hash
        if block_hash in self._nodes:
            return AddResult("duplicate", f"{block.header.describe()} is already known")
        if block_hash in self._invalid:
            return AddResult("invalid", self._invalid[block_hash])
        if block_hash in self._orphans:
            return AddResult("orphan", f"{block.header.describe()} is still waiting for its parent")
        try:
            self._check_header_fields(block.header)
        except LedgerError as exc:
            return self._reject(block_hash, str(exc))
        if not trusted:
            try:
                self._check_not_future(block.header, now)
            except LedgerError as exc:
                return AddResult("invalid", str(exc))  # not remembered: the same block becomes valid later
        if block.header.prev_hash in self._invalid:
            return self._reject(block_hash, f"{block.header.describe()} builds on an invalid block")
        parent = self._nodes.get(block.header.prev_hash)
        if parent is None:
            if len(block.records) > self.params.max_block_records or block.size > self.params.max_block_bytes:
                return self._reject(block_hash, f"{block.header.describe()} is over the block size limits")
            self._add_orphan(block)
            return AddResult("orphan", f"{block.header.describe()} builds on a block this node does not know yet")
        old_tip = self._main[-1]
        error = self._accept(block, parent, trusted)
        if error is not None:
            return self._reject(block_hash, error)
        result = AddResult("added", accepted=[block])
        self._adopt_orphans(block_hash, result)
        result.invalidated = self._activate_best()
        if result.invalidated:
            dropped = set(result.invalidated)
            result.accepted = [b for b in result.accepted if b.hash not in dropped]
            if block_hash in dropped:
                # The block itself broke a rule when it was connected: report it as invalid.
                result.status, result.reason = "invalid", self._invalid[block_hash]
        self._describe_move(old_tip, result)
        return result

    def _reject(self, block_hash: bytes, reason: str) -> AddResult:
        self._invalid[block_hash] = reason
        while len(self._invalid) > MAX_REMEMBERED_INVALID:
            self._invalid.popitem(last=False)
        return AddResult("invalid", reason)

    def _accept(self, block: Block, parent: _Node, trusted: bool) -> str | None:
        """Linkage and body checks; on success the block joins the tree. Returns the reason on failure."""
        try:
            self._check_linkage(block.header, parent.height, self._median_from(parent))
            self._check_body(block, trusted)
        except LedgerError as exc:
            return str(exc)
        node = _Node(block, parent)
        self._nodes[node.hash] = node
        parent.children.append(node)
        self._tips.discard(parent)
        self._tips.add(node)
        return None

    def _add_orphan(self, block: Block) -> None:
        self._orphans[block.hash] = block
        self._orphans_by_prev.setdefault(block.header.prev_hash, set()).add(block.hash)
        while len(self._orphans) > MAX_ORPHANS:
            old_hash, old = self._orphans.popitem(last=False)
            self._drop_orphan_link(old_hash, old.header.prev_hash)

    def _drop_orphan_link(self, block_hash: bytes, prev_hash: bytes) -> None:
        waiting = self._orphans_by_prev.get(prev_hash)
        if waiting is not None:
            waiting.discard(block_hash)
            if not waiting:
                del self._orphans_by_prev[prev_hash]

    def _adopt_orphans(self, block_hash: bytes, result: AddResult) -> None:
        # Orphans came from the network: their signatures are always checked, whatever the caller's `trusted`.
        queue = [block_hash]
        while queue:
            parent_hash = queue.pop()
            for orphan_hash in sorted(self._orphans_by_prev.pop(parent_hash, ())):
                orphan = self._orphans.pop(orphan_hash)
                error = self._accept(orphan, self._nodes[parent_hash], trusted=False)
                if error is None:
                    result.accepted.append(orphan)
                    queue.append(orphan_hash)
                else:
                    self._reject(orphan_hash, error)

    def _best_tip(self) -> _Node:
        return max(self._tips, key=lambda n: n.preference)

    def _activate_best(self) -> list[bytes]:
        """Move the main chain to the preferred valid branch; returns hashes of blocks found invalid."""
        invalidated: list[bytes] = []
        while True:
            best = self._best_tip()
            current = self._main[-1]
            if best is current or best.preference <= current.preference:
                return invalidated
            branch: list[_Node] = []
            node: _Node | None = best
            while node is not None and not self._on_main(node):
                branch.append(node)
                node = node.parent
            assert node is not None  # genesis is always on the main chain
            fork = node
            branch.reverse()
            old_tail = self._main[fork.height + 1:]
            self._disconnect_to(fork)
            for node in branch:
                try:
                    self._connect(node)
                except LedgerError as exc:
                    self._disconnect_to(fork)
                    for old in old_tail:
                        self._connect(old)  # was valid before; cannot fail
                    invalidated.extend(self._invalidate(node, str(exc)))
                    break

    def _connect(self, node: _Node) -> None:
        records = node.block.records
        for record in records:
            if record.id in self._record_loc:
                raise LedgerError(f"{node.header.describe()}: {record.describe()} is already in the chain")
        try:
            node.undo = self.bindings.apply_all(records, node.header.timestamp, node.height)
        except LedgerError as exc:
            raise LedgerError(f"{node.header.describe()}: {exc}") from None
        self._main.append(node)
        for index, record in enumerate(records):
            self._record_loc[record.id] = (node.height, index)

    def _disconnect_to(self, fork: _Node) -> None:
        while self._main[-1] is not fork:
            node = self._main.pop()
            assert node.undo is not None
            self.bindings.undo(node.undo)
            node.undo = None
            for record in node.block.records:
                self._record_loc.pop(record.id, None)

    def _invalidate(self, node: _Node, reason: str) -> list[bytes]:
        """Remove ``node`` and its descendants from the tree and remember them as invalid."""
        parent = node.parent
        assert parent is not None
        parent.children.remove(node)
        if not parent.children:
            self._tips.add(parent)
        dropped: list[bytes] = []
        stack = [node]
        while stack:
            n = stack.pop()
            stack.extend(n.children)
            self._tips.discard(n)
            del self._nodes[n.hash]
            self._reject(n.hash, reason if n is node else f"{n.header.describe()} builds on an invalid block")
            dropped.append(n.hash)
        return dropped

    def _describe_move(self, old_tip: _Node, result: AddResult) -> None:
        new_tip = self._main[-1]
        if new_tip is old_tip:
            return
        result.became_tip = True
        old: _Node | None = old_tip
        disconnected: list[Block] = []
        while old is not None and not self._on_main(old):
            disconnected.append(old.block)
            old = old.parent
        assert old is not None
        result.disconnected = disconnected
        result.connected = [n.block for n in self._main[old.height + 1:]]

    # --- whole-chain helpers -------------------------------------------------------------------------------

    def load(self, blocks: Sequence[Block], now: float, *, trusted: bool = True) -> list[tuple[Block, str]]:
        """Add stored blocks (parents first); returns the blocks that were refused, with the reason."""
        refused: list[tuple[Block, str]] = []
        for block in blocks:
            result = self.add_block(block, now, trusted=trusted)
            if result.status in ("invalid", "orphan"):
                refused.append((block, result.reason))
        return refused

    def main_blocks(self, start: int = 1) -> list[Block]:
        return [n.block for n in self._main[start:]]
