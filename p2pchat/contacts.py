"""The contact store: who this data directory has chatted with, and which key it pinned for each (issue 13).

One SQLite file per data directory, ``contacts.sqlite3`` next to the ledger (mode 0600, WAL). It holds, per key
fingerprint: the nicknames and addresses the key was reached at (each with first and last seen), the user's local
name, whether (and when) the user verified the safety number, and a log of key-change decisions. It never holds a
private key.

Encrypted at rest (issue 15): with a passphrase (:class:`~p2pchat.vault.Vault`) every public key, local name,
nickname, address and decision text is sealed (AES-256-GCM, associated data binding it to its row and column),
and rows are found by keyed tags (HMAC-SHA256) of the fingerprint, local name, nickname or address, so the file
tells neither whom you know nor where; it does show how many contacts, nicknames, addresses and decisions there
are and when each was seen. Without a passphrase the same columns hold the plain values. Layout: docs/history.md.

The file is recognised by ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and ``PRAGMA user_version``
(:data:`FORMAT`; a format-1 file, plain, is converted when opened). A damaged file, another program's file or
one written by a newer p2pchat is refused with :class:`ContactStoreError` (the message names the command that
moves it aside); it is never overwritten. Every change is one ``BEGIN IMMEDIATE`` transaction with a busy
timeout, so several processes on one data directory (``p2pchat listen`` and ``p2pchat contacts``, say) serialise
their writes instead of corrupting the file (:mod:`p2pchat.store_file`).

A *pin* is what the store answers for an address or a nickname: the key of the contact most recently seen there
that no later key replaced (:meth:`ContactStore.pinned_for`). Pins are written only by
:meth:`ContactStore.record_chat`, which the node calls after step 4 succeeded (docs/security.md §3.7).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pchat.foundation import crypto
from p2pchat.foundation.errors import LocalFault, UsageError
from p2pchat.store_file import META_SCHEMA, SealedStore, StoreKind, create_schema
from p2pchat.vault import Vault

FILE_NAME = "contacts.sqlite3"
APPLICATION_ID = 0x50324343          # "P2CC"
FORMAT = 2
MAX_LOCAL_NAME = 64
MAX_SCAN = 100_000                   # contacts a fingerprint-prefix lookup decrypts at most
_HEX = re.compile(r"^[0-9a-f]+$")

DECISIONS = ("rotated", "accepted", "moved", "forgotten", "verified", "unverified")

_AAD = b"p2pchat/contacts/2\x00"

_SCHEMA = META_SCHEMA + """
CREATE TABLE contacts (
    tag         BLOB PRIMARY KEY,          -- index_tag("fp:" + fingerprint hex)
    key_box     BLOB NOT NULL,             -- seal(aad("key", tag), public key DER); fingerprint = SHA-256 of it
    name_tag    BLOB UNIQUE,               -- index_tag("name:" + local name); NULL until the user names it
    name_box    BLOB,                      -- seal(aad("name", tag), local name)
    address_box BLOB,                      -- seal(aad("address", tag), "ip:port" of the last chat)
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    verified_at REAL,                      -- when the user confirmed the safety number (NULL: not verified)
    replaced_by BLOB                       -- tag of the key that took over (rotation or accepted change)
);
CREATE TABLE nicknames (
    contact BLOB NOT NULL REFERENCES contacts(tag) ON DELETE CASCADE,
    tag     BLOB NOT NULL,                 -- index_tag("nick:" + nickname)
    box     BLOB NOT NULL,                 -- seal(aad("nick", contact ‖ tag), nickname)
    first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (contact, tag)
);
CREATE TABLE addresses (
    contact BLOB NOT NULL REFERENCES contacts(tag) ON DELETE CASCADE,
    tag     BLOB NOT NULL,                 -- index_tag("ip:" + ip)
    box     BLOB NOT NULL,                 -- seal(aad("ip", contact ‖ tag), ip)
    first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (contact, tag)
);
CREATE INDEX addresses_tag ON addresses(tag);
CREATE INDEX nicknames_tag ON nicknames(tag);
CREATE TABLE decisions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    old_tag  BLOB,                         -- index_tag("fp:" + old fingerprint)
    new_tag  BLOB,
    decision TEXT NOT NULL,                -- one of DECISIONS
    rid      BLOB NOT NULL,                -- 16 random bytes naming the row in its box's associated data
    box      BLOB NOT NULL                 -- seal(aad("decision", rid), JSON {"old_fp", "new_fp", "detail"})
);
"""
_Row = tuple[Any, ...]
_NAMES = frozenset({"meta", "contacts", "nicknames", "addresses", "decisions", "addresses_tag", "nicknames_tag"})


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


@dataclass
class _Entry:
    """One contact with everything it owns, as moved between formats and keys."""

    contact: Contact
    nick_times: dict[str, tuple[float, float]] = field(default_factory=dict)
    ip_times: dict[str, tuple[float, float]] = field(default_factory=dict)


def aad(column: str, row: bytes) -> bytes:
    """The associated data of a sealed value: the format, the column and the row (so values cannot be swapped)."""
    return _AAD + column.encode("ascii") + b"\x00" + row


class _Codec:
    """How a contact's rows are read under one vault (the store's, or a plain one while re-encrypting)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def tag(self, fp: str) -> bytes:
        return self.vault.index_tag("fp:" + fp)

    def text(self, column: str, row: bytes, box: bytes | None) -> str | None:
        return None if box is None else self.vault.open_sealed(aad(column, row), box).decode("utf-8")

    def seal(self, column: str, row: bytes, text: str | None) -> bytes | None:
        return None if text is None else self.vault.seal(aad(column, row), text.encode("utf-8"))

    def fp_of(self, db: sqlite3.Connection, tag: bytes | None) -> str | None:
        if tag is None:
            return None
        row = db.execute("SELECT key_box FROM contacts WHERE tag = ?", (tag,)).fetchone()
        return None if row is None else crypto.fingerprint(self.vault.open_sealed(aad("key", tag), row[0])).hex()

    def contact(self, db: sqlite3.Connection, row: _Row) -> Contact:
        tag, key_box, name_box, address_box, first_seen, last_seen, verified_at, replaced_by = row
        tag = bytes(tag)
        der = self.vault.open_sealed(aad("key", tag), key_box)
        fp = crypto.fingerprint(der).hex()
        if self.tag(fp) != tag:
            raise crypto.CryptoError("a contact's key does not match its row")
        nicks = tuple(v for v, _times in self.seen(db, "nicknames", tag))
        ips = tuple(v for v, _times in self.seen(db, "addresses", tag))
        return Contact(fp=fp, public_der=der, local_name=self.text("name", tag, name_box), first_seen=first_seen,
                       last_seen=last_seen, last_address=self.text("address", tag, address_box),
                       verified_at=verified_at, replaced_by=self.fp_of(db, replaced_by), nicknames=nicks, ips=ips)

    def seen(self, db: sqlite3.Connection, table: str, contact: bytes) -> list[tuple[str, tuple[float, float]]]:
        """The nicknames or addresses (``table``) of ``contact`` with first and last seen, most recent first."""
        column = "nick" if table == "nicknames" else "ip"
        return [(self.text(column, contact + bytes(t), b) or "", (first, last)) for t, b, first, last in db.execute(
            f"SELECT tag, box, first_seen, last_seen FROM {table} WHERE contact = ? ORDER BY last_seen DESC",
            (contact,))]

    def decision(self, at: float, decision: str, rid: bytes, box: bytes) -> Decision:
        content = json.loads(self.vault.open_sealed(aad("decision", bytes(rid)), box))
        return Decision(at, content["old_fp"], content["new_fp"], decision, content["detail"])


_CONTACT_COLUMNS = "tag, key_box, name_box, address_box, first_seen, last_seen, verified_at, replaced_by"
_C_COLUMNS = ", ".join(f"c.{name.strip()}" for name in _CONTACT_COLUMNS.split(","))


class ContactStore(SealedStore):
    """The contact store of one data directory (thread-safe; several processes may open the same file).

    ``vault`` is the data directory's at-rest key; without one the directory's own is opened with no passphrase
    (refused, :class:`~p2pchat.vault.PassphraseNeeded`, when it has one)."""

    def __init__(self, path: Path, vault: Vault | None = None) -> None:
        path = Path(path)
        self.kind = StoreKind(what="contact store", application_id=APPLICATION_ID, format=FORMAT, schema=_SCHEMA,
                              names=_NAMES, forgotten="your contacts and pins are then forgotten",
                              error=ContactStoreError, migrations={1: self._migrate_from_format_1})
        self.vault = vault if vault is not None else Vault.open(path.parent, None)
        self._codec = _Codec(self.vault)
        super().__init__(path, self.vault)

    @classmethod
    def in_data_dir(cls, data_dir: Path, vault: Vault | None = None) -> ContactStore:
        return cls(Path(data_dir) / FILE_NAME, vault)

    def _tag(self, fp: str) -> bytes:
        return self._codec.tag(fp)

    def _seal(self, column: str, row: bytes, text: str | None) -> bytes | None:
        return self._codec.seal(column, row, text)

    # --- reading ----------------------------------------------------------------------------------------

    def _contacts(self, sql: str, args: tuple[object, ...] = ()) -> list[Contact]:
        return self._read(lambda db: [self._codec.contact(db, r) for r in db.execute(sql, args).fetchall()])

    def all(self) -> list[Contact]:
        """Every contact, most recently seen first."""
        return self._contacts(f"SELECT {_CONTACT_COLUMNS} FROM contacts ORDER BY last_seen DESC")

    def get(self, fp: bytes | str) -> Contact | None:
        key = fp.hex() if isinstance(fp, bytes) else fp
        found = self._contacts(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE tag = ?", (self._tag(key),))
        return found[0] if found else None

    def pinned_for(self, kind: str, value: str) -> Contact | None:
        """The contact pinned for an address (``kind == "ip"``) or a nickname (``"nick"``): the one most recently
        seen there whose key no later key replaced; ``None`` when this store never met anyone there."""
        if kind == "ip":
            sql = (f"SELECT {_C_COLUMNS} FROM contacts c JOIN addresses a "
                   "ON a.contact = c.tag WHERE a.tag = ? ORDER BY a.last_seen DESC LIMIT 1")
        elif kind == "nick":
            sql = (f"SELECT {_C_COLUMNS} FROM contacts c JOIN nicknames n "
                   "ON n.contact = c.tag WHERE n.tag = ? ORDER BY n.last_seen DESC LIMIT 1")
        else:
            return None
        found = self._contacts(sql, (self.vault.index_tag(f"{kind}:{value}"),))
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
        by_name = self._contacts(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE name_tag = ?",
                                 (self.vault.index_tag("name:" + name),))
        if by_name:
            return by_name[0]
        compact = name.replace(" ", "").replace(":", "").lower()
        if len(compact) >= 4 and _HEX.match(compact):
            found = self._by_prefix(compact)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ContactNotFound(f"{len(found)} contacts have fingerprints starting with {compact}: type "
                                      f"more digits")
        by_nick = self._contacts(f"SELECT {_C_COLUMNS} FROM contacts c JOIN nicknames n "
                                 "ON n.contact = c.tag WHERE n.tag = ? AND c.replaced_by IS NULL "
                                 "ORDER BY n.last_seen DESC", (self.vault.index_tag("nick:" + name),))
        if len(by_nick) == 1:
            return by_nick[0]
        if len(by_nick) > 1:
            raise ContactNotFound(f"{len(by_nick)} contacts were called {name}: use a local name or fingerprint")
        raise ContactNotFound(f"no contact called {name} (see p2pchat contacts)")

    def _by_prefix(self, prefix: str) -> list[Contact]:
        """Contacts whose fingerprint starts with ``prefix`` (the keys are sealed: each is opened and hashed)."""
        def read(db: sqlite3.Connection) -> list[Contact]:
            rows = db.execute("SELECT tag, key_box FROM contacts ORDER BY last_seen DESC LIMIT ?",
                              (MAX_SCAN,)).fetchall()
            tags = [tag for tag, box in rows
                    if crypto.fingerprint(self.vault.open_sealed(aad("key", bytes(tag)), box)).hex().startswith(prefix)]
            return [self._codec.contact(db, db.execute(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE tag = ?",
                                                 (tag,)).fetchone()) for tag in tags]
        return self._read(read)

    def decisions(self, fp: str | None = None) -> list[Decision]:
        def read(db: sqlite3.Connection) -> list[Decision]:
            if fp is None:
                rows = db.execute("SELECT at, decision, rid, box FROM decisions ORDER BY id")
            else:
                tag = self._tag(fp)
                rows = db.execute("SELECT at, decision, rid, box FROM decisions WHERE old_tag = ? OR new_tag = ? "
                                  "ORDER BY id", (tag, tag))
            return [self._codec.decision(*row) for row in rows.fetchall()]
        return self._read(read)

    # --- writing ----------------------------------------------------------------------------------------

    def _insert_decision(self, db: sqlite3.Connection, at: float, old_fp: str | None, new_fp: str | None,
                         decision: str, detail: str) -> None:
        rid = crypto.random_bytes(16)
        box = self.vault.seal(aad("decision", rid), json.dumps({"old_fp": old_fp, "new_fp": new_fp,
                                                                "detail": detail}).encode("utf-8"))
        db.execute("INSERT INTO decisions (at, old_tag, new_tag, decision, rid, box) VALUES (?, ?, ?, ?, ?, ?)",
                   (at, self._tag(old_fp) if old_fp else None, self._tag(new_fp) if new_fp else None, decision,
                    rid, box))

    def _seen(self, db: sqlite3.Connection, table: str, contact: bytes, value: str, first: float,
              last: float) -> None:
        """``contact`` was seen under the nickname or address ``value`` (``table``), from ``first`` to ``last``."""
        column = "nick" if table == "nicknames" else "ip"
        tag = self.vault.index_tag(f"{column}:{value}")
        db.execute(f"INSERT INTO {table} (contact, tag, box, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(contact, tag) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen), "
                   "first_seen = MIN(first_seen, excluded.first_seen)",
                   (contact, tag, self._seal(column, contact + tag, value), first, last))

    def _add_contact(self, db: sqlite3.Connection, public_der: bytes, fp: str, first: float, last: float,
                     address: str | None) -> bytes:
        tag = self._tag(fp)
        db.execute("INSERT INTO contacts (tag, key_box, first_seen, last_seen, address_box) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(tag) DO UPDATE SET last_seen = excluded.last_seen, "
                   "address_box = COALESCE(excluded.address_box, address_box)",
                   (tag, self.vault.seal(aad("key", tag), public_der), first, last,
                    self._seal("address", tag, address)))
        return tag

    def record_chat(self, public_der: bytes, fp: bytes, *, nickname: str | None, ip: str | None,
                    address: str | None, now: float | None = None) -> None:
        """Remember a chat whose four steps succeeded: the pin for ``ip`` and ``nickname`` is now this key."""
        at = time.time() if now is None else now

        def write(db: sqlite3.Connection) -> None:
            tag = self._add_contact(db, public_der, fp.hex(), at, at, address)
            if nickname:
                self._seen(db, "nicknames", tag, nickname, at, at)
            if ip:
                self._seen(db, "addresses", tag, ip, at, at)
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
            old_tag = self._tag(old_fp)
            row = db.execute(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE tag = ?", (old_tag,)).fetchone()
            new_tag = self._tag(new)
            db.execute("INSERT INTO contacts (tag, key_box, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(tag) DO NOTHING", (new_tag, self.vault.seal(aad("key", new_tag), new_der), at, at))
            if row is not None:
                old = self._codec.contact(db, row)
                db.execute("UPDATE contacts SET name_tag = NULL, name_box = NULL, replaced_by = ? WHERE tag = ?",
                           (new_tag, old_tag))
                # the contact (its name, since when it is known) carries on under the new key
                current = self._codec.contact(db, db.execute(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE tag = ?",
                                                       (new_tag,)).fetchone())
                name = current.local_name or old.local_name
                last_address = current.last_address or old.last_address
                db.execute("UPDATE contacts SET name_tag = ?, name_box = ?, address_box = ?, verified_at = ?, "
                           "first_seen = MIN(first_seen, ?) WHERE tag = ?",
                           (self.vault.index_tag("name:" + name) if name else None,
                            self._seal("name", new_tag, name), self._seal("address", new_tag, last_address),
                            old.verified_at if keep_verified else None, old.first_seen, new_tag))
                for nick in old.nicknames:
                    self._seen(db, "nicknames", new_tag, nick, at, at)
                for ip in old.ips:
                    self._seen(db, "addresses", new_tag, ip, at, at)
            self._insert_decision(db, at, old_fp, new, decision, detail)
        self._write(write)

    def log_decision(self, decision: str, detail: str, *, old_fp: str | None = None, new_fp: str | None = None,
                     now: float | None = None) -> None:
        if decision not in DECISIONS:
            raise ValueError(decision)
        at = time.time() if now is None else now
        self._write(lambda db: self._insert_decision(db, at, old_fp, new_fp, decision, detail))

    def set_verified(self, fp: str, verified: bool, now: float | None = None, *, how: str | None = None) -> None:
        """Mark (or unmark) the contact verified; ``how`` is the decision log's note (default: the safety number
        was compared)."""
        at = time.time() if now is None else now

        def write(db: sqlite3.Connection) -> None:
            if db.execute("UPDATE contacts SET verified_at = ? WHERE tag = ?",
                          (at if verified else None, self._tag(fp))).rowcount != 1:
                raise ContactNotFound("that contact is no longer in the store")
            self._insert_decision(db, at, None, fp, "verified" if verified else "unverified",
                                  how or ("the user compared the safety number" if verified
                                          else "the user removed the mark"))
        self._write(write)

    def rename(self, fp: str, name: str) -> None:
        clean = name.strip()
        if not clean or len(clean) > MAX_LOCAL_NAME or not clean.isprintable():
            raise UsageError(f"a local name is 1 to {MAX_LOCAL_NAME} printable characters")
        if re.fullmatch(r"[0-9a-fA-F: ]{4,}", clean):
            raise UsageError("a local name must not look like a fingerprint")
        tag, name_tag = self._tag(fp), self.vault.index_tag("name:" + clean)

        def write(db: sqlite3.Connection) -> None:
            other = db.execute("SELECT tag FROM contacts WHERE name_tag = ?", (name_tag,)).fetchone()
            if other is not None and bytes(other[0]) != tag:
                raise UsageError(f"another contact is already called {clean}")
            if db.execute("UPDATE contacts SET name_tag = ?, name_box = ? WHERE tag = ?",
                          (name_tag, self._seal("name", tag, clean), tag)).rowcount != 1:
                raise ContactNotFound("that contact is no longer in the store")
        self._write(write)

    def forget(self, fp: str) -> None:
        tag = self._tag(fp)

        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE contacts SET replaced_by = NULL WHERE replaced_by = ?", (tag,))
            if db.execute("DELETE FROM contacts WHERE tag = ?", (tag,)).rowcount != 1:
                raise ContactNotFound("that contact is no longer in the store")
            self._insert_decision(db, time.time(), fp, None, "forgotten", "the user forgot this contact and its pins")
        self._write(write)
        self._checkpoint()

    # --- moving every row: a format-1 file, or a plain file once there is a passphrase ------------------

    def _dump(self, db: sqlite3.Connection) -> tuple[list[_Entry], list[tuple[float, Decision]]]:
        """Every row of this (format-2) file, read as plain rows (before they are encrypted)."""
        plain = _Codec(Vault(self.vault.data_dir, None))
        entries = []
        for row in db.execute(f"SELECT {_CONTACT_COLUMNS} FROM contacts").fetchall():
            tag = bytes(row[0])
            entries.append(_Entry(plain.contact(db, row), dict(plain.seen(db, "nicknames", tag)),
                                  dict(plain.seen(db, "addresses", tag))))
        decisions = [(row[0], plain.decision(*row)) for row in db.execute(
            "SELECT at, decision, rid, box FROM decisions ORDER BY id").fetchall()]
        return entries, decisions

    def _load(self, db: sqlite3.Connection, entries: list[_Entry], decisions: list[tuple[float, Decision]]) -> None:
        """Write ``entries`` and ``decisions`` (into empty tables) under :attr:`vault`."""
        for e in entries:
            c = e.contact
            tag = self._add_contact(db, c.public_der, c.fp, c.first_seen, c.last_seen, c.last_address)
            db.execute("UPDATE contacts SET name_tag = ?, name_box = ?, verified_at = ?, replaced_by = ? "
                       "WHERE tag = ?", (self.vault.index_tag("name:" + c.local_name) if c.local_name else None,
                                         self._seal("name", tag, c.local_name), c.verified_at,
                                         self._tag(c.replaced_by) if c.replaced_by else None, tag))
            for table, times in (("nicknames", e.nick_times), ("addresses", e.ip_times)):
                for value, (first, last) in times.items():
                    self._seen(db, table, tag, value, first, last)
        for at, d in decisions:
            self._insert_decision(db, at, d.old_fp, d.new_fp, d.decision, d.detail)

    def _encrypt_plain_rows(self, db: sqlite3.Connection) -> None:
        entries, decisions = self._dump(db)
        for table in ("decisions", "nicknames", "addresses", "contacts"):
            db.execute(f"DELETE FROM {table}")
        self._load(db, entries, decisions)

    def _migrate_from_format_1(self, db: sqlite3.Connection) -> None:
        """Format 1 (issue 13: every column plain) → format 2, under :attr:`vault`."""
        entries: list[_Entry] = []
        for fp, der, local_name, first, last, address, verified_at, replaced_by in db.execute(
                "SELECT fp, public_der, local_name, first_seen, last_seen, last_address, verified_at, replaced_by "
                "FROM contacts").fetchall():
            times = {table: {value: (f, la) for value, f, la in db.execute(
                f"SELECT {column}, first_seen, last_seen FROM {table} WHERE fp = ?", (fp,))}
                for table, column in (("nicknames", "nickname"), ("addresses", "ip"))}
            contact = Contact(fp=fp, public_der=bytes(der), local_name=local_name, first_seen=first, last_seen=last,
                              last_address=address, verified_at=verified_at, replaced_by=replaced_by, nicknames=(),
                              ips=())
            entries.append(_Entry(contact, times["nicknames"], times["addresses"]))
        decisions = [(at, Decision(at, old, new, decision, detail)) for at, old, new, decision, detail in db.execute(
            "SELECT at, old_fp, new_fp, decision, detail FROM decisions ORDER BY id").fetchall()]
        for statement in ("DROP INDEX IF EXISTS addresses_ip", "DROP INDEX IF EXISTS nicknames_nick",
                          "DROP TABLE decisions", "DROP TABLE nicknames", "DROP TABLE addresses",
                          "DROP TABLE contacts"):
            db.execute(statement)
        create_schema(db, _SCHEMA)
        db.execute("INSERT INTO meta VALUES ('key_check', ?)", (self.vault.key_check,))
        self._load(db, entries, decisions)


__all__ = ["APPLICATION_ID", "FILE_NAME", "FORMAT", "Contact", "ContactNotFound", "ContactStore",
           "ContactStoreError", "Decision"]
