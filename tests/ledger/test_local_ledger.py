"""LocalLedger: the node's chain + store + pool + miner behind one lock."""

import dataclasses
import sqlite3
import threading

import pytest
from ledger_kit import NET, PARAMS, T0, block_on, branch, reg, wait_until

from ledger.chain import Chain
from ledger.errors import LedgerError
from ledger.local_ledger import LocalLedger, LookupAnswer, stored_params, verify_store
from ledger.store import Store
from p2pchat.foundation import crypto
from tests.conftest import make_identities

NOW = T0 + 10


@pytest.fixture(scope="module")
def ids():
    return make_identities(6)


@pytest.fixture
def ledger(tmp_path):
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        yield ledger


def test_a_submitted_record_is_persisted_before_it_is_acknowledged(tmp_path, ids):
    record = reg(ids[0])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.submit_record(record, NOW)
        assert not ledger.submit_record(record, NOW)
        # Read the file from outside, as another process would after a kill -9.
        conn = sqlite3.connect(ledger.path)
        assert conn.execute("SELECT id FROM pending").fetchall() == [(record.id,)]
        conn.close()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.pending_records() == [record]
    assert stored_params(tmp_path, NET) == PARAMS
    assert stored_params(tmp_path, "elsewhere") is None


def test_invalid_records_are_refused_and_not_stored(ledger, ids):
    with pytest.raises(LedgerError, match="bad signature"):
        ledger.submit_record(dataclasses.replace(reg(ids[0]), port=1), NOW)
    assert ledger.pending_records() == []


def test_received_blocks_are_stored_and_reloaded(tmp_path, ids):
    chain = Chain(PARAMS)
    blocks = branch(chain, chain.genesis.header, 3, T0, records=[[reg(ids[0])]])
    with LocalLedger(tmp_path, PARAMS) as ledger:
        assert ledger.receive_block(blocks[2], NOW).status == "orphan"
        for block in blocks[:2]:
            assert ledger.receive_block(block, NOW).status == "added"
        assert ledger.height == 3
        assert ledger.receive_block(blocks[0], NOW).status == "duplicate"
        tip = ledger.tip_info()
    with LocalLedger(tmp_path, PARAMS) as ledger:
        assert ledger.tip_info() == tip
        assert ledger.get_blocks([b.hash for b in blocks] + [b"\x00" * 32]) == blocks
        assert ledger.has_block(blocks[1].hash) and ledger.locator()[0] == blocks[2].hash
        assert [h.hash for h in ledger.headers_after([PARAMS.genesis_hash], 10)] == [b.hash for b in blocks]
        assert ledger.verify_store().ok


def test_an_invalid_block_is_refused_and_not_stored(ledger, ids):
    forged = dataclasses.replace(reg(ids[0]), nickname="forged")
    result = ledger.receive_block(block_on(PARAMS.genesis().header, [forged], T0), NOW)
    assert result.status == "invalid" and "bad signature" in result.reason
    assert ledger.store.block_count() == 0


def test_lookups_come_with_a_proof(ledger, ids):
    record = reg(ids[0], ip="10.0.0.1", nickname="Alice")
    ledger.receive_block(block_on(PARAMS.genesis().header, [reg(ids[1], ip="10.0.0.2", nickname="b"), record], T0),
                         NOW)
    for by, value in [("ip", "10.0.0.1"), ("nick", "alice"), ("fp", ids[0].fingerprint),
                      ("fp", crypto.format_fingerprint(ids[0].fingerprint, 16))]:
        answer = ledger.lookup(by, value, NOW)
        assert answer is not None and answer.record == record, (by, value)
        assert answer.height == 1 and answer.confirmations == 1 and answer.index == 1
        answer.verify_proof()
        assert LookupAnswer.from_wire(answer.to_wire()) == answer
    assert ledger.lookup("ip", "10.0.0.9", NOW) is None
    assert ledger.lookup("fp", "zz", NOW) is None
    assert ledger.lookup("ip", "10.0.0.1", T0 + 2 * 86400) is None  # expired
    answer = ledger.lookup("ip", "10.0.0.1", NOW)
    with pytest.raises(LedgerError, match="Merkle proof fails"):
        dataclasses.replace(answer, index=0).verify_proof()
    with pytest.raises(LedgerError, match="malformed"):
        LookupAnswer.from_wire({**answer.to_wire(), "path": ["x"]})


def test_next_sequence_counts_pending_records(ledger, ids):
    fp = ids[0].fingerprint
    assert ledger.next_sequence(fp, NOW) == (0, bytes(32))
    first = reg(ids[0])
    ledger.submit_record(first, NOW)
    assert ledger.next_sequence(fp, NOW) == (1, first.id)
    assert ledger.latest_record(fp, NOW) == first and ledger.mined_record(fp) is None


def test_listeners_hear_of_records_and_blocks_outside_the_lock(ledger, ids):
    heard = []

    def lock_is_free():
        got = []
        t = threading.Thread(target=lambda: got.append(ledger.lock.acquire(timeout=5) and ledger.lock.release()))
        t.start()
        t.join()
        return got == [None]

    ledger.add_listener(on_block=lambda block, result: heard.append(("block", block.height, lock_is_free())),
                        on_record=lambda record: heard.append(("record", record.seq, lock_is_free())))
    record = reg(ids[0])
    ledger.submit_record(record, NOW)
    ledger.receive_block(block_on(PARAMS.genesis().header, [record], T0), NOW)
    assert heard == [("record", 0, True), ("block", 1, True)]
    assert ledger.pending_records() == []


def test_a_removed_listener_hears_nothing_more(ledger, ids):
    heard = []
    on_record = heard.append
    ledger.add_listener(on_record=on_record)
    ledger.remove_listener(on_record=on_record)
    ledger.submit_record(reg(ids[0]), NOW)
    assert heard == []


def test_the_miner_mines_pending_records_then_idles(ledger, ids):
    mined = []
    ledger.start_mining(on_block=mined.append)
    try:
        assert ledger.status()["mining"] is False
        record = reg(ids[0])
        ledger.submit_record(record, NOW)
        assert wait_until(lambda: ledger.height == 1 and not ledger.pending_records())
        assert wait_until(lambda: mined and not ledger.status()["mining"])
        assert mined[0].records == (record,)
        assert ledger.lookup("ip", "10.0.0.1", NOW) is not None
        assert ledger.store.block_count() == 1
        with pytest.raises(RuntimeError):
            ledger.start_mining()
    finally:
        ledger.stop_mining()
    status = ledger.status()
    assert status["height"] == 1 and status["pending"] == 0 and status["live_bindings"] == 1


def test_a_reorg_returns_orphaned_records_to_the_pool_and_the_store(tmp_path, ids):
    record = reg(ids[0])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        ledger.submit_record(record, NOW)
        ours = block_on(PARAMS.genesis().header, [record], T0)
        ledger.receive_block(ours, NOW)
        assert ledger.pending_records() == []
        theirs = branch(Chain(PARAMS), PARAMS.genesis().header, 2, T0 + 1)
        results = [ledger.receive_block(b, NOW) for b in theirs]
        assert [b.hash for r in results for b in r.disconnected] == [ours.hash]
        assert ledger.tip_info()[1] == theirs[1].hash
        assert ledger.pending_records() == [record]
        assert ledger.lookup("ip", "10.0.0.1", NOW) is None
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.pending_records() == [record]
        assert ledger.tip_info()[1] == theirs[1].hash


def _tamper(path, block_hash, change):
    conn = sqlite3.connect(path)
    (records,) = conn.execute("SELECT records FROM blocks WHERE hash=?", (block_hash,)).fetchone()
    conn.execute("UPDATE blocks SET records=? WHERE hash=?", (change(records), block_hash))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("change, problem", [
    (lambda data: data.replace(b"alice", b"alicf"), "Merkle root"),
    (lambda data: data.replace(b"alice", b"al\x00ce"), "damaged"),
    (lambda data: b"\xc1", "damaged"),
])
def test_tampered_stored_blocks_are_reported_by_verify_and_dropped_on_load(tmp_path, ids, change, problem):
    # The blocks are not final yet (depth 6, held 10 s): a start reads and checks their bodies.
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 3, T0, records=[[], [reg(ids[0])]])
        for block in blocks:
            ledger.receive_block(block, NOW)
        path = ledger.path
    _tamper(path, blocks[1].hash, change)
    report = verify_store(path, now=NOW)
    assert not report.ok and problem in report.summary()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        # The damaged block and its descendant were dropped when loading; the rest is a valid chain.
        assert ledger.height == 1 and ledger.load_problems and problem in ledger.load_problems[0]
        assert ledger.verify_store().ok
        assert ledger.store.block_count() == 1


def test_verify_store_reports_a_bad_chain(tmp_path, ids):
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 2, T0, records=[[dataclasses.replace(reg(ids[0]),
                                                                                                  port=2)]])
    with Store(tmp_path / "x.sqlite3") as store:
        store.save_params(PARAMS)
        for block in blocks:
            store.save_block(block)
    report = verify_store(tmp_path / "x.sqlite3", now=NOW)
    assert not report.ok and "bad signature" in report.summary()
    assert "INVALID" in report.summary()


def test_concurrent_submitters_readers_and_the_miner_stay_consistent(ledger, ids):
    # Two identities each publish a chain of updates from their own thread while a reader polls and the
    # miner mines; afterwards every record is mined or pending exactly once and the store verifies.
    chains = []
    for n, ident in enumerate(ids[:2]):
        recs, prev = [], bytes(32)
        for seq in range(6):
            rec = reg(ident, seq=seq, prev=prev, ip=f"10.0.{n}.{seq + 1}", nickname=f"t{n}", issued=T0 + seq)
            recs.append(rec)
            prev = rec.id
        chains.append(recs)
    errors = []
    stop = threading.Event()

    def submit(recs):
        try:
            for rec in recs:
                assert ledger.submit_record(rec, NOW)
        except Exception as exc:  # reported to the test thread below
            errors.append(exc)

    def read():
        try:
            while not stop.is_set():
                ledger.status()
                ledger.lookup("nick", "t0", NOW)
                ledger.locator()
        except Exception as exc:
            errors.append(exc)

    ledger.start_mining()
    threads = [threading.Thread(target=submit, args=(c,)) for c in chains] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    try:
        assert wait_until(lambda: not ledger.pending_records(), timeout=30)
    finally:
        stop.set()
        threads[2].join()
        ledger.stop_mining()
    assert errors == []
    for recs in chains:
        assert all(ledger.chain.has_record(r.id) for r in recs)
    assert ledger.lookup("nick", "t1", NOW).record == chains[1][-1]
    assert ledger.verify_store().ok


def test_a_closed_ledger_refuses_work(tmp_path, ids):
    ledger = LocalLedger(tmp_path, PARAMS)
    ledger.close()
    ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        ledger.submit_record(reg(ids[0]), NOW)


def test_an_empty_database_file_starts_a_new_chain_and_says_so(tmp_path, caplog):
    from ledger.local_ledger import store_path
    path = store_path(tmp_path, PARAMS.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    with caplog.at_level("WARNING", logger="ledger"), LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.height == 0
        assert any("was an empty file" in p for p in ledger.load_problems), ledger.load_problems
    assert any("was an empty file" in r.getMessage() for r in caplog.records)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as again:       # a real database now: nothing to say
        assert again.load_problems == []
