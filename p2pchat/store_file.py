"""Opening one of the data directory's own SQLite files (contacts, history) safely: shared by both stores.

A file is recognised by ``PRAGMA application_id`` and ``PRAGMA user_version`` (its format). A damaged file,
another program's file or one written by a newer p2pchat is refused with the store's error class, whose message
names the command that moves it aside; it is never overwritten. A new (empty) file is created with mode 0600 in
WAL mode under ``BEGIN IMMEDIATE``, so two processes opening it at once create it once. An older known format is
migrated in one ``BEGIN IMMEDIATE`` transaction by the store's migration for it.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from p2pchat.foundation.errors import LocalFault

BUSY_TIMEOUT_MS = 10_000
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StoreKind:
    """What a store's files look like and how it talks about them."""

    what: str                          # "contact store", "history"
    application_id: int
    format: int
    schema: str                        # the current format's CREATE statements ("--" comments allowed)
    names: frozenset[str]              # its tables and indexes (an empty file may hold nothing else)
    forgotten: str                     # what moving the file aside loses, for the refusal message
    error: type[LocalFault]
    # from format N (the key) to the current one, inside the open transaction
    migrations: Mapping[int, Callable[[sqlite3.Connection], None]] = field(default_factory=dict)


def refusal(kind: StoreKind, path: Path, what: str) -> LocalFault:
    quoted = shlex.quote(str(path))
    aside = shlex.quote(f"{path}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    return kind.error(f"the {kind.what} {path} {what}; p2pchat did not change it. Move it aside to start an empty "
                      f"one ({kind.forgotten}): mv {quoted} {aside}")


def db_error(kind: StoreKind, path: Path, exc: sqlite3.DatabaseError, doing: str) -> LocalFault:
    """A damaged file gets the advice to move it aside; busy, full or read-only ones do not."""
    if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
        return kind.error(f"could not {doing} the {kind.what} {path}: {exc}")
    return refusal(kind, path, f"is damaged ({exc})")


def open_store(kind: StoreKind, path: Path) -> sqlite3.Connection:
    """A connection (autocommit, any thread, busy timeout, foreign keys on) to ``path``, created, checked or
    migrated; refused with ``kind.error``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise kind.error(f"cannot open the {kind.what} {path}: {exc.strerror}") from None
    try:
        head = os.read(fd, len(_SQLITE_MAGIC))
    finally:
        os.close(fd)
    if head and head != _SQLITE_MAGIC:
        raise refusal(kind, path, "is not an SQLite file (damaged, or another program's file)")
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise refusal(kind, path, f"cannot be opened ({exc})") from None
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA secure_delete = ON")      # deleted rows are overwritten, not left in free pages
        _check_or_create(kind, path, db)
        db.execute("PRAGMA foreign_keys = ON")
    except LocalFault:
        db.close()
        raise
    except sqlite3.DatabaseError as exc:
        db.close()
        raise refusal(kind, path, f"is damaged ({exc})") from None
    return db


def header(db: sqlite3.Connection) -> tuple[int, int]:
    return (int(db.execute("PRAGMA application_id").fetchone()[0]),
            int(db.execute("PRAGMA user_version").fetchone()[0]))


def _check_or_create(kind: StoreKind, path: Path, db: sqlite3.Connection) -> None:
    app_id, version = header(db)
    if app_id == kind.application_id and version == kind.format:
        _check_integrity(kind, path, db)
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        return
    _refuse_other(kind, path, app_id, version, db)
    if app_id == kind.application_id:
        _check_integrity(kind, path, db)
    # An empty file (new, or created by a process that has not written yet) or an older format: create or
    # migrate under the write lock, checking again once it is held (another process may have done it meanwhile).
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        app_id, version = header(db)
        _refuse_other(kind, path, app_id, version, db)
        if app_id == 0 and version == 0:
            for statement in re.sub(r"--[^\n]*", "", kind.schema).split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id = {kind.application_id}")
        elif version != kind.format:
            kind.migrations[version](db)
        db.execute(f"PRAGMA user_version = {kind.format}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    app_id, version = header(db)
    if app_id != kind.application_id or version != kind.format:
        raise refusal(kind, path, "could not be set up")


def _refuse_other(kind: StoreKind, path: Path, app_id: int, version: int, db: sqlite3.Connection) -> None:
    if app_id == kind.application_id and version > kind.format:
        raise refusal(kind, path, f"was written by a newer p2pchat (format {version}; this one reads format "
                                  f"{kind.format})")
    if app_id == kind.application_id:
        if version != kind.format and version not in kind.migrations:
            raise refusal(kind, path, f"has an unknown format {version}")
        return
    if app_id != 0:
        raise refusal(kind, path, f"belongs to another program (not a p2pchat {kind.what})")
    listed = ", ".join(f"'{name}'" for name in sorted(kind.names))
    tables = db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                        f"AND name NOT IN ({listed})").fetchall()
    if version != 0 or tables:
        raise refusal(kind, path, f"belongs to another program (not a p2pchat {kind.what})")


def _check_integrity(kind: StoreKind, path: Path, db: sqlite3.Connection) -> None:
    result = db.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        raise refusal(kind, path, f"is damaged ({'; '.join(str(r[0]) for r in result[:3])})")


__all__ = ["BUSY_TIMEOUT_MS", "StoreKind", "db_error", "header", "open_store", "refusal"]
