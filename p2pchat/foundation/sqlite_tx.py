"""Ending an SQLite transaction after an error, shared by the ledger's and the chat node's stores.

On a full disk (or a file-size limit), an I/O error or out of memory SQLite rolls the transaction back by itself;
a second ``ROLLBACK`` then raises "cannot rollback - no transaction is active", which would take the place of the
error that says what happened.
"""

from __future__ import annotations

import sqlite3


def end_transaction(db: sqlite3.Connection, how: str) -> None:
    """``COMMIT`` or ``ROLLBACK`` the open transaction, if SQLite has not ended it already."""
    if db.in_transaction:
        db.execute(how)


__all__ = ["end_transaction"]
