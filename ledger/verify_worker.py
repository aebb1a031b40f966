"""Worker side of ``ledger verify``'s parallel signature checks (:func:`ledger.local_ledger.verify_store`).

Kept apart from :mod:`ledger.local_ledger` so that a spawned worker imports only what verifying a record needs.
"""

from __future__ import annotations

import dataclasses

import msgpack

from ledger.errors import LedgerError
from ledger.records import Record

_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def _unchecked(wire: object) -> Record | None:
    """A record built from its wire map *without* its form checks, or None (a rotation, or not a map).

    Safe because the parent's replay parses and checks every record itself and takes from a worker only that
    the record with a given id has valid signatures: the id is the SHA-256 of the encoding of every field the
    signatures cover, so a record the parent accepts with that id has exactly the fields verified here.
    Skipping the checks (addresses, nickname rules) saves the worker a second full parse of every record."""
    if not isinstance(wire, dict) or wire.get("kind") == "rotate":
        return None
    record = object.__new__(Record)
    try:
        for name in _FIELDS:
            object.__setattr__(record, name, wire.get(name))
    except TypeError:   # unhashable keys in a damaged map
        return None
    return record


def verify_chunk(task: tuple[str, list[bytes]]) -> list[bytes]:
    """The ids of the records in these packed block bodies whose signatures verify for the network. A record
    that does not parse or verify is left out: the parent's replay checks it again and reports why."""
    network, packed_bodies = task
    good: list[bytes] = []
    for packed in packed_bodies:
        try:
            wires = msgpack.unpackb(packed, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            continue
        for wire in wires if isinstance(wires, list) else ():
            try:
                record = _unchecked(wire) or Record.from_wire(wire)
                record.verify_signatures(network)
                good.append(record.id)
            except (LedgerError, TypeError, ValueError):   # damaged fields: the parent says what is wrong
                continue
    return good
