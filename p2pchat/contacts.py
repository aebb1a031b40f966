"""The contact store: who this data directory has chatted with, and which key it pinned for each (issue 13).

One SQLite file per data directory, ``contacts.sqlite3`` next to the ledger (mode 0600, WAL). It holds, per key
fingerprint: the nicknames and addresses the key was reached at (each with first and last seen), the user's local
name, whether (and when) the user verified the safety number, and a log of key-change decisions. It never holds a
private key.

The file is recognised by ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and ``PRAGMA user_version``
(:data:`FORMAT`). A damaged file, another program's file or one written by a newer p2pchat is refused with
:class:`ContactStoreError` (the message names the command that moves it aside); it is never overwritten. Every
change is one ``BEGIN IMMEDIATE`` transaction with a busy timeout, so several processes on one data directory
(``p2pchat listen`` and ``p2pchat contacts``, say) serialise their writes instead of corrupting the file.

A *pin* is what the store answers for an address or a nickname: the key of the contact most recently seen there
that no later key replaced (:meth:`ContactStore.pinned_for`). Pins are written only by
:meth:`ContactStore.record_chat`, which the node calls after step 4 succeeded (docs/security.md §3.7).
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pchat.foundation.errors import LocalFault, UsageError
from p2pchat.vault import Vault

FILE_NAME = "contacts.sqlite3"
APPLICATION_ID = 0x50324343          # "P2CC"
FORMAT = 1
BUSY_TIMEOUT_MS = 10_000
MAX_LOCAL_NAME = 64
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEX = re.compile(r"^[0-9a-f]+$")

DECISIONS = ("rotated", "accepted", "moved", "forgotten", "verified", "unverified")

_SCHEMA = """
CREATE TABLE contacts (
    fp          TEXT PRIMARY KEY,          -- SHA-256 fingerprint of the public key, 64 lowercase hex digits
    public_der  BLOB NOT NULL,
    local_name  TEXT UNIQUE,               -- the name the user gave; NULL until then
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    last_address TEXT,                     -- "ip:port" of the last chat
    verified_at REAL,                      -- when the user confirmed the safety number (NULL: not verified)
    replaced_by TEXT                       -- fp of the key that took over (rotation or accepted change)
);
CREATE TABLE nicknames (
    fp TEXT NOT NULL REFERENCES contacts(fp) ON DELETE CASCADE,
    nickname TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (fp, nickname)
);
CREATE TABLE addresses (
    fp TEXT NOT NULL REFERENCES contacts(fp) ON DELETE CASCADE,
    ip TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (fp, ip)
);
CREATE INDEX addresses_ip ON addresses(ip);
CREATE INDEX nicknames_nick ON nicknames(nickname);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    old_fp TEXT,
    new_fp TEXT,
    decision TEXT NOT NULL,                -- one of DECISIONS
    detail TEXT NOT NULL
);
"""


class ContactStoreError(LocalFault):
    """The contact store cannot be used (damaged, foreign, newer, unwritable); nothing in it was changed."""


class ContactNotFound(UsageError):
    """No contact matches what the user typed (or several do)."""


@dataclass(frozen=True)
class Contact:
    fp: str                      # 64 hex digits
    public_der: bytes
    local_name: str | None
    first_seen: float
    last_seen: float
    last_address: str | None
    verified_at: float | None
    replaced_by: str | None
    nicknames: tuple[str, ...]   # most recent first
    ips: tuple[str, ...]         # most recent first

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def fingerprint(self) -> bytes:
        return bytes.fromhex(self.fp)

    @property
    def nickname(self) -> str | None:
        return self.nicknames[0] if self.nicknames else None


@dataclass(frozen=True)
class Decision:
    at: float
    old_fp: str | None
    new_fp: str | None
    decision: str
    detail: str


def _refusal(path: Path, what: str) -> ContactStoreError:
    quoted = shlex.quote(str(path))
    aside = shlex.quote(f"{path}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    return ContactStoreError(f"the contact store {path} {what}; p2pchat did not change it. Move it aside to start "
                             f"an empty one (your contacts and pins are then forgotten): mv {quoted} {aside}")


class ContactStore:
    """The contact store of one data directory (thread-safe; several processes may open the same file)."""

    def __init__(self, path: Path, vault: Vault | None = None) -> None:
        self.path = Path(path)
        self.vault = vault
        self._lock = threading.Lock()
        self._db = self._open()

    @classmethod
    def in_data_dir(cls, data_dir: Path, vault: Vault | None = None) -> ContactStore:
        return cls(Path(data_dir) / FILE_NAME, vault)

    # --- opening ----------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ContactStoreError(f"cannot open the contact store {path}: {exc.strerror}") from None
        try:
            head = os.read(fd, len(_SQLITE_MAGIC))
        finally:
            os.close(fd)
        if head and head != _SQLITE_MAGIC:
            raise _refusal(path, "is not an SQLite file (damaged, or another program's file)")
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as exc:
            raise _refusal(path, f"cannot be opened ({exc})") from None
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._check_or_create(db)
            db.execute("PRAGMA foreign_keys = ON")
        except ContactStoreError:
            db.close()
            raise
        except sqlite3.DatabaseError as exc:
            db.close()
            raise _refusal(path, f"is damaged ({exc})") from None
        return db

    def _check_or_create(self, db: sqlite3.Connection) -> None:
        app_id, version = self._header(db)
        if app_id == APPLICATION_ID and version == FORMAT:
            self._check_integrity(db)
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        self._refuse_other(app_id, version, db)
        # An empty file (new, or created by a process that has not written yet): create under the write lock,
        # checking again once it is held (another process may have created it meanwhile).
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            app_id, version = self._header(db)
            if app_id == 0 and version == 0:
                self._refuse_other(app_id, version, db)
                for statement in re.sub(r"--[^\n]*", "", _SCHEMA).split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {FORMAT}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        app_id, version = self._header(db)
        if app_id != APPLICATION_ID or version != FORMAT:
            self._refuse_other(app_id, version, db)
            raise _refusal(self.path, "could not be set up")

    @staticmethod
    def _header(db: sqlite3.Connection) -> tuple[int, int]:
        return (int(db.execute("PRAGMA application_id").fetchone()[0]),
                int(db.execute("PRAGMA user_version").fetchone()[0]))

    def _refuse_other(self, app_id: int, version: int, db: sqlite3.Connection) -> None:
        if app_id == APPLICATION_ID and version > FORMAT:
            raise _refusal(self.path, f"was written by a newer p2pchat (format {version}; this one reads format "
                                      f"{FORMAT})")
        if app_id == APPLICATION_ID:
            raise _refusal(self.path, f"has an unknown format {version}")
        if app_id != 0:
            raise _refusal(self.path, "belongs to another program (not a p2pchat contact store)")
        tables = db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                            "AND name NOT IN ('contacts', 'nicknames', 'addresses', 'decisions', "
                            "'addresses_ip', 'nicknames_nick')").fetchall()
        if version != 0 or tables:
            raise _refusal(self.path, "belongs to another program (not a p2pchat contact store)")

    def _check_integrity(self, db: sqlite3.Connection) -> None:
        result = db.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            raise _refusal(self.path, f"is damaged ({'; '.join(str(r[0]) for r in result[:3])})")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reading ----------------------------------------------------------------------------------------

    def _row_to_contact(self, row: tuple[Any, ...]) -> Contact:
        fp = row[0]
        nicks = tuple(r[0] for r in self._db.execute(
            "SELECT nickname FROM nicknames WHERE fp = ? ORDER BY last_seen DESC", (fp,)))
        ips = tuple(r[0] for r in self._db.execute(
            "SELECT ip FROM addresses WHERE fp = ? ORDER BY last_seen DESC", (fp,)))
        return Contact(fp=fp, public_der=bytes(row[1]), local_name=row[2], first_seen=row[3], last_seen=row[4],
                       last_address=row[5], verified_at=row[6], replaced_by=row[7], nicknames=nicks, ips=ips)

    _COLUMNS = "fp, public_der, local_name, first_seen, last_seen, last_address, verified_at, replaced_by"
    _C_COLUMNS = ", ".join(f"c.{name.strip()}" for name in _COLUMNS.split(","))

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[Contact]:
        with self._lock:
            try:
                rows = self._db.execute(sql, args).fetchall()
                return [self._row_to_contact(r) for r in rows]
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc, "read") from None

    def _db_error(self, exc: sqlite3.DatabaseError, doing: str) -> ContactStoreError:
        """A damaged file gets the advice to move it aside; busy, full or read-only ones do not."""
        if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
            return ContactStoreError(f"could not {doing} the contact store {self.path}: {exc}")
        return _refusal(self.path, f"is damaged ({exc})")

    def all(self) -> list[Contact]:
        """Every contact, most recently seen first."""
        return self._read(f"SELECT {self._COLUMNS} FROM contacts ORDER BY last_seen DESC")

    def get(self, fp: bytes | str) -> Contact | None:
        key = fp.hex() if isinstance(fp, bytes) else fp
        found = self._read(f"SELECT {self._COLUMNS} FROM contacts WHERE fp = ?", (key,))
        return found[0] if found else None

    def pinned_for(self, kind: str, value: str) -> Contact | None:
        """The contact pinned for an address (``kind == "ip"``) or a nickname (``"nick"``): the one most recently
        seen there whose key no later key replaced; ``None`` when this store never met anyone there."""
        if kind == "ip":
            sql = (f"SELECT {self._C_COLUMNS} FROM contacts c JOIN addresses a "
                   "ON a.fp = c.fp WHERE a.ip = ? ORDER BY a.last_seen DESC LIMIT 1")
        elif kind == "nick":
            sql = (f"SELECT {self._C_COLUMNS} FROM contacts c JOIN nicknames n "
                   "ON n.fp = c.fp WHERE n.nickname = ? ORDER BY n.last_seen DESC LIMIT 1")
        else:
            return None
        found = self._read(sql, (value,))
        if not found or found[0].replaced_by is not None:
            return None if not found else self._follow(found[0])
        return found[0]

    def _follow(self, contact: Contact) -> Contact | None:
        """The key that replaced ``contact`` (through a chain of replacements, bounded)."""
        seen = {contact.fp}
        while contact.replaced_by is not None:
            nxt = self.get(contact.replaced_by)
            if nxt is None or nxt.fp in seen or len(seen) > 64:
                return None
            seen.add(nxt.fp)
            contact = nxt
        return contact

    def resolve(self, text: str) -> Contact:
        """The contact a user means by a local name, a nickname or a fingerprint prefix (≥ 4 hex digits)."""
        name = text.strip()
        if not name:
            raise ContactNotFound("name a contact: its local name, nickname or fingerprint")
        by_name = self._read(f"SELECT {self._COLUMNS} FROM contacts WHERE local_name = ?", (name,))
        if by_name:
            return by_name[0]
        compact = name.replace(" ", "").replace(":", "").lower()
        if len(compact) >= 4 and _HEX.match(compact):
            found = self._read(f"SELECT {self._COLUMNS} FROM contacts WHERE fp LIKE ? ORDER BY last_seen DESC",
                               (compact + "%",))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ContactNotFound(f"{len(found)} contacts have fingerprints starting with {compact}: type "
                                      f"more digits")
        by_nick = self._read(f"SELECT {self._C_COLUMNS} FROM contacts c JOIN nicknames n "
                             "ON n.fp = c.fp WHERE n.nickname = ? AND c.replaced_by IS NULL "
                             "ORDER BY n.last_seen DESC", (name,))
        if len(by_nick) == 1:
            return by_nick[0]
        if len(by_nick) > 1:
            raise ContactNotFound(f"{len(by_nick)} contacts were called {name}: use a local name or fingerprint")
        raise ContactNotFound(f"no contact called {name} (see p2pchat contacts)")

    def decisions(self, fp: str | None = None) -> list[Decision]:
        with self._lock:
            if fp is None:
                rows = self._db.execute("SELECT at, old_fp, new_fp, decision, detail FROM decisions ORDER BY id")
            else:
                rows = self._db.execute("SELECT at, old_fp, new_fp, decision, detail FROM decisions "
                                        "WHERE old_fp = ? OR new_fp = ? ORDER BY id", (fp, fp))
            return [Decision(*r) for r in rows.fetchall()]

    # --- writing ----------------------------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise ContactStoreError(f"the contact store {self.path} is busy or unwritable: {exc}") from None
            try:
                fn(self._db)
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._db_error(exc, "write") from None
                raise

    def record_chat(self, public_der: bytes, fp: bytes, *, nickname: str | None, ip: str | None,
                    address: str | None, now: float | None = None) -> None:
        """Remember a chat whose four steps succeeded: the pin for ``ip`` and ``nickname`` is now this key."""
        at = time.time() if now is None else now
        key = fp.hex()

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO contacts (fp, public_der, first_seen, last_seen, last_address) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT(fp) DO UPDATE SET last_seen = excluded.last_seen, "
                       "last_address = COALESCE(excluded.last_address, last_address)",
                       (key, public_der, at, at, address))
            if nickname:
                db.execute("INSERT INTO nicknames VALUES (?, ?, ?, ?) ON CONFLICT(fp, nickname) DO UPDATE SET "
                           "last_seen = excluded.last_seen", (key, nickname, at, at))
            if ip:
                db.execute("INSERT INTO addresses VALUES (?, ?, ?, ?) ON CONFLICT(fp, ip) DO UPDATE SET "
                           "last_seen = excluded.last_seen", (key, ip, at, at))
        self._write(write)

    def replace_key(self, old_fp: str, new_der: bytes, new_fp: bytes, *, decision: str, detail: str,
                    keep_verified: bool, now: float | None = None) -> None:
        """Move the old key's contact (local name, addresses, nicknames; verified mark when ``keep_verified``)
        to a new key and log the decision (``rotated``: the ledger proved it; ``accepted``: the user chose)."""
        if decision not in DECISIONS:
            raise ValueError(decision)
        at = time.time() if now is None else now
        new = new_fp.hex()

        def write(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT local_name, first_seen, last_address, verified_at FROM contacts WHERE fp = ?",
                             (old_fp,)).fetchone()
            db.execute("INSERT INTO contacts (fp, public_der, first_seen, last_seen, last_address) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT(fp) DO NOTHING", (new, new_der, at, at, None))
            if row is not None:
                local_name, first_seen, last_address, verified_at = row
                db.execute("UPDATE contacts SET local_name = NULL, replaced_by = ? WHERE fp = ?", (new, old_fp))
                # the contact (its name, since when it is known) carries on under the new key
                db.execute("UPDATE contacts SET local_name = COALESCE(local_name, ?), last_address = "
                           "COALESCE(last_address, ?), verified_at = ?, first_seen = MIN(first_seen, ?) "
                           "WHERE fp = ?", (local_name, last_address, verified_at if keep_verified else None,
                                            first_seen, new))
                for table in ("nicknames", "addresses"):
                    col = "nickname" if table == "nicknames" else "ip"
                    db.execute(f"INSERT INTO {table} (fp, {col}, first_seen, last_seen) "
                               f"SELECT ?, {col}, ?, ? FROM {table} WHERE fp = ? "
                               f"ON CONFLICT(fp, {col}) DO UPDATE SET last_seen = excluded.last_seen",
                               (new, at, at, old_fp))
            db.execute("INSERT INTO decisions (at, old_fp, new_fp, decision, detail) VALUES (?, ?, ?, ?, ?)",
                       (at, old_fp, new, decision, detail))
        self._write(write)

    def log_decision(self, decision: str, detail: str, *, old_fp: str | None = None, new_fp: str | None = None,
                     now: float | None = None) -> None:
        if decision not in DECISIONS:
            raise ValueError(decision)
        at = time.time() if now is None else now
        self._write(lambda db: db.execute(
            "INSERT INTO decisions (at, old_fp, new_fp, decision, detail) VALUES (?, ?, ?, ?, ?)",
            (at, old_fp, new_fp, decision, detail)))

    def set_verified(self, fp: str, verified: bool, now: float | None = None) -> None:
        at = time.time() if now is None else now

        def write(db: sqlite3.Connection) -> None:
            if db.execute("UPDATE contacts SET verified_at = ? WHERE fp = ?",
                          (at if verified else None, fp)).rowcount != 1:
                raise ContactNotFound("that contact is no longer in the store")
            db.execute("INSERT INTO decisions (at, old_fp, new_fp, decision, detail) VALUES (?, ?, ?, ?, ?)",
                       (at, None, fp, "verified" if verified else "unverified",
                        "the user compared the safety number" if verified else "the user removed the mark"))
        self._write(write)

    def rename(self, fp: str, name: str) -> None:
        clean = name.strip()
        if not clean or len(clean) > MAX_LOCAL_NAME or not clean.isprintable():
            raise UsageError(f"a local name is 1 to {MAX_LOCAL_NAME} printable characters")
        if re.fullmatch(r"[0-9a-fA-F: ]{4,}", clean):
            raise UsageError("a local name must not look like a fingerprint")

        def write(db: sqlite3.Connection) -> None:
            other = db.execute("SELECT fp FROM contacts WHERE local_name = ?", (clean,)).fetchone()
            if other is not None and other[0] != fp:
                raise UsageError(f"another contact is already called {clean}")
            if db.execute("UPDATE contacts SET local_name = ? WHERE fp = ?", (clean, fp)).rowcount != 1:
                raise ContactNotFound("that contact is no longer in the store")
        self._write(write)

    def forget(self, fp: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE contacts SET replaced_by = NULL WHERE replaced_by = ?", (fp,))
            if db.execute("DELETE FROM contacts WHERE fp = ?", (fp,)).rowcount != 1:
                raise ContactNotFound("that contact is no longer in the store")
            db.execute("INSERT INTO decisions (at, old_fp, new_fp, decision, detail) VALUES (?, ?, ?, ?, ?)",
                       (time.time(), fp, None, "forgotten", "the user forgot this contact and its pins"))
        self._write(write)


__all__ = ["APPLICATION_ID", "FILE_NAME", "FORMAT", "Contact", "ContactNotFound", "ContactStore",
           "ContactStoreError", "Decision"]
