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

**Local finality** (:class:`FinalityPolicy`): a main-chain block becomes *final* on this node once it is at depth
``depth`` and has been held for ``min_hold`` seconds, or has been held on the main chain for ``seconds`` since it
was (last) connected, whichever comes first.
The final height only grows (except by :meth:`Chain.accept_branch`, the operator's decision). A branch whose fork
point is below the final height conflicts with final history: it is *parked* — kept (bounded), never followed by
fork choice, and reported in :attr:`AddResult.parked` when it has more work than the main chain — until the
operator accepts it. The per-block finality check is a bisection over the main chain's connection times
(O(log n)); side branches are re-examined only when the final height moves and a side branch exists.
"""

from __future__ import annotations

import math
import struct
import weakref
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload, runtime_checkable

from ledger.bindings import Bindings, StoredMap, UndoLog
from ledger.blocks import HEADER_FORMAT, Block, BlockHeader, chain_preference, work_for
from ledger.defaults import FINALITY_DEPTH, FINALITY_MIN_HOLD, FINALITY_SECONDS
from ledger.errors import LedgerError, StoreError
from ledger.merkle import merkle_path
from ledger.params import NetworkParams
from ledger.records import Record

AddStatus = Literal["added", "duplicate", "orphan", "invalid"]
MAX_ORPHANS = 256
MAX_REMEMBERED_INVALID = 10_000
MAX_HEADERS = 2000
MAX_REMEMBERED_PRUNED = 10_000
BODY_CACHE_BLOCKS = 256   # bodies of restored blocks kept in memory (lookups, proofs, serving peers)


@dataclass(frozen=True)
class FinalityPolicy:
    """When this node treats a main-chain block as final (local policy, not a consensus rule).

    A block at height ``h`` is final once ``tip_height - h + 1 >= depth`` and it has been on this node's main
    chain for ``min_hold`` seconds, *or* once it has been held for ``seconds``. Blocks are mined only while records
    are pending, so depth alone would leave a quiet network's whole history open to a laptop for days; time alone
    would let a node that was offline for a while finalize blocks nobody else has; and depth without a minimum hold
    would let a burst of cheap blocks (many nodes mining at once, or one attacker) finalize a branch before the
    network's gossip could reach this node. ``max_parked_branches`` and ``max_parked_bytes`` bound what is kept of
    branches that conflict with final history (the lightest go first).
    """

    depth: int = FINALITY_DEPTH
    seconds: float = FINALITY_SECONDS
    min_hold: float = FINALITY_MIN_HOLD
    max_parked_branches: int = 4
    max_parked_bytes: int = 32_000_000

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError("finality depth must be at least 1 block")
        if self.seconds < 0:
            raise ValueError("finality time cannot be negative")
        if self.min_hold < 0:
            raise ValueError("the minimum hold before depth counts cannot be negative")
        if self.max_parked_branches < 1 or self.max_parked_bytes < 1:
            raise ValueError("at least one parked branch must be kept")


@dataclass(frozen=True)
class ParkedBranch:
    """A branch that conflicts with final history, as reported to the operator.

    ``fork_*`` name the last block it shares with the main chain; ``tip_*`` its best block; ``heavier`` whether
    it has more work than the main chain (fork choice would have followed it); ``source`` the last peer (or other
    label) that sent one of its blocks."""

    tip_hash: bytes
    tip_height: int
    fork_hash: bytes
    fork_height: int
    work: int
    main_work: int
    blocks: int
    heavier: bool
    source: str | None

    def describe(self) -> str:
        what = "heavier branch" if self.heavier else "branch"
        return (f"{what} {self.tip_hash.hex()[:16]} (height {self.tip_height}, {self.blocks} blocks, work "
                f"{self.work} vs main {self.main_work}) forks at block {self.fork_height} "
                f"({self.fork_hash.hex()[:16]}), below final history; sent by {self.source or 'unknown'}")

    def to_json(self) -> dict[str, object]:
        def wire(work: int) -> int | str:  # msgpack integers stop at 64 bits
            return work if work < 2**63 else str(work)

        return {"tip": self.tip_hash.hex(), "tip_height": self.tip_height, "fork": self.fork_hash.hex(),
                "fork_height": self.fork_height, "work": wire(self.work), "main_work": wire(self.main_work),
                "blocks": self.blocks, "heavier": self.heavier, "source": self.source}


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
    ``pruned`` lists blocks dropped from the tree to bound parked branches (a store deletes them too);
    ``parked`` the branches conflicting with final history that this block made (or kept) heavier than the main
    chain — what the node must warn about, naming the peer; ``final_moved`` says the final height changed.
    """

    status: AddStatus
    reason: str = ""
    became_tip: bool = False
    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)
    accepted: list[Block] = field(default_factory=list)
    invalidated: list[bytes] = field(default_factory=list)
    pruned: list[bytes] = field(default_factory=list)
    parked: list[ParkedBranch] = field(default_factory=list)
    final_moved: bool = False

    @property
    def ok(self) -> bool:
        return self.status in ("added", "duplicate")


@dataclass
class ChainChanges:
    """What moved in the derived state since the last :meth:`Chain.take_changes`: the lowest main-chain height
    that changed (None: none), the binding keys touched (``(map, key)`` with map 0 identities, 1 IPs,
    2 nicknames) and the record ids whose location changed. A store writes the current values of these."""

    main_from: int | None = None
    bindings: set[tuple[int, Any]] = field(default_factory=set)
    records: set[bytes] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.main_from is not None or bool(self.bindings) or bool(self.records)


class BodySource(Protocol):
    """Where a chain restored from a stored checkpoint reads block bodies on demand (the store)."""

    def block_by_hash(self, block_hash: bytes) -> Block | None: ...


@runtime_checkable
class StoredMainChain(BodySource, Protocol):
    """Where a restored chain reads its main chain at or below the final height of the restore (the store)."""

    def main_row_at(self, height: int) -> tuple[bytes, bytes] | None:
        """``(hash, packed header)`` of the stored main chain at ``height``."""

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of a stored block (main chain or not)."""


class _Bodies:
    """Block bodies read on demand for nodes restored without them, with a bounded LRU cache."""

    def __init__(self, source: BodySource, limit: int = BODY_CACHE_BLOCKS) -> None:
        self.source, self.limit = source, limit
        self._cache: OrderedDict[bytes, Block] = OrderedDict()

    def get(self, block_hash: bytes) -> Block:
        block = self._cache.get(block_hash)
        if block is not None:
            self._cache.move_to_end(block_hash)
            return block
        block = self.source.block_by_hash(block_hash)
        if block is None:
            raise StoreError(f"block {block_hash.hex()[:16]} is missing from the store; run 'ledger verify', then "
                             "move the store aside to resync")
        # The header was checked when the chain was restored; the body must still be the one it commits to.
        if block.hash != block_hash or block.computed_merkle_root() != block.header.merkle_root:
            raise StoreError(f"stored {block.header.describe()} is damaged (its records do not match its header's "
                             "Merkle root); run 'ledger verify', then move the store aside to resync")
        self._cache[block_hash] = block
        while len(self._cache) > self.limit:
            self._cache.popitem(last=False)
        return block


class _Node:
    """A block in the tree with its cumulative work; ``undo`` is set while it is on the main chain; ``main_time``
    is how long it was on the main chain before it was last disconnected (finality counts the hold over all its
    times there: see :meth:`Chain._connect`). A node
    restored from a stored checkpoint holds only its packed header (parsed on demand) and reads its body
    through ``bodies``, so a long restored chain costs a few hundred bytes a block."""

    __slots__ = ("__weakref__", "_block", "_header", "_packed", "bodies", "children", "hash", "height", "main_time",
                 "parent", "parked", "undo", "work")

    def __init__(self, block: Block | None, parent: _Node | None, *, restored: tuple[bytes, bytes, int] | None = None,
                 bodies: _Bodies | None = None, unit_work: int = 0) -> None:
        self._block = block
        self.bodies = bodies
        self.parent = parent
        if block is not None:
            self._header: BlockHeader | None = block.header
            self._packed = b""
            self.hash = block.header.hash
            self.height = block.header.height
            self.work: int = (parent.work + block.header.work) if parent is not None else 0
        else:
            assert restored is not None and parent is not None
            self._header = None
            self._packed, self.hash, self.height = restored
            self.work = parent.work + unit_work
        self.children: list[_Node] = []
        self.undo: UndoLog | None = None
        self.parked: _Parked | None = None
        self.main_time: float | None = None

    @property
    def header(self) -> BlockHeader:
        header = self._header
        if header is None:
            header = BlockHeader.unpack(self._packed)
            header.__dict__["hash"] = self.hash
        return header

    @property
    def preference(self) -> tuple[int, int]:
        return chain_preference(self.work, self.hash)

    @property
    def block(self) -> Block:
        if self._block is not None:
            return self._block
        assert self.bodies is not None
        return self.bodies.get(self.hash)


class _PrefixNode(_Node):
    """A main-chain block at or below the final height a chain was restored with, made from its stored row when
    asked for (:class:`_Prefix`); its parent is looked up the same way, so holding one holds no chain of them."""

    __slots__ = ("_prefix",)

    def __init__(self, prefix: _Prefix, height: int, block_hash: bytes, packed: bytes) -> None:
        self._prefix = prefix
        self._block, self._header, self._packed = None, None, packed
        self.bodies = prefix.bodies
        self.hash, self.height = block_hash, height
        self.work = prefix.unit * height
        self.children = []
        self.undo, self.parked, self.main_time = None, None, None

    @property
    def parent(self) -> _Node:  # type: ignore[override]
        return self._prefix.node(self.height - 1)


class _Prefix:
    """Heights 1..``top`` of a restored main chain (final when restored), kept in the store, not in memory: a node
    is made when asked for and lives as long as someone holds it (the same object meanwhile, so identity checks
    such as :meth:`Chain._on_main` hold). Costs nothing per block; a lookup by hash is one indexed SQLite query."""

    def __init__(self, source: StoredMainChain, top: int, root: _Node, unit: int, bodies: _Bodies) -> None:
        self.source, self.top, self.root, self.unit, self.bodies = source, top, root, unit, bodies
        self._made: weakref.WeakValueDictionary[int, _PrefixNode] = weakref.WeakValueDictionary()

    def node(self, height: int) -> _Node:
        if height == 0:
            return self.root
        made = self._made.get(height)
        if made is not None:
            return made
        row = self.source.main_row_at(height) if 0 < height <= self.top else None
        if row is None:
            raise StoreError(f"main-chain block {height} is missing from the store; run 'ledger verify', then "
                             "move the store aside to resync")
        made = _PrefixNode(self, height, row[0], row[1])
        self._made[height] = made
        return made

    def find(self, block_hash: bytes) -> _Node | None:
        height = self.source.height_of(block_hash)
        if height is None or not 0 < height <= self.top:
            return None
        node = self.node(height)
        return node if node.hash == block_hash else None


class _MainChain:
    """The main chain by height: a restored :class:`_Prefix` (heights 1..top) below the nodes held in memory
    (genesis, then heights above top). Disconnecting into the prefix is refused: it holds no undo logs."""

    def __init__(self, root: _Node) -> None:
        self._held: list[_Node] = [root]
        self.prefix: _Prefix | None = None

    def set_prefix(self, prefix: _Prefix) -> None:
        assert len(self._held) == 1
        self.prefix = prefix

    def _top(self) -> int:
        return self.prefix.top if self.prefix is not None else 0

    def __len__(self) -> int:
        return self._top() + len(self._held)

    @overload
    def __getitem__(self, index: int) -> _Node: ...

    @overload
    def __getitem__(self, index: slice) -> list[_Node]: ...

    def __getitem__(self, index: int | slice) -> _Node | list[_Node]:
        if isinstance(index, slice):
            return [self[h] for h in range(len(self))[index]]
        n = len(self)
        h = index + n if index < 0 else index
        if not 0 <= h < n:
            raise IndexError(index)
        top = self._top()
        if h == 0 or h > top:
            return self._held[h - top if h else 0]
        assert self.prefix is not None
        return self.prefix.node(h)

    def append(self, node: _Node) -> None:
        self._held.append(node)

    def pop(self) -> _Node:
        if len(self._held) == 1 and len(self) > 1:
            node = self[-1]
            raise LedgerError(f"{node.header.describe()} was restored from a stored checkpoint without its undo "
                              "log; the chain must be replayed from its blocks to disconnect it")
        return self._held.pop()


class _NodeIndex:
    """Block hash → node of the tree: a dict of the nodes in memory, then the restored prefix (:class:`_Prefix`)."""

    def __init__(self, root: _Node) -> None:
        self._dict: dict[bytes, _Node] = {root.hash: root}
        self.prefix: _Prefix | None = None

    def get(self, block_hash: bytes) -> _Node | None:
        node = self._dict.get(block_hash)
        if node is None and self.prefix is not None:
            node = self.prefix.find(block_hash)
        return node

    def __contains__(self, block_hash: object) -> bool:
        return isinstance(block_hash, bytes) and self.get(block_hash) is not None

    def __getitem__(self, block_hash: bytes) -> _Node:
        node = self.get(block_hash)
        if node is None:
            raise KeyError(block_hash)
        return node

    def __setitem__(self, block_hash: bytes, node: _Node) -> None:
        self._dict[block_hash] = node

    def __delitem__(self, block_hash: bytes) -> None:
        del self._dict[block_hash]

    def __len__(self) -> int:
        return len(self._dict) + (self.prefix.top if self.prefix is not None else 0)


class _Parked:
    """A parked subtree: ``root`` is its first block after ``fork`` (a main-chain block below the final height)."""

    __slots__ = ("blocks", "fork", "root", "size", "source", "tip", "touched")
    _clock = 0

    def __init__(self, root: _Node, fork: _Node, source: str | None) -> None:
        self.root, self.fork, self.tip, self.source = root, fork, root, source
        self.blocks = 0
        self.size = 0
        self.touched = 0

    def add(self, node: _Node, source: str | None) -> None:
        _Parked._clock += 1
        self.touched = _Parked._clock  # among equally light branches, the one extended longest ago goes first
        node.parked = self
        self.blocks += 1
        self.size += node.block.size
        if node.preference > self.tip.preference:
            self.tip = node
        if source is not None:
            self.source = source


class Chain:
    """Block tree, main chain and binding state of one network (see the module docstring)."""

    def __init__(self, params: NetworkParams, finality: FinalityPolicy | None = None) -> None:
        self.params = params
        self.finality = finality or FinalityPolicy()
        self.genesis = params.genesis()
        root = _Node(self.genesis, None)
        self._nodes = _NodeIndex(root)
        self._main = _MainChain(root)
        self._tips: set[_Node] = {root}
        self._record_loc: Any = {}   # record id → (height, index): a dict, or a StoredMap once restored
        self._orphans: OrderedDict[bytes, Block] = OrderedDict()
        self._orphans_by_prev: dict[bytes, set[bytes]] = {}
        self._invalid: OrderedDict[bytes, str] = OrderedDict()
        self.bindings = Bindings(params)
        # Finality: when each main-chain block was connected (parallel to _main, non-decreasing), the final height,
        # the parked branches by root hash, and an operator-chosen checkpoint every chain must contain.
        self._held: list[float] = [0.0]
        self._final = 0
        self._parked: dict[bytes, _Parked] = {}
        self._pruned: OrderedDict[bytes, None] = OrderedDict()
        self._checkpoint: tuple[int, bytes] | None = None
        self._now = 0.0
        self._held_hint: Mapping[bytes, float] = {}
        self._load_final = -1
        self._source: str | None = None
        self._touched: set[_Parked] = set()
        self.track_changes = False
        self._changes = ChainChanges()

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

    # --- finality ------------------------------------------------------------------------------------------

    @property
    def final_height(self) -> int:
        """Height of the newest final main-chain block (0: only genesis is final)."""
        return self._final

    @property
    def final_hash(self) -> bytes:
        return self._main[self._final].hash

    @property
    def checkpoint(self) -> tuple[int, bytes] | None:
        """The operator's checkpoint ``(height, hash)`` every accepted chain must contain, if one was set."""
        return self._checkpoint

    def held_since(self, height: int) -> float | None:
        """When the main-chain block at ``height`` was connected on this node (None beyond the tip)."""
        return self._held[height] if 0 <= height < len(self._held) else None

    def is_final(self, height: int) -> bool:
        return 0 <= height <= self._final

    def advance_finality(self, now: float) -> bool:
        """Let time make blocks final (also done by every :meth:`add_block`); True if the final height moved.
        Side branches that now conflict with final history are parked (they cannot become main any more)."""
        if not self._advance_final(now):
            return False
        self._sweep_side_branches()
        return True

    def parked_branches(self) -> list[ParkedBranch]:
        """Branches that conflict with final history, heaviest first."""
        return [self._describe_parked(p) for p in sorted(self._parked.values(), key=lambda p: p.tip.preference,
                                                         reverse=True)]

    def parked_alerts(self) -> list[ParkedBranch]:
        """Parked branches with more work than the main chain: fork choice alone would have followed them."""
        return [b for b in self.parked_branches() if b.heavier]

    def parked_branch_of(self, block_hash: bytes) -> ParkedBranch | None:
        node = self._nodes.get(block_hash)
        return self._describe_parked(node.parked) if node is not None and node.parked is not None else None

    def finality_state(self) -> dict[str, object]:
        """What a store keeps so that a restart neither reopens final history nor restarts the clocks:
        the final block, the connection time of every main-chain block above it, and the checkpoint."""
        return {"final_height": self._final, "final_hash": self._main[self._final].hash,
                "held": self._held_runs(),
                "checkpoint": list(self._checkpoint) if self._checkpoint is not None else None}

    def _held_runs(self) -> list[list[object]]:
        """The connection times above the final block as a restart needs them, in O(runs × log n): for each run of
        blocks connected within one whole second, the run's last block and the end of that second. A restart
        takes every block of the run as connected then (at most a second late: finality can only come later, never
        sooner), and the list stays short however many blocks arrive at once — at most one entry a second of the
        non-final window, where one entry per block made every new tip cost O(blocks not final yet)."""
        runs: list[list[object]] = []
        top, h = len(self._main), self._final + 1
        while h < top:
            until = float(math.ceil(self._held[h]))
            end = bisect_right(self._held, until, h, top) - 1
            runs.append([self._main[end].hash, until])
            h = end + 1
        return runs

    def set_checkpoint(self, height: int, block_hash: bytes) -> None:
        """Pin a block every accepted chain must contain (the operator's choice at join, like Bitcoin Core's
        checkpoints). Only allowed while the chain holds nothing that contradicts it."""
        if height < 1 or len(block_hash) != 32:
            raise LedgerError("a checkpoint is a block height of at least 1 and a 32-byte block hash")
        if height < len(self._main) and self._main[height].hash != block_hash:
            raise LedgerError(f"this ledger already holds another block at height {height} than the checkpoint "
                              f"{block_hash.hex()[:16]}; move the ledger aside to start again from the checkpoint")
        self._checkpoint = (height, block_hash)

    def accept_branch(self, block_hash: bytes, now: float) -> AddResult:
        """The operator's decision: stop treating the parked branch holding ``block_hash`` as conflicting.
        Final history is reopened down to the branch's fork point (dropping a checkpoint below it) and fork
        choice runs again, so the branch becomes the main chain if it is valid and has the most work."""
        node = self._nodes.get(block_hash)
        if node is None or node.parked is None:
            raise LedgerError(f"block {block_hash.hex()[:16]} is not in a parked branch "
                              "(see the parked branches with 'ledger reorg --list')")
        parked = node.parked
        self._now, self._source = now, None
        old_tip, old_final = self._main[-1], self._final
        del self._parked[parked.root.hash]
        stack = [parked.root]
        while stack:
            n = stack.pop()
            n.parked = None
            stack.extend(n.children)
            if not n.children:
                self._tips.add(n)
        self._final = min(self._final, parked.fork.height)
        if self._checkpoint is not None and parked.fork.height < self._checkpoint[0]:
            self._checkpoint = None  # the operator overrides the checkpoint the branch contradicts
        result = AddResult("added")
        result.invalidated = self._activate_best()
        self._describe_move(old_tip, result)
        if self.advance_finality(now):
            result.pruned = self._bound_parked()
        result.final_moved = self._final != old_final
        return result

    def _advance_final(self, now: float) -> bool:
        top = len(self._main) - 1
        by_depth = top - self.finality.depth + 1
        if by_depth > self._final and self.finality.min_hold > 0:
            # Held times only grow with the height, so the blocks held long enough are a prefix of the chain.
            by_depth = min(by_depth, bisect_right(self._held, now - self.finality.min_hold) - 1)
        by_time = bisect_right(self._held, now - self.finality.seconds) - 1
        new = min(top, max(self._final, by_depth, by_time))
        cp = self._checkpoint
        if cp is not None and cp[0] <= top and self._main[cp[0]].hash == cp[1]:
            new = max(new, cp[0])  # the checkpoint is final as soon as the main chain holds it
        if new <= self._final:
            return False
        self._final = new
        return True

    def _sweep_side_branches(self) -> None:
        """Park every side branch whose fork point fell below the final height (only when there are any)."""
        if len(self._tips) <= 1:
            return
        for tip in list(self._tips):
            if tip.parked is not None or self._on_main(tip):
                continue
            node, below = tip, tip
            while not self._on_main(node):
                below = node
                assert node.parent is not None
                node = node.parent
            if node.height < self._final:
                self._park_subtree(below, node)

    def _park_subtree(self, root: _Node, fork: _Node) -> None:
        parked = _Parked(root, fork, None)
        self._parked[root.hash] = parked
        stack = [root]
        while stack:
            n = stack.pop()
            parked.add(n, None)
            self._tips.discard(n)
            stack.extend(n.children)

    def _bound_parked(self) -> list[bytes]:
        """Drop the lightest parked branches beyond the policy's count and byte limits; returns dropped hashes."""
        dropped: list[bytes] = []
        policy = self.finality
        while self._parked and (len(self._parked) > policy.max_parked_branches
                                or sum(p.size for p in self._parked.values()) > policy.max_parked_bytes):
            lightest = min(self._parked.values(), key=lambda p: (p.tip.work, p.touched))
            del self._parked[lightest.root.hash]
            lightest.fork.children.remove(lightest.root)
            stack = [lightest.root]
            while stack:
                n = stack.pop()
                stack.extend(n.children)
                del self._nodes[n.hash]
                self._pruned[n.hash] = None
                dropped.append(n.hash)
            while len(self._pruned) > MAX_REMEMBERED_PRUNED:
                self._pruned.popitem(last=False)
        return dropped

    def _describe_parked(self, parked: _Parked) -> ParkedBranch:
        main = self._main[-1]
        return ParkedBranch(tip_hash=parked.tip.hash, tip_height=parked.tip.height, fork_hash=parked.fork.hash,
                            fork_height=parked.fork.height, work=parked.tip.work, main_work=main.work,
                            blocks=parked.blocks, heavier=parked.tip.preference > main.preference,
                            source=parked.source)

    def main_hash(self, height: int) -> bytes:
        return self._main[height].hash

    def main_header_bytes(self, height: int) -> bytes:
        node = self._main[height]
        return node._packed or node.header.packed

    def undo_log(self, height: int) -> UndoLog | None:
        """The undo log of the main-chain block at ``height`` (None for restored blocks at or below final)."""
        return self._main[height].undo

    def record_locations(self) -> Mapping[bytes, tuple[int, int]]:
        return dict(self._record_loc.items())

    def fork_height(self, block_hash: bytes) -> int | None:
        """Height of the main-chain block where the branch holding ``block_hash`` leaves the main chain."""
        node = self._nodes.get(block_hash)
        while node is not None and not self._on_main(node):
            node = node.parent
        return node.height if node is not None else None

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

    def _check_body(self, block: Block, trusted: bool, presigned: Container[bytes] = ()) -> None:
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
                if record.id in presigned:
                    continue
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
        self.bindings.check(record, int(now), lapse_at=self.median_time_past())

    # --- adding blocks -------------------------------------------------------------------------------------

    def add_block(self, block: Block, now: float, *, trusted: bool = False, source: str | None = None,
                  presigned: Container[bytes] = ()) -> AddResult:
        """Validate ``block`` and add it to the tree, switching to the preferred (most-work) branch that does not
        conflict with final history.

        ``trusted`` skips the signature and future-timestamp checks (only for blocks this node validated before
        and read back from its own store, possibly after the clock went back); every other rule is still checked.
        ``source`` (e.g. the peer's address) is remembered with a parked branch so the operator learns who sent it.
        ``presigned`` holds ids of records whose signatures the caller already verified (``ledger verify`` checks
        them in parallel processes); every other rule is still checked for them.
        """
        self._now, self._source = now, source
        block_hash = block.hash
        if block_hash in self._nodes:
            return AddResult("duplicate", f"{block.header.describe()} is already known")
        if block_hash in self._invalid:
            return AddResult("invalid", self._invalid[block_hash])
        if block_hash in self._orphans:
            return AddResult("orphan", f"{block.header.describe()} is still waiting for its parent")
        if block_hash in self._pruned:
            return AddResult("duplicate", f"{block.header.describe()} was dropped before: it is on a branch that "
                                          "conflicts with final history")
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
        old_tip, old_final = self._main[-1], self._final
        if self._advance_final(now):  # time may have made blocks final since the last block
            self._sweep_side_branches()
        self._touched = set()
        error = self._accept(block, parent, trusted, presigned)
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
        self.advance_finality(now)
        result.final_moved = self._final != old_final
        if self._parked:
            result.pruned = self._bound_parked()
            if result.pruned:
                gone = set(result.pruned)
                result.accepted = [b for b in result.accepted if b.hash not in gone]
            result.parked = [self._describe_parked(p) for p in self._touched
                             if p.root.hash in self._parked and p.tip.preference > self._main[-1].preference]
        return result

    def _reject(self, block_hash: bytes, reason: str) -> AddResult:
        self._invalid[block_hash] = reason
        while len(self._invalid) > MAX_REMEMBERED_INVALID:
            self._invalid.popitem(last=False)
        return AddResult("invalid", reason)

    def _accept(self, block: Block, parent: _Node, trusted: bool, presigned: Container[bytes] = ()) -> str | None:
        """Linkage and body checks; on success the block joins the tree (parked if it conflicts with final
        history). Returns the reason on failure."""
        try:
            self._check_linkage(block.header, parent.height, self._median_from(parent))
            self._check_checkpoint(block)
            self._check_body(block, trusted, presigned)
        except LedgerError as exc:
            return str(exc)
        node = _Node(block, parent)
        self._nodes[node.hash] = node
        parent.children.append(node)
        if parent.parked is not None:
            parked: _Parked | None = parent.parked
        elif parent.height < self._final and self._on_main(parent):
            parked = _Parked(node, parent, self._source)
            self._parked[node.hash] = parked
        else:
            parked = None
        if parked is None:
            self._tips.discard(parent)
            self._tips.add(node)
        else:
            parked.add(node, self._source)
            self._touched.add(parked)
        return None

    def _check_checkpoint(self, block: Block) -> None:
        # Once the checkpoint is final on the main chain, conflicting branches are parked like any other.
        if self._checkpoint is not None and block.header.height == self._checkpoint[0] \
                and block.hash != self._checkpoint[1] and self._final < self._checkpoint[0]:
            raise LedgerError(f"{block.header.describe()} is not the checkpoint {self._checkpoint[1].hex()[:16]} "
                              "chosen for this ledger")

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
            old_held = self._held[fork.height + 1:]
            self._disconnect_to(fork)
            for node in branch:
                try:
                    self._connect(node)
                except LedgerError as exc:
                    self._disconnect_to(fork)
                    for old, held in zip(old_tail, old_held, strict=True):
                        self._connect(old, held)  # was valid before; cannot fail
                    invalidated.extend(self._invalidate(node, str(exc)))
                    break

    def _connect(self, node: _Node, held: float | None = None) -> None:
        records = node.block.records
        for record in records:
            if record.id in self._record_loc:
                raise LedgerError(f"{node.header.describe()}: {record.describe()} is already in the chain")
        assert node.parent is not None
        try:
            # Expiry and reclaim decisions use the median time past of the parent, not the block's own timestamp.
            node.undo = self.bindings.apply_all(records, node.header.timestamp, node.height,
                                                lapse_at=self._median_from(node.parent))
        except LedgerError as exc:
            raise LedgerError(f"{node.header.describe()}: {exc}") from None
        if held is None:
            # While loading, a block at or below the saved final height counts as held since forever. A block that
            # was on the main chain before (a branch switched away from and back to) keeps the time it was held
            # then: else an attacker who out-mines the network could switch the node between two branches every
            # few seconds and keep every block above the fork from ever becoming final — each switch re-applying a
            # whole branch and every block of both stored for good (red team 2026-12-07 night).
            if node.main_time is not None:
                held = self._now - node.main_time
            else:
                held = self._held_hint.get(node.hash, 0.0 if node.height <= self._load_final else self._now)
        self._held.append(max(held, self._held[-1]))
        self._main.append(node)
        for index, record in enumerate(records):
            self._record_loc[record.id] = (node.height, index)
        if self.track_changes:
            self._note_change(node, records)

    def _disconnect_to(self, fork: _Node) -> None:
        while self._main[-1] is not fork:
            node = self._main.pop()
            node.main_time = max(0.0, self._now - self._held.pop())   # the held time, kept for a reconnection
            if node.undo is None:
                raise LedgerError(f"{node.header.describe()} was restored from a stored checkpoint without its undo "
                                  "log; the chain must be replayed from its blocks to disconnect it")
            records = node.block.records
            if self.track_changes:
                self._note_change(node, records)
            self.bindings.undo(node.undo)
            node.undo = None
            for record in records:
                self._record_loc.pop(record.id, None)

    def _note_change(self, node: _Node, records: Sequence[Record]) -> None:
        changes, b = self._changes, self.bindings
        if changes.main_from is None or node.height < changes.main_from:
            changes.main_from = node.height
        assert node.undo is not None
        for mapping, key, _old in node.undo:
            code = 0 if mapping is b.identities else 1 if mapping is b.by_ip else 2
            changes.bindings.add((code, key))
        changes.records.update(r.id for r in records)

    def persisted(self) -> None:
        """The store committed every change so far: maps kept in the store drop their copies of them."""
        self.bindings.persisted()
        if isinstance(self._record_loc, StoredMap):
            self._record_loc.persisted()

    def give_back_changes(self, changes: ChainChanges) -> None:
        """Changes taken by :meth:`take_changes` that could not be written: the next write includes them."""
        mine = self._changes
        if changes.main_from is not None and (mine.main_from is None or changes.main_from < mine.main_from):
            mine.main_from = changes.main_from
        mine.bindings |= changes.bindings
        mine.records |= changes.records

    def take_changes(self) -> ChainChanges:
        """The derived-state changes since the last call (tracked only while :attr:`track_changes` is set)."""
        changes, self._changes = self._changes, ChainChanges()
        return changes

    def can_disconnect_to(self, height: int) -> bool:
        """True if every main-chain block above ``height`` holds its undo log (restored blocks at or below the
        final height do not: reopening them needs a replay)."""
        return all(self._main[h].undo is not None for h in range(max(height, 0) + 1, len(self._main)))

    def restore(self, headers: Sequence[tuple[bytes, bytes]], bodies: BodySource | StoredMainChain,
                record_loc: StoredMap | dict[bytes, Any], bindings: Bindings, undo: Mapping[int, UndoLog],
                finality: Mapping[str, Any] | None, now: float, *, prefix: int = 0) -> None:
        """Start from a stored checkpoint instead of replaying blocks: ``headers`` is the main chain above height
        ``prefix`` as ``(packed header, hash)`` (checked here: each links to the one before, with the right height,
        network and target), ``bindings`` and ``record_loc`` the state at its tip, ``undo`` the undo logs of the
        blocks above the final height. Heights 1..``prefix`` (at most the stored final height) stay in the store
        and are read from ``bodies`` when asked for (:class:`_Prefix`); bodies are read from it when needed.
        Raises :class:`LedgerError` if the checkpoint does not fit together."""
        if len(self._main) != 1:
            raise LedgerError("a chain can only be restored while empty")
        cache = _Bodies(bodies)
        parent = self._main[0]
        bits, network_id = self.params.difficulty_bits, self.params.network_id
        unit = work_for(bits)
        if prefix > 0:
            final_h = int(finality.get("final_height") or 0) if finality is not None else 0
            if not isinstance(bodies, StoredMainChain) or prefix > final_h:
                raise LedgerError("only final history can stay in the store")
            stored = _Prefix(bodies, prefix, parent, unit, cache)
            self._main.set_prefix(stored)
            self._nodes.prefix = stored
            parent = stored.node(prefix)
        for packed, block_hash in headers:
            try:
                _v, net, height, prev_hash, _m, _t, target_bits, _n = HEADER_FORMAT.unpack(packed)
            except (struct.error, TypeError):
                raise LedgerError(f"stored header of block {parent.height + 1} is malformed") from None
            if prev_hash != parent.hash or height != parent.height + 1 or target_bits != bits or net != network_id:
                raise LedgerError(f"stored main chain breaks at block {parent.height + 1}")
            node = _Node(None, parent, restored=(packed, block_hash, height), bodies=cache, unit_work=unit)
            self._nodes[block_hash] = node
            parent.children.append(node)
            self._main.append(node)
            parent = node
        self._tips = {parent}
        self.bindings = bindings
        self._record_loc = record_loc
        final_h = 0
        held_hint: dict[bytes, float] = {}
        if finality is not None:
            checkpoint = finality.get("checkpoint")
            if isinstance(checkpoint, list) and len(checkpoint) == 2:
                self.set_checkpoint(int(checkpoint[0]), bytes(checkpoint[1]))
            final_h = int(finality.get("final_height") or 0)
            if final_h >= len(self._main) or self._main[final_h].hash != bytes(finality.get("final_hash") or b""):
                raise LedgerError("the stored finality state does not name a block of the stored main chain")
            held_hint = {bytes(h): float(t) for h, t in finality.get("held") or []}
        self._held = [0.0] * len(self._main)
        # A saved time stands for its block and every block below it down to the previous saved one (a run:
        # _held_runs); blocks above the last saved one arrived after it and count from now.
        upper = now
        for h in range(len(self._main) - 1, final_h, -1):
            upper = held_hint.get(self._main[h].hash, upper)
            self._held[h] = upper
        for h in range(final_h + 1, len(self._main)):
            self._held[h] = max(self._held[h], self._held[h - 1])
        self._final = final_h
        self._advance_final(now)
        for h in range(self._final + 1, len(self._main)):
            log = undo.get(h)
            if log is None:
                raise LedgerError(f"the stored checkpoint lacks the undo log of block {h} above the final height")
            node = self._main[h]
            node.undo = log
            if BlockHeader.unpack(node.header.packed).hash != node.hash:  # recomputed, not the stored hash
                raise LedgerError(f"stored {node.header.describe()} does not hash to its stored hash")
            cache.get(node.hash)  # the open part of the chain is read (and its bodies checked) now

    def _invalidate(self, node: _Node, reason: str) -> list[bytes]:
        """Remove ``node`` and its descendants from the tree and remember them as invalid."""
        parent = node.parent
        assert parent is not None
        parent.children.remove(node)
        if not parent.children and not isinstance(parent, _PrefixNode):  # a prefix node's main child is unlisted
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

    def load(self, blocks: Sequence[Block], now: float, *, trusted: bool = True,
             finality: Mapping[str, Any] | None = None, presigned: Container[bytes] = ()) -> list[tuple[Block, str]]:
        """Add stored blocks (parents first); returns the blocks that were refused, with the reason.

        ``finality`` is a saved :meth:`finality_state`: its checkpoint is pinned first, the blocks consistent with
        its final block are replayed with their saved connection times, the final height is restored, and only
        then the other stored blocks (parked branches) are replayed — so a restart never reopens final history.
        """
        refused: list[tuple[Block, str]] = []
        first: list[Block] = list(blocks)
        rest: list[Block] = []
        final_h, final_hash = 0, b""
        if finality is not None:
            checkpoint = finality.get("checkpoint")
            if isinstance(checkpoint, list) and len(checkpoint) == 2:
                self.set_checkpoint(int(checkpoint[0]), bytes(checkpoint[1]))
            final_h = int(finality.get("final_height") or 0)
            final_hash = bytes(finality.get("final_hash") or b"")
            first, rest = _split_by_final(blocks, final_hash)
            self._held_hint = _spread_runs({bytes(h): float(t) for h, t in finality.get("held") or []}, first,
                                           final_hash)
        self._load_final = final_h
        for block in first:
            result = self.add_block(block, now, trusted=trusted, presigned=presigned)
            if result.status in ("invalid", "orphan"):
                refused.append((block, result.reason))
        self._held_hint, self._load_final = {}, -1
        if final_h and final_h < len(self._main) and self._main[final_h].hash == final_hash:
            self._final = max(self._final, final_h)
            self.advance_finality(now)
        for block in rest:
            result = self.add_block(block, now, trusted=trusted, presigned=presigned)
            if result.status in ("invalid", "orphan"):
                refused.append((block, result.reason))
        if self._parked:
            self._bound_parked()
        return refused

    def main_blocks(self, start: int = 1) -> list[Block]:
        return [n.block for n in self._main[start:]]


def _spread_runs(saved: dict[bytes, float], blocks: Sequence[Block], final_hash: bytes) -> dict[bytes, float]:
    """The saved connection times (:meth:`Chain._held_runs`: one per run, on its last block) given to every block
    of each run: a block without a time of its own takes the nearest saved one above it, down to the final
    block."""
    by_hash = {b.hash: b for b in blocks}
    spread = dict(saved)
    for block_hash, held in sorted(saved.items(), key=lambda item: item[1], reverse=True):
        block = by_hash.get(block_hash)
        while block is not None and block.header.prev_hash != final_hash:
            block = by_hash.get(block.header.prev_hash)
            if block is None or block.hash in spread:
                break
            spread[block.hash] = held
    return spread


def _split_by_final(blocks: Sequence[Block], final_hash: bytes) -> tuple[list[Block], list[Block]]:
    """Stored blocks (parents first) split into those consistent with the final block — its ancestors and its
    descendants — and the others, in their original order."""
    by_hash = {b.hash: b for b in blocks}
    ancestors: set[bytes] = set()
    cursor = by_hash.get(final_hash)
    while cursor is not None:
        ancestors.add(cursor.hash)
        cursor = by_hash.get(cursor.header.prev_hash)
    above: set[bytes] = set()
    first: list[Block] = []
    rest: list[Block] = []
    for block in blocks:
        if block.hash in ancestors or block.header.prev_hash in above or block.header.prev_hash == final_hash:
            if block.hash not in ancestors:
                above.add(block.hash)
            first.append(block)
        else:
            rest.append(block)
    if not ancestors:
        return list(blocks), []
    return first, rest
