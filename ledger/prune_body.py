"""The stored form of a pruned block body (docs/ledger.md, "Pruning").

A pruned main-chain block keeps its header and, in place of each record no rule needs any more, only that
record's 32-byte id: the stored record list mixes record maps (kept) and ids (pruned). The ids keep the Merkle
root checkable and every kept record's Merkle path computable; the dropped records themselves are gone, so the
block can no longer be served to a peer or replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ledger.blocks import HEADER_SIZE, MAX_WIRE_RECORDS, Block, BlockHeader
from ledger.errors import LedgerError
from ledger.records import Record

ID_LEN = 32


@dataclass(frozen=True)
class PrunedBlock(Block):
    """A main-chain block with some records dropped: ``records`` holds only the kept ones (in block order),
    ``ids`` every record id in Merkle-tree order and ``kept_at`` the index of each kept record in ``ids``."""

    ids: tuple[bytes, ...] = ()
    kept_at: tuple[int, ...] = ()

    @cached_property
    def record_ids(self) -> list[bytes]:
        return list(self.ids)

    @property
    def size(self) -> int:
        """Bytes of what is kept (header and kept records); the block's original size is no longer known."""
        return HEADER_SIZE + sum(r.size for r in self.records)

    @property
    def pruned_count(self) -> int:
        return len(self.ids) - len(self.records)

    def to_wire(self) -> dict[str, Any]:
        raise LedgerError(f"{self.header.describe()} was pruned here: its full body cannot be served")


def record_at(block: Block, index: int) -> Record | None:
    """The record at ``index`` of a block in Merkle-tree order; None when it is out of range or was pruned."""
    if isinstance(block, PrunedBlock):
        try:
            return block.records[block.kept_at.index(index)]
        except ValueError:
            return None
    return block.records[index] if 0 <= index < len(block.records) else None


def parse_stored_body(header: bytes, items: Any) -> Block:
    """A stored block from its packed header and stored record list: a :class:`Block` when every record is
    there, a :class:`PrunedBlock` when some are ids only. :class:`LedgerError` if malformed."""
    if not isinstance(items, list) or not any(isinstance(item, bytes) for item in items):
        return Block.from_wire({"header": header, "records": items})
    parsed = BlockHeader.unpack(header)
    if len(items) > MAX_WIRE_RECORDS:
        raise LedgerError(f"{parsed.describe()} has {len(items)} records, far over any limit")
    records: list[Record] = []
    ids: list[bytes] = []
    kept_at: list[int] = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            if len(item) != ID_LEN:
                raise LedgerError(f"{parsed.describe()}, pruned record {i}: an id must be {ID_LEN} bytes")
            ids.append(item)
            continue
        try:
            record = Record.from_wire(item)
        except LedgerError as exc:
            raise LedgerError(f"{parsed.describe()}, record {i}: {exc}") from None
        records.append(record)
        ids.append(record.id)
        kept_at.append(i)
    return PrunedBlock(parsed, tuple(records), tuple(ids), tuple(kept_at))
