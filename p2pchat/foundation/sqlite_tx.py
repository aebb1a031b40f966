"""Ending an SQLite transaction after an error, and checking a closed file's length against its header: shared
by the ledger's and the chat node's stores.

On a full disk (or a file-size limit), an I/O error or out of memory SQLite rolls the transaction back by itself;
a second ``ROLLBACK`` then raises "cannot rollback - no transaction is active", which would take the place of the
error that says what happened.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path


def end_transaction(db: sqlite3.Connection, how: str) -> None:
    """``COMMIT`` or ``ROLLBACK`` the open transaction, if SQLite has not ended it already."""
    if db.in_transaction:
        db.execute(how)


def length_problem(path: Path) -> str | None:
    """Why ``path``, an SQLite file with no write-ahead log waiting beside it, is not as long as its header says
    (cut short, extended or overwritten), in words that follow "is damaged (…)"; None when it is or when the
    header cannot tell. ``PRAGMA quick_check`` does not see a file cut inside its last page: SQLite reads the
    missing bytes as zeros, and a cell's last bytes lie at the page's end."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return None                 # the log holds pages the file does not have yet
    with open(path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100:
        return "its header is cut short"
    page_size, = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    change, pages = struct.unpack(">II", header[24:32])
    valid_for, = struct.unpack(">I", header[92:96])
    # The header's page count is SQLite's own (kept in step since 3.7.0 when the two counters agree); with no
    # log beside it the file holds exactly those pages.
    size = path.stat().st_size
    if valid_for == change and pages and size != pages * page_size:
        return (f"it is {size} bytes long, but its header says {pages} pages of {page_size} bytes: cut short, "
                f"extended or overwritten")
    return None


__all__ = ["end_transaction", "length_problem"]
