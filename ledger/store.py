"""SQLite store of a node's blocks, pending records and network parameters.

Crash safety: the database runs in WAL mode and every batch of accepted blocks is written in one transaction
together with what it changed in the derived state (:class:`DerivedDelta`; pending-pool changes in another), so
a process killed at any instant leaves the file with a prefix of the blocks it accepted, each complete, and a
stored checkpoint that matches them; blocks are stored in acceptance order (parents before children), so reloading them
rebuilds the same block tree. ``synchronous=NORMAL`` makes block commits cheap (no fsync per block): they
survive a killed process, and after a power loss the file is still consistent but may miss the last blocks,
which peers resend. Pending records are written with ``synchronous=FULL`` before they are acknowledged, so an
accepted record survives a power loss too.

Our files carry ``PRAGMA application_id`` = :data:`APPLICATION_ID` and ``user_version`` = :data:`SCHEMA_VERSION`.
A damaged or foreign file raises :class:`StoreError` with a plain message; ``recover=True`` moves it aside to
``<name>.corrupt-<time>`` (never deletes it) and starts an empty store, which then resyncs from peers.

Open check (see docs/ledger.md, "Open check"): the process that owns the store (``owner=True``: the
:class:`~ledger.local_ledger.LocalLedger` holding the data directory's lock) writes a clean-shutdown mark
(``meta['shutdown']``) when it closes the store and deletes it when it opens it. An open that finds the mark runs
only cheap checks (the SQLite header against the file's size, SQLite's check of the small tables, the meta rows)
and leaves SQLite's whole-file ``quick_check`` — linear in the file — owed (:attr:`Store.whole_file_check_due`,
run by :meth:`Store.check_whole_file` in the background); an open without it (a crash, a power loss, an older
version, any other process) runs the whole-file check before anything is read.

Contract note: the network parameters ("meta") are read and written with :meth:`Store.load_params` /
:meth:`Store.save_params`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgpack

from ledger.blocks import Block
from ledger.errors import LedgerError, StoreError
from ledger.params import NetworkParams
from ledger.prune_body import parse_stored_body
from ledger.records import Record
from p2pchat.foundation.datadir import slot_problem
from p2pchat.foundation.sqlite_tx import end_transaction, length_problem

log = logging.getLogger(__name__)
APPLICATION_ID = 0x50324C47  # "P2LG"
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE blocks (n INTEGER PRIMARY KEY AUTOINCREMENT, hash BLOB NOT NULL UNIQUE, height INTEGER NOT NULL,
                     header BLOB NOT NULL, records BLOB NOT NULL);
CREATE TABLE pending (n INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, record BLOB NOT NULL);
"""
# Schema 2: state derived from the main chain, kept in step with ``blocks`` (same transactions), so a start loads
# it instead of replaying history (see docs/ledger.md, "Stored checkpoint"). A schema-1 file gains these tables
# empty and is rebuilt once by replay.
_DERIVED_SCHEMA = """
CREATE TABLE IF NOT EXISTS main_chain (height INTEGER PRIMARY KEY, hash BLOB NOT NULL, header BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS record_loc (id BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bind_id (fp BLOB PRIMARY KEY, record_id BLOB NOT NULL, height INTEGER NOT NULL,
                                    idx INTEGER NOT NULL, status TEXT NOT NULL, expires INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bind_ip (ip TEXT PRIMARY KEY, fp BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bind_nick (key TEXT PRIMARY KEY, fp BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS undo (height INTEGER PRIMARY KEY, log BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS side (hash BLOB PRIMARY KEY) WITHOUT ROWID;
"""
DERIVED_FORMAT = 1
SHUTDOWN_KEY = "shutdown"        # meta row of the clean-shutdown mark (see the module docstring)
SMALL_TABLES = ("meta", "pending", "undo", "side")   # checked by SQLite at every open: a few pages each
_COLUMNS = {"meta": {"key", "value"}, "blocks": {"n", "hash", "height", "header", "records"},
            "pending": {"n", "id", "record"}}
_TABLES = set(_COLUMNS)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


@dataclass
class DerivedDelta:
    """Changes to the stored derived state (see the schema-2 tables), written with the blocks that caused them.

    A value of None deletes the row. ``main`` holds ``(height, hash, packed header)`` of main-chain rows to
    (re)write and ``tip_height`` the new top: rows above it are deleted. ``undo_upto`` drops undo logs of blocks
    at or below it (they became final). ``reset`` clears every derived table first (a rebuild by replay)."""

    tip_height: int
    tip_hash: bytes
    main: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    record_loc: dict[bytes, tuple[int, int] | None] = field(default_factory=dict)
    identities: dict[bytes, tuple[bytes, int, int, str, int] | None] = field(default_factory=dict)
    ips: dict[str, bytes | None] = field(default_factory=dict)
    nicks: dict[str, bytes | None] = field(default_factory=dict)
    undo: dict[int, bytes | None] = field(default_factory=dict)
    undo_upto: int = -1
    reset: bool = False
    counts: dict[str, int] | None = None   # identities per status after the change (kept in the stamp)

    def statements(self, never_side: Container[bytes] = ()) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """The SQL of the change, rows of one statement kind together (the store runs each run as one
        ``executemany``). ``never_side``: hashes of blocks written in the same transaction and never listed in
        ``side`` (new main-chain blocks), whose removal from ``side`` is skipped."""
        if self.reset:
            for table in ("main_chain", "record_loc", "bind_id", "bind_ip", "bind_nick", "undo", "side"):
                yield f"DELETE FROM {table}", ()
            yield "INSERT INTO side(hash) SELECT hash FROM blocks", ()
        # ``side`` lists the stored blocks off the main chain, so a start finds them without scanning ``blocks``.
        low = min((h for h, _, _ in self.main), default=self.tip_height + 1)
        yield "INSERT OR IGNORE INTO side(hash) SELECT hash FROM main_chain WHERE height >= ?", (low,)
        yield "DELETE FROM main_chain WHERE height >= ?", (low,)
        for height, block_hash, header in self.main:
            yield "INSERT INTO main_chain(height, hash, header) VALUES(?, ?, ?)", (height, block_hash, header)
        for _, block_hash, _ in self.main:
            if self.reset or block_hash not in never_side:
                yield "DELETE FROM side WHERE hash=?", (block_hash,)
        for rid, loc in self.record_loc.items():
            if loc is None:
                yield "DELETE FROM record_loc WHERE id=?", (rid,)
            else:
                yield "INSERT OR REPLACE INTO record_loc(id, height, idx) VALUES(?, ?, ?)", (rid, *loc)
        for fp, row in self.identities.items():
            if row is None:
                yield "DELETE FROM bind_id WHERE fp=?", (fp,)
            else:
                yield ("INSERT OR REPLACE INTO bind_id(fp, record_id, height, idx, status, expires) "
                       "VALUES(?, ?, ?, ?, ?, ?)", (fp, *row))
        for table, column, changes in (("bind_ip", "ip", self.ips), ("bind_nick", "key", self.nicks)):
            for key, holder in changes.items():
                if holder is None:
                    yield f"DELETE FROM {table} WHERE {column}=?", (key,)
                else:
                    yield f"INSERT OR REPLACE INTO {table}({column}, fp) VALUES(?, ?)", (key, holder)
        for height, log_blob in self.undo.items():
            if log_blob is None:
                yield "DELETE FROM undo WHERE height=?", (height,)
            else:
                yield "INSERT OR REPLACE INTO undo(height, log) VALUES(?, ?)", (height, log_blob)
        yield "DELETE FROM undo WHERE height > ?", (self.tip_height,)
        if self.undo_upto >= 0:
            yield "DELETE FROM undo WHERE height <= ?", (self.undo_upto,)
        stamp: dict[str, Any] = {"format": DERIVED_FORMAT, "height": self.tip_height, "tip": self.tip_hash}
        if self.counts is not None:
            stamp["counts"] = self.counts
        yield "INSERT OR REPLACE INTO meta(key, value) VALUES('derived', ?)", (_pack(stamp),)


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

    def __init__(self, path: Path, *, recover: bool = False, busy_timeout: float = 10.0, check: bool = True,
                 owner: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        # ``check=False`` skips SQLite's quick_check (linear in the file's size): for a peek at the parameters
        # by a command that opens the store again, checked, right after.
        self.check = check
        # ``owner``: this process holds the data directory's lock, so it keeps the clean-shutdown mark.
        self.owner = owner
        # After an open that found the clean-shutdown mark, the whole-file check is still owed (run it with
        # check_whole_file); ``damaged`` is set once a check found damage (no clean mark is written then).
        self.whole_file_check_due = False
        self.damaged: str | None = None
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
        problem = slot_problem(path)
        if problem is not None:     # a directory, a dangling link: never moved aside, never written through
            raise StoreError(f"the ledger database {path} {problem}")
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
            for statement in _DERIVED_SCHEMA.split(";"):
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
            derived_tables = {"main_chain", "record_loc", "bind_id", "bind_ip", "bind_nick", "undo", "side"}
            main_columns = {r[1] for r in conn.execute("PRAGMA table_info(main_chain)")}
            if "main_chain" in tables and "header" not in main_columns:
                conn.execute("DROP TABLE main_chain")  # an early development layout: rebuilt by replay
                tables.discard("main_chain")
            if version < SCHEMA_VERSION or not derived_tables <= tables:
                # Upgrade: add the derived-state tables (empty, so the next load rebuilds them once by replay).
                conn.execute("BEGIN IMMEDIATE")
                for statement in _DERIVED_SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("DELETE FROM meta WHERE key='derived'")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"the ledger database {path} cannot use write-ahead logging (mode {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        if not self.check:
            return
        if self.owner and _read_meta(conn, SHUTDOWN_KEY) == _clean_mark(conn):
            self._cheap_check(conn)
            self.whole_file_check_due = True
        else:
            size = path.stat().st_size if path.exists() else 0
            if self.owner and size > 64 * 2**20:
                log.warning("checking the whole ledger database %s (%d MiB) because it was not closed cleanly "
                            "last time; this reads the whole file once", path, size >> 20)
            started = time.monotonic()
            problem = _quick_check(conn)
            if problem is not None:
                raise _Damaged(f"the ledger database {path} is damaged ({problem})", foreign=False)
            if self.owner and size > 64 * 2**20:
                log.warning("the ledger database %s is intact (checked in %.1f s)", path, time.monotonic() - started)
        if self.owner:
            # Cleared while open: a crash from here on leaves no mark, so the next open checks the whole file.
            conn.execute("DELETE FROM meta WHERE key=?", (SHUTDOWN_KEY,))

    def _cheap_check(self, conn: sqlite3.Connection) -> None:
        """The open check after a clean shutdown: constant time in the chain's length (docs/ledger.md)."""
        path = self.path
        problem = length_problem(path)
        if problem is not None:
            raise _Damaged(f"the ledger database {path} is damaged ({problem})", foreign=False)
        for table in SMALL_TABLES:
            problem = _quick_check(conn, table)
            if problem is not None:
                raise _Damaged(f"the ledger database {path} is damaged (table {table}: {problem})", foreign=False)
        for key in ("derived", "finality"):
            value = _read_meta(conn, key)
            try:
                if value is not None and not isinstance(_unpack(value), dict):
                    raise ValueError("not a map")
            except (ValueError, TypeError, msgpack.UnpackException):
                raise _Damaged(f"the ledger database {path} is damaged (its {key} entry does not decode)",
                               foreign=False) from None

    def check_whole_file(self, stop: threading.Event | None = None) -> str | None:
        """SQLite's whole-file check and the stored checkpoint's linear checks, on a connection of its own (any
        thread; the owner's writes go on meanwhile). Returns the damage in plain words, or None; sets
        :attr:`damaged`. Raises :class:`StoreError` if the check could not run or was stopped (``stop`` set)."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                   isolation_level=None, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot check the ledger database {self.path}: {exc}") from None
        conn.text_factory = _lenient_text
        if stop is not None:
            conn.set_progress_handler(lambda: 1 if stop.is_set() else 0, 100_000)
        try:
            conn.execute("BEGIN")   # one snapshot for every check below
            problem = _quick_check(conn)
            if problem is None:
                problem = checkpoint_problem(conn)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the check of the ledger database {self.path} did not finish: {exc}") from None
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        finally:
            conn.close()
        if problem is not None:
            self.damaged = f"the ledger database {self.path} is damaged ({problem})"
            return self.damaged
        self.whole_file_check_due = False
        return None

    def close(self) -> None:
        """Close the file; the owner writes the clean-shutdown mark first (unless a check found damage)."""
        if self.owner and self.damaged is None:
            try:
                mark = _clean_mark(self._conn)
                self._write([("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (SHUTDOWN_KEY, mark))])
            except StoreError as exc:
                log.warning("%s (the next start checks the whole file)", exc)
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
                # Consecutive statements with the same SQL run as one executemany (one prepared statement).
                for sql, rows in groupby(statements, key=itemgetter(0)):
                    conn.executemany(sql, [args for _, args in rows])
            except BaseException:
                end_transaction(conn, "ROLLBACK")
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
        row = self._row("SELECT value FROM meta WHERE key='params'")
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
        row = self._row("SELECT value FROM meta WHERE key='finality'")
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

    def save_block(self, block: Block, finality: dict[str, Any] | None = None,
                   derived: DerivedDelta | None = None) -> None:
        """Append one block in its own transaction (a block already stored is ignored), with the chain's
        finality state and derived-state changes in the same transaction when given."""
        self.save_blocks([block], finality, derived)

    def save_blocks(self, blocks: Sequence[Block], finality: dict[str, Any] | None = None,
                    derived: DerivedDelta | None = None, deleted: Iterable[bytes] = ()) -> None:
        """Append blocks, delete blocks, and write the finality state and the derived-state changes
        (:class:`DerivedDelta`), all in one transaction: a crash leaves all of it or none."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        gone = list(deleted)
        statements += [("DELETE FROM blocks WHERE hash=?", (h,)) for h in gone]
        statements += [("DELETE FROM side WHERE hash=?", (h,)) for h in gone]
        statements += [("INSERT OR IGNORE INTO blocks(hash, height, header, records) VALUES(?, ?, ?, ?)",
                        (block.hash, block.height, block.header.packed, _pack([r.to_wire() for r in block.records])))
                       for block in blocks]
        # A new block the derived change puts on the main chain is never listed in ``side`` (a sync appends
        # blocks by the thousand: two writes each saved); every other new block is, until it joins the main chain.
        on_main = {h for _, h, _ in derived.main} if derived is not None and not derived.reset else set()
        new_main = {block.hash for block in blocks if block.hash in on_main}
        statements += [("INSERT OR IGNORE INTO side(hash) VALUES(?)", (block.hash,)) for block in blocks
                       if block.hash not in new_main]
        if finality is not None:
            statements.append(("INSERT OR REPLACE INTO meta(key, value) VALUES('finality', ?)", (_pack(finality),)))
        if derived is not None:
            statements.extend(derived.statements(never_side=new_main))
        self._write(statements)

    def write_derived(self, derived: DerivedDelta, finality: dict[str, Any] | None = None) -> None:
        """Write derived-state changes (and the finality state) without a block, in one transaction."""
        self.save_blocks([], finality, derived)

    def delete_blocks(self, hashes: Iterable[bytes]) -> None:
        self._write([("DELETE FROM blocks WHERE hash=?", (h,)) for h in hashes])

    def has_blocks(self) -> bool:
        return self._row("SELECT 1 FROM blocks LIMIT 1") is not None

    def block_count(self) -> int:
        return self._row("SELECT COUNT(*) FROM blocks")[0]

    def load_blocks(self) -> list[Block]:
        """Every stored block in the order it was accepted (parents before children); a damaged row raises
        :class:`StoreError`."""
        blocks, damaged = self.load_blocks_lenient()
        if damaged:
            n, reason = damaged[0]
            raise StoreError(f"stored block #{n} in {self.path} is damaged ({reason}); move the file aside "
                             f"and start again to resync: mv '{self.path}' '{self.path}.bad'")
        return blocks

    def raw_block_rows(self) -> list[tuple[int, bytes, bytes]]:
        """``(row number, packed header, packed records)`` of every stored block in acceptance order, unparsed."""
        return self._rows("SELECT n, header, records FROM blocks ORDER BY n")

    def load_blocks_lenient(self) -> tuple[list[Block], list[tuple[int, str]]]:
        """Stored blocks in acceptance order, skipping rows that do not parse; returns the blocks and the
        skipped rows as ``(row number, reason)`` (see :meth:`delete_rows`)."""
        return _parse_rows(self._rows("SELECT n, header, records FROM blocks ORDER BY n"))

    def delete_rows(self, rows: Iterable[int]) -> None:
        """Delete block rows by row number (damaged rows reported by :meth:`load_blocks_lenient`)."""
        self._write([("DELETE FROM blocks WHERE n=?", (n,)) for n in rows])

    # --- derived state (schema 2) -----------------------------------------------------------------------------

    def load_derived_meta(self) -> dict[str, Any] | None:
        """The stored derived state's stamp ``{"format", "height", "tip"}`` (and ``"counts"``: identities per
        status, when written by this version), or None (none, or damaged)."""
        row = self._row("SELECT value FROM meta WHERE key='derived'")
        if row is None:
            return None
        try:
            meta = _unpack(row[0])
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if not (isinstance(meta, dict) and meta.get("format") == DERIVED_FORMAT
                and isinstance(meta.get("height"), int) and isinstance(meta.get("tip"), bytes)):
            return None
        counts = meta.get("counts")
        if counts is not None and not (isinstance(counts, dict) and all(
                isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counts.items())):
            return None
        return meta

    def main_chain_rows(self, above: int = 0) -> list[tuple[int, bytes, bytes]]:
        """``(height, hash, packed header)`` of the stored main chain above height ``above``, by height."""
        return self._rows("SELECT height, hash, header FROM main_chain WHERE height > ? ORDER BY height",
                          (above,))

    def main_chain_ends(self) -> tuple[int, int, bytes | None]:
        """``(lowest height, highest height, hash at the highest)`` of the stored main chain, from the B-tree's
        edges (0, 0, None when empty); that no height between is missing is checked by
        :meth:`checkpoint_problem`."""
        # Two queries: SQLite answers MIN() or MAX() of the key from the B-tree's edge, but not both at once.
        low, = self._row("SELECT COALESCE(MIN(height), 0) FROM main_chain")
        top, = self._row("SELECT COALESCE(MAX(height), 0) FROM main_chain")
        return low, top, self.main_hash_at(top)

    def checkpoint_problem(self) -> str | None:
        """See :func:`checkpoint_problem` (linear in the chain: run when the whole file is checked anyway)."""
        return checkpoint_problem(self._conn)

    def main_row_at(self, height: int) -> tuple[bytes, bytes] | None:
        """``(hash, packed header)`` of the stored main chain at ``height`` (None if there is no such row)."""
        row = self._row("SELECT hash, header FROM main_chain WHERE height=?", (height,))
        return (row[0], row[1]) if row is not None else None

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of a stored block, main chain or not (None if not stored)."""
        row = self._row("SELECT height FROM blocks WHERE hash=?", (block_hash,))
        return row[0] if row is not None else None

    def main_hash_at(self, height: int) -> bytes | None:
        row = self._row("SELECT hash FROM main_chain WHERE height=?", (height,))
        return row[0] if row is not None else None

    def identity_rows(self) -> list[tuple[bytes, bytes, int, int, str, int]]:
        return self._rows("SELECT fp, record_id, height, idx, status, expires FROM bind_id "
                          "ORDER BY fp")

    def live_fps_from(self, start: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` fingerprints of stored live identities >= ``start``, in order (prefix lookups)."""
        return [r[0] for r in self._rows("SELECT fp FROM bind_id WHERE fp >= ? AND status='live' "
                                         "ORDER BY fp LIMIT ?", (start, limit))]

    def identity_row(self, fp: bytes) -> tuple[bytes, bytes, int, int, str, int] | None:
        return self._row("SELECT fp, record_id, height, idx, status, expires FROM bind_id WHERE fp=?",
                         (fp,))

    def identity_counts(self) -> dict[str, int]:
        """Identities per status, counted (linear: a start reads the counts kept in the checkpoint's stamp)."""
        return _identity_counts(self._conn)

    def live_expiries(self) -> list[int]:
        """The expiry times of the live identities (read once, when the live-binding count is first asked)."""
        return [r[0] for r in self._rows("SELECT expires FROM bind_id WHERE status='live'")]

    def binding_rows(self, table: str) -> list[tuple[str, bytes]]:
        """``(key, fingerprint)`` rows of ``bind_ip`` or ``bind_nick``."""
        if table not in ("bind_ip", "bind_nick"):
            raise ValueError(table)
        return self._rows(f"SELECT * FROM {table}")

    def record_loc_rows(self) -> list[tuple[bytes, tuple[int, int]]]:
        return [(rid, (h, i)) for rid, h, i in self._rows("SELECT id, height, idx FROM record_loc")]

    def binding_value(self, table: str, key: str) -> bytes | None:
        """The fingerprint ``bind_ip`` or ``bind_nick`` holds for ``key`` (None if none)."""
        if table not in ("bind_ip", "bind_nick"):
            raise ValueError(table)
        column = "ip" if table == "bind_ip" else "key"
        row = self._row(f"SELECT fp FROM {table} WHERE {column}=?", (key,))
        return row[0] if row is not None else None

    def record_loc(self, record_id: bytes) -> tuple[int, int] | None:
        row = self._row("SELECT height, idx FROM record_loc WHERE id=?", (record_id,))
        return (row[0], row[1]) if row is not None else None

    def undo_rows(self) -> dict[int, bytes]:
        return dict(self._rows("SELECT height, log FROM undo"))

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Every row of a read; errors as :meth:`_row`."""
        with self._reading():
            return self._conn.execute(sql, args).fetchall()

    def _row(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """The first row of a read (None if there is none). SQLite finds a damaged page only when a query reads
        it, at any time after the open: that becomes the same plain :class:`StoreError` as damage found at open,
        never a raw sqlite error escaping to the caller."""
        with self._reading():
            return self._conn.execute(sql, args).fetchone()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.ProgrammingError:          # our bug (e.g. a closed store), not the file's
            raise
        except sqlite3.OperationalError as exc:   # locked, busy, I/O: the file may be fine
            raise StoreError(f"cannot read the ledger database {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the ledger database {self.path} is damaged ({exc}); move it aside "
                             f"and start again to resync: mv '{self.path}' '{self.path}.bad'") from None

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        """One stored block, parsed (None if absent); a damaged row raises :class:`StoreError`."""
        row = self._row("SELECT header, records FROM blocks WHERE hash=?", (block_hash,))
        if row is None:
            return None
        try:
            return parse_stored_body(row[0], _unpack(row[1]))  # a pruned body keeps ids for dropped records
        except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StoreError(f"stored block {block_hash.hex()[:16]} in {self.path} is damaged ({exc}); run "
                             "'ledger verify' and move the file aside to resync") from None

    def side_blocks(self) -> tuple[list[Block], list[tuple[int, str]]]:
        """Stored blocks not on the stored main chain (side and parked branches), in acceptance order."""
        # CROSS JOIN keeps ``side`` (a few rows) the outer loop: SQLite's planner would otherwise scan ``blocks``.
        rows = self._rows("SELECT b.n, b.header, b.records FROM side s CROSS JOIN blocks b "
                          "ON b.hash = s.hash ORDER BY b.n")
        return _parse_rows(rows)

    # --- pruning (ledger/prune.py; docs/ledger.md "Pruning") ----------------------------------------------------

    def prune_meta(self) -> dict[str, Any] | None:
        """The pruning progress ``{"height", "records", "bytes"}`` (None: never pruned). A damaged entry raises
        :class:`StoreError`: taking a pruned store for a full one would let a replay drop its pruned blocks."""
        row = self._row("SELECT value FROM meta WHERE key='pruned'")
        if row is None:
            return None
        try:
            meta = _unpack(row[0])
        except (ValueError, TypeError, msgpack.UnpackException):
            meta = None
        if not (isinstance(meta, dict) and all(isinstance(meta.get(k), int) for k in ("height", "records", "bytes"))):
            raise StoreError(f"the pruning progress in {self.path} is damaged; move the file aside and join again "
                             f"through a peer that keeps every block: mv '{self.path}' '{self.path}.bad'")
        return meta

    def main_body_row(self, height: int) -> tuple[bytes, bytes, bytes] | None:
        """``(hash, packed header, stored record list)`` of the main-chain block at ``height``."""
        row = self._row("SELECT m.hash, m.header, b.records FROM main_chain m JOIN blocks b "
                        "ON b.hash = m.hash WHERE m.height=?", (height,))
        return (row[0], row[1], row[2]) if row is not None else None

    def write_pruned(self, bodies: Iterable[tuple[bytes, Any]], meta: dict[str, Any]) -> None:
        """Replace the stored record lists of ``(hash, record list)`` and the pruning progress, in one
        transaction: a crash leaves the bodies and the progress of the step before, or of this one."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE blocks SET records=? WHERE hash=?", (_pack(items), block_hash)) for block_hash, items in bodies]
        statements.append(("INSERT OR REPLACE INTO meta(key, value) VALUES('pruned', ?)", (_pack(meta),)))
        self._write(statements)

    def vacuum(self) -> None:
        """Give the pages freed by pruning back to the file system (rewrites the file; node stopped)."""
        try:
            self._conn.execute("VACUUM")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot compact the ledger database {self.path}: {exc}") from None

    # --- end pruning ----------------------------------------------------------------------------------------

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
        for n, data in self._rows("SELECT n, record FROM pending ORDER BY n"):
            try:
                out.append(Record.from_wire(_unpack(data)))
            except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
                log.warning("skipping damaged pending record #%s in %s: %s", n, self.path, exc)
        return out


def _read_meta(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return bytes(row[0]) if row is not None and isinstance(row[0], bytes) else None


def _clean_mark(conn: sqlite3.Connection) -> bytes:
    """The clean-shutdown mark for the store as it is now: ``clean`` and the checkpoint stamp, so a version that
    does not keep the mark and changed the chain since (a downgrade, then an upgrade) makes the next open check
    the whole file."""
    return b"clean" + (_read_meta(conn, "derived") or b"")


def _quick_check(conn: sqlite3.Connection, table: str | None = None) -> str | None:
    """SQLite's ``quick_check`` of the whole file (or of one table): None when it is intact, else what it found."""
    rows = conn.execute(f"PRAGMA quick_check({table})" if table else "PRAGMA quick_check").fetchall()
    if rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows[:3])


def _identity_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM bind_id GROUP BY status").fetchall())


def checkpoint_problem(conn: sqlite3.Connection) -> str | None:
    """What the constant-time open does not check of the stored checkpoint (linear queries): ``main_chain``
    holds every height 1 … the stamp's height, and the identities per status are the stamp's counts."""
    row = conn.execute("SELECT value FROM meta WHERE key='derived'").fetchone()
    if row is None:
        return None
    try:
        stamp = _unpack(row[0])
        height, counts = int(stamp["height"]), stamp.get("counts")
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return "its checkpoint stamp does not decode"
    count, = conn.execute("SELECT COUNT(*) FROM main_chain").fetchone()
    if count != height:
        return f"the stored main chain has {count} rows for height {height}"
    if counts is not None:
        found = _identity_counts(conn)
        if {k: v for k, v in found.items() if v} != {k: v for k, v in counts.items() if v}:
            return "the stored identities do not match their counts"
    return None


def _parse_rows(rows: Iterable[tuple[int, bytes, bytes]]) -> tuple[list[Block], list[tuple[int, str]]]:
    """Stored block rows ``(n, header, records)`` as blocks, and the rows that do not parse (with the reason)."""
    blocks: list[Block] = []
    damaged: list[tuple[int, str]] = []
    for n, header, records in rows:
        try:
            blocks.append(Block.from_wire({"header": header, "records": _unpack(records)}))
        except (LedgerError, ValueError, TypeError, msgpack.UnpackException) as exc:
            damaged.append((n, str(exc)))
    return blocks, damaged
