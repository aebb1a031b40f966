"""The pending pool: records waiting to be mined, all valid together on top of the current tip.

Records are kept in arrival order and applied, in that order, to a copy-on-write overlay of the chain's
binding state, so a record is accepted only if it is valid after everything already pending: an identity may
queue seq 3 after a pending seq 2, and of two conflicting claims (same IP or nickname by different keys) the
first seen wins. Any prefix of the pool is therefore a valid block body.

When the chain moves (:meth:`Mempool.on_reorg`), records mined in connected blocks leave the pool, records of
disconnected blocks that did not make it into the new chain come back (ahead of the others, in chain order),
and the overlay is rebuilt, dropping whatever the new chain made invalid. Every addition and removal is
reported by :meth:`Mempool.drain_changes` so a store can mirror the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.bindings import Bindings
from ledger.blocks import HEADER_SIZE, Block
from ledger.chain import Chain
from ledger.errors import LedgerError
from ledger.params import NetworkParams
from ledger.records import Record

log = logging.getLogger(__name__)
DEFAULT_MAX_RECORDS = 5000
MAX_PENDING_PER_IDENTITY = 8   # one key cannot fill the pool (and every block) with its own updates


@dataclass(frozen=True)
class PoolChanges:
    """Net changes since the last drain: ``saved`` records entered the pool, ``removed`` ids left it."""

    saved: list[Record]
    removed: list[bytes]


class Mempool:
    """Pending records valid on top of the tip (see the module docstring). Not thread-safe: the owner locks."""

    def __init__(self, params: NetworkParams, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.params = params
        self.max_records = max_records
        self._records: dict[bytes, Record] = {}
        self._state: Bindings | None = None
        self._state_tip: bytes | None = None
        self._changes: dict[bytes, Record | None] = {}
        self._per_identity: dict[bytes, int] = {}   # pending records per key fingerprint

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: bytes) -> bool:
        return record_id in self._records

    def get(self, record_id: bytes) -> Record | None:
        return self._records.get(record_id)

    def records(self) -> list[Record]:
        """Pending records in pool order."""
        return list(self._records.values())

    def add(self, record: Record, chain: Chain, now: float) -> bool:
        """Admit ``record`` if valid after the tip and everything pending.

        Returns False if it is already pending or mined; raises :class:`LedgerError` (with the reason) if it
        is invalid or the pool is full.
        """
        if record.id in self._records or chain.has_record(record.id):
            return False
        if len(self._records) >= self.max_records:
            raise LedgerError(f"the pending pool is full ({self.max_records} records); try again after the next block")
        state = self.state(chain, now)
        if self._per_identity.get(record.fingerprint, 0) >= MAX_PENDING_PER_IDENTITY:
            raise LedgerError(f"{record.describe()}: this key already has {MAX_PENDING_PER_IDENTITY} records waiting "
                              "to be mined; send it again after the next block")
        record.verify_signatures(self.params.name)
        state.apply(record, int(now), None, None, None, chain.median_time_past())
        self._records[record.id] = record
        self._changes[record.id] = record
        self._per_identity[record.fingerprint] = self._per_identity.get(record.fingerprint, 0) + 1
        return True

    def discard(self, record_id: bytes) -> None:
        """Forget a pending record (e.g. when it could not be persisted)."""
        record = self._records.pop(record_id, None)
        if record is not None:
            self._changes.pop(record_id, None)
            self._state = None
            self._per_identity[record.fingerprint] -= 1

    def state(self, chain: Chain, now: float) -> Bindings:
        """Binding state after the tip and all pending records (rebuilt if the tip moved since last use)."""
        if self._state is None or self._state_tip != chain.tip_hash:
            self._rebuild(chain, now)
        assert self._state is not None
        return self._state

    def select(self, chain: Chain, at: float, limit: int | None = None) -> list[Record]:
        """Records for the next block with timestamp ``at``: a prefix of the pool, revalidated at ``at``,
        within the network's record-count and size limits."""
        self._rebuild(chain, at)
        limit = self.params.max_block_records if limit is None else min(limit, self.params.max_block_records)
        budget = self.params.max_block_bytes - HEADER_SIZE
        chosen: list[Record] = []
        for record in self._records.values():
            if len(chosen) >= limit or record.size > budget:
                break
            chosen.append(record)
            budget -= record.size
        return chosen

    def on_reorg(self, connected: Sequence[Block], disconnected: Sequence[Block], chain: Chain,
                 now: float) -> list[Record]:
        """Follow a move of the main chain; returns the orphaned records that came back to the pool."""
        for block in connected:
            for record in block.records:
                if self._records.pop(record.id, None) is not None:
                    self._changes[record.id] = None
        returned: list[Record] = []
        for block in reversed(disconnected):  # oldest first, as they were mined
            for record in block.records:
                if not chain.has_record(record.id) and record.id not in self._records:
                    returned.append(record)
        if returned:
            rest = self._records
            self._records = {r.id: r for r in returned}
            self._records.update(rest)
            for record in returned:
                self._changes[record.id] = record
        self._rebuild(chain, now)
        return [r for r in returned if r.id in self._records]

    def revalidate(self, chain: Chain, now: float) -> None:
        """Drop records that expired or became invalid by ``now``."""
        self._rebuild(chain, now)

    def drain_changes(self) -> PoolChanges:
        """Net additions and removals since the previous call."""
        changes, self._changes = self._changes, {}
        saved = [r for r in changes.values() if r is not None]
        removed = [rid for rid, r in changes.items() if r is None]
        return PoolChanges(saved, removed)

    def _rebuild(self, chain: Chain, now: float) -> None:
        state = chain.bindings.overlay()
        lapse_at = chain.median_time_past()  # the next block judges lapsed bindings by the tip's median time past
        kept: dict[bytes, Record] = {}
        for record_id, record in self._records.items():
            if len(kept) >= self.max_records:
                self._changes[record_id] = None
                continue
            try:
                if chain.has_record(record_id):
                    raise LedgerError("already mined")
                record.verify_signatures(self.params.name)
                state.apply(record, int(now), None, None, None, lapse_at)
            except LedgerError as exc:
                log.info("pending record dropped: %s", exc)
                self._changes[record_id] = None
                continue
            kept[record_id] = record
        self._records = kept
        self._per_identity = {}
        for record in kept.values():
            self._per_identity[record.fingerprint] = self._per_identity.get(record.fingerprint, 0) + 1
        self._state = state
        self._state_tip = chain.tip_hash
