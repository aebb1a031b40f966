"""Block headers and blocks.

A header packs to a fixed 125-byte big-endian layout (nonce last, so a miner hashes a fixed prefix once and
only appends the nonce)::

    version u32 | network_id 32 | height u64 | prev_hash 32 | merkle_root 32 | timestamp u64 | target_bits u8
    | nonce u64

The block hash is a single SHA-256 of the packed header. Proof of work: the hash read as a big-endian integer
is below ``2**(256 - target_bits)``; the work a header represents is ``2**target_bits`` (the expected number
of hashes to find it). On the wire a block is ``{"header": <125 bytes>, "records": [record maps]}``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from ledger.errors import LedgerError
from ledger.merkle import merkle_root
from ledger.records import Record

HEADER_FORMAT = struct.Struct(">I32sQ32s32sQBQ")
HEADER_SIZE = HEADER_FORMAT.size
NONCE_SIZE = 8
MAX_NONCE = 2**64 - 1
MAX_WIRE_RECORDS = 10_000   # hard cap before parsing; the network's max_block_records is checked by the chain


def target_for(target_bits: int) -> int:
    """Largest-plus-one hash value meeting ``target_bits``: valid hashes are ``< 2**(256 - target_bits)``."""
    return 1 << (256 - target_bits)


def work_for(target_bits: int) -> int:
    """Expected hashes to meet ``target_bits``: the work a header adds to its chain."""
    return 1 << target_bits


def more_work(a: int, b: int) -> bool:
    """True if cumulative work ``a`` is strictly more than ``b`` (equal work: see :func:`chain_preference`)."""
    return a > b


def chain_preference(work: int, tip_hash: bytes) -> tuple[int, int]:
    """Fork-choice sort key of a chain: most cumulative work first; between chains of equal work, the one
    whose tip hash is lower. The tie-break is deterministic so that every node settles on the same tip without
    waiting for another block (blocks are only mined while records are pending)."""
    return work, -int.from_bytes(tip_hash, "big")


def better_chain(work_a: int, hash_a: bytes, work_b: int, hash_b: bytes) -> bool:
    """True if the chain (``work_a``, tip ``hash_a``) is preferred over (``work_b``, ``hash_b``)."""
    return chain_preference(work_a, hash_a) > chain_preference(work_b, hash_b)


@dataclass(frozen=True)
class BlockHeader:
    """A block header; see the module docstring for the packed layout."""

    version: int
    network_id: bytes
    height: int
    prev_hash: bytes
    merkle_root: bytes
    timestamp: int
    target_bits: int
    nonce: int

    def pack(self) -> bytes:
        try:
            return HEADER_FORMAT.pack(self.version, self.network_id, self.height, self.prev_hash, self.merkle_root,
                                      self.timestamp, self.target_bits, self.nonce)
        except struct.error as exc:
            raise LedgerError(f"block header field out of range: {exc}") from None

    @cached_property
    def packed(self) -> bytes:
        return self.pack()

    @classmethod
    def unpack(cls, data: Any) -> BlockHeader:
        """Parse a packed header; :class:`LedgerError` unless it is exactly :data:`HEADER_SIZE` bytes."""
        if not isinstance(data, bytes) or len(data) != HEADER_SIZE:
            size = len(data) if isinstance(data, bytes) else type(data).__name__
            raise LedgerError(f"a block header must be {HEADER_SIZE} bytes, got {size}")
        header = cls(*HEADER_FORMAT.unpack(data))
        header.__dict__["packed"] = data  # already canonical: every byte string of this size unpacks and repacks
        return header

    @cached_property
    def hash(self) -> bytes:
        return hashlib.sha256(self.packed).digest()

    @property
    def work(self) -> int:
        return work_for(self.target_bits)

    @property
    def target(self) -> int:
        return target_for(self.target_bits)

    def meets_target(self) -> bool:
        return int.from_bytes(self.hash, "big") < self.target

    def with_nonce(self, nonce: int) -> BlockHeader:
        return replace(self, nonce=nonce)

    def describe(self) -> str:
        return f"block {self.height} ({self.hash.hex()[:16]})"


@dataclass(frozen=True)
class Block:
    """A header and its records (in Merkle-tree order)."""

    header: BlockHeader
    records: tuple[Record, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.records, tuple):
            object.__setattr__(self, "records", tuple(self.records))

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @cached_property
    def record_ids(self) -> list[bytes]:
        return [r.id for r in self.records]

    def computed_merkle_root(self) -> bytes:
        return merkle_root(self.record_ids)

    @cached_property
    def size(self) -> int:
        """Bytes counted against the network's block size limit: header plus canonical records (asked several
        times per block by a sync: the download's byte budget and the block rules)."""
        return HEADER_SIZE + sum(r.size for r in self.records)

    def to_wire(self) -> dict[str, Any]:
        return {"header": self.header.packed, "records": [r.to_wire() for r in self.records]}

    @classmethod
    def from_wire(cls, data: Any) -> Block:
        """Parse a block from a peer or the store; :class:`LedgerError` if malformed (not yet validated)."""
        if not isinstance(data, dict):
            raise LedgerError("a block should be a map")
        header = BlockHeader.unpack(data.get("header"))
        records = data.get("records")
        if not isinstance(records, list):
            raise LedgerError(f"{header.describe()} has no record list")
        if len(records) > MAX_WIRE_RECORDS:
            raise LedgerError(f"{header.describe()} has {len(records)} records, far over any limit")
        parsed = []
        for i, r in enumerate(records):
            try:
                parsed.append(Record.from_wire(r))
            except LedgerError as exc:
                raise LedgerError(f"{header.describe()}, record {i}: {exc}") from None
        return cls(header, tuple(parsed))

    @classmethod
    def assemble(cls, template: BlockHeader, records: Sequence[Record]) -> Block:
        """A block of ``records`` with the header's Merkle root filled in."""
        records = tuple(records)
        return cls(replace(template, merkle_root=merkle_root([r.id for r in records])), records)
