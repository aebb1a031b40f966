"""The SQLite store: persistence, damaged and foreign files, and a writer killed with SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from checkpoint_kit import damage_oldest_body
from ledger_kit import PARAMS, T0, branch, reg

from ledger.chain import Chain, FinalityPolicy
from ledger.errors import StoreError
from ledger.local_ledger import LocalLedger, store_path, verify_store
from ledger.store import APPLICATION_ID, SCHEMA_VERSION, SHUTDOWN_KEY, Store
from tests.conftest import make_identities

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ids():
    return make_identities(4)


@pytest.fixture
def blocks(ids):
    chain = Chain(PARAMS)
    records = [[reg(ids[0])], [], [reg(ids[1], ip="10.0.0.2", nickname="bob")]]
    return branch(chain, chain.genesis.header, 5, T0, records=records)


def test_a_new_store_is_marked_as_ours_and_uses_wal(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_blocks_params_and_pending_records_survive_a_reopen(tmp_path, blocks, ids):
    path = tmp_path / "ledger.sqlite3"
    pending = [reg(ids[2], ip="10.0.0.3", nickname="c"), reg(ids[3], ip="10.0.0.4", nickname="d")]
    with Store(path) as store:
        assert store.load_params() is None and store.load_blocks() == []
        store.save_params(PARAMS)
        for block in blocks:
            store.save_block(block)
        store.save_block(blocks[0])  # idempotent
        store.save_pending(pending)
        store.remove_pending([pending[0].id])
    with Store(path) as store:
        assert store.load_params() == PARAMS
        assert store.load_blocks() == blocks
        assert store.block_count() == len(blocks)
        assert store.load_pending() == pending[1:]
        store.delete_blocks([blocks[-1].hash])
        assert store.load_blocks() == blocks[:-1]


def test_a_file_that_is_not_sqlite_gives_a_clear_error_and_can_be_moved_aside(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"not a ledger database .* mv "):
        Store(path)
    store = Store(path, recover=True)
    assert store.recovered_from is not None and store.recovered_from.read_bytes().startswith(b"this is not")
    assert ".corrupt-" in store.recovered_from.name
    assert store.load_blocks() == []
    store.close()


def test_a_damaged_database_gives_a_clear_error(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    chain = Chain(PARAMS)
    with Store(path) as store:
        for block in branch(chain, chain.genesis.header, 200, T0):
            store.save_block(block)
    assert path.stat().st_size > 4096 * 4
    data = bytearray(path.read_bytes())
    data[4096:4096 * 3] = b"\xab" * (4096 * 2)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is damaged"):
        Store(path)


def test_a_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        Store(path)
    with Store(path, recover=True) as store:
        assert store.recovered_from is not None


def test_a_store_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="newer version"):
        Store(path)


def test_a_damaged_block_row_is_reported_with_its_position(tmp_path, blocks):
    path = tmp_path / "ledger.sqlite3"
    with Store(path) as store:
        for block in blocks:
            store.save_block(block)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE blocks SET records=x'c1' WHERE n=2")
    conn.commit()
    conn.close()
    with Store(path) as store, pytest.raises(StoreError, match=r"stored block #2 .* damaged"):
        store.load_blocks()


def test_a_ledger_on_another_difficulty_is_refused(tmp_path):
    LocalLedger(tmp_path, PARAMS).close()
    other = PARAMS.__class__(name=PARAMS.name, difficulty_bits=9)
    with pytest.raises(StoreError, match="only applies when a network is created"):
        LocalLedger(tmp_path, other)


def test_two_ledgers_cannot_share_a_store(tmp_path):
    with LocalLedger(tmp_path, PARAMS), pytest.raises(StoreError, match="already using"):
        LocalLedger(tmp_path, PARAMS)
    LocalLedger(tmp_path, PARAMS).close()  # the lock is released on close


def test_a_writer_killed_at_any_moment_leaves_a_valid_chain(tmp_path, ids):
    chain = Chain(PARAMS)
    records = [[reg(ids[0], ip="10.1.0.1", nickname="w0")]] + [[] for _ in range(10)]
    blocks = branch(chain, chain.genesis.header, 150, T0, records=records)
    pending = [reg(ids[1], ip="10.2.0.1", nickname="p1"), reg(ids[2], ip="10.2.0.2", nickname="p2"),
               reg(ids[3], ip="10.2.0.3", nickname="p3")]
    feed = tmp_path / "feed.msgpack"
    feed.write_bytes(msgpack.packb({"params": PARAMS.to_wire(), "blocks": [b.to_wire() for b in blocks],
                                    "pending": [r.to_wire() for r in pending], "now": T0 + 1000},
                                   use_bin_type=True))
    data_dir = tmp_path / "node"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acknowledged_blocks, acknowledged_records = 0, 0
    for kill_after in (3, 40, 90):
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_writer.py")), str(data_dir),
                                 str(feed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=REPO)
        try:
            lines = 0
            for line in proc.stdout:
                kind, _, value = line.strip().partition(" ")
                if kind == "block":
                    acknowledged_blocks = max(acknowledged_blocks, int(value))
                    lines += 1
                elif kind == "record":
                    acknowledged_records = max(acknowledged_records, int(value) + 1)
                elif kind == "done":
                    break
                if lines >= kill_after:
                    proc.send_signal(signal.SIGKILL)  # mid-write: the child is already storing the next block
                    break
        finally:
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        report = verify_store(store_path(data_dir, PARAMS.name), PARAMS, now=T0 + 1000)
        assert report.ok, report.summary()
        assert report.height >= acknowledged_blocks
        with LocalLedger(data_dir, PARAMS, clock=lambda: T0 + 1000) as ledger:
            assert ledger.height >= acknowledged_blocks
            assert len(ledger.pending_records()) >= acknowledged_records
            assert ledger.main_at(ledger.height) == blocks[ledger.height - 1]
    assert acknowledged_blocks >= 90


def test_a_locked_database_is_reported_and_never_moved_aside(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="cannot use the ledger database"):
            Store(path, recover=True, busy_timeout=0.2)
        assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# --- the open check: clean-shutdown mark, cheap checks, the whole-file check owed ---------------------------------

def _feed(tmp_path, ids, count=150):
    chain = Chain(PARAMS)
    records = [[reg(ids[0], ip="10.1.0.1", nickname="w0")]] + [[] for _ in range(10)] + [
        [reg(ids[1], ip="10.1.0.2", nickname="w1")]]
    blocks = branch(chain, chain.genesis.header, count, T0, records=records)
    pending = [reg(ids[2], ip="10.2.0.1", nickname="p1"), reg(ids[3], ip="10.2.0.2", nickname="p2")]
    feed = tmp_path / "feed.msgpack"
    feed.write_bytes(msgpack.packb({"params": PARAMS.to_wire(), "blocks": [b.to_wire() for b in blocks],
                                    "pending": [r.to_wire() for r in pending], "now": T0 + 1000},
                                   use_bin_type=True))
    return feed, blocks


def _run_writer(data_dir, feed, kill_after=None):
    """Run crash_writer.py; SIGKILL it after ``kill_after`` acknowledged blocks (None: let it finish, close the
    ledger and exit). It holds the ledger open after its last block until told, so a kill never finds it
    closed, however far ahead of this reader it ran."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_writer.py")), str(data_dir),
                             str(feed), "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    try:
        blocks = 0
        for line in proc.stdout:
            kind, _, _ = line.strip().partition(" ")
            blocks += kind == "block"
            if kill_after is not None and blocks >= kill_after:
                proc.send_signal(signal.SIGKILL)   # mid-write: the child is already storing the next block
                break
            if kind == "done":
                proc.stdin.close()   # now it may close the ledger cleanly
        assert proc.wait(timeout=30) == (0 if kill_after is None else -signal.SIGKILL), proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def _marked_clean(data_dir) -> bool:
    conn = sqlite3.connect(store_path(data_dir, PARAMS.name))
    try:
        return conn.execute("SELECT 1 FROM meta WHERE key=?", (SHUTDOWN_KEY,)).fetchone() is not None
    finally:
        conn.close()


def test_a_store_opened_after_a_clean_close_or_a_kill_equals_a_replay_from_genesis(tmp_path, ids):
    import random

    from checkpoint_kit import checkpoint_and_replay

    feed, _ = _feed(tmp_path, ids, count=80)
    data_dir = tmp_path / "node"
    rng = random.Random(12)
    # Kills at random points (each run appends to what the last one left), then a run that ends with a clean close.
    for kill_after in [*sorted(rng.sample(range(2, 80), 3)), None]:
        _run_writer(data_dir, feed, kill_after)
        clean = kill_after is None
        assert _marked_clean(data_dir) == clean
        with LocalLedger(data_dir, PARAMS, clock=lambda: T0 + 1000) as ledger:
            # After a kill the open checked the whole file; after a clean close that check is owed.
            assert ledger.store.whole_file_check_due == clean
            assert not _marked_clean(data_dir)   # cleared while open
        restored, replayed = checkpoint_and_replay(data_dir, PARAMS, T0 + 1000, tmp_path)
        assert restored == replayed
        assert restored["height"] == 80 or not clean


def _closed_cleanly_with_blocks(tmp_path, ids, count=200):
    chain = Chain(PARAMS)
    blocks = branch(chain, chain.genesis.header, count, T0, records=[[reg(ids[0], ip="10.1.0.1", nickname="a")]])
    # no minimum hold: all but the newest six blocks are final, so an open reads only those six bodies
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000, finality=FinalityPolicy(min_hold=0)) as ledger:
        ledger.receive_blocks(blocks, T0 + 1000)
        path = ledger.path
    assert _marked_clean(tmp_path)
    return path, blocks


@pytest.mark.parametrize("change", [-4096, +4096, -100])
def test_a_store_cut_short_or_extended_while_stopped_is_refused_at_the_cheap_open(tmp_path, ids, change):
    path, _ = _closed_cleanly_with_blocks(tmp_path, ids)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size + change)   # growing pads with zero bytes
    # SQLite may find it first (a page the open reads is missing); either way, it is refused at open.
    with pytest.raises(StoreError, match=r"(cut short|malformed).* mv ") as refused:
        LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000)
    assert change < 0 or "extended" in str(refused.value)   # only the header check sees a longer file


def test_damage_while_stopped_is_found_by_the_background_check_and_then_at_every_open(tmp_path, ids):
    from tests.helpers import wait_until

    path, blocks = _closed_cleanly_with_blocks(tmp_path, ids)
    damage_oldest_body(path)
    reports: list[str] = []
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000) as ledger:
        # The cheap open does not read that page: the node starts, with the whole-file check owed.
        assert ledger.store.whole_file_check_due and ledger.height == len(blocks)
        ledger.check_store_in_background(reports.append)
        wait_until(lambda: reports, what="the background check to report the damage")
    assert "is damaged" in reports[0] and "ledger verify" in reports[0] and "mv " in reports[0]
    assert not _marked_clean(tmp_path)   # no clean mark after damage: the next open checks the whole file
    with pytest.raises(StoreError, match="is damaged"):
        LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000)


def test_a_damaged_page_read_after_the_open_check_is_a_plain_store_error(tmp_path, ids):
    # Blocks not final yet (held less than the minimum hold) are read at open, after the cheap checks passed:
    # SQLite meets the damaged page only then, and that must be the same plain error as damage found at open.
    chain = Chain(PARAMS)
    blocks = branch(chain, chain.genesis.header, 20, T0, records=[[reg(ids[0], ip="10.1.0.1", nickname="a")]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000) as ledger:
        ledger.receive_blocks(blocks, T0 + 1000)
        path = ledger.path
    damage_oldest_body(path)
    with pytest.raises(StoreError, match=r"is damaged .*mv '") as refused:
        LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1001)
    assert "malformed" in str(refused.value) and str(path) in str(refused.value)


def test_an_intact_store_passes_the_background_check_and_is_marked_clean_again(tmp_path, ids):
    from tests.helpers import wait_until

    _closed_cleanly_with_blocks(tmp_path, ids)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000) as ledger:
        ledger.check_store_in_background(lambda message: pytest.fail(message))
        wait_until(lambda: not ledger.store.whole_file_check_due, what="the background check to finish")
    assert _marked_clean(tmp_path)


def test_a_damaged_store_without_the_clean_mark_is_refused_at_open(tmp_path, ids):
    path, _ = _closed_cleanly_with_blocks(tmp_path, ids)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key=?", (SHUTDOWN_KEY,))   # as after kill -9 or a power loss
    conn.commit()
    conn.close()
    damage_oldest_body(path)
    with pytest.raises(StoreError, match=r"is damaged .* mv "):
        LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000)


def test_a_checkpoint_whose_counts_disagree_is_rebuilt_after_an_unclean_shutdown(tmp_path, ids):
    path, _ = _closed_cleanly_with_blocks(tmp_path, ids)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key=?", (SHUTDOWN_KEY,))
    conn.execute("DELETE FROM bind_id")   # rows lost, stamp kept: only the linear check sees it
    conn.commit()
    conn.close()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000) as ledger:
        assert "do not match their counts" in (ledger.rebuilt_checkpoint or "")
        assert ledger.lookup("ip", "10.1.0.1", T0 + 1000) is not None


def test_a_chain_changed_by_a_version_that_keeps_no_mark_makes_the_next_open_check_the_whole_file(tmp_path, ids):
    path, _ = _closed_cleanly_with_blocks(tmp_path, ids)
    conn = sqlite3.connect(path)   # an older version wrote a block: the stamp moved, the stale mark stayed
    (stamp,) = conn.execute("SELECT value FROM meta WHERE key='derived'").fetchone()
    conn.execute("UPDATE meta SET value=? WHERE key='derived'", (stamp[:-1] + bytes([stamp[-1] ^ 1]),))
    conn.commit()
    conn.close()
    assert _marked_clean(tmp_path)
    with Store(path, owner=True) as store:
        assert not store.whole_file_check_due   # checked at open, as after a crash
