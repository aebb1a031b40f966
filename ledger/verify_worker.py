"""Worker side of ``ledger verify``'s parallel signature checks (:func:`ledger.local_ledger.verify_store`).

Kept apart from :mod:`ledger.local_ledger` so that a spawned worker imports only what verifying a record needs.
"""

from __future__ import annotations

import msgpack

from ledger.errors import LedgerError
from ledger.records import Record


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
                record = Record.from_wire(wire)
                record.verify_signatures(network)
            except LedgerError:
                continue
            good.append(record.id)
    return good
