"""Lookups by IP, nickname or fingerprint: reading a query, and answering it on a node with a proof.

A query is auto-detected: an IP address is an IP; 8–64 hex digits (spaces and colons allowed) are a
fingerprint or a prefix of one, falling back to a nickname of that spelling; anything else is a nickname.
A node answers with the live binding's record, the header of its block and the record's Merkle path
(:class:`LookupAnswer`); the light client checks all of it.

This module is what the light client (``ledger lookup``, every chat node) imports of the node's side, so it
imports no store, chain or pool: the node's :class:`~ledger.local_ledger.LocalLedger` only as a type.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from ledger.blocks import BlockHeader
from ledger.errors import LedgerError
from ledger.merkle import verify_merkle_path
from ledger.protocol import LOOKUP_KINDS
from ledger.records import Record
from p2pchat.foundation.addresses import normalize_ip
from p2pchat.foundation.errors import AddressError

if TYPE_CHECKING:
    from ledger.local_ledger import LocalLedger

MIN_FP_PREFIX = 8
FP_HEX_LEN = 64
_HEX = set(string.hexdigits)


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class LookupAnswer:
    """A binding with its proof: the record, the header of its block, its index and Merkle path."""

    record: Record
    header: BlockHeader
    index: int
    path: list[bytes]
    height: int
    confirmations: int

    def verify_proof(self) -> None:
        """Raise :class:`LedgerError` unless the Merkle path puts the record in the header's block.
        (The caller still checks the header against the headers it holds.)"""
        if self.header.height != self.height:
            raise LedgerError(f"lookup answer names height {self.height} but carries {self.header.describe()}")
        if not verify_merkle_path(self.record.id, self.index, self.path, self.header.merkle_root):
            raise LedgerError(f"the record is not in {self.header.describe()} (Merkle proof fails)")

    def to_wire(self) -> dict[str, Any]:
        return {"record": self.record.to_wire(), "header": self.header.packed, "index": self.index,
                "path": list(self.path), "height": self.height, "confirmations": self.confirmations}

    @classmethod
    def from_wire(cls, data: Any) -> LookupAnswer:
        if not isinstance(data, dict):
            raise LedgerError("a lookup answer should be a map")
        record = Record.from_wire(data.get("record"))
        header = BlockHeader.unpack(data.get("header"))
        index, path, height, conf = (data.get(k) for k in ("index", "path", "height", "confirmations"))
        if not (_count(index) and _count(height) and _count(conf)):
            raise LedgerError("a lookup answer has a malformed index, height or confirmation count")
        if not isinstance(path, list) or len(path) > 32 or not all(isinstance(p, bytes) and len(p) == 32
                                                                    for p in path):
            raise LedgerError("a lookup answer has a malformed Merkle path")
        return cls(record, header, index, path, height, conf)


class AmbiguousLookup(LedgerError):
    """A fingerprint prefix matches more than one live binding."""


def fingerprint_hex(text: str) -> str | None:
    """Lowercase hex of a fingerprint or fingerprint prefix (8–64 digits; spaces and colons ignored)."""
    cleaned = text.replace(" ", "").replace(":", "").lower()
    if MIN_FP_PREFIX <= len(cleaned) <= FP_HEX_LEN and set(cleaned) <= _HEX:
        return cleaned
    return None


def parse_query(query: str, by: str | None = None) -> list[tuple[str, str]]:
    """The lookups to try for ``query``, in order, as ``(kind, value)``.

    With ``by`` given only that kind is tried. Raises :class:`LedgerError` for an empty query or a value
    that cannot be of the asked kind.
    """
    query = query.strip()
    if not query:
        raise LedgerError("nothing to look up: give an IP address, a nickname or a fingerprint")
    if by is not None and by not in LOOKUP_KINDS:
        raise LedgerError(f"unknown lookup kind '{by}' (expected ip, nick or fp)")
    ip: str | None
    try:
        ip = normalize_ip(query)
    except AddressError:
        ip = None
    fp = fingerprint_hex(query)
    if by == "ip":
        if ip is None:
            raise LedgerError(f"'{query}' is not an IP address")
        return [("ip", ip)]
    if by == "fp":
        if fp is None:
            raise LedgerError(f"'{query}' is not a fingerprint (give at least {MIN_FP_PREFIX} hex digits)")
        return [("fp", fp)]
    if by == "nick":
        return [("nick", query)]
    if ip is not None:
        return [("ip", ip)]
    if fp is not None:
        return [("fp", fp), ("nick", query)]
    return [("nick", query)]


def answer_lookup(ledger: LocalLedger, by: str, value: str, now: float) -> LookupAnswer | None:
    """Answer one lookup from a node's ledger; fingerprints may be given as a unique hex prefix.

    Raises :class:`AmbiguousLookup` when a prefix matches several live bindings.
    """
    if by != "fp":
        return ledger.lookup(by, value, now)  # type: ignore[arg-type]
    prefix = fingerprint_hex(value)
    if prefix is None:
        return None
    if len(prefix) == FP_HEX_LEN:
        return ledger.lookup("fp", prefix, now)
    # The prefix index answers in O(log n) plus the few keys sharing the prefix, never a walk of all keys.
    with ledger.lock:
        matches, complete = ledger.chain.bindings.live_with_prefix(prefix, now)
    if len(matches) > 1 or not complete:
        raise AmbiguousLookup(f"fingerprint prefix {prefix} matches several keys; give more digits")
    if not matches:
        return None
    return ledger.lookup("fp", matches[0].record.fingerprint, now)
