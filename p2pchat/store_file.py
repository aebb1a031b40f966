"""Opening one of the data directory's own SQLite files (contacts, history) safely: shared by both stores.

A file is recognised by ``PRAGMA application_id`` and ``PRAGMA user_version`` (its format). A damaged file,
another program's file or one written by a newer p2pchat is refused with the store's error class, whose message
names the command that moves it aside; it is never overwritten. A new (empty) file is created with mode 0600 in
WAL mode under ``BEGIN IMMEDIATE``, so two processes opening it at once create it once. An older known format is
migrated in one ``BEGIN IMMEDIATE`` transaction by the store's migration for it.

:class:`SealedStore` is what both stores are built on: one connection shared by the threads of a process, every
change one ``BEGIN IMMEDIATE`` transaction (several processes serialise their writes), every read one snapshot,
and the rows under the data directory's :class:`~p2pchat.vault.Vault`: the file's ``meta`` table records which key
(``key_check``), a plain file is encrypted when a passphrase first comes, and a file under another key (or
encrypted, opened without the passphrase) is refused.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from p2pchat.foundation.datadir import slot_problem
from p2pchat.foundation.errors import CryptoError, LocalFault
from p2pchat.foundation.sqlite_tx import end_transaction, length_problem
from p2pchat.vault import Vault

log = logging.getLogger(__name__)
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
        # a file-size limit (EFBIG) reads as an I/O error where a full disk reads as "database or disk is full"
        hint = " (the disk may be full)" if "disk I/O error" in str(exc) else ""
        return kind.error(f"could not {doing} the {kind.what} {path}: {exc}{hint}")
    return refusal(kind, path, f"is damaged ({exc})")


def open_store(kind: StoreKind, path: Path) -> sqlite3.Connection:
    """A connection (autocommit, any thread, busy timeout, foreign keys on) to ``path``, created, checked or
    migrated; refused with ``kind.error``."""
    problem = slot_problem(path)
    if problem is not None:
        raise kind.error(f"the {kind.what} {path} {problem}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise kind.error(f"cannot open the {kind.what} {path}: {exc.strerror}") from None
    try:
        _keep_private(kind, path, fd)
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
        db.execute("PRAGMA synchronous = NORMAL")    # WAL: no fsync per commit; a power cut may lose the last ones
        _opened_while_others_may_be_opening(kind, path, db)
        db.execute("PRAGMA foreign_keys = ON")
    except LocalFault:
        db.close()
        raise
    except sqlite3.DatabaseError as exc:
        db.close()
        raise refusal(kind, path, f"is damaged ({exc})") from None
    return db


def _keep_private(kind: StoreKind, path: Path, fd: int) -> None:
    """A store others may read (copied, restored or made by hand with the usual umask) is made mode 0600 again,
    its write-ahead log with it, and the user is told: without a passphrase its rows are plain text."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if os.name != "posix" or not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return
    try:
        os.fchmod(fd, 0o600)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.chmod(0o600)
    except OSError as exc:
        raise kind.error(f"the {kind.what} {path} can be read by other users (mode {mode:o}) and p2pchat cannot "
                         f"change that ({exc.strerror}); fix it with: chmod 600 {shlex.quote(str(path))}") from None
    log.warning("the %s %s could be read by other users (mode %o); made it readable by you only (0600)",
                kind.what, path, mode)


def _opened_while_others_may_be_opening(kind: StoreKind, path: Path, db: sqlite3.Connection) -> None:
    """:func:`_check_or_create`, again while another process holds the file's lock. SQLite answers "database is
    locked" at once, without its busy handler, when two connections switch a new file to WAL together; that is a
    process on the same data directory starting at the same moment, not damage. Bounded by the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.01
    while True:
        try:
            _check_or_create(kind, path, db)
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                if "locked" in text or "busy" in text:
                    raise kind.error(f"the {kind.what} {path} is busy: another p2pchat process kept it locked "
                                     f"for {BUSY_TIMEOUT_MS // 1000} s; try again when it has finished") from None
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


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
            create_schema(db, kind.schema)
            db.execute(f"PRAGMA application_id = {kind.application_id}")
        elif version != kind.format:
            kind.migrations[version](db)
        db.execute(f"PRAGMA user_version = {kind.format}")
        db.execute("COMMIT")
    except BaseException:
        end_transaction(db, "ROLLBACK")
        raise
    app_id, version = header(db)
    if app_id != kind.application_id or version != kind.format:
        raise refusal(kind, path, "could not be set up")


def create_schema(db: sqlite3.Connection, schema: str) -> None:
    """Run the CREATE statements of ``schema`` ("--" comments allowed)."""
    for statement in re.sub(r"--[^\n]*", "", schema).split(";"):
        if statement.strip():
            db.execute(statement)


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
    problem = length_problem(path)
    if problem is not None:
        raise refusal(kind, path, f"is damaged ({problem})")
    result = db.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        raise refusal(kind, path, f"is damaged ({'; '.join(str(r[0]) for r in result[:3])})")


_T = TypeVar("_T")
META_SCHEMA = """
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL                    -- 'key_check': Vault.key_check of the key the rows are under
);
"""


class SealedStore:
    """Base of the data directory's stores (see the module docstring); subclasses give :attr:`kind` and
    :meth:`_encrypt_plain_rows`."""

    kind: StoreKind

    def __init__(self, path: Path, vault: Vault) -> None:
        self.path = Path(path)
        self.vault = vault
        self._lock = threading.Lock()
        self._db = open_store(self.kind, self.path)
        try:
            self._write(self._adopt_key, check=False)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _encrypt_plain_rows(self, db: sqlite3.Connection) -> None:
        """Rewrite every row, stored without a passphrase, under :attr:`vault` (inside the open transaction)."""
        raise NotImplementedError

    def _adopt_key(self, db: sqlite3.Connection) -> None:
        """Record the vault's key in a new file, or encrypt a plain file now that there is a passphrase."""
        row = db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('key_check', ?)", (self.vault.key_check,))
        elif bytes(row[0]) == b"" and self.vault.encrypted:
            self._encrypt_plain_rows(db)
            db.execute("UPDATE meta SET value = ? WHERE name = 'key_check'", (self.vault.key_check,))
        else:
            self._check_key(db)

    def _check_key(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
        stored = bytes(row[0]) if row is not None else b""
        if stored == self.vault.key_check:
            return
        what = f"the {self.kind.what} {self.path}"
        if not self.vault.encrypted:
            raise self.kind.error(f"{what} is encrypted with a passphrase; give it with --passphrase-file FILE or "
                                  f"the P2PCHAT_PASSPHRASE variable")
        if stored == b"":
            raise self.kind.error(f"{what} was written without the passphrase by another p2pchat process "
                                  f"meanwhile; start this one again")
        raise refusal(self.kind, self.path, "is encrypted under another passphrase record than this data "
                                            "directory's vault.json (was vault.json replaced?)")

    def _write(self, fn: Callable[[sqlite3.Connection], _T], *, check: bool = True) -> _T:
        """``fn`` in one ``BEGIN IMMEDIATE`` transaction, rolled back when it raises."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise self.kind.error(f"the {self.kind.what} {self.path} is busy: another process kept it "
                                          f"locked for {BUSY_TIMEOUT_MS // 1000} s; nothing was changed, try again "
                                          f"when it has finished") from None
                raise self.kind.error(f"the {self.kind.what} {self.path} is busy or unwritable: {exc}") from None
            try:
                if check:
                    self._check_key(self._db)
                result = fn(self._db)
                self._db.execute("COMMIT")
                return result
            except BaseException as exc:
                end_transaction(self._db, "ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise db_error(self.kind, self.path, exc, "write") from None
                if isinstance(exc, CryptoError):
                    raise refusal(self.kind, self.path, f"has an entry that fails authentication ({exc})") from None
                raise

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn`` on one snapshot of the file."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    self._check_key(self._db)
                    return fn(self._db)
                finally:
                    end_transaction(self._db, "COMMIT")
            except sqlite3.DatabaseError as exc:
                raise db_error(self.kind, self.path, exc, "read") from None
            except CryptoError as exc:
                raise refusal(self.kind, self.path, f"has an entry that fails authentication ({exc})") from None

    def _checkpoint(self) -> None:
        """Empty the write-ahead log into the file (after a delete: the old pages are gone from both)."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass     # another process reads right now; a later checkpoint does it


__all__ = ["BUSY_TIMEOUT_MS", "META_SCHEMA", "SealedStore", "StoreKind", "create_schema", "db_error",
           "end_transaction", "header", "open_store", "refusal"]
