"""The groups of one data directory (issue 18): their membership changes, their messages, the receipts, and the
frames still waiting for a member — one SQLite file (``groups.sqlite3``) opened like the history
(:mod:`p2pchat.store_file`), every row sealed under the data directory's :class:`~p2pchat.vault.Vault`.

Each row is ``(id, kind, rid, box)``: ``box`` is a msgpack record sealed with associated data binding it to its
kind and its random ``rid``, so a row cannot be moved to another kind or swapped with another row unnoticed.
Kinds: ``group`` (gid, invited_by), ``change`` (gid, raw), ``text`` (gid, sender, counter, version, lamport,
sent_at, text; a shared file also name, size, sha256 and — the sender's own — path), ``receipt`` (gid, sender,
counter, member), ``pending`` (fp, body, gid, counter), ``fileout`` (fp, gid, counter: a file of mine that member
has not taken or declined yet), ``fileseen`` (gid, sender, counter: a member's file this node took or declined),
``read`` (gid, upto: the last text row ``p2pchat history`` showed), ``counter`` (gid, sender, counter, lamport: what
a sender had reached when the transcript was deleted).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from p2pchat.foundation import crypto
from p2pchat.foundation.errors import LocalFault
from p2pchat.store_file import META_SCHEMA, SealedStore, StoreKind
from p2pchat.vault import Vault

FILE_NAME = "groups.sqlite3"
APPLICATION_ID = 0x50324747          # "P2GG"
FORMAT = 1
KINDS = ("group", "change", "text", "receipt", "pending", "fileout", "fileseen", "read", "counter")
_AAD = b"p2pchat/groups/v1\x00"

_SCHEMA = META_SCHEMA + """
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    rid BLOB NOT NULL,
    box BLOB NOT NULL
);
CREATE INDEX items_kind ON items(kind, id);
"""


class GroupStoreError(LocalFault):
    """The group store cannot be used (damaged, foreign, newer, under another key, unwritable)."""


KIND = StoreKind(what="group store", application_id=APPLICATION_ID, format=FORMAT, schema=_SCHEMA,
                 names=frozenset({"meta", "items", "items_kind"}), forgotten="your groups are then forgotten",
                 error=GroupStoreError)


@dataclass(frozen=True)
class Row:
    id: int
    kind: str
    record: dict[str, Any]


def _aad(kind: str, rid: bytes) -> bytes:
    return _AAD + kind.encode("ascii") + b"\x00" + rid


class GroupStore(SealedStore):
    """Append-and-delete rows of the kinds above (thread-safe; several processes may open the file)."""

    kind = KIND

    def __init__(self, path: Path, vault: Vault) -> None:
        super().__init__(path, vault)

    @classmethod
    def in_data_dir(cls, data_dir: Path, vault: Vault) -> GroupStore:
        return cls(Path(data_dir) / FILE_NAME, vault)

    def _encrypt_plain_rows(self, db: sqlite3.Connection) -> None:
        for row_id, kind, rid, box in db.execute("SELECT id, kind, rid, box FROM items").fetchall():
            db.execute("UPDATE items SET box = ? WHERE id = ?", (self.vault.seal(_aad(kind, bytes(rid)), bytes(box)),
                                                                  row_id))

    def add(self, kind: str, **record: Any) -> int:
        """Keep one record; returns its row id."""
        return self.add_many([(kind, record)])[0]

    def add_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[int]:
        """Keep several records in one transaction; returns their row ids."""
        sealed = []
        for kind, record in items:
            if kind not in KINDS:
                raise ValueError(f"no group store kind {kind!r}")
            rid = crypto.random_bytes(16)
            sealed.append((kind, rid, self.vault.seal(_aad(kind, rid), msgpack.packb(record, use_bin_type=True))))

        def write(db: sqlite3.Connection) -> list[int]:
            ids = []
            for kind, rid, box in sealed:
                cur = db.execute("INSERT INTO items (kind, rid, box) VALUES (?, ?, ?)", (kind, rid, box))
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
            return ids
        return self._write(write)

    def rows(self, kind: str) -> list[Row]:
        """Every record of ``kind``, oldest first."""
        def read(db: sqlite3.Connection) -> list[Row]:
            out = []
            for row_id, rid, box in db.execute("SELECT id, rid, box FROM items WHERE kind = ? ORDER BY id",
                                               (kind,)).fetchall():
                plain = self.vault.open_sealed(_aad(kind, bytes(rid)), bytes(box))
                out.append(Row(row_id, kind, msgpack.unpackb(plain, raw=False)))
            return out
        return self._read(read)

    def delete(self, ids: list[int], *, erase: bool = False) -> None:
        """Delete rows; ``erase``: also empty the write-ahead log, so no copy stays in either file (a transcript
        the user deleted)."""
        if ids:
            self._write(lambda db: db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids]))
            if erase:
                self._checkpoint()


__all__ = ["APPLICATION_ID", "FILE_NAME", "FORMAT", "GroupStore", "GroupStoreError", "Row"]
