"""The chat history of a data directory: every text sent and received per peer key, encrypted at rest (issue 15).

One SQLite file, ``history.sqlite3`` next to the contact store (mode 0600, WAL, ``BEGIN IMMEDIATE`` for every
change so several processes on one data directory serialise; recognised and refused like the contact store,
see :mod:`p2pchat.store_file`). With a passphrase (:class:`~p2pchat.vault.Vault`) every body and every peer
fingerprint is sealed, and rows are found by a keyed tag of the fingerprint, so the file tells neither what was
said nor with whom; it does show how many messages there are, when, in which direction, their delivery status
and which of them belong to the same (unnamed) peer. Layout and associated data: docs/history.md.

A message's ``status`` is one of :data:`STATUSES`: ``waiting`` (not handed to a session yet: the outbox),
``sent`` (written to the peer), ``delivered`` (the peer's receipt came), ``failed`` or ``cancelled``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from p2pchat.display import display_lines, one_line
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import CryptoError, LocalFault, UsageError
from p2pchat.store_file import META_SCHEMA, SealedStore, StoreKind
from p2pchat.vault import Vault

FILE_NAME = "history.sqlite3"
APPLICATION_ID = 0x50324848          # "P2HH"
FORMAT = 1
STATUSES = ("waiting", "sent", "delivered", "failed", "cancelled")
DIRECTIONS = ("in", "out")
MAX_LIMIT = 10_000                   # rows one call returns at most
SEARCH_SCAN_ROWS = 50_000            # a search reads at most this many of the newest rows …
SEARCH_SCAN_BYTES = 64 * 1024 * 1024  # … and at most this many bytes of their bodies
RID_LEN = 16
BODY_CACHE_BYTES = 32 * 1024 * 1024  # opened bodies kept in memory (per process)
UNREADABLE = "(this entry cannot be read: it was altered in the file or sealed under another key)"

_AAD_PEER = b"p2pchat/history/1\x00peer\x00"
_AAD_MESSAGE = b"p2pchat/history/1\x00message\x00"

_SCHEMA = META_SCHEMA + """
CREATE TABLE peers (
    tag    BLOB PRIMARY KEY,               -- Vault.index_tag("fp:" + fingerprint hex)
    fp_box BLOB NOT NULL                   -- Vault.seal(aad = "p2pchat/history/1\\0peer\\0" + tag, fingerprint hex)
);
CREATE TABLE messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    peer      BLOB NOT NULL REFERENCES peers(tag) ON DELETE CASCADE,
    rid       BLOB NOT NULL,               -- 16 random bytes naming the row in its body's associated data
    ts        REAL NOT NULL,               -- seconds since the epoch
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    status    TEXT NOT NULL,
    unread    INTEGER NOT NULL DEFAULT 0,
    body      BLOB NOT NULL                -- Vault.seal(message aad, JSON {"text": …, "msg_id": … | null})
);
CREATE INDEX messages_peer ON messages(peer, id);
CREATE INDEX messages_status ON messages(status, id);
"""



class HistoryStoreError(LocalFault):
    """The history cannot be used (damaged, foreign, newer, under another key, unwritable); nothing changed."""


KIND = StoreKind(what="history", application_id=APPLICATION_ID, format=FORMAT, schema=_SCHEMA,
                 names=frozenset({"meta", "peers", "messages", "messages_peer", "messages_status"}),
                 forgotten="your chat history is then forgotten", error=HistoryStoreError)


@dataclass(frozen=True)
class HistoryMessage:
    id: int                     # the row id (update_status, before_id)
    fp: str                     # the peer's key fingerprint, 64 lowercase hex digits
    direction: Literal["in", "out"]
    text: str
    ts: float                   # when it was sent (out) or received (in), seconds since the epoch
    status: str                 # one of STATUSES
    msg_id: str | None          # the caller's id for it (e.g. the session's message id), if any
    unread: bool
    intact: bool = True         # False: the stored entry failed authentication; ``text`` says so


@dataclass(frozen=True)
class NewMessage:
    """A message to keep (:meth:`HistoryStore.append_many`); the fields are :meth:`HistoryStore.append`'s."""

    fp: str
    direction: Literal["in", "out"]
    text: str
    ts: float
    status: str = "sent"
    msg_id: str | None = None
    unread: bool | None = None


@dataclass(frozen=True)
class ConversationSummary:
    fp: str
    last_text: str
    last_ts: float
    last_direction: Literal["in", "out"]
    unread: int
    count: int


def message_aad(fp: str, rid: bytes, direction: str) -> bytes:
    """The associated data of a message body: it binds the body to its peer, its row and its direction."""
    return _AAD_MESSAGE + fp.encode("ascii") + b"\x00" + rid + b"\x00" + direction.encode("ascii")


def _check_fp(fp: str) -> str:
    key = fp.strip().lower() if isinstance(fp, str) else ""
    if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
        raise UsageError("a key fingerprint is 64 hexadecimal digits")
    return key


_Row = tuple[Any, ...]
_COLUMNS = "m.id, m.rid, m.ts, m.direction, m.status, m.unread, m.body, p.fp_box, m.peer"


class HistoryStore(SealedStore):
    """The history of one data directory (thread-safe; several processes may open the same file)."""

    kind = KIND

    def __init__(self, path: Path, vault: Vault) -> None:
        self._fps: dict[bytes, str] = {}
        self._bodies: OrderedDict[tuple[int, bytes, str], tuple[str, str | None]] = OrderedDict()
        self._cached_bytes = 0
        super().__init__(path, vault)

    def _remember(self, key: tuple[int, bytes, str], text: str, msg_id: str | None) -> None:
        self._bodies[key] = (text, msg_id)
        self._cached_bytes += len(text)
        while self._cached_bytes > BODY_CACHE_BYTES:
            _key, (old, _id) = self._bodies.popitem(last=False)
            self._cached_bytes -= len(old)

    @classmethod
    def in_data_dir(cls, data_dir: Path, vault: Vault) -> HistoryStore:
        return cls(Path(data_dir) / FILE_NAME, vault)

    def _encrypt_plain_rows(self, db: sqlite3.Connection) -> None:
        plain = Vault(self.vault.data_dir, None)
        peers = db.execute("SELECT tag, fp_box FROM peers").fetchall()
        for old_tag, fp_box in peers:
            fp = plain.open_sealed(b"", fp_box).decode("ascii")
            new_tag = self._tag(fp)
            db.execute("INSERT INTO peers VALUES (?, ?)", (new_tag, self._seal_fp(new_tag, fp)))
            for row_id, rid, direction, body in db.execute(
                    "SELECT id, rid, direction, body FROM messages WHERE peer = ?", (old_tag,)).fetchall():
                sealed = self.vault.seal(message_aad(fp, bytes(rid), direction), bytes(body))
                db.execute("UPDATE messages SET peer = ?, body = ? WHERE id = ?", (new_tag, sealed, row_id))
            db.execute("DELETE FROM peers WHERE tag = ?", (old_tag,))

    # --- sealing ----------------------------------------------------------------------------------------

    def _tag(self, fp: str) -> bytes:
        return self.vault.index_tag("fp:" + fp)

    def _seal_fp(self, tag: bytes, fp: str) -> bytes:
        return self.vault.seal(_AAD_PEER + tag, fp.encode("ascii"))

    def _message(self, row: _Row) -> HistoryMessage:
        """A row as a message (``self._lock`` held). Opening a sealed value costs about 0.1–0.2 ms (a GCM cipher
        object each), so peers' fingerprints and bodies already opened are kept in memory (bodies up to
        :data:`BODY_CACHE_BYTES`): a search typed letter by letter opens each body once."""
        row_id, rid, ts, direction, status, unread, body, fp_box, tag = row
        tag = bytes(tag)
        fp = self._fps.get(tag)
        if fp is None:
            fp = self.vault.open_sealed(_AAD_PEER + tag, fp_box).decode("ascii")
            if len(self._fps) < 100_000:
                self._fps[tag] = fp
        key = (row_id, bytes(rid), direction)
        cached = self._bodies.get(key)
        if cached is not None:
            text, msg_id, intact = *cached, True
        else:
            try:
                content = json.loads(self.vault.open_sealed(message_aad(fp, bytes(rid), direction), body))
                text, msg_id, intact = str(content["text"]), content.get("msg_id"), True
            except (CryptoError, ValueError, KeyError, TypeError, UnicodeDecodeError):
                text, msg_id, intact = UNREADABLE, None, False
            if intact:
                self._remember(key, text, msg_id)
        return HistoryMessage(id=row_id, fp=fp, direction=direction, text=text, ts=ts, status=status,
                              msg_id=msg_id, unread=bool(unread), intact=intact)

    def _select(self, where: str, args: Iterable[object], order: str, limit: int) -> list[HistoryMessage]:
        sql = (f"SELECT {_COLUMNS} FROM messages m JOIN peers p ON p.tag = m.peer WHERE {where} "
               f"ORDER BY {order} LIMIT ?")
        return self._read(lambda db: [self._message(r) for r in db.execute(sql, (*args, limit)).fetchall()])

    # --- writing ----------------------------------------------------------------------------------------

    def append(self, fp: str, direction: Literal["in", "out"], text: str, *, ts: float, status: str = "sent",
               msg_id: str | None = None, unread: bool | None = None) -> int:
        """Keep one message; returns its row id. ``unread`` defaults to True for received messages."""
        return self.append_many([NewMessage(fp, direction, text, ts, status, msg_id, unread)])[0]

    def append_many(self, messages: Sequence[NewMessage]) -> list[int]:
        """Keep several messages in one transaction (what the node's recorder does with a burst); their row ids."""
        prepared = []
        for m in messages:
            key = _check_fp(m.fp)
            if m.direction not in DIRECTIONS:
                raise ValueError(f"direction must be one of {DIRECTIONS}")
            _check_status(m.status)
            rid = crypto.random_bytes(RID_LEN)
            body = json.dumps({"text": m.text, "msg_id": m.msg_id}).encode("utf-8")
            unread = m.direction == "in" if m.unread is None else m.unread
            prepared.append((key, self._tag(key), rid, float(m.ts), m.direction, m.status, int(unread),
                             self.vault.seal(message_aad(key, rid, m.direction), body)))

        def write(db: sqlite3.Connection) -> list[int]:
            rows = []
            for key, tag, *values in prepared:
                if db.execute("SELECT 1 FROM peers WHERE tag = ?", (tag,)).fetchone() is None:
                    db.execute("INSERT INTO peers VALUES (?, ?)", (tag, self._seal_fp(tag, key)))
                cur = db.execute("INSERT INTO messages (peer, rid, ts, direction, status, unread, body) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (tag, *values))
                assert cur.lastrowid is not None
                rows.append(cur.lastrowid)
            return rows
        return self._write(write)

    def update_status(self, row_id: int, status: str) -> None:
        self.update_statuses([(row_id, status)])

    def update_statuses(self, changes: Sequence[tuple[int, str]], *, missing_ok: bool = False) -> None:
        """Several ``(row id, status)`` changes in one transaction; a row no longer there (its chat was deleted)
        is refused, or skipped with ``missing_ok``."""
        for _row, status in changes:
            _check_status(status)

        def write(db: sqlite3.Connection) -> None:
            for row_id, status in changes:
                changed = db.execute("UPDATE messages SET status = ? WHERE id = ?", (status, int(row_id))).rowcount
                if changed != 1 and not missing_ok:
                    raise UsageError(f"no message {row_id} in the history")
        self._write(write)

    def mark_read(self, fp: str) -> None:
        tag = self._tag(_check_fp(fp))
        self._write(lambda db: db.execute("UPDATE messages SET unread = 0 WHERE peer = ? AND unread = 1", (tag,)))

    def delete(self, fp: str) -> int:
        """Forget every message with ``fp``; returns how many. Their bytes are overwritten in the file and the
        write-ahead log is emptied, so they cannot be read back from either (nor from this store's memory)."""
        tag = self._tag(_check_fp(fp))

        def write(db: sqlite3.Connection) -> int:
            ids = {r[0] for r in db.execute("SELECT id FROM messages WHERE peer = ?", (tag,))}
            db.execute("DELETE FROM peers WHERE tag = ?", (tag,))
            for key in [k for k in self._bodies if k[0] in ids]:       # nor in this process's memory
                self._cached_bytes -= len(self._bodies.pop(key)[0])
            return len(ids)
        count = self._write(write)
        self._checkpoint()
        return count

    # --- reading ----------------------------------------------------------------------------------------

    def received_bytes(self, fp: str) -> int:
        """Bytes the messages received from ``fp`` take in the file (their sealed bodies)."""
        tag = self._tag(_check_fp(fp))
        return self._read(lambda db: int(db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM messages "
                                                    "WHERE peer = ? AND direction = 'in'", (tag,)).fetchone()[0]))

    def messages(self, fp: str, *, limit: int = 200, before_id: int | None = None) -> list[HistoryMessage]:
        """The ``limit`` newest messages with ``fp`` (older than row ``before_id``), oldest first."""
        tag = self._tag(_check_fp(fp))
        where, args = ("m.peer = ?", [tag]) if before_id is None else ("m.peer = ? AND m.id < ?", [tag, before_id])
        return self._select(where, args, "m.id DESC", _bounded(limit))[::-1]

    def waiting(self, fp: str | None = None) -> list[HistoryMessage]:
        """Messages still ``waiting`` to be sent (with ``fp``, or with anyone), oldest first."""
        if fp is None:
            return self._select("m.status = 'waiting'", [], "m.id", MAX_LIMIT)
        return self._select("m.status = 'waiting' AND m.peer = ?", [self._tag(_check_fp(fp))], "m.id", MAX_LIMIT)

    def conversations(self) -> list[ConversationSummary]:
        """One line per peer: its last message, unread count and size, most recent first."""
        def read(db: sqlite3.Connection) -> list[ConversationSummary]:
            groups = db.execute("SELECT MAX(id), SUM(unread), COUNT(*) FROM messages GROUP BY peer").fetchall()
            out = []
            for last_id, unread, count in groups:
                row = db.execute(f"SELECT {_COLUMNS} FROM messages m JOIN peers p ON p.tag = m.peer "
                                 "WHERE m.id = ?", (last_id,)).fetchone()
                m = self._message(row)
                out.append(ConversationSummary(fp=m.fp, last_text=m.text, last_ts=m.ts, last_direction=m.direction,
                                               unread=int(unread), count=int(count)))
            out.sort(key=lambda c: c.last_ts, reverse=True)
            return out
        return self._read(read)

    def search(self, query: str, fp: str | None = None, limit: int = 100) -> list[HistoryMessage]:
        """Messages whose text contains ``query`` (case-insensitive), newest first. Bodies are decrypted and
        scanned: at most :data:`SEARCH_SCAN_ROWS` of the newest rows and :data:`SEARCH_SCAN_BYTES` of bodies."""
        needle = query.casefold()
        if not needle:
            return []
        limit = _bounded(limit)
        where, args = ("m.peer = ?", [self._tag(_check_fp(fp))]) if fp is not None else ("1", [])

        def read(db: sqlite3.Connection) -> list[HistoryMessage]:
            found: list[HistoryMessage] = []
            budget = SEARCH_SCAN_BYTES
            rows = db.execute(f"SELECT {_COLUMNS} FROM messages m JOIN peers p ON p.tag = m.peer WHERE {where} "
                              "ORDER BY m.id DESC LIMIT ?", (*args, SEARCH_SCAN_ROWS))
            for row in rows:
                budget -= len(row[6])
                if budget < 0:
                    break
                m = self._message(row)
                if m.intact and needle in m.text.casefold():
                    found.append(m)
                    if len(found) >= limit:
                        break
            return found
        return self._read(read)

    def export_text(self, fp: str, peer_name: str | None = None) -> str:
        """The whole conversation with ``fp`` as plain text, oldest first; what the peer wrote is neutralised
        for terminals (:mod:`p2pchat.display`: no control sequence, no line of its own)."""
        key = _check_fp(fp)
        name = one_line(peer_name) if peer_name else "them"
        lines = [f"Chat with {name} (key {crypto.format_fingerprint(bytes.fromhex(key), 16)})"]
        before: int | None = None
        chunks: list[list[HistoryMessage]] = []
        while True:
            chunk = self.messages(key, limit=MAX_LIMIT, before_id=before)
            if not chunk:
                break
            chunks.append(chunk)
            before = chunk[0].id
        for m in (m for chunk in reversed(chunks) for m in chunk):
            lines.extend(display_lines(transcript_line(m, name)))
        return "\n".join(lines) + "\n"


def transcript_line(m: HistoryMessage, peer_name: str) -> str:
    """``[2026-12-07 08:01:02] you: text`` — raw: show it through :mod:`p2pchat.display` (``peer_name`` too)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.ts))
    who = "you" if m.direction == "out" else peer_name
    note = f" ({m.status})" if m.direction == "out" and m.status not in ("sent", "delivered") else ""
    return f"[{when}] {who}: {m.text}{note}"


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}")


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


__all__ = ["APPLICATION_ID", "DIRECTIONS", "FILE_NAME", "FORMAT", "STATUSES", "ConversationSummary",
           "HistoryMessage", "HistoryStore", "HistoryStoreError", "NewMessage", "transcript_line"]
