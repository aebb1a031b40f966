"""The pending pool: first-seen conflicts, chained pending records, block selection and reorgs."""

import dataclasses

import pytest
from ledger_kit import DAY, PARAMS, T0, add, block_on, branch, reg

from ledger.chain import Chain
from ledger.errors import LedgerError
from ledger.pool import MAX_PENDING_PER_IDENTITY, Mempool
from tests.conftest import make_identities


def follow(pool, chain, blocks, now):
    """Feed blocks to the chain and the pool as LocalLedger does; returns the records that came back and
    the blocks disconnected along the way."""
    returned, disconnected = [], []
    for block in blocks:
        result = chain.add_block(block, now)
        if result.became_tip:
            returned += pool.on_reorg(result.connected, result.disconnected, chain, now)
            disconnected += result.disconnected
    return returned, disconnected


@pytest.fixture(scope="module")
def ids():
    return make_identities(4)


@pytest.fixture
def chain():
    return Chain(PARAMS)


@pytest.fixture
def pool():
    return Mempool(PARAMS)


def test_a_valid_record_is_admitted_once(pool, chain, ids):
    record = reg(ids[0])
    assert pool.add(record, chain, T0)
    assert not pool.add(record, chain, T0)
    assert record.id in pool and len(pool) == 1 and pool.get(record.id) == record
    changes = pool.drain_changes()
    assert changes.saved == [record] and changes.removed == []
    assert pool.drain_changes().saved == []


def test_invalid_records_are_refused_with_the_reason(pool, chain, ids):
    with pytest.raises(LedgerError, match="bad signature"):
        pool.add(dataclasses.replace(reg(ids[0]), nickname="forged"), chain, T0)
    with pytest.raises(LedgerError, match="already expired"):
        pool.add(reg(ids[0], lifetime=60), chain, T0 + 60)
    assert len(pool) == 0


def test_conflicting_claims_are_resolved_first_seen(pool, chain, ids):
    assert pool.add(reg(ids[0], ip="10.0.0.1", nickname="alice"), chain, T0)
    with pytest.raises(LedgerError, match="bound to another key"):
        pool.add(reg(ids[1], ip="10.0.0.1", nickname="bob"), chain, T0)
    with pytest.raises(LedgerError, match="taken"):
        pool.add(reg(ids[1], ip="10.0.0.2", nickname="alice"), chain, T0)


def test_an_identity_may_queue_consecutive_records(pool, chain, ids):
    first = reg(ids[0])
    second = reg(ids[0], seq=1, prev=first.id, ip="10.0.0.5", issued=T0 + 1)
    assert pool.add(first, chain, T0)
    assert pool.add(second, chain, T0 + 1)
    assert pool.state(chain, T0 + 1).identity(ids[0].fingerprint).record == second
    assert pool.select(chain, T0 + 2) == [first, second]


def test_mined_records_are_not_readmitted(pool, chain, ids):
    record = reg(ids[0])
    add(chain, [record])
    assert not pool.add(record, chain, T0)


def test_select_respects_the_block_limits(chain, ids):
    pool = Mempool(dataclasses.replace(PARAMS, max_block_records=2))
    records = [reg(ids[i], ip=f"10.0.0.{i + 1}", nickname=f"n{i}") for i in range(3)]
    for record in records:
        pool.add(record, chain, T0)
    assert pool.select(chain, T0) == records[:2]
    assert pool.select(chain, T0, limit=1) == records[:1]
    small = Mempool(dataclasses.replace(PARAMS, max_block_bytes=1200))
    for record in records:
        small.add(record, chain, T0)
    assert small.select(chain, T0) == records[:1]


def test_select_drops_records_that_expired_meanwhile(pool, chain, ids):
    short = reg(ids[0], lifetime=100)
    pool.add(short, chain, T0)
    pool.drain_changes()
    assert pool.select(chain, T0 + 100) == []
    assert len(pool) == 0 and pool.drain_changes().removed == [short.id]


def test_the_pool_is_bounded(chain, ids):
    pool = Mempool(PARAMS, max_records=1)
    pool.add(reg(ids[0]), chain, T0)
    with pytest.raises(LedgerError, match="pool is full"):
        pool.add(reg(ids[1], ip="10.0.0.2", nickname="b"), chain, T0)


def test_a_new_block_removes_its_records_and_conflicting_ones(pool, chain, ids):
    mine = reg(ids[0], ip="10.0.0.1", nickname="alice")
    other = reg(ids[2], ip="10.0.0.3", nickname="carol")
    pool.add(mine, chain, T0)
    pool.add(other, chain, T0)
    pool.drain_changes()
    rival = reg(ids[1], ip="10.0.0.1", nickname="mallory")
    block = block_on(chain.tip, [rival], T0)  # a peer mined a conflicting claim first
    result = chain.add_block(block, T0)
    pool.on_reorg(result.connected, result.disconnected, chain, T0)
    assert pool.records() == [other]
    assert pool.drain_changes().removed == [mine.id]
    own_block = block_on(chain.tip, [other], T0 + 1)
    result = chain.add_block(own_block, T0 + 1)
    pool.on_reorg(result.connected, result.disconnected, chain, T0 + 1)
    assert len(pool) == 0


def test_records_the_new_branch_made_invalid_do_not_come_back(pool, chain, ids):
    orphaned = reg(ids[0], ip="10.0.0.1", nickname="alice")
    in_both = reg(ids[1], ip="10.0.0.2", nickname="bob")
    loser = reg(ids[3], ip="10.0.0.4", nickname="dave")
    pending = reg(ids[2], ip="10.0.0.3", nickname="carol")
    add(chain, [orphaned, in_both, loser], at=T0)
    pool.add(pending, chain, T0)
    pool.drain_changes()
    # The other branch holds `in_both` and a rival claim that makes `loser` invalid.
    rival = reg(ids[0], ip="10.0.0.4", nickname="dave2")  # ids[0] takes dave's IP first
    new_branch = branch(chain, chain.genesis.header, 2, T0 + 1, records=[[in_both, rival]])
    returned, disconnected = follow(pool, chain, new_branch, T0 + 5)
    assert chain.tip_hash == new_branch[-1].hash and len(disconnected) == 1
    # `orphaned` is seq 0 of ids[0], which the new branch already used (rival): it cannot come back either.
    assert returned == []
    assert pool.records() == [pending]
    changes = pool.drain_changes()
    assert changes.saved == []


def test_orphaned_records_come_back_ahead_of_newer_ones(pool, chain, ids):
    orphaned = reg(ids[0], ip="10.0.0.1", nickname="alice")
    add(chain, [orphaned], at=T0)
    follow_up = reg(ids[0], seq=1, prev=orphaned.id, ip="10.0.0.1", issued=T0 + 1, lifetime=DAY)
    pool.add(follow_up, chain, T0 + 1)
    pool.drain_changes()
    returned, _ = follow(pool, chain, branch(chain, chain.genesis.header, 2, T0 + 2), T0 + 5)
    assert returned == [orphaned]
    assert pool.records() == [orphaned, follow_up]  # still valid together, in order
    assert pool.drain_changes().saved == [orphaned]
    assert pool.select(chain, T0 + 6) == [orphaned, follow_up]


def test_one_key_cannot_queue_more_than_a_few_records(pool, chain, ids):
    # Red team 2026-12-07: one key used to queue 5,000 chained updates (one signature each), filling the pool —
    # every other record refused — and every block the network mined. Now at most 8 wait per key.
    prev = bytes(32)
    for seq in range(MAX_PENDING_PER_IDENTITY):
        record = reg(ids[0], seq=seq, prev=prev, issued=T0 + seq)
        assert pool.add(record, chain, T0 + 10)
        prev = record.id
    with pytest.raises(LedgerError, match=f"already has {MAX_PENDING_PER_IDENTITY} records waiting to be mined"):
        pool.add(reg(ids[0], seq=MAX_PENDING_PER_IDENTITY, prev=prev, issued=T0 + 9), chain, T0 + 10)
    assert pool.add(reg(ids[1], ip="10.0.0.2", nickname="bob"), chain, T0 + 10)   # other keys still get in
    # Once mined, the key may queue more.
    follow(pool, chain, [block_on(chain.tip, pool.select(chain, T0 + 20), T0 + 20)], T0 + 20)
    assert len(pool) == 0
    assert pool.add(reg(ids[0], seq=MAX_PENDING_PER_IDENTITY, prev=prev, issued=T0 + 21), chain, T0 + 21)
