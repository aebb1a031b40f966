"""Fuzzing the ledger's SQLite store as a node finds it at start-up: the file damaged at random byte offsets, and
rows holding random values. Opening either refuses with a ``StoreError`` that says what to do (and leaves the file
where it is), or comes up with the valid part of the chain; whatever was dropped is reported (``load_problems`` or
a logged warning), never lost silently. ``recover=True`` moves a damaged file aside, never deletes it."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ledger.blocks import Block
from ledger.errors import StoreError
from ledger.local_ledger import LocalLedger, store_path, verify_store
from ledger.miner import mine
from ledger.params import NetworkParams
from ledger.records import make_register
from tests.conftest import make_identities
from tests.fuzz.fuzz_kit import fuzz_settings, mutated

PARAMS = NetworkParams(name="storefuzz", difficulty_bits=4)
NOW = 1_700_000_000
BLOCKS = 4
PENDING = 2


def record(i: int, ident_index: int):
    ident = make_identities(6)[ident_index]
    return make_register(ident, network=PARAMS.name, seq=0, prev=bytes(32), nickname=f"user{i}", ip=f"10.9.0.{i + 1}",
                         port=8471, ledger_port=8470, issued=NOW, lifetime=30 * 86400)


@cache
def template(base: Path) -> bytes:
    """A store with BLOCKS blocks (one record each) and PENDING pending records; returns the file's bytes."""
    with LocalLedger(base, PARAMS, clock=lambda: NOW) as ledger:
        for i in range(BLOCKS):
            assert ledger.submit_record(record(i, i), NOW)
            block = ledger.block_template(NOW + i)
            assert block is not None
            solved = mine(block.header, threading.Event())
            assert solved is not None
            assert ledger.receive_block(Block(solved, block.records), NOW + i).status == "added"
        for i in range(BLOCKS, BLOCKS + PENDING):
            assert ledger.submit_record(record(i, i), NOW)
    path = store_path(base, PARAMS.name)
    assert not path.with_name(path.name + "-wal").exists() or path.with_name(path.name + "-wal").stat().st_size == 0
    return path.read_bytes()


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def warnings_logged() -> Iterator[_Warnings]:
    handler = _Warnings()
    root = logging.getLogger("ledger")
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def fresh_dir(tmp_root: Path, content: bytes) -> Path:
    folder = tmp_root / f"d{len(list(tmp_root.iterdir()))}"
    folder.mkdir()
    store_path(folder, PARAMS.name).write_bytes(content)
    return folder


def clear_refusal(text: str) -> bool:
    """A refusal says what to do: the mv command, or why the file is not for this program/network."""
    return "mv " in text or "newer version" in text or "holds" in text or "cannot" in text


def open_and_check(folder: Path, damaged: bytes) -> None:
    """The start-up property: a clear refusal with the file untouched, or a node whose losses are all reported."""
    path = store_path(folder, PARAMS.name)
    with warnings_logged() as warned:
        try:
            ledger = LocalLedger(folder, PARAMS, clock=lambda: NOW + 100)
        except StoreError as exc:
            text = str(exc)
            assert str(path) in text and clear_refusal(text), text
            assert path.read_bytes() == damaged or path.exists()   # refused, never deleted or moved
            return
        try:
            height, pending = ledger.height, len(ledger.pending_records())
            lost = height < BLOCKS or pending < PENDING    # an empty file too: it is reported as one
            if lost:
                assert ledger.load_problems or warned.messages, \
                    f"height {height}, {pending} pending after damage, and nothing reported"
            try:
                report = ledger.verify_store()
            except StoreError:
                return
            assert report.ok or report.problems
        finally:
            ledger.close()


def recover_and_check(folder: Path, damaged: bytes) -> None:
    """``recover=True`` never fails on damage and keeps the damaged bytes in the moved-aside file."""
    try:
        ledger = LocalLedger(folder, PARAMS, recover=True, clock=lambda: NOW + 100)
    except StoreError as exc:
        assert clear_refusal(str(exc)) and "mv " not in str(exc), str(exc)
        return
    try:
        moved = ledger.store.recovered_from
        if moved is not None:
            assert moved.read_bytes() == damaged
            assert ledger.height == 0
    finally:
        ledger.close()


@fuzz_settings(40)
@given(data=st.data())
def test_a_store_damaged_at_random_offsets_is_refused_clearly_or_loads_what_is_valid(tmp_path_factory, data):
    base = tmp_path_factory.getbasetemp() / "store-template"
    good = template(base)
    damaged = data.draw(st.one_of(
        mutated(good, max_edits=3),
        st.builds(lambda off, junk: good[:off] + junk + good[off + len(junk):],
                  st.integers(0, len(good) - 1), st.binary(min_size=1, max_size=64)),
        st.integers(0, len(good)).map(lambda n: good[:n])))
    root = tmp_path_factory.mktemp("damaged")
    open_and_check(fresh_dir(root, damaged), damaged)
    recover_and_check(fresh_dir(root, damaged), damaged)


CELLS = {"blocks": ("n", "hash", "height", "header", "records"), "pending": ("n", "id", "record"),
         "meta": ("key", "value")}
cell_values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=40),
                        st.binary(max_size=200))


@fuzz_settings(50)
@given(data=st.data())
def test_rows_holding_random_values_are_reported_and_dropped_never_a_crash(tmp_path_factory, data):
    base = tmp_path_factory.getbasetemp() / "store-template"
    good = template(base)
    folder = fresh_dir(tmp_path_factory.mktemp("rows"), good)
    path = store_path(folder, PARAMS.name)
    conn = sqlite3.connect(path)
    try:
        for _ in range(data.draw(st.integers(1, 3))):
            table = data.draw(st.sampled_from(sorted(CELLS)))
            column = data.draw(st.sampled_from(CELLS[table]))
            rows = [r[0] for r in conn.execute(f"SELECT rowid FROM {table}")]
            if not rows:
                continue
            rowid = data.draw(st.sampled_from(rows))
            old = conn.execute(f"SELECT {column} FROM {table} WHERE rowid=?", (rowid,)).fetchone()[0]
            value = data.draw(st.one_of(cell_values, mutated(old) if isinstance(old, bytes) and old else cell_values))
            try:
                conn.execute(f"UPDATE {table} SET {column}=? WHERE rowid=?", (value, rowid))
            except sqlite3.IntegrityError:
                continue      # NOT NULL / UNIQUE: SQLite itself refuses such a row
        conn.commit()
    finally:
        conn.close()
    damaged = path.read_bytes()
    open_and_check(folder, damaged)
    try:
        report = verify_store(path, now=NOW + 100)
    except StoreError:
        return
    assert report.ok or report.problems


def test_damaged_network_parameters_get_the_recovery_command_and_recover_moves_the_file_aside(tmp_path):
    # Found by the store fuzzer (fixed in 1432e18): a damaged "meta" row used to stop the node without the command
    # that moves the file aside, and recover=True did not recover from it.
    good = template(tmp_path / "t")
    folder = fresh_dir(tmp_path, good)
    path = store_path(folder, PARAMS.name)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='params'", (b"\xc1garbage",))
    conn.close()
    try:
        LocalLedger(folder, PARAMS, clock=lambda: NOW + 100).close()
    except StoreError as exc:
        assert "mv " in str(exc), f"no recovery path in: {exc}"
    damaged = path.read_bytes()
    with LocalLedger(folder, PARAMS, recover=True, clock=lambda: NOW + 100) as ledger:
        assert ledger.store.recovered_from is not None and ledger.store.recovered_from.read_bytes() == damaged


def test_the_template_store_itself_loads_whole(tmp_path):
    good = template(tmp_path / "t")
    folder = fresh_dir(tmp_path, good)
    with LocalLedger(folder, PARAMS, clock=lambda: NOW + 100) as ledger:
        assert ledger.height == BLOCKS and len(ledger.pending_records()) == PENDING and not ledger.load_problems
    shutil.rmtree(folder)


def test_a_stored_pending_record_with_a_broken_signature_is_reported_as_damage(tmp_path):
    # Found by the store fuzzer: a pending row whose bytes still parsed but no longer matched their signature was
    # dropped with only an info line, so the node lost a record without telling anyone.
    good = template(tmp_path / "t")
    folder = fresh_dir(tmp_path, good)
    path = store_path(folder, PARAMS.name)
    with sqlite3.connect(path) as conn:
        n, data = conn.execute("SELECT n, record FROM pending ORDER BY n LIMIT 1").fetchone()
        nick = data.index(b"user4")
        conn.execute("UPDATE pending SET record=? WHERE n=?", (data[:nick] + b"userX" + data[nick + 5:], n))
    conn.close()
    with warnings_logged() as warned, LocalLedger(folder, PARAMS, clock=lambda: NOW + 100) as ledger:
        assert len(ledger.pending_records()) == PENDING - 1
        assert any("bad signature" in p for p in ledger.load_problems), ledger.load_problems
        assert any("damaged stored pending record" in m for m in warned.messages)


def test_a_table_missing_a_column_is_damage_that_recover_moves_aside(tmp_path):
    # Found by the store fuzzer: damage that renamed a column got past the start-up checks, so the query that failed
    # later could not be recovered from with recover=True.
    good = template(tmp_path / "t")
    folder = fresh_dir(tmp_path, good)
    path = store_path(folder, PARAMS.name)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE blocks RENAME COLUMN records TO recordz")
    conn.close()
    try:
        LocalLedger(folder, PARAMS, clock=lambda: NOW + 100).close()
        raise AssertionError("a store without the blocks.records column was opened")
    except StoreError as exc:
        assert "lacks columns records" in str(exc) and "mv " in str(exc), str(exc)
    damaged = path.read_bytes()
    with LocalLedger(folder, PARAMS, recover=True, clock=lambda: NOW + 100) as ledger:
        assert ledger.height == 0
        assert ledger.store.recovered_from is not None and ledger.store.recovered_from.read_bytes() == damaged


def test_invalid_utf8_in_the_schema_is_reported_as_damage_not_a_crash(tmp_path):
    # Found by the store fuzzer: a damaged byte in a table name raised UnicodeDecodeError out of the store.
    good = template(tmp_path / "t")
    folder = fresh_dir(tmp_path, good)
    path = store_path(folder, PARAMS.name)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET name=CAST(X'70656e64696e80' AS TEXT) WHERE name='pending'")
    conn.commit()
    conn.close()
    try:
        LocalLedger(folder, PARAMS, clock=lambda: NOW + 100).close()
        raise AssertionError("a store with a damaged table name was opened")
    except StoreError as exc:
        assert "damaged" in str(exc) or "lacks tables" in str(exc), str(exc)
        assert "mv " in str(exc), str(exc)
