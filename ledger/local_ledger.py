"""A node's ledger: chain + store + pending pool + miner behind one lock (thread-safe).

This is what the gossip node, the command line and the chat node use. Every mutating call validates in memory,
then persists, then returns, and only then calls the listeners (outside the lock), so nothing is announced to
peers before it is on disk:

- :meth:`LocalLedger.submit_record` → True once the record is pending *and* written durably to the store;
- :meth:`LocalLedger.receive_block` → :class:`~ledger.chain.AddResult`; accepted blocks are stored with the
  derived state they change (the stored checkpoint a start loads instead of replaying) in one transaction per
  call, or per 256 blocks inside :meth:`LocalLedger.batched`, and a reorg returns orphaned records to the pool;
- listeners (:meth:`LocalLedger.add_listener`) hear about every accepted record and block, whatever its
  source (peer, local submit, own miner), so the network layer can announce from one place.

One process per data directory and network: a lock file (``flock``) refuses a second node on the same store.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgpack

from ledger.bindings import Bindings, StoredIdentityTable, StoredMap, state_row
from ledger.blocks import Block, BlockHeader
from ledger.chain import AddResult, Chain, ChainChanges, FinalityPolicy, ParkedBranch
from ledger.errors import LedgerError, StoreError
from ledger.lookup_service import LookupAnswer
from ledger.miner import Miner
from ledger.params import NetworkParams
from ledger.pool import Mempool
from ledger.prune import PruneState, prune_step, prune_target, verify_pruned
from ledger.prune_body import PrunedBlock, record_at
from ledger.records import ZERO_HASH, Record
from ledger.store import DerivedDelta, Store
from ledger.verify_worker import verify_chunk
from p2pchat.foundation import crypto

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, SQLite's own locking remains
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
LookupKind = Literal["ip", "nick", "fp"]
PARKED_WARNING_INTERVAL = 60.0
BlockListener = Callable[[Block, AddResult], None]
RecordListener = Callable[[Record], None]


def store_path(data_dir: Path, network: str) -> Path:
    """Where the ledger of ``network`` lives inside a data directory."""
    return Path(data_dir) / f"ledger-{network}.sqlite3"


def stored_params(data_dir: Path, network: str, *, recover: bool = False) -> NetworkParams | None:
    """The parameters of ``network`` stored in ``data_dir`` (None if this node never joined it). With
    ``recover``, a damaged database counts as none: :class:`LocalLedger` will move it aside."""
    path = store_path(data_dir, network)
    if not path.exists():
        return None
    try:
        # Without ``recover`` a damaged file is refused by the checked open that follows (LocalLedger's), so the
        # peek skips SQLite's quick_check, which reads the whole file (seconds at a million blocks).
        with Store(path, check=recover) as store:
            return store.load_params()
    except StoreError:
        if recover:
            return None
        raise


def parse_fingerprint(value: bytes | str) -> bytes | None:
    """A 32-byte fingerprint from bytes or hex text (spaces and colons allowed); None if it is not one."""
    if isinstance(value, bytes):
        return value if len(value) == 32 else None
    text = value.replace(" ", "").replace(":", "").lower()
    if len(text) != 64:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


@dataclass
class VerifyReport:
    """Result of revalidating a store from genesis with every rule and signature."""

    ok: bool
    path: Path
    network: str
    height: int = 0
    tip: str = ""
    blocks: int = 0
    records: int = 0
    pending: int = 0
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)   # what a pruned store no longer lets it check

    def summary(self) -> str:
        head = (f"{self.path}: network '{self.network}', {self.blocks} stored blocks, main chain height "
                f"{self.height} (tip {self.tip[:16]}), {self.records} records, {self.pending} pending")
        gaps = "".join(f"\n  NOT CHECKED (pruned): {text}" for text in self.unchecked)
        if self.ok:
            return head + (" — valid, as far as kept" if self.unchecked else " — valid") + gaps
        return head + " — INVALID:\n  " + "\n  ".join(self.problems) + gaps


VERIFY_CHUNK_BLOCKS = 200


def verify_workers() -> int:
    """Processes ``ledger verify`` checks signatures in: one per core."""
    return max(1, os.cpu_count() or 1)


class _Presigned:
    """Record ids whose signatures worker processes verified, pulled in order as the replay asks for them: asking
    about a record waits only for the batch holding its block, so the rules replay while later batches are
    still being verified."""

    def __init__(self, results: Iterator[list[bytes]], chunk_of: dict[bytes, int]) -> None:
        self._results, self._chunk_of = results, chunk_of
        self._ids: set[bytes] = set()
        self._done = 0

    def __contains__(self, record_id: object) -> bool:
        chunk = self._chunk_of.get(record_id) if isinstance(record_id, bytes) else None
        if chunk is None:
            return False
        while self._done <= chunk:
            self._ids.update(next(self._results))
            self._done += 1
        return record_id in self._ids


def verify_store(path: Path, params: NetworkParams | None = None, now: float | None = None, *,
                 workers: int = 1) -> VerifyReport:
    """Revalidate the store at ``path`` from genesis (all rules, all signatures). Raises :class:`StoreError`
    if the file cannot be read at all; rule violations are reported in the result.

    With ``workers`` > 1, record signatures are verified in that many processes, a batch of blocks at a time,
    while this process parses the blocks; the binding rules then replay in order with every other check."""
    now = time.time() if now is None else now
    with Store(path) as store:
        stored = store.load_params()
        known = params or stored
        network = known.name if known is not None else "?"
        report = VerifyReport(ok=True, path=Path(path), network=network)
        if stored is None:
            report.ok = False
            report.problems.append("the store records no network parameters (not a node's ledger yet)")
            return report
        if params is not None and params != stored:
            report.ok = False
            report.problems.append(f"the store holds {stored.describe()}, not {params.describe()}")
            return report
        # --- pruning (ledger/prune.py): a pruned store cannot be replayed; its kept parts are checked ---
        if PruneState.of(store).height:
            found = verify_pruned(store, stored, now)
            report.ok = not found.problems
            report.problems, report.unchecked = found.problems, found.unchecked
            report.height, report.tip, report.blocks = found.height, found.tip.hex(), found.blocks
            report.records, report.pending = found.records, len(store.load_pending())
            return report
        rows = store.raw_block_rows()
        pending = store.load_pending()
        finality = store.load_finality()
    pool = None
    presigned: Container[bytes] = ()
    if workers > 1 and rows:
        # Forked when this process runs one thread (the `ledger verify` command: no interpreter start, no imports);
        # spawned otherwise, since forking a process with threads (a node) can copy a lock held mid-operation.
        method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() \
            else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
        tasks = [(stored.name, [r[2] for r in rows[i:i + VERIFY_CHUNK_BLOCKS]])
                 for i in range(0, len(rows), VERIFY_CHUNK_BLOCKS)]
        results = pool.imap(verify_chunk, tasks)
    try:
        blocks: list[Block] = []
        damaged: list[tuple[int, str]] = []
        chunk_of: dict[bytes, int] = {}
        for i, (n, header, records) in enumerate(rows):
            try:
                block = Block.from_wire({"header": header, "records": msgpack.unpackb(records, raw=False)})
            except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
                damaged.append((n, str(exc)))
                continue
            blocks.append(block)
            for record in block.records:
                chunk_of[record.id] = i // VERIFY_CHUNK_BLOCKS
        del rows
        if pool is not None:
            presigned = _Presigned(results, chunk_of)
        chain = Chain(stored)
        refused = chain.load(blocks, now, trusted=False, finality=finality, presigned=presigned)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    for n, reason in damaged:
        report.ok = False
        report.problems.append(f"stored block row #{n} is damaged: {reason}")
    for block, reason in refused:
        report.ok = False
        report.problems.append(f"stored {block.header.describe()}: {reason}")
    mempool = Mempool(stored)
    for record in pending:
        try:
            mempool.add(record, chain, now)
        except LedgerError as exc:
            report.problems.append(f"pending record no longer valid (will be dropped): {exc}")
    report.height, report.tip, report.blocks = chain.height, chain.tip_hash.hex(), len(blocks)
    report.records = sum(len(b.records) for b in chain.main_blocks())
    report.pending = len(mempool)
    return report


# Accepted blocks written per transaction while a sync catches up (LocalLedger.batched). Each commit rewrites every
# page it touched, and the index pages of random keys (record ids, fingerprints) are touched by nearly every block:
# 256 a transaction writes less than half the bytes 64 did (bench/join_replay_bench.py, docs/benchmarks.md).
BATCH_BLOCKS = 256
CHECK_BLOCKS = 6    # newest main-chain blocks whose headers and bodies every start checks (docs/ledger.md)


class _Unsaved:
    """Accepted blocks and what they changed, not yet written (see :meth:`LocalLedger.batched`)."""

    def __init__(self) -> None:
        self.to_save: dict[bytes, Block] = {}
        self.deleted: list[bytes] = []
        self.dropped: set[bytes] = set()
        self.results: list[tuple[AddResult, float]] = []
        self.final_moved = self.became_tip = False

    def __len__(self) -> int:
        return len(self.to_save)

    def note(self, result: AddResult, now: float) -> None:
        self.results.append((result, now))
        gone = [*result.invalidated, *result.pruned]
        for h in gone:
            self.to_save.pop(h, None)
        self.deleted.extend(gone)
        self.dropped.update(gone)
        invalid = set(result.invalidated)
        self.to_save.update((b.hash, b) for b in result.accepted if b.hash not in invalid)
        self.final_moved |= result.final_moved
        self.became_tip |= result.became_tip


class LocalLedger:
    """The node's ledger (see the module docstring). All public methods are thread-safe."""

    def __init__(self, data_dir: Path, params: NetworkParams, *, recover: bool = False,
                 clock: Callable[[], float] = time.time, finality: FinalityPolicy | None = None,
                 checkpoint: tuple[int, bytes] | None = None) -> None:
        self.params = params
        self.finality = finality or FinalityPolicy()
        self._checkpoint = checkpoint
        self._parked_warned: dict[bytes, float] = {}
        self.data_dir = Path(data_dir)
        self.path = store_path(self.data_dir, params.name)
        self.clock = clock
        self.lock = threading.RLock()
        self.load_problems: list[str] = []
        self._block_listeners: list[BlockListener] = []
        self._record_listeners: list[RecordListener] = []
        self._on_mined: Callable[[Block], None] | None = None
        self._miner: Miner | None = None
        self._closed = False
        self._unsaved = _Unsaved()
        self._batch_thread: int | None = None
        self._pruned: PruneState | None = None
        self._store_check: threading.Thread | None = None
        self._stop_check = threading.Event()
        self._lock_file = self._take_process_lock()
        try:
            self.store = Store(self.path, recover=recover, owner=True)
            try:
                self._load(recover)
            except BaseException:
                self.store.close()
                raise
        except BaseException:
            self._release_process_lock()
            raise

    # --- startup -------------------------------------------------------------------------------------------

    def _take_process_lock(self) -> Any:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fh = open(lock_path, "a+b")
        except OSError as exc:    # a file where the directory should be, a directory where the lock should be
            raise StoreError(f"cannot take the lock {lock_path} of the ledger database: "
                             f"{exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise StoreError(f"another ledger node is already using {self.path} "
                                 "(stop it, or give this one another --data-dir)") from None
        return fh

    def _release_process_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def _load(self, recover: bool) -> None:
        if self.store.found_empty:
            problem = (f"{self.path} was an empty file (a crash right after it was created, or a lost chain); "
                       "starting a new ledger there, which will sync from peers")
            self.load_problems.append(problem)
            log.warning("%s", problem)
        stored = self.store.load_params()
        if stored is None:
            self.store.save_params(self.params)
        elif stored != self.params:
            raise StoreError(f"{self.path} holds {stored.describe()}, but this node was started for "
                             f"{self.params.describe()} (the difficulty only applies when a network is created; "
                             "drop --difficulty or use another --data-dir)")
        now = self.clock()
        self._pruned = PruneState.of(self.store)   # pruning: a damaged entry stops the start here (StoreError)
        self.pool = Mempool(self.params)
        finality = self.store.load_finality()
        if self._checkpoint is not None and finality is not None \
                and finality.get("checkpoint") not in (None, list(self._checkpoint)):
            raise StoreError(f"{self.path} was started from another checkpoint than "
                             f"{self._checkpoint[1].hex()[:16]}; use another --data-dir")
        empty = not self.store.has_blocks() and self.store.load_derived_meta() is None
        # Loading creates objects by the hundred thousand and frees none: the cyclic collector would rescan the
        # growing heap again and again (superlinear), so it waits until the load is done.
        collecting = gc.isenabled()
        gc.disable()
        try:
            why = None if empty else self._restore_checkpoint(finality, now)
            self.rebuilt_checkpoint = why
            if why is not None or empty:
                if why is not None:
                    log.warning("%s: %s; rebuilding it once by replaying the stored blocks", self.path, why)
                self._replay(finality, now)
        finally:
            if collecting:
                gc.enable()
        self.chain.track_changes = True
        self._save_finality()
        for parked in self.chain.parked_alerts():
            log.warning("stored %s; this node keeps its final history (accept it with 'ledger reorg --accept "
                        "%s' after checking it)", parked.describe(), parked.tip_hash.hex()[:16])
        for record in self.store.load_pending():
            try:
                # A bad signature on a stored record is damage to the file, not a record that aged out.
                record.verify_signatures(self.params.name)
            except LedgerError as exc:
                self.load_problems.append(f"stored pending record is damaged: {exc}")
                log.warning("dropping damaged stored pending record: %s", exc)
                continue
            try:
                self.pool.add(record, self.chain, now)
            except LedgerError as exc:
                # Expired, superseded or mined while the node was down: the normal life of a pending record.
                log.info("stored pending record dropped: %s", exc)
        self.store.remove_pending(r.id for r in self.store.load_pending() if r.id not in self.pool)
        self.pool.drain_changes()
        log.info("ledger %s loaded: height %d, %d pending records", self.params.name, self.chain.height,
                 len(self.pool))

    # --- listeners -----------------------------------------------------------------------------------------

    def add_listener(self, on_block: BlockListener | None = None, on_record: RecordListener | None = None) -> None:
        """Call ``on_block(block, result)`` for every accepted block and ``on_record(record)`` for every newly
        pending record, from the thread that caused it, after the lock is released."""
        with self.lock:
            if on_block is not None:
                self._block_listeners.append(on_block)
            if on_record is not None:
                self._record_listeners.append(on_record)

    def remove_listener(self, on_block: BlockListener | None = None, on_record: RecordListener | None = None) -> None:
        """Undo :meth:`add_listener` (a node that closes stops hearing about blocks and records)."""
        with self.lock:
            if on_block in self._block_listeners:
                self._block_listeners.remove(on_block)
            if on_record in self._record_listeners:
                self._record_listeners.remove(on_record)

    # --- records and blocks --------------------------------------------------------------------------------

    def submit_record(self, record: Record, now: float) -> bool:
        """Admit a record to the pending pool and persist it durably; False if already pending or mined.

        Raises :class:`LedgerError` if the record is invalid (the reason says why), :class:`StoreError` if it
        could not be persisted (then it is not pending either).
        """
        with self.lock:
            self._check_open()
            if not self.pool.add(record, self.chain, now):
                return False
            try:
                self._persist_pool()
            except StoreError:
                self.pool.discard(record.id)
                raise
            if self._miner is not None:
                self._miner.wake()
            listeners = list(self._record_listeners)
        for listener in listeners:
            listener(record)
        return True

    def receive_block(self, block: Block, now: float, *, source: str | None = None,
                      assume_valid: bool = False) -> AddResult:
        """Validate and add a block (from a peer or the miner); accepted blocks are persisted before return.
        ``source`` names the sender (e.g. the peer's address) in the warning about a parked branch.
        ``assume_valid`` skips the record signatures only (a block the joining node's agreed checkpoint commits
        to, checked later by ledger/assume_valid.py's background verification)."""
        return self.receive_blocks([block], now, source=source, assume_valid=assume_valid)[0]

    def receive_blocks(self, blocks: Sequence[Block], now: float, *, source: str | None = None,
                       assume_valid: bool = False) -> list[AddResult]:
        """Add several blocks (a sync batch, parents first) and persist everything they changed in one SQLite
        transaction before returning; one result per block. A crash leaves all of the batch stored or none of
        it, and the stored derived state always matches the stored blocks. Inside :meth:`batched` on this
        thread, the write waits for the batch (see there)."""
        with self.lock:
            self._check_open()
            results = []
            for block in blocks:
                result = self.chain.add_block(block, now, source=source, trusted=assume_valid)
                results.append(result)
                if result.status == "invalid":
                    log.info("refused %s: %s", block.header.describe(), result.reason)
                self._unsaved.note(result, now)
            deferred = self._batch_thread == threading.get_ident() and len(self._unsaved) < BATCH_BLOCKS
            notify = [] if deferred else self._flush()
        self._notify(notify)
        return results

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Blocks received on this thread inside the ``with`` are written together: one transaction per
        :data:`BATCH_BLOCKS` accepted blocks and one at the end (sync catching up). Until then a crash loses
        them together — the store always holds a valid prefix — and listeners hear of them only once written,
        so nothing is announced before it is on disk. Another thread's write flushes the batch first."""
        with self.lock:
            if self._batch_thread is not None:
                raise RuntimeError("batched() does not nest")
            self._batch_thread = threading.get_ident()
        try:
            yield
        finally:
            with self.lock:
                self._batch_thread = None
                notify = self._flush() if not self._closed else []
            self._notify(notify)

    def _flush(self) -> list[tuple[Block, AddResult]]:
        """Write what the accepted blocks changed (lock held); returns the listener calls to make afterwards."""
        unsaved, self._unsaved = self._unsaved, _Unsaved()
        changes = self.chain.take_changes()
        if unsaved.to_save or unsaved.deleted or changes or unsaved.final_moved:
            finality = self.chain.finality_state() if unsaved.became_tip or unsaved.final_moved else None
            derived = self._derived_delta(changes) if changes or unsaved.final_moved else None
            try:
                self.store.save_blocks(list(unsaved.to_save.values()), finality, derived, deleted=unsaved.deleted)
            except StoreError:
                # Kept for the next write (e.g. once the full disk has room): dropping them would leave blocks in
                # memory that no write ever stores, and a later block stored without its parent.
                self.chain.give_back_changes(changes)
                self._unsaved = unsaved
                raise
            self.chain.persisted()
        connected: list[Block] = []
        disconnected: list[Block] = []
        for result, now in unsaved.results:
            self._warn_parked(result, now)
            if result.became_tip:
                connected += result.connected
                disconnected[:0] = result.disconnected   # newest first, as each result lists them
        if unsaved.became_tip:
            # One pool update for the whole batch (it re-checks every pending record against the new tip): the
            # same pool as one update per block, since each of those judged the records against this final chain.
            returned = self.pool.on_reorg(connected, disconnected, self.chain, unsaved.results[-1][1])
            if disconnected:
                log.info("reorg: %d blocks disconnected, %d connected, %d records back in the pool",
                         len(disconnected), len(connected), len(returned))
            self._persist_pool()
            if self._miner is not None:
                self._miner.wake()
        return [(accepted, result) for result, _ in unsaved.results if result.status == "added"
                for accepted in result.accepted if accepted.hash not in unsaved.dropped]

    def _notify(self, calls: list[tuple[Block, AddResult]]) -> None:
        if not calls:
            return
        with self.lock:
            listeners = list(self._block_listeners)
        for block, result in calls:
            for listener in listeners:
                listener(block, result)

    def _warn_parked(self, result: AddResult, now: float) -> None:
        for parked in result.parked:
            # Once when a branch first outweighs the main chain, then at most once a minute while it grows.
            last = self._parked_warned.get(parked.fork_hash)
            if last is not None and now - last < PARKED_WARNING_INTERVAL:
                continue
            if len(self._parked_warned) >= 64:
                self._parked_warned.clear()
            self._parked_warned[parked.fork_hash] = now
            log.warning("PARKED %s. This node keeps its final history; check the branch and accept it only "
                        "deliberately: ledger reorg --accept %s", parked.describe(), parked.tip_hash.hex())

    # --- stored checkpoint (derived state) -------------------------------------------------------------------

    def _derived_delta(self, changes: ChainChanges, *, full: bool = False) -> DerivedDelta:
        """The stored derived state's changes: current values of what ``changes`` names (everything if ``full``)."""
        chain = self.chain
        bindings = chain.bindings
        delta = DerivedDelta(tip_height=chain.height, tip_hash=chain.tip_hash, reset=full,
                             undo_upto=chain.final_height, counts=dict(bindings.identities.status_counts))
        low = 1 if full else changes.main_from
        if low is not None:
            delta.main = [(h, chain.main_hash(h), chain.main_header_bytes(h)) for h in range(max(low, 1),
                                                                                          chain.height + 1)]
            for h in range(max(low, chain.final_height + 1, 1), chain.height + 1):
                undo = chain.undo_log(h)
                assert undo is not None
                delta.undo[h] = bindings.encode_undo(undo)
        if full:
            delta.record_loc = dict(chain.record_locations())
            delta.identities = {fp: state_row(st) for fp, st in bindings.identities.items()}
            delta.ips = dict(bindings.by_ip)
            delta.nicks = dict(bindings.by_nick)
            return delta
        for rid in changes.records:
            delta.record_loc[rid] = chain.record_location(rid)
        for code, key in changes.bindings:
            if code == 0:
                state = bindings.identities.get(key)
                delta.identities[key] = state_row(state) if state is not None else None
            elif code == 1:
                delta.ips[key] = bindings.by_ip.get(key)
            else:
                delta.nicks[key] = bindings.by_nick.get(key)
        return delta

    def _fetch_record(self, record_id: bytes) -> Record:
        """A main-chain record by id, read through the chain's cached block bodies (for restored bindings)."""
        loc = self.chain.record_location(record_id)
        block = self.chain.main_at(loc[0]) if loc is not None else None
        record = record_at(block, loc[1]) if loc is not None and block is not None else None
        if record is None or record.id != record_id:
            raise StoreError(f"record {record_id.hex()[:16]} of the stored binding state is not where the store "
                             f"says; run 'ledger verify' and restart (the checkpoint will be rebuilt)")
        return record

    def _restore_checkpoint(self, finality: dict[str, Any] | None, now: float) -> str | None:
        """Start from the stored derived state; returns why it cannot be used (then the caller replays)."""
        store = self.store
        meta = store.load_derived_meta()
        if meta is None:
            return "the store has no checkpoint of its derived state (written by an older version, or new)"
        try:
            low, top, top_hash = store.main_chain_ends()
            if top != meta["height"] or (top and (low != 1 or top_hash != meta["tip"])):
                return "the stored checkpoint does not match the stored main chain"
            if not store.whole_file_check_due:
                # The whole file was just read (an unclean shutdown): the linear checks cost little on top.
                problem = store.checkpoint_problem()
                if problem is not None:
                    return f"the stored checkpoint is inconsistent ({problem})"
            if finality is not None and finality.get("final_height", 0) > meta["height"]:
                return "the stored finality state is above the stored checkpoint"
            # Final history stays in the store (read when asked for); only the open part is held in memory.
            prefix = int(finality.get("final_height") or 0) if finality is not None else 0
            headers = [(header, block_hash) for _, block_hash, header in store.main_chain_rows(above=prefix)]
            by_ip = StoredMap(lambda key: store.binding_value("bind_ip", key), lambda: store.binding_rows("bind_ip"))
            by_nick = StoredMap(lambda key: store.binding_value("bind_nick", key),
                                lambda: store.binding_rows("bind_nick"))
            counts = meta.get("counts")
            if counts is None:   # a stamp written before the counts were kept: counted once
                counts = store.identity_counts()
            identities = StoredIdentityTable(store.identity_row, store.identity_rows, store.live_fps_from, counts,
                                             store.live_expiries, self._fetch_record)
            bindings = Bindings.restore(self.params, identities, by_ip, by_nick)
            undo = {h: bindings.decode_undo(blob) for h, blob in store.undo_rows().items()}
            record_loc = StoredMap(store.record_loc, store.record_loc_rows)
            chain = Chain(self.params, self.finality)
            if self._checkpoint is not None:
                chain.set_checkpoint(*self._checkpoint)
            chain.restore(headers, store, record_loc, bindings, undo, finality, now, prefix=prefix)
            self._check_last_blocks(chain, prefix)
        except (LedgerError, StoreError, ValueError, TypeError, KeyError, IndexError,
                msgpack.UnpackException) as exc:
            return f"the stored checkpoint is inconsistent ({exc})"
        self.chain = chain
        side, damaged = store.side_blocks()
        if damaged:
            for n, reason in damaged:
                self.load_problems.append(f"stored block row #{n} is damaged: {reason}")
                log.warning("dropping damaged stored block row #%d: %s", n, reason)
            store.delete_rows(n for n, _ in damaged)
        chain.track_changes = True
        refused = [(b, r.reason) for b in side for r in [chain.add_block(b, now, trusted=True)]
                   if r.status in ("invalid", "orphan")]
        self._drop_refused(side, refused)
        changes = chain.take_changes()
        # A stored side branch moved the main chain (e.g. the finality policy changed), or the stamp lacks the
        # identity counts (written by an older version): write them, so the next start reads them.
        if changes or "counts" not in meta:
            store.write_derived(self._derived_delta(changes), chain.finality_state())
            chain.persisted()
        return None

    @staticmethod
    def _check_last_blocks(chain: Chain, prefix: int) -> None:
        """The last :data:`CHECK_BLOCKS` main-chain blocks at or below the restored final height: each header
        hashes to its stored hash and links to the one before, and each body matches its header's Merkle root
        (blocks above ``prefix`` were checked by the restore). Raises :class:`LedgerError`/:class:`StoreError`."""
        low = max(1, chain.height - CHECK_BLOCKS + 1)
        for height in range(low, min(prefix, chain.height) + 1):
            block = chain.main_at(height)   # a body read is checked against its header's Merkle root
            if block is None or BlockHeader.unpack(block.header.packed).hash != block.hash \
                    or block.header.prev_hash != chain.main_hash(height - 1) or block.header.height != height:
                raise LedgerError(f"stored main-chain block {height} does not match its header")

    def _drop_refused(self, blocks: Sequence[Block], refused: list[tuple[Block, str]]) -> None:
        if refused:
            for block, reason in refused:
                self.load_problems.append(f"stored {block.header.describe()} refused: {reason}")
                log.warning("dropping stored %s: %s", block.header.describe(), reason)
            self.store.delete_blocks(b.hash for b, _ in refused)
        refused_hashes = {b.hash for b, _ in refused}
        dropped = [b.hash for b in blocks if b.hash not in self.chain and b.hash not in refused_hashes]
        if dropped:  # parked branches beyond the bounds, e.g. after the policy was tightened
            self.store.delete_blocks(dropped)

    def _replay(self, finality: dict[str, Any] | None, now: float) -> None:
        """Rebuild the chain by replaying every stored block, then rewrite the stored derived state."""
        pruned = PruneState.of(self.store).height
        if pruned:
            raise StoreError(f"{self.path} is pruned up to block {pruned}, so its chain cannot be rebuilt by replaying "
                             f"its blocks; move it aside and join again through a peer that keeps every block: "
                             f"mv '{self.path}' '{self.path}.pruned'")
        self.chain = Chain(self.params, self.finality)
        blocks, damaged = self.store.load_blocks_lenient()
        if damaged:
            for n, reason in damaged:
                self.load_problems.append(f"stored block row #{n} is damaged: {reason}")
                log.warning("dropping damaged stored block row #%d: %s", n, reason)
            self.store.delete_rows(n for n, _ in damaged)
        if self._checkpoint is not None:
            self.chain.set_checkpoint(*self._checkpoint)
        refused = self.chain.load(blocks, now, trusted=True, finality=finality)
        self._drop_refused(blocks, refused)
        self.chain.track_changes = True
        self.chain.take_changes()
        self.store.write_derived(self._derived_delta(ChainChanges(), full=True), self.chain.finality_state())

    def _save_finality(self) -> None:
        if self._unsaved.results:
            self._unsaved.final_moved = True  # written with the batch: never name a block not yet stored
            return
        self.store.save_finality(self.chain.finality_state())

    # --- finality ------------------------------------------------------------------------------------------

    def checkpoint_answer(self, height: int | None, now: float) -> dict[str, Any]:
        """Fields of a ``checkpoint`` answer: the newest final block, and the final main-chain block at
        ``height`` when there is one."""
        with self.lock:
            if self.chain.advance_finality(now):
                self._save_finality()
            answer: dict[str, Any] = {"final_height": self.chain.final_height, "final_hash": self.chain.final_hash}
            if height is not None and self.chain.is_final(height):
                block = self.chain.main_at(height)
                assert block is not None
                answer.update(height=height, hash=block.hash)
            return answer

    def block_standing(self, height: int, block_hash: bytes) -> tuple[str, ParkedBranch | None]:
        """Where a block someone else reports stands here: ``main`` (our main chain holds it at ``height``),
        ``parked`` (in a branch conflicting with our final history: the branch is returned), ``conflict`` (our
        main chain holds another block at ``height``) or ``beyond`` (above our tip and unknown here)."""
        with self.lock:
            chain = self.chain
            branch = chain.parked_branch_of(block_hash)
            if branch is not None:
                return "parked", branch
            if height > chain.height:
                return "beyond", None
            return ("main" if chain.main_hash(height) == block_hash else "conflict"), None

    def parked_branches(self) -> list[ParkedBranch]:
        """Branches that conflict with this node's final history, heaviest first."""
        with self.lock:
            return self.chain.parked_branches()

    def accept_branch(self, hash_prefix: str, now: float) -> AddResult:
        """The operator deliberately accepts the parked branch whose tip hash starts with ``hash_prefix`` (hex, at
        least 8 digits), or that holds the block with that full hash: final history is reopened down to its fork
        point and the branch becomes the main chain if it is valid and has the most work. Raises
        :class:`LedgerError`."""
        prefix = hash_prefix.strip().lower()
        if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
            raise LedgerError("give at least 8 hex digits of a parked block's hash (see 'ledger reorg --list')")
        with self.lock:
            self._check_open()
            notify = self._flush()  # a batch in progress is written first: the reorg below writes on top of it
            matches = {b.tip_hash for b in self.chain.parked_branches() if b.tip_hash.hex().startswith(prefix)}
            if not matches and len(prefix) == 64 and self.chain.parked_branch_of(bytes.fromhex(prefix)):
                matches = {bytes.fromhex(prefix)}  # any block of a parked branch, e.g. as named in a warning
            if not matches:
                raise LedgerError(f"no parked branch has a tip starting with {prefix} "
                                  "(see 'ledger reorg --list')")
            if len(matches) > 1:
                raise LedgerError(f"{prefix} matches several parked branches; give more digits")
            tip = matches.pop()
            fork = self.chain.fork_height(tip)
            pruned = PruneState.of(self.store).height
            if fork is not None and fork < pruned:
                raise LedgerError(f"the branch forks at block {fork}, below block {pruned} up to which this node "
                                  "pruned its history: it cannot reopen that history (join again through a peer "
                                  "that keeps every block to follow the branch)")
            if fork is not None and not self.chain.can_disconnect_to(fork):
                # Final blocks restored from the checkpoint carry no undo logs: replay to reopen them.
                log.warning("reopening final history below the stored checkpoint: replaying the stored blocks")
                self._replay(self.store.load_finality(), now)
                self.chain.track_changes = True
            before = self.chain.parked_branch_of(tip)
            result = self.chain.accept_branch(tip, now)
            changes = self.chain.take_changes()
            try:
                self.store.save_blocks([], self.chain.finality_state(), self._derived_delta(changes),
                                       deleted=[*result.invalidated, *result.pruned])
            except StoreError:
                self.chain.give_back_changes(changes)
                raise
            self.chain.persisted()
            if result.became_tip:
                self.pool.on_reorg(result.connected, result.disconnected, self.chain, now)
                self._persist_pool()
            log.warning("operator accepted %s: main chain now at height %d (tip %s), %d blocks disconnected, "
                        "%d connected", before.describe() if before else tip.hex()[:16], self.chain.height,
                        self.chain.tip_hash.hex()[:16], len(result.disconnected), len(result.connected))
            listeners = list(self._block_listeners)
        self._notify(notify)
        for block in result.connected:
            for listener in listeners:
                listener(block, result)
        return result

    def _persist_pool(self) -> None:
        changes = self.pool.drain_changes()
        self.store.update_pending(changes.saved, changes.removed)

    def revalidate_pool(self, now: float) -> None:
        """Drop pending records that expired or became invalid (call now and then)."""
        with self.lock:
            self.pool.revalidate(self.chain, now)
            self._persist_pool()

    # --- queries -------------------------------------------------------------------------------------------

    def lookup(self, by: LookupKind, value: str | bytes, now: float) -> LookupAnswer | None:
        """The live binding for an IP, nickname or fingerprint (bytes or hex), with its inclusion proof."""
        with self.lock:
            bindings = self.chain.bindings
            if by == "ip":
                info = bindings.lookup_ip(str(value), now)
            elif by == "nick":
                info = bindings.lookup_nickname(str(value), now)
            elif by == "fp":
                fp = parse_fingerprint(value)
                info = bindings.lookup_fingerprint(fp, now) if fp is not None else None
            else:
                raise ValueError(f"unknown lookup kind {by!r}")
            if info is None or info.height is None:
                return None
            proof = self.chain.proof(info.record.id)
            assert proof is not None  # a binding's record is on the main chain
            header, index, path = proof
            return LookupAnswer(info.record, header, index, path, info.height,
                                self.chain.confirmations(info.height))

    def latest_record(self, fingerprint: bytes, now: float) -> Record | None:
        """The identity's newest record, pending or mined (None if the key never appeared)."""
        with self.lock:
            state = self.pool.state(self.chain, now).identity(fingerprint)
            return state.record if state is not None else None

    def next_sequence(self, fingerprint: bytes, now: float) -> tuple[int, bytes]:
        """``(seq, prev)`` for the identity's next record, counting pending records."""
        latest = self.latest_record(fingerprint, now)
        return (0, ZERO_HASH) if latest is None else (latest.seq + 1, latest.id)

    def mined_record(self, fingerprint: bytes) -> Record | None:
        """The identity's newest mined record, live or not."""
        with self.lock:
            state = self.chain.bindings.identity(fingerprint)
            return state.record if state is not None else None

    def pending_records(self) -> list[Record]:
        with self.lock:
            return self.pool.records()

    def has_block(self, block_hash: bytes) -> bool:
        with self.lock:
            return block_hash in self.chain or self.chain.is_orphan(block_hash)

    def get_block(self, block_hash: bytes) -> Block | None:
        with self.lock:
            return self.chain.get(block_hash)

    def get_blocks(self, hashes: Sequence[bytes]) -> list[Block]:
        """The accepted blocks among ``hashes`` this node can serve in full, in the order asked (a main-chain
        block at or below the prune height is not served, even while its full body is still cached)."""
        with self.lock:
            pruned = self.pruned.height
            return [b for b in (self.chain.get(h) for h in hashes if isinstance(h, bytes)) if b is not None
                    and not isinstance(b, PrunedBlock) and not (b.height <= pruned and self.chain.is_main(b.hash))]

    # --- pruning (ledger/prune.py) -----------------------------------------------------------------------------

    @property
    def pruned(self) -> PruneState:
        """How far the store is pruned (read once at start, then kept up to date by :meth:`prune_step`)."""
        state = self._pruned
        if state is None:
            with self.lock:
                state = self._pruned = PruneState.of(self.store)
        return state

    def prune_step(self, keep: int) -> tuple[PruneState, int] | None:
        """One pruning step (ledger/prune.py) under the lock: ``(state, target height)``. None while a sync batch
        is unwritten (the stored binding state must be current) or the ledger is closed."""
        with self.lock:
            if self._closed or self._unsaved.results:
                return None
            if self.chain.advance_finality(self.clock()):
                self._save_finality()
            target = prune_target(self.chain.final_height, keep)
            state = prune_step(self.store, target)
            self._pruned = state
            return state, target

    def main_at(self, height: int) -> Block | None:
        with self.lock:
            return self.chain.main_at(height)

    def locator(self) -> list[bytes]:
        with self.lock:
            return self.chain.locator()

    def headers_after(self, locator: Sequence[bytes], limit: int) -> list[BlockHeader]:
        with self.lock:
            return self.chain.headers_after(locator, limit)

    def check_headers(self, headers: Sequence[BlockHeader], now: float) -> int:
        """See :meth:`Chain.check_headers`: validates a header batch, returns the chain work it would reach."""
        with self.lock:
            return self.chain.check_headers(headers, now)

    def tip_info(self) -> tuple[int, bytes, int]:
        """``(height, tip hash, cumulative work)`` read atomically."""
        with self.lock:
            return self.chain.height, self.chain.tip_hash, self.chain.tip_work

    @property
    def height(self) -> int:
        with self.lock:
            return self.chain.height

    def status(self) -> dict[str, Any]:
        """Height, tip, work, pending count, mining state, finality and parked branches: plain values for
        display or JSON (``alerts`` holds one plain sentence per parked branch heavier than the main chain). Every
        figure comes from a maintained count or index (O(log n) at most), so asking is cheap however many
        identities exist."""
        with self.lock:
            if self.chain.advance_finality(self.clock()):
                self._save_finality()
            tip = self.chain.tip
            parked = self.chain.parked_branches()
            miner = self._miner
            return {
                "network": self.params.name,
                "difficulty_bits": self.params.difficulty_bits,
                "genesis": self.params.genesis_hash.hex(),
                "height": self.chain.height,
                "tip": self.chain.tip_hash.hex(),
                "tip_time": tip.timestamp,
                "cumulative_work": self.chain.tip_work,
                "pending": len(self.pool),
                "live_bindings": self.chain.bindings.counts(self.clock())["live_bindings"],
                "index_work": self.chain.bindings.identities.work(),
                "mining": bool(miner is not None and miner.mining),
                "hashrate": miner.hashrate if miner is not None else 0.0,
                "blocks_mined": miner.blocks_found if miner is not None else 0,
                "store": str(self.path),
                "final_height": self.chain.final_height,
                "final_hash": self.chain.final_hash.hex(),
                "finality": {"depth": self.finality.depth, "seconds": self.finality.seconds},
                "checkpoint": None if self.chain.checkpoint is None else {
                    "height": self.chain.checkpoint[0], "hash": self.chain.checkpoint[1].hex()},
                "parked": [b.to_json() for b in parked],
                "pruned": self.pruned.to_meta(),
                "alerts": [f"{b.describe()}; this node keeps its final history (to switch deliberately: "
                           f"ledger reorg --accept {b.tip_hash.hex()[:16]})" for b in parked if b.heavier],
            }

    def verify_store(self, now: float | None = None) -> VerifyReport:
        """Revalidate this node's store from genesis; also checks it agrees with the chain in memory."""
        with self.lock:
            report = verify_store(self.path, self.params, self.clock() if now is None else now)
            if report.ok and report.tip != self.chain.tip_hash.hex():
                report.ok = False
                report.problems.append("the stored chain's tip differs from the tip in memory")
            return report

    # --- mining --------------------------------------------------------------------------------------------

    def start_mining(self, on_block: Callable[[Block], None] | None = None,
                     on_rate: Callable[[float], None] | None = None) -> None:
        """Start the miner thread (mines only while records are pending); ``on_block`` hears of each block
        this node mined, after it was accepted and stored."""
        with self.lock:
            self._check_open()
            if self._miner is not None:
                raise RuntimeError("the miner is already running")
            self._on_mined = on_block
            self._miner = Miner(self._template, self._mined, on_rate=on_rate,
                                name=f"ledger-miner-{self.params.name}")
            self._miner.start()

    def stop_mining(self) -> None:
        with self.lock:
            miner, self._miner = self._miner, None
        if miner is not None:
            miner.close()

    @property
    def mining(self) -> bool:
        return self._miner is not None

    def block_template(self, now: float) -> Block | None:
        """The block the miner would work on at ``now`` (None when nothing is pending)."""
        with self.lock:
            if self._closed:
                return None
            at = max(int(now), self.chain.median_time_past() + 1)
            records = self.pool.select(self.chain, at)
            self._persist_pool()  # select may have dropped expired records
            if not records:
                return None
            return self.chain.template(records, at)

    def _template(self) -> Block | None:
        return self.block_template(self.clock())

    def _mined(self, block: Block) -> None:
        try:
            result = self.receive_block(block, self.clock())
        except StoreError as exc:   # a local fault (a full disk): the miner thread goes on, the write is retried
            log.error("%s; the block this node mined (%s) is kept in memory and written with the next change "
                      "once the database can be written again", exc, block.header.describe())
            return
        if result.status == "added" and self._on_mined is not None:
            self._on_mined(block)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def check_store_in_background(self, on_damage: Callable[[str], None]) -> None:
        """Run the whole-file check an open after a clean shutdown left owed (:attr:`Store.whole_file_check_due`)
        in a thread this ledger owns (joined by :meth:`close`). If it finds damage it logs it, no clean-shutdown
        mark is written, and ``on_damage(message)`` is called once with a plain message: the caller stops
        serving. Call once the node listens; does nothing if the open already checked the whole file."""
        with self.lock:
            self._check_open()
            if not self.store.whole_file_check_due or self._store_check is not None:
                return
            self._store_check = threading.Thread(target=self._run_store_check, args=(on_damage,),
                                                 name=f"ledger-store-check-{self.params.name}")
            self._store_check.start()

    def _run_store_check(self, on_damage: Callable[[str], None]) -> None:
        started = time.monotonic()
        try:
            problem = self.store.check_whole_file(self._stop_check)
        except StoreError as exc:   # stopped, or could not run (I/O, locked): the check stays owed
            if not self._stop_check.is_set():
                log.warning("%s; it stays owed to the next start", exc)
            return
        except Exception as exc:  # a programming error: logged, and the session fails like on damage
            log.exception("the background check of %s failed", self.path)
            problem = self.store.damaged = f"the check of the ledger database {self.path} failed ({exc})"
        if problem is None:
            log.info("the ledger database %s is intact (whole-file check in %.1f s)", self.path,
                     time.monotonic() - started)
            return
        message = (f"{problem}; stopping. Run 'ledger verify', or move it aside and start again to resync the "
                   f"chain from peers: mv '{self.path}' '{self.path}.bad'")
        log.error("%s", message)
        on_damage(message)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the ledger is closed")

    def close(self) -> None:
        """Stop the miner and the store check, close the store (with the clean-shutdown mark) and release the
        data-directory lock. Idempotent."""
        self.stop_mining()
        checker = self._store_check
        if checker is not None and checker is not threading.current_thread():
            self._stop_check.set()
            checker.join()
        with self.lock:
            if self._closed:
                return
            self._closed = True
            if self._unsaved.results:
                try:
                    self._flush()   # blocks of an open batch: stored, but no longer announced
                except StoreError as exc:
                    log.warning("closing the ledger lost the last unwritten blocks: %s", exc)
            self.store.close()
            self._release_process_lock()

    def __enter__(self) -> LocalLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe_record(self, record: Record) -> str:
        return f"{record.describe()} ({crypto.format_fingerprint(record.fingerprint)})"
