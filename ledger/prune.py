"""Pruning: dropping the records no rule needs any more from old block bodies (docs/ledger.md, "Pruning").

The rule, local to each node (no consensus change): with ``F`` the final height and ``keep`` the blocks kept
below it, the **prune height** is ``P = max(0, F - keep)``. A record ``r`` in a main-chain block at height
``<= P`` is dropped (only its id stays in the body) when

1. a later record of the same identity, ``s`` with ``s.prev == r.id``, is in a main-chain block at height
   ``<= P`` (so ``r`` is superseded, and no reorg short of reopening history below ``P`` can make it the
   identity's latest again), and
2. no row of the binding state names ``r`` (a rotation stays the retired key's last record for ever).

Everything else is kept: every header, every body above ``P``, every record the binding state names (the latest
record of each key, expired or not: its sequence number and id are what the key's next record must follow),
and side and parked branches. Lookups, proofs, the binding rules and reorgs above ``P`` therefore work on a
pruned node exactly as on a full one; what it can no longer do is serve or replay blocks at or below ``P``.

Pruning advances in steps of :data:`STEP_BLOCKS` heights, each one SQLite transaction that rewrites the bodies
it prunes and the progress (``meta['pruned']``) together, so a process killed mid-prune leaves a store that opens
with the bodies and progress of the last finished step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from ledger.blocks import Block, BlockHeader
from ledger.chain import Chain
from ledger.defaults import PRUNE_KEEP
from ledger.errors import LedgerError, StoreError
from ledger.params import NetworkParams
from ledger.prune_body import PrunedBlock, parse_stored_body, record_at
from ledger.records import Record
from ledger.store import Store

log = logging.getLogger(__name__)
STEP_BLOCKS = 500           # heights scanned per transaction
PRUNE_INTERVAL = 60.0       # seconds between automatic pruning rounds of a running node
PROGRESS_INTERVAL = 10.0    # a running node logs how far a long pruning round got at most this often


@dataclass
class PruneState:
    """How far this store is pruned: bodies at heights ``<= height`` may lack records; ``records`` were dropped
    in all, ``bytes`` of stored record data given up."""

    height: int = 0
    records: int = 0
    bytes: int = 0

    @classmethod
    def of(cls, store: Store) -> PruneState:
        meta = store.prune_meta()
        return cls() if meta is None else cls(meta["height"], meta["records"], meta["bytes"])

    def to_meta(self) -> dict[str, Any]:
        return {"height": self.height, "records": self.records, "bytes": self.bytes}

    def describe(self) -> str:
        if self.height == 0:
            return "not pruned"
        return (f"pruned up to block {self.height}: {self.records} superseded records dropped, "
                f"{self.bytes / 2**20:.1f} MiB of record data saved")


def not_served(height: int) -> str:
    """The ``reason`` of a ``blocks`` answer that leaves out bodies this node pruned."""
    return (f"this node pruned block bodies up to height {height} and cannot serve those; ask a node that keeps "
            "every block")


def prune_target(final_height: int, keep: int) -> int:
    """The prune height ``P`` for a final height and the blocks kept below it."""
    return max(0, final_height - keep)


def prune_step(store: Store, upto: int, step: int = STEP_BLOCKS) -> PruneState:
    """Advance pruning by at most ``step`` heights towards ``upto`` (which must be final, see the module
    docstring) in one transaction; returns the new state. The caller keeps the store's binding state current
    (no unwritten blocks) while this runs."""
    state = PruneState.of(store)
    if upto <= state.height:
        return state
    end = min(upto, state.height + step)
    bodies: dict[int, tuple[bytes, list[Any], int]] = {}

    def body(height: int) -> tuple[bytes, list[Any], int]:
        held = bodies.get(height)
        if held is None:
            row = store.main_body_row(height)
            if row is None:
                raise StoreError(f"main-chain block {height} is missing from {store.path}; run 'ledger verify'")
            items = msgpack.unpackb(row[2], raw=False)
            if not isinstance(items, list):
                raise StoreError(f"the stored body of block {height} in {store.path} is damaged; run 'ledger verify'")
            held = bodies[height] = (row[0], items, len(row[2]))
        return held

    superseded: list[tuple[int, int, bytes]] = []
    for height in range(state.height + 1, end + 1):
        for item in body(height)[1]:
            if isinstance(item, dict) and isinstance(item.get("seq"), int) and item["seq"] > 0 \
                    and isinstance(item.get("prev"), bytes):
                loc = store.record_loc(item["prev"])
                if loc is not None and loc[0] <= end:
                    superseded.append((loc[0], loc[1], item["prev"]))
    changed: set[int] = set()
    dropped = 0
    for height, index, record_id in superseded:
        items = body(height)[1]
        item = items[index] if 0 <= index < len(items) else None
        if isinstance(item, bytes):
            continue  # pruned in an earlier step
        try:
            record = Record.from_wire(item)
        except LedgerError as exc:
            raise StoreError(f"the stored record {index} of block {height} in {store.path} is damaged ({exc}); "
                             "run 'ledger verify'") from None
        if record.id != record_id:
            raise StoreError(f"block {height} of {store.path} does not hold record {record_id.hex()[:16]} where "
                             "the record index says; run 'ledger verify'")
        if _named_by_binding_state(store, record):
            continue
        items[index] = record.id
        changed.add(height)
        dropped += 1
    rewritten = [(bodies[h][0], bodies[h][1]) for h in sorted(changed)]
    saved = sum(bodies[h][2] - len(msgpack.packb(bodies[h][1], use_bin_type=True)) for h in changed)
    new = PruneState(end, state.records + dropped, state.bytes + saved)
    store.write_pruned(rewritten, new.to_meta())
    return new


def _named_by_binding_state(store: Store, record: Record) -> bool:
    """True if a row of the stored binding state (``bind_id``) names ``record``: its signer's or, for a
    rotation, its new key's latest record."""
    for fp in {record.signer_fingerprint, record.fingerprint}:
        row = store.identity_row(fp)
        if row is not None and row[1] == record.id:
            return True
    return False


# --- a running node's pruning ---------------------------------------------------------------------------------


class PrunableLedger(Protocol):
    """What the pruner drives (:class:`ledger.local_ledger.LocalLedger`)."""

    @property
    def pruned(self) -> PruneState:
        """How far the store is pruned."""

    def prune_step(self, keep: int) -> tuple[PruneState, int] | None:
        """One step under the ledger's lock: ``(state, target height)``; None when it cannot run now."""


def prune_all(ledger: PrunableLedger, keep: int = PRUNE_KEEP, *, stop: threading.Event | None = None,
              progress: Callable[[PruneState, int], None] | None = None) -> PruneState | None:
    """Prune step by step up to the current target (releasing the ledger's lock between steps); returns the
    final state (None if pruning could not run)."""
    state: PruneState | None = None
    while stop is None or not stop.is_set():
        done = ledger.prune_step(keep)
        if done is None:
            return state
        new, target = done
        advanced = state is None or new.height > state.height
        state = new
        if progress is not None and advanced:
            progress(state, target)
        if new.height >= target or not advanced:
            return state
    return state


class Pruner:
    """The thread that prunes a running node's store every :data:`PRUNE_INTERVAL` seconds (``--prune``). Owned
    by the ledger node, which starts it and joins it on close."""

    def __init__(self, ledger: PrunableLedger, keep: int, *, interval: float = PRUNE_INTERVAL,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.ledger, self.keep, self.interval, self.ready = ledger, keep, interval, ready
        self._stop = threading.Event()
        self.rounds = 0   # pruning rounds begun (tests wait on it)
        self._last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ledger-pruner")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            before = self.ledger.pruned.height
            self.rounds += 1
            try:
                state = prune_all(self.ledger, self.keep, stop=self._stop, progress=self._logged) if self.ready() \
                    else None
            except StoreError as exc:   # a local fault (disk full, damage): say so, keep serving, try again later
                log.warning("pruning stopped: %s", exc)
                state = None
            if state is not None and state.height > before:
                log.info("ledger %s", state.describe())
            self._stop.wait(self.interval)

    def _logged(self, state: PruneState, target: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL and state.height < target:   # long work shows progress
            self._last_progress = now
            log.info("pruning: block %d of %d", state.height, target)


# --- verifying a pruned store -----------------------------------------------------------------------------------


@dataclass
class PrunedVerify:
    """What :func:`verify_pruned` found: figures, problems, and what it could not check because it was pruned."""

    height: int = 0
    tip: bytes = b""
    blocks: int = 0
    records: int = 0
    kept: int = 0
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def verify_pruned(store: Store, params: NetworkParams, now: float) -> PrunedVerify:
    """Check everything a pruned store keeps: every main-chain header from genesis (fields, proof of work, time,
    linkage, median time), every stored body (Merkle root over kept records and pruned ids, no record twice,
    every kept record's signatures), and the stored binding state record by record (each row names a kept,
    signed main-chain record at the stored position, with the status and expiry its record gives; each IP and
    nickname entry is claimed by its holder's record). The binding rules cannot be replayed without the pruned
    records: said in ``unchecked``."""
    out = PrunedVerify()
    state = PruneState.of(store)
    chain = Chain(params)
    prev: BlockHeader = params.genesis().header
    window: list[int] = [prev.timestamp]
    stamp = store.load_derived_meta()
    if stamp is None:
        out.problems.append("the store has no checkpoint of its derived state, so its main chain is not known")
    top = stamp["height"] if stamp is not None else 0
    for height in range(1, top + 1):
        row = store.main_body_row(height)
        if row is None:
            out.problems.append(f"main-chain block {height} is missing")
            break
        block_hash, packed, items = row
        try:
            header = BlockHeader.unpack(packed)
            if header.hash != block_hash:
                raise LedgerError(f"{header.describe()} does not hash to its stored hash")
            chain.check_header(header, now, prev=prev)
            median = sorted(window)[len(window) // 2]
            if header.timestamp <= median:
                raise LedgerError(f"{header.describe()} is dated {header.timestamp}, not after the median {median} "
                                  "of the blocks before it")
            block = parse_stored_body(packed, msgpack.unpackb(items, raw=False))
            _check_body(block, params)
        except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
            out.problems.append(f"main-chain block {height}: {exc}")
            break
        window.append(header.timestamp)
        if len(window) > params.median_window:
            del window[0]
        prev = header
        out.height, out.tip = height, block_hash
    if stamp is not None and out.height == top and out.tip != stamp["tip"]:
        out.problems.append(f"the stored main chain ends at {out.tip.hex()[:16]}, not at the checkpoint's tip "
                            f"{stamp['tip'].hex()[:16]}")
        out.blocks += 1
        out.records += len(block.record_ids)
        out.kept += len(block.records)
    side, damaged = store.side_blocks()
    for n, reason in damaged:
        out.problems.append(f"stored block row #{n} is damaged: {reason}")
    for block in side:
        try:
            _check_body(block, params)
        except LedgerError as exc:
            out.problems.append(f"stored side {block.header.describe()}: {exc}")
    out.blocks += len(side)
    out.problems += _check_binding_state(store)
    if state.height:
        out.unchecked.append(
            f"{state.records} superseded records were pruned from blocks 1–{state.height}: the binding rules "
            "(sequence, one key per address and nickname, expiry), which need every record in chain order, could "
            "not be replayed; they were checked when this node accepted those blocks, and the binding state they "
            "left was checked above against the kept records instead")
    return out


def _check_body(block: Block, params: NetworkParams) -> None:
    if block.computed_merkle_root() != block.header.merkle_root:
        raise LedgerError(f"{block.header.describe()} has a wrong Merkle root (its records and pruned ids do not "
                          "match its header)")
    if len(set(block.record_ids)) != len(block.record_ids):
        raise LedgerError(f"{block.header.describe()} contains the same record twice")
    if len(block.record_ids) > params.max_block_records:
        raise LedgerError(f"{block.header.describe()} has {len(block.record_ids)} records")
    for record in block.records:
        try:
            record.verify_signatures(params.name)
        except LedgerError as exc:
            raise LedgerError(f"{block.header.describe()}: {exc}") from None


def _check_binding_state(store: Store) -> list[str]:
    problems: list[str] = []
    records: dict[bytes, Record] = {}
    for fp, record_id, height, index, status, expires in store.identity_rows():
        name = f"the binding state of key {fp.hex()[:16]}"
        row = store.main_body_row(height)
        record = None
        if row is not None:
            try:
                record = record_at(parse_stored_body(row[1], msgpack.unpackb(row[2], raw=False)), index)
            except (LedgerError, ValueError, TypeError, msgpack.UnpackException):
                record = None
        if record is None or record.id != record_id:
            problems.append(f"{name} names record {record_id.hex()[:16]} at block {height}, index {index}, which "
                            "is not kept there")
            continue
        want = ("revoked" if record.kind == "revoke" else
                "rotated" if record.kind == "rotate" and fp == record.signer_fingerprint else "live")
        holder = record.signer_fingerprint if want != "live" or record.kind != "rotate" else record.fingerprint
        if status != want or expires != record.expires or fp != holder:
            problems.append(f"{name} says {status}, expiring {expires}, but its record "
                            f"{record.describe()} gives {want}, expiring {record.expires}")
            continue
        records[fp] = record
    for table, what in (("bind_ip", "address"), ("bind_nick", "nickname")):
        for key, fp in store.binding_rows(table):
            record = records.get(fp)
            claimed = record is not None and (record.ip == key if table == "bind_ip" else key in record.nickname_keys)
            if not claimed:
                problems.append(f"the binding state gives the {what} {key!r} to key {fp.hex()[:16]}, whose latest "
                                "record does not claim it")
    return problems


def is_pruned(block: Block) -> bool:
    return isinstance(block, PrunedBlock)
