"""A sync's batched writes (LocalLedger.batched, the store's grouped statements) leave exactly the store that
writing each block on its own leaves, and its checkpoint equals a replay from genesis, whatever the batch
boundaries, branches and reorgs."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from checkpoint_kit import checkpoint_and_replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_kit import DAY, NET, PARAMS, T0, block_on, reg

from ledger.blocks import Block
from ledger.chain import FinalityPolicy
from ledger.local_ledger import LocalLedger, store_path
from ledger.records import make_revocation
from tests.conftest import make_identities

NOW = T0 + 100
POLICY = FinalityPolicy(depth=3, seconds=10 * DAY)
DERIVED = ("main_chain", "record_loc", "bind_id", "bind_ip", "bind_nick", "undo", "side")


@pytest.fixture(scope="module")
def record_pool():
    """Records that clash (one IP and a nickname claimed twice), renew and revoke."""
    a, b, c = make_identities(3)
    a0 = reg(a, ip="10.0.0.1", nickname="alice")
    b0 = reg(b, ip="10.0.0.1", nickname="bob")
    c0 = reg(c, ip="10.0.0.3", nickname="Alice")
    a1 = reg(a, seq=1, prev=a0.id, ip="10.0.0.2", nickname="alice", issued=T0 + 1)
    b1 = reg(b, seq=1, prev=b0.id, ip="10.0.0.4", nickname="bob", issued=T0 + 1)
    rev = make_revocation(c, network=NET, seq=1, prev=c0.id, issued=T0 + 2)
    return [a0, b0, c0, a1, b1, rev]


def stored_tables(data_dir: Path) -> dict[str, list[tuple[object, ...]]]:
    """The stored blocks (as a set: acceptance order may differ between batches) and every derived table."""
    conn = sqlite3.connect(store_path(data_dir, PARAMS.name))
    try:
        tables = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in DERIVED}
        tables["blocks"] = sorted(conn.execute("SELECT hash, height, header, records FROM blocks").fetchall())
        tables["meta"] = sorted(conn.execute("SELECT key, value FROM meta WHERE key IN ('derived', 'finality')"))
        off_main = conn.execute("SELECT hash FROM blocks WHERE hash NOT IN (SELECT hash FROM main_chain)")
        assert sorted(off_main) == tables["side"]   # ``side`` lists exactly the stored blocks off the main chain
    finally:
        conn.close()
    return tables


plans = st.lists(st.tuples(st.integers(0, 40), st.lists(st.integers(0, 5), max_size=2, unique=True),
                           st.booleans()), min_size=1, max_size=16)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans)
def test_batched_writes_store_what_single_writes_store_and_the_checkpoint_equals_a_replay(record_pool, plan):
    blocks: list[Block] = []
    created = [PARAMS.genesis()]
    for i, (parent_pick, picks, _) in enumerate(plan):
        block = block_on(created[parent_pick % len(created)].header, [record_pool[k] for k in picks], T0 + 10 + i)
        blocks.append(block)
        created.append(block)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with LocalLedger(work / "single", PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
            single = [ledger.receive_block(b, NOW).status for b in blocks]
        heard: list[bytes] = []
        with LocalLedger(work / "batched", PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
            ledger.add_listener(on_block=lambda block, _result: heard.append(block.hash))
            statuses: list[str] = []
            turn: list[Block] = []
            for block, (_, _, ends_turn) in zip(blocks, plan, strict=True):
                turn.append(block)
                if ends_turn:   # one turn of a sync applier: several blocks, one batch
                    with ledger.batched():
                        statuses += [ledger.receive_block(b, NOW).status for b in turn]
                    turn = []
            with ledger.batched():
                statuses += [ledger.receive_block(b, NOW).status for b in turn]
        assert statuses == single
        assert stored_tables(work / "batched") == stored_tables(work / "single")
        assert len(heard) == len(set(heard)) and set(heard) <= {b.hash for b in blocks}
        restored, replayed = checkpoint_and_replay(work / "batched", PARAMS, NOW, work, POLICY)
        assert restored == replayed


def test_a_sync_batch_longer_than_one_transaction_is_stored_whole_with_its_pool_updated_once(tmp_path,
                                                                                            record_pool):
    """Blocks past BATCH_BLOCKS in one batch: several transactions, the pending record they mine leaves the pool."""
    from ledger import local_ledger

    now = T0 + 10 * local_ledger.BATCH_BLOCKS   # every block dated before it
    parent = PARAMS.genesis().header
    chain_blocks = []
    for i in range(local_ledger.BATCH_BLOCKS + 5):
        records = [record_pool[0]] if i == local_ledger.BATCH_BLOCKS + 2 else []
        block = block_on(parent, records, T0 + 10 + i)
        chain_blocks.append(block)
        parent = block.header
    with LocalLedger(tmp_path / "node", PARAMS, clock=lambda: now, finality=POLICY) as ledger:
        assert ledger.submit_record(record_pool[0], now)
        with ledger.batched():
            for block in chain_blocks:
                assert ledger.receive_block(block, now).status == "added"
        assert ledger.pending_records() == []
        assert ledger.height == len(chain_blocks)
    tables = stored_tables(tmp_path / "node")
    assert len(tables["main_chain"]) == len(chain_blocks) and tables["side"] == []
    restored, replayed = checkpoint_and_replay(tmp_path / "node", PARAMS, now, tmp_path, POLICY)
    assert restored == replayed
