"""The light client's verified headers on disk: one SQLite file per network in the data directory.

``light-headers-<first 16 hex digits of the network id>-<node IP>-<node port>.sqlite`` (one file per node
asked: what one node sent never stands in the way of another node's answers) holds the client's verified main
chain of headers (height → 125-byte packed header) and the newest final block a server reported on that chain. Memory
stays bounded whatever the chain's length: headers are read back by height when a proof or a fork check needs
them, and the cumulative work up to a height is ``height × 2**difficulty_bits`` because every header of a
network carries its fixed target.

Crash safety is SQLite's rollback journal (``synchronous = FULL``): a batch of headers is adopted in one
transaction together with the removal of the branch it replaces, so a crash leaves the previous chain or the
new one. A file that is not ours (another ``application_id``/format), belongs to another network, or fails the
checks made when it is opened (genesis, the tip's hash and height, contiguous heights) is **moved aside**
(``….damaged-<unix time>``) with a plain warning and the client starts again from genesis: headers are only a
cache of what any node can send again, so nothing is lost but the time of a resync.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ledger.blocks import HEADER_SIZE, BlockHeader
from ledger.errors import LedgerError
from ledger.params import NetworkParams
from p2pchat.foundation.datadir import slot_problem
from p2pchat.foundation.sqlite_tx import end_transaction

log = logging.getLogger("ledger.headers")

APPLICATION_ID = 0x50324C48     # "P2LH": p2pchat light-client headers
FORMAT_VERSION = 1
CACHE_KIB = 2048                # SQLite page cache: the only part of the chain kept in memory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS headers (height INTEGER PRIMARY KEY, header BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class HeaderFileDamaged(LedgerError):
    """The header file cannot be used (damaged, foreign or of another network)."""


def header_file_path(data_dir: Path, params: NetworkParams, ip: str, port: int) -> Path:
    """The header file of the node at ``ip`` (normalised) and ``port``: a hostile node's headers and final mark
    stay in its own file, so an honest node asked through the same data directory is checked against its own."""
    return Path(data_dir) / f"light-headers-{params.genesis_hash.hex()[:16]}-{ip.replace(':', '-')}-{port}.sqlite"


class HeaderStore:
    """Verified headers by height, in a SQLite file (``path``) or in memory (``path=None``).

    Thread-safe (one lock around the connection). Writers from several processes (a chat node and a
    ``ledger lookup`` on the same data directory) are serialised by SQLite's lock: :meth:`transaction` takes it
    before reading the state a change is checked against.
    """

    def __init__(self, params: NetworkParams, path: Path | None = None) -> None:
        self.params = params
        self.path = path
        self.moved_to: Path | None = None   # where a damaged or foreign file was moved
        self.problem: str | None = None     # why, in plain words
        self._lock = threading.RLock()
        try:
            self._db = self._open()
        except HeaderFileDamaged as exc:
            assert path is not None
            self.moved_to = _move_aside(path)
            self.problem = (f"the light client's header file {path} cannot be used ({exc}); moved it to "
                            f"{self.moved_to} and fetching the headers again from genesis")
            log.warning("%s", self.problem)
            self._db = self._open()

    # --- opening ---------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        problem = None if self.path is None else slot_problem(self.path)
        if problem is not None:     # a directory, a link to nothing (SQLite would create the file at its target)
            raise HeaderFileDamaged(problem.split(";")[0])
        fresh = self.path is None or not self.path.exists() or self.path.stat().st_size == 0
        try:
            db = sqlite3.connect(target, timeout=10.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise HeaderFileDamaged(f"SQLite cannot open it: {exc}") from None
        try:
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            if not fresh:
                self._check_existing(db)
            else:
                db.execute("PRAGMA journal_mode = DELETE")
                db.execute("PRAGMA synchronous = FULL")
                with _immediate(db):
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                    for statement in _SCHEMA.strip().split(";"):
                        if statement.strip():
                            db.execute(statement)
                    genesis = self.params.genesis().header
                    db.execute("INSERT OR IGNORE INTO headers VALUES (0, ?)", (genesis.packed,))
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('network_id', ?)", (self.params.genesis_hash,))
            db.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise HeaderFileDamaged(f"SQLite reports: {exc}") from None
        except HeaderFileDamaged:
            db.close()
            raise
        return db

    def _check_existing(self, db: sqlite3.Connection) -> None:
        """Cheap checks (constant time) that the file is ours, of this network and whole at its ends."""
        (app,), = db.execute("PRAGMA application_id").fetchall()
        (version,), = db.execute("PRAGMA user_version").fetchall()
        if app != APPLICATION_ID:
            raise HeaderFileDamaged("it is not a p2pchat light-client header file")
        if version != FORMAT_VERSION:
            raise HeaderFileDamaged(f"it has format {version}; this program reads format {FORMAT_VERSION}")
        row = db.execute("SELECT value FROM meta WHERE key = 'network_id'").fetchone()
        if row is None or bytes(row[0]) != self.params.genesis_hash:
            raise HeaderFileDamaged("it holds the headers of another network")
        # Two queries: SQLite answers min() or max() of the key from the B-tree's edge, but not both at once.
        (low,), = db.execute("SELECT min(height) FROM headers").fetchall()
        (high,), = db.execute("SELECT max(height) FROM headers").fetchall()
        if low != 0 or high is None:
            raise HeaderFileDamaged("its genesis header is missing")
        genesis = db.execute("SELECT header FROM headers WHERE height = 0").fetchone()
        if genesis is None or bytes(genesis[0]) != self.params.genesis().header.packed:
            raise HeaderFileDamaged("its genesis header is not this network's")
        if high > 0:
            tip = _unpacked(db, high)
            prev = _unpacked(db, high - 1)
            if tip is None or prev is None or tip.height != high or tip.prev_hash != prev.hash:
                raise HeaderFileDamaged(f"its tip header at height {high} does not link to the one before it")
        final = db.execute("SELECT value FROM meta WHERE key = 'final'").fetchone()
        if final is not None and (len(bytes(final[0])) != 40):
            raise HeaderFileDamaged("its final-block entry is malformed")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reading ---------------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        with self._lock:
            (high,), = self._db.execute("SELECT max(height) FROM headers").fetchall()
            return int(high)

    def at(self, height: int) -> BlockHeader | None:
        if height < 0:
            return None
        with self._lock:
            return _unpacked(self._db, height)

    def range(self, low: int, high: int) -> list[BlockHeader]:
        """Headers at heights ``low`` ≤ h < ``high``, in order."""
        with self._lock:
            rows = self._db.execute("SELECT header FROM headers WHERE height >= ? AND height < ? ORDER BY height",
                                    (max(0, low), high)).fetchall()
        return [BlockHeader.unpack(bytes(r[0])) for r in rows]

    def final(self) -> tuple[int, bytes] | None:
        """The newest final block a server reported on this chain, ``(height, hash)``, if any."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'final'").fetchone()
        if row is None:
            return None
        value = bytes(row[0])
        return int.from_bytes(value[:8], "big"), value[8:]

    # --- writing ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A consistent view for several reads (a deferred transaction: other processes may still read)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the file's write lock: reads inside see the state the writes apply to."""
        with self._lock, _immediate(self._db):
            yield

    def replace_from(self, fork: int, headers: Sequence[BlockHeader]) -> None:
        """Drop everything above ``fork`` and store ``headers`` (heights fork+1…). Call inside :meth:`transaction`."""
        self._db.execute("DELETE FROM headers WHERE height > ?", (fork,))
        self._db.executemany("INSERT INTO headers VALUES (?, ?)", [(h.height, h.packed) for h in headers])
        final = self.final()
        if final is not None and final[0] > fork:
            self._db.execute("DELETE FROM meta WHERE key = 'final'")

    def set_final(self, height: int, block_hash: bytes) -> None:
        with self.transaction():
            held = self.at(height)
            current = self.final()
            if held is None or held.hash != block_hash or (current is not None and current[0] >= height):
                return
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('final', ?)",
                             (height.to_bytes(8, "big") + block_hash,))


def _unpacked(db: sqlite3.Connection, height: int) -> BlockHeader | None:
    row = db.execute("SELECT header FROM headers WHERE height = ?", (height,)).fetchone()
    if row is None:
        return None
    data = bytes(row[0])
    if len(data) != HEADER_SIZE:
        raise HeaderFileDamaged(f"the header at height {height} has {len(data)} bytes")
    return BlockHeader.unpack(data)


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        end_transaction(db, "ROLLBACK")
        raise
    db.execute("COMMIT")


def _move_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.damaged-{int(time.time())}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{int(time.time())}-{n}")
    path.replace(target)
    for suffix in ("-journal", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    return target
