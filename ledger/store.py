"""SQLite store of a node's blocks, pending records and network parameters.

Crash safety: the database runs in WAL mode and every block is written in its own transaction (pending-pool
changes in another), so a process killed at any instant leaves the file with a prefix of the blocks it
accepted, each complete; blocks are stored in acceptance order (parents before children), so reloading them
rebuilds the same block tree. ``synchronous=NORMAL`` makes block commits cheap (no fsync per block): they
survive a killed process, and after a power loss the file is still consistent but may miss the last blocks,
which peers resend. Pending records are written with ``synchronous=FULL`` before they are acknowledged, so an
accepted record survives a power loss too.

Our files carry ``PRAGMA application_id`` = :data:`APPLICATION_ID` and ``user_version`` = :data:`SCHEMA_VERSION`.
A damaged or foreign file raises :class:`StoreError` with a plain message; ``recover=True`` moves it aside to
``<name>.corrupt-<time>`` (never deletes it) and starts an empty store, which then resyncs from peers.

Contract note: the network parameters ("meta") are read and written with :meth:`Store.load_params` /
:meth:`Store.save_params`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack

from ledger.blocks import Block
from ledger.errors import LedgerError, StoreError
from ledger.params import NetworkParams
from ledger.records import Record

log = logging.getLogger(__name__)
APPLICATION_ID = 0x50324C47  # "P2LG"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE blocks (n INTEGER PRIMARY KEY AUTOINCREMENT, hash BLOB NOT NULL UNIQUE, height INTEGER NOT NULL,
                     header BLOB NOT NULL, records BLOB NOT NULL);
CREATE TABLE pending (n INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, record BLOB NOT NULL);
"""
_COLUMNS = {"meta": {"key", "value"}, "blocks": {"n", "hash", "height", "header", "records"},
            "pending": {"n", "id", "record"}}
_TABLES = set(_COLUMNS)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


class _Damaged(Exception):
    """Internal: the file cannot be used as our store (message says why)."""

    def __init__(self, message: str, foreign: bool) -> None:
        super().__init__(message)
        self.foreign = foreign


def _decode_params(value: bytes, path: Path) -> NetworkParams:
    """The stored network parameters; a row that does not decode marks the whole file as damaged."""
    try:
        return NetworkParams.from_wire(_unpack(value))
    except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _Damaged(f"the network parameters in {path} are damaged ({exc or type(exc).__name__})",
                       foreign=False) from None


class Store:
    """One ledger database file (see the module docstring). Not thread-safe: the owner serialises calls."""

    def __init__(self, path: Path, *, recover: bool = False, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.recovered_from: Path | None = None
        # A zero-length file is what a crash right after creating the database leaves, but also what a truncated
        # chain looks like: SQLite takes it for a new database, so say so instead of starting over silently.
        self.found_empty = self.path.exists() and self.path.stat().st_size == 0
        try:
            self._conn = self._open()
        except _Damaged as exc:
            if not recover:
                advice = ("move it aside or choose another --data-dir" if exc.foreign else
                          "move it aside and start again to resync the chain from peers")
                raise StoreError(f"{exc} ({advice}: mv '{self.path}' '{self.path}.bad')") from None
            moved = self.move_aside(self.path)
            log.warning("%s; moved it to %s and starting an empty ledger database", exc, moved)
            self.recovered_from = moved
            try:
                self._conn = self._open()
            except _Damaged as again:
                raise StoreError(f"cannot create a ledger database at {self.path}: {again}") from None

    @staticmethod
    def move_aside(path: Path) -> Path:
        """Rename a database (and its -wal/-shm files) to ``<name>.corrupt-<time>``; returns the new path."""
        path = Path(path)
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            n += 1
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))
        path.replace(target)
        return target

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
            if head != SQLITE_MAGIC:
                raise _Damaged(f"{path} is not a ledger database (it is damaged, or some other kind of file)",
                               foreign=False)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the ledger database {path}: {exc}") from None
        # Damaged bytes can leave invalid UTF-8 in a TEXT cell (even a table name); read it as replacement
        # characters so the damage is reported by the checks below instead of escaping as a UnicodeDecodeError.
        conn.text_factory = _lenient_text
        try:
            self._prepare(conn)
        except sqlite3.OperationalError as exc:
            # Locked, busy, read-only, I/O error: the file may be fine, so never treat it as damaged.
            conn.close()
            raise StoreError(f"cannot use the ledger database {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _Damaged(f"the ledger database {path} is damaged ({exc})", foreign=False) from None
        except UnicodeDecodeError:
            # SQLite's own error message quoted the damaged bytes and Python could not decode it.
            conn.close()
            raise _Damaged(f"the ledger database {path} is damaged (its schema holds invalid text)",
                           foreign=False) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        path = self.path
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and version == 0 and not tables:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        elif app_id != APPLICATION_ID:
            raise _Damaged(f"{path} is an SQLite database of another application, not a p2pchat ledger",
                           foreign=True)
        elif version > SCHEMA_VERSION:
            raise StoreError(f"the ledger database {path} was written by a newer version of p2pchat "
                             f"(schema {version}; this version reads schema {SCHEMA_VERSION})")
        elif not _TABLES <= tables:
            raise _Damaged(f"the ledger database {path} lacks tables {', '.join(sorted(_TABLES - tables))}",
                           foreign=False)
        else:
            for table, columns in _COLUMNS.items():
                found = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if not columns <= found:
                    raise _Damaged(f"the ledger database {path} is damaged (table {table} lacks columns "
                                   f"{', '.join(sorted(columns - found))})", foreign=False)
            row = conn.execute("SELECT value FROM meta WHERE key='params'").fetchone()
            if row is not None:
                _decode_params(row[0], path)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"the ledger database {path} cannot use write-ahead logging (mode {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in check[:3])
            raise _Damaged(f"the ledger database {path} is damaged ({detail})", foreign=False)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions --------------------------------------------------------------------------------------

    def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]], *, durable: bool = False) -> None:
        conn = self._conn
        try:
            if durable:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    conn.execute(sql, args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the ledger database {self.path}: {exc}") from None
        finally:
            if durable:
                conn.execute("PRAGMA synchronous=NORMAL")

    # --- parameters ----------------------------------------------------------------------------------------

    def load_params(self) -> NetworkParams | None:
        """The network parameters this store was created for (None for a new store)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key='params'").fetchone()
        if row is None:
            return None
        return _decode_params(row[0], self.path)

    def save_params(self, params: NetworkParams) -> None:
        self._write([("INSERT OR REPLACE INTO meta(key, value) VALUES('params', ?)", (_pack(params.to_wire()),))],
                    durable=True)

    # --- finality ------------------------------------------------------------------------------------------

    def save_finality(self, state: dict[str, Any]) -> None:
        """Keep the chain's finality state (final block, connection times above it, checkpoint) in ``meta``."""
        self._write([("INSERT OR REPLACE INTO meta(key, value) VALUES('finality', ?)", (_pack(state),))])

    def load_finality(self) -> dict[str, Any] | None:
        """The saved finality state, or None (none saved, or damaged: then finality restarts from the depth
        and the clocks, which is logged)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key='finality'").fetchone()
        if row is None:
            return None
        try:
            state = _unpack(row[0])
            ok = (isinstance(state, dict) and isinstance(state.get("final_height"), int)
                  and isinstance(state.get("final_hash"), bytes) and isinstance(state.get("held"), list)
                  and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], bytes)
                          and isinstance(x[1], (int, float)) for x in state["held"])
                  and (state.get("checkpoint") is None
                       or (isinstance(state["checkpoint"], list) and len(state["checkpoint"]) == 2)))
        except (ValueError, TypeError, msgpack.UnpackException):
            ok = False
        if not ok:
            log.warning("the saved finality state in %s is damaged; recomputing it from depth and time", self.path)
            return None
        return state

    # --- blocks --------------------------------------------------------------------------------------------

    def save_block(self, block: Block, finality: dict[str, Any] | None = None) -> None:
        """Append one block in its own transaction (a block already stored is ignored), with the chain's
        finality state in the same transaction when given."""
        records = _pack([r.to_wire() for r in block.records])
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT OR IGNORE INTO blocks(hash, height, header, records) VALUES(?, ?, ?, ?)",
             (block.hash, block.height, block.header.packed, records))]
        if finality is not None:
            statements.append(("INSERT OR REPLACE INTO meta(key, value) VALUES('finality', ?)", (_pack(finality),)))
        self._write(statements)

    def delete_blocks(self, hashes: Iterable[bytes]) -> None:
        self._write([("DELETE FROM blocks WHERE hash=?", (h,)) for h in hashes])

    def block_count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]

    def load_blocks(self) -> list[Block]:
        """Every stored block in the order it was accepted (parents before children); a damaged row raises
        :class:`StoreError`."""
        blocks, damaged = self.load_blocks_lenient()
        if damaged:
            n, reason = damaged[0]
            raise StoreError(f"stored block #{n} in {self.path} is damaged ({reason}); move the file aside "
                             f"and start again to resync: mv '{self.path}' '{self.path}.bad'")
        return blocks

    def load_blocks_lenient(self) -> tuple[list[Block], list[tuple[int, str]]]:
        """Stored blocks in acceptance order, skipping rows that do not parse; returns the blocks and the
        skipped rows as ``(row number, reason)`` (see :meth:`delete_rows`)."""
        try:
            rows = self._conn.execute("SELECT n, header, records FROM blocks ORDER BY n").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the ledger database {self.path} is damaged ({exc}); move it aside "
                             f"and start again to resync: mv '{self.path}' '{self.path}.bad'") from None
        blocks: list[Block] = []
        damaged: list[tuple[int, str]] = []
        for n, header, records in rows:
            try:
                blocks.append(Block.from_wire({"header": header, "records": _unpack(records)}))
            except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
                damaged.append((n, str(exc)))
        return blocks, damaged

    def delete_rows(self, rows: Iterable[int]) -> None:
        """Delete block rows by row number (damaged rows reported by :meth:`load_blocks_lenient`)."""
        self._write([("DELETE FROM blocks WHERE n=?", (n,)) for n in rows])

    # --- pending records -----------------------------------------------------------------------------------

    def save_pending(self, records: Iterable[Record]) -> None:
        """Persist pending records durably (fsync) before they are acknowledged."""
        self.update_pending(records, ())

    def remove_pending(self, record_ids: Iterable[bytes]) -> None:
        self.update_pending((), record_ids)

    def update_pending(self, saved: Iterable[Record], removed: Iterable[bytes]) -> None:
        """Save and remove pending records in one durable transaction."""
        statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM pending WHERE id=?", (rid,))
                                                         for rid in removed]
        statements += [("INSERT OR IGNORE INTO pending(id, record) VALUES(?, ?)", (r.id, _pack(r.to_wire())))
                       for r in saved]
        if statements:
            self._write(statements, durable=True)

    def load_pending(self) -> list[Record]:
        """Stored pending records in arrival order; damaged rows are skipped (and logged)."""
        out = []
        for n, data in self._conn.execute("SELECT n, record FROM pending ORDER BY n").fetchall():
            try:
                out.append(Record.from_wire(_unpack(data)))
            except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
                log.warning("skipping damaged pending record #%s in %s: %s", n, self.path, exc)
        return out
