"""The stored checkpoint (main chain, record index, binding state, undo logs): a ledger started from it answers
exactly like one replayed from genesis, whatever blocks arrived on whatever branches, across restarts, reorgs,
finality and parked branches."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from checkpoint_kit import checkpoint_and_replay, force_replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_kit import DAY, NET, PARAMS, T0, block_on, branch, reg

from ledger.bindings import StoredIdentityTable
from ledger.chain import Chain, FinalityPolicy
from ledger.errors import StoreError
from ledger.local_ledger import CHECK_BLOCKS, LocalLedger
from ledger.records import make_revocation, make_rotation
from tests.conftest import make_identities

NOW = T0 + 100
POLICY = FinalityPolicy(depth=3, min_hold=0, seconds=10 * DAY)


@pytest.fixture(scope="module")
def record_pool():
    """Records that conflict and depend on each other: IP and nickname clashes, renewals, a rotation, a
    revocation."""
    a, b, c, d = make_identities(4)
    a0 = reg(a, ip="10.0.0.1", nickname="alice")
    b0 = reg(b, ip="10.0.0.1", nickname="bob")
    c0 = reg(c, ip="10.0.0.3", nickname="Alice")
    a1 = reg(a, seq=1, prev=a0.id, ip="10.0.0.2", nickname="alice", issued=T0 + 1)
    b1 = reg(b, seq=1, prev=b0.id, ip="10.0.0.4", nickname="bob", issued=T0 + 1)
    c1 = reg(c, seq=1, prev=c0.id, ip="10.0.0.1", nickname="carol", issued=T0 + 1)
    rot = make_rotation(a, d, network=NET, seq=2, prev=a1.id, nickname="dora", ip="10.0.0.5", port=8471,
                        ledger_port=8470, issued=T0 + 2, lifetime=DAY)
    rev = make_revocation(b, network=NET, seq=2, prev=b1.id, issued=T0 + 2)
    return [a0, b0, c0, a1, b1, c1, rot, rev]


steps = st.lists(st.tuples(st.integers(0, 60), st.lists(st.integers(0, 7), max_size=2, unique=True),
                           st.booleans()), min_size=1, max_size=14)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_a_ledger_started_from_its_checkpoint_equals_a_replay_from_genesis(record_pool, plan):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "node"
        created = [PARAMS.genesis()]
        ledger = LocalLedger(data_dir, PARAMS, clock=lambda: NOW, finality=POLICY)
        try:
            for i, (parent_pick, picks, restart) in enumerate(plan):
                parent = created[parent_pick % len(created)]
                block = block_on(parent.header, [record_pool[k] for k in picks], T0 + 10 + i)
                ledger.receive_block(block, NOW)
                created.append(block)
                if restart:  # a restart in the middle: the rest builds on the restored chain
                    ledger.close()
                    ledger = LocalLedger(data_dir, PARAMS, clock=lambda: NOW, finality=POLICY)
                    assert ledger.rebuilt_checkpoint is None
        finally:
            ledger.close()
        restored, replayed = checkpoint_and_replay(data_dir, PARAMS, NOW, work, POLICY)
        assert restored == replayed


def test_batched_blocks_are_stored_in_one_transaction_and_restore_like_single_ones(tmp_path, record_pool):
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 8, T0 + 10,
                    records=[[record_pool[k]] for k in (0, 3, 1, 4, 6, 7, 2, 5)])
    with LocalLedger(tmp_path / "batched", PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
        results = ledger.receive_blocks(blocks, NOW)
        assert [r.status for r in results] == ["added"] * 8
    with LocalLedger(tmp_path / "single", PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
        single = [ledger.receive_block(b, NOW).status for b in blocks]
    assert [r.status for r in results] == single
    restored, replayed = checkpoint_and_replay(tmp_path / "batched", PARAMS, NOW, tmp_path, POLICY)
    assert restored == replayed
    restored_single, _ = checkpoint_and_replay(tmp_path / "single", PARAMS, NOW, tmp_path, POLICY)
    assert restored_single == restored


def test_an_old_store_without_a_checkpoint_is_rebuilt_once_and_says_so(tmp_path, record_pool, caplog):
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 3, T0 + 10, records=[[record_pool[0]]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        ledger.receive_blocks(blocks, NOW)
    force_replay(tmp_path, PARAMS)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.rebuilt_checkpoint is not None and "no checkpoint" in ledger.rebuilt_checkpoint
        assert "rebuilding it once by replaying" in caplog.text
        assert ledger.lookup("ip", "10.0.0.1", NOW) is not None
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.rebuilt_checkpoint is None
        assert ledger.lookup("ip", "10.0.0.1", NOW) is not None


def test_a_checkpoint_that_disagrees_with_the_stored_tip_is_rebuilt(tmp_path, record_pool):
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 3, T0 + 10, records=[[record_pool[0]]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        ledger.receive_blocks(blocks, NOW)
        path = ledger.path
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM main_chain WHERE height=3")  # as if the derived rows lagged behind the blocks
    conn.commit()
    conn.close()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.rebuilt_checkpoint is not None and "does not match" in ledger.rebuilt_checkpoint
        assert ledger.height == 3 and ledger.lookup("ip", "10.0.0.1", NOW) is not None


def test_a_damaged_final_block_read_lazily_is_a_plain_store_error(tmp_path, record_pool):
    # Below the newest CHECK_BLOCKS blocks, which every start checks (see the next test).
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, CHECK_BLOCKS + 3, T0 + 10, records=[[record_pool[0]]])
    policy = FinalityPolicy(depth=1, min_hold=0)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        ledger.receive_blocks(blocks, NOW)
        path = ledger.path
    conn = sqlite3.connect(path)
    (records,) = conn.execute("SELECT records FROM blocks WHERE hash=?", (blocks[0].hash,)).fetchone()
    conn.execute("UPDATE blocks SET records=? WHERE hash=?", (records.replace(b"alice", b"alicf"), blocks[0].hash))
    conn.commit()
    conn.close()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        assert ledger.rebuilt_checkpoint is None  # final blocks are not read at start
        with pytest.raises(StoreError, match="damaged"):
            ledger.lookup("ip", "10.0.0.1", NOW)
        assert not ledger.verify_store().ok


def test_a_damaged_block_among_the_newest_is_found_at_start_and_dropped(tmp_path, record_pool):
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, CHECK_BLOCKS + 3, T0 + 10,
                    records=[[] for _ in range(4)] + [[record_pool[0]]])
    policy = FinalityPolicy(depth=1, min_hold=0)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        ledger.receive_blocks(blocks, NOW)
        path = ledger.path
    damaged = blocks[4]   # final (depth 1), not read by the restore, but among the newest CHECK_BLOCKS
    conn = sqlite3.connect(path)
    (records,) = conn.execute("SELECT records FROM blocks WHERE hash=?", (damaged.hash,)).fetchone()
    conn.execute("UPDATE blocks SET records=? WHERE hash=?", (records.replace(b"alice", b"alicf"), damaged.hash))
    conn.commit()
    conn.close()
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        assert ledger.rebuilt_checkpoint is not None and "Merkle root" in ledger.rebuilt_checkpoint
        assert ledger.height == damaged.height - 1   # the damaged block and its descendants are dropped
        assert any("wrong Merkle root" in p for p in ledger.load_problems)


def test_a_restored_ledger_keeps_following_reorgs_above_the_final_height(tmp_path, record_pool):
    ours = branch(Chain(PARAMS), PARAMS.genesis().header, 2, T0 + 10, records=[[record_pool[0]], [record_pool[3]]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        ledger.receive_blocks(ours, NOW)
    theirs = branch(Chain(PARAMS), PARAMS.genesis().header, 3, T0 + 20, records=[[record_pool[1]]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        assert ledger.rebuilt_checkpoint is None
        results = ledger.receive_blocks(theirs, NOW)
        assert [b.hash for r in results for b in r.disconnected] == [ours[1].hash, ours[0].hash]
        assert ledger.lookup("ip", "10.0.0.1", NOW).record == record_pool[1]
    restored, replayed = checkpoint_and_replay(tmp_path, PARAMS, NOW, tmp_path.parent / "w")
    assert restored == replayed


def test_parallel_verify_reports_what_the_serial_one_does_including_a_bad_signature(tmp_path, record_pool):
    from dataclasses import replace

    from ledger.local_ledger import verify_store
    from ledger.store import Store

    good = branch(Chain(PARAMS), PARAMS.genesis().header, 3, T0 + 10,
                  records=[[record_pool[0]], [record_pool[3]], [record_pool[1]]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        ledger.receive_blocks(good, NOW)
        path = ledger.path
    serial, parallel = verify_store(path, now=NOW, workers=1), verify_store(path, now=NOW, workers=2)
    assert serial.ok and parallel.ok
    assert (serial.height, serial.records) == (parallel.height, parallel.records) == (3, 3)
    forged = replace(record_pool[4], sig=bytes(len(record_pool[4].sig)))   # b's renewal with a zeroed signature
    bad = block_on(good[-1].header, [forged], T0 + 20)
    with Store(path) as store:
        store.save_block(bad)
    serial, parallel = verify_store(path, now=NOW, workers=1), verify_store(path, now=NOW, workers=2)
    assert not serial.ok and not parallel.ok
    assert serial.problems == parallel.problems and "bad signature" in parallel.problems[0]


def test_a_restored_chain_reads_final_bodies_only_when_asked_and_keeps_a_bounded_number(tmp_path, record_pool):
    from ledger import chain as chain_module

    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 12, T0 + 10,
                    records=[[record_pool[k]] for k in (0, 3, 1, 4)])
    policy = FinalityPolicy(depth=3, min_hold=0)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        ledger.receive_blocks(blocks, NOW)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        chain = ledger.chain
        assert ledger.rebuilt_checkpoint is None and chain.final_height == 10
        nodes = [chain._main[h] for h in range(1, chain.height + 1)]
        assert all(n._block is None and n._header is None for n in nodes)  # headers packed, bodies in SQLite
        bodies = nodes[0].bodies
        # The open part and the newest CHECK_BLOCKS, checked at start; nothing older.
        assert bodies is not None and set(bodies._cache) == {b.hash for b in blocks[12 - CHECK_BLOCKS:]}
        bodies.limit = 2
        for height in range(1, 13):
            assert ledger.main_at(height) == blocks[height - 1]
        assert len(bodies._cache) == 2
        assert ledger.lookup("ip", "10.0.0.2", NOW).record == record_pool[3]
        assert chain_module.BODY_CACHE_BLOCKS >= 2


def test_a_batch_is_written_and_announced_together_when_it_ends(tmp_path, record_pool):
    from ledger.store import Store

    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 3, T0 + 10, records=[[record_pool[0]]])
    heard = []
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW) as ledger:
        ledger.add_listener(on_block=lambda b, r: heard.append(b.hash))
        with ledger.batched():
            for block in blocks:
                assert ledger.receive_block(block, NOW).status == "added"
            with Store(ledger.path) as other:   # another reader sees nothing of the batch yet
                assert other.block_count() == 0 and other.load_derived_meta()["height"] == 0
            assert heard == [] and ledger.height == 3
        assert heard == [b.hash for b in blocks]
        with Store(ledger.path) as other:
            assert other.block_count() == 3 and other.load_derived_meta()["height"] == 3
    restored, replayed = checkpoint_and_replay(tmp_path, PARAMS, NOW, tmp_path.parent / "w2")
    assert restored == replayed


def test_a_restored_chain_holds_no_node_below_its_final_height_and_still_equals_a_replay(tmp_path, record_pool):
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 12, T0 + 10,
                    records=[[record_pool[k]] for k in (0, 3, 1, 4)])
    policy = FinalityPolicy(depth=3, min_hold=0, seconds=10 * DAY)
    data_dir = tmp_path / "node"
    with LocalLedger(data_dir, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        ledger.receive_blocks(blocks, NOW)
    with LocalLedger(data_dir, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        chain = ledger.chain
        assert chain.final_height == 10 and chain.height == 12
        held = chain._nodes._dict   # genesis and the open part only: final history stays in SQLite
        assert sorted(n.height for n in held.values()) == [0, 11, 12]
        identities = chain.bindings.identities   # identities too: memory holds only unwritten changes
        assert isinstance(identities, StoredIdentityTable) and identities.own == {} and len(identities) == 2
        assert chain.main_at(4) == blocks[3] and blocks[3].hash in chain and chain.is_main(blocks[5].hash)
        on_top = block_on(blocks[-1].header, [], T0 + 30)
        below_final = block_on(blocks[4].header, [], T0 + 31)   # forks at height 5: parked, never followed
        assert ledger.receive_block(on_top, NOW).status == "added"
        assert ledger.receive_block(below_final, NOW).status == "added"
        assert chain.tip_hash == on_top.hash and chain.parked_branch_of(below_final.hash) is not None
        assert chain.fork_height(below_final.hash) == 5
    restored, replayed = checkpoint_and_replay(data_dir, PARAMS, NOW, tmp_path, policy)
    assert restored == replayed


def test_a_reopened_ledger_gives_every_block_of_a_burst_its_saved_second_never_an_earlier_time(tmp_path):
    # The finality state keeps one connection time per whole second of arrivals (Chain._held_runs); a start
    # from the stored checkpoint spreads each over its run: a block's clock is at most a second late, never early.
    policy = FinalityPolicy(depth=3, min_hold=60, seconds=10 * DAY)
    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 12, T0 + 10)
    arrivals = [NOW + 0.1 + i * 0.3 for i in range(len(blocks))]
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW, finality=policy) as ledger:
        for block, t in zip(blocks, arrivals, strict=True):
            assert ledger.receive_block(block, t).status == "added"
        assert len(ledger.chain.finality_state()["held"]) == 4
    with LocalLedger(tmp_path, PARAMS, clock=lambda: NOW + 50, finality=policy) as ledger:
        assert ledger.rebuilt_checkpoint is None and ledger.chain.final_height == 0
        for height, t in enumerate(arrivals, start=1):
            assert t <= ledger.chain.held_since(height) <= t + 1
