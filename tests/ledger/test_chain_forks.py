"""Fork choice by cumulative work, reorgs (binding state follows), orphans, locators and proofs."""

import pytest
from ledger_kit import PARAMS, T0, add, block_on, branch, fail_pow, feed, moves, reg

import ledger.chain as chain_module
from ledger.blocks import Block
from ledger.chain import Chain
from ledger.merkle import verify_merkle_path
from tests.conftest import make_identities


@pytest.fixture(scope="module")
def ids():
    return make_identities(4)


@pytest.fixture
def chain():
    return Chain(PARAMS)


def test_cumulative_work_is_the_sum_of_block_work(chain):
    for _ in range(5):
        add(chain)
    assert chain.tip_work == 5 * 2**PARAMS.difficulty_bits
    assert chain.chain_work(chain.main_at(2).hash) == 2 * 2**PARAMS.difficulty_bits


def test_equal_work_branches_are_decided_by_the_lower_tip_hash_in_any_arrival_order():
    genesis = PARAMS.genesis().header
    candidates = [block_on(genesis, [], T0 + i) for i in range(4)]
    winner = min(candidates, key=lambda b: b.hash)
    for order in (candidates, list(reversed(candidates))):
        chain = Chain(PARAMS)
        results = feed(chain, order, T0 + 10)
        assert all(r.status == "added" for r in results)
        assert chain.tip_hash == winner.hash and chain.height == 1
        assert all(b.hash in chain for b in candidates)


def test_a_branch_with_more_work_wins_and_reports_the_reorg(chain):
    a = [add(chain, at=T0 + i) for i in range(2)]
    b = branch(chain, chain.genesis.header, 3, T0 + 10)
    results = feed(chain, b, T0 + 20)
    assert all(r.status == "added" for r in results) and results[2].became_tip
    assert moves(results) == ([a[1].hash, a[0].hash], [x.hash for x in b])
    assert chain.tip_hash == b[2].hash and chain.height == 3
    assert chain.tip_work == 3 * 256


def test_binding_state_follows_a_reorg(chain, ids):
    mine = reg(ids[0], ip="10.0.0.1", nickname="alice")
    theirs = reg(ids[1], ip="10.0.0.1", nickname="mallory")
    a1 = add(chain, [mine], at=T0)
    assert chain.bindings.lookup_ip("10.0.0.1", T0).record == mine
    results = feed(chain, branch(chain, chain.genesis.header, 2, T0 + 1, records=[[theirs]]), T0 + 5)
    assert moves(results)[0] == [a1.hash]
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 5).record == theirs
    assert chain.bindings.lookup_nickname("alice", T0 + 5) is None
    assert not chain.has_record(mine.id) and chain.has_record(theirs.id)
    # And back again when the first branch grows heavier.
    a2 = block_on(a1.header, [], T0 + 6)
    a3 = block_on(a2.header, [], T0 + 7)
    results = feed(chain, [a2, a3], T0 + 10)
    assert results[1].became_tip and chain.tip_hash == a3.hash
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 10).record == mine


def test_a_heavier_branch_with_an_invalid_block_is_cut_at_that_block(chain, ids):
    add(chain, at=T0)  # main: A1 (work 256)
    good = reg(ids[0])
    replay = reg(ids[0], issued=T0 + 1)  # seq 0 again: invalid once `good` is in the chain
    b1, b2, b3 = branch(chain, chain.genesis.header, 3, T0 + 1, records=[[good], [], [replay]])
    assert chain.add_block(b3, T0 + 9).status == "orphan"
    assert chain.add_block(b2, T0 + 9).status == "orphan"
    result = chain.add_block(b1, T0 + 9)
    # B1..B3 has the most work but B3 breaks a rule: the chain settles on B1, B2 (still more work than A1).
    assert result.status == "added"
    assert result.invalidated == [b3.hash]
    assert [b.hash for b in result.accepted] == [b1.hash, b2.hash]
    assert chain.tip_hash == b2.hash and chain.has_record(good.id)
    assert b3.hash not in chain
    b4 = block_on(b3.header, [], T0 + 10)
    assert "invalid block" in chain.add_block(b4, T0 + 10).reason


def test_a_failed_reorg_restores_the_previous_chain_and_state(chain, ids):
    mine = reg(ids[0], ip="10.0.0.1", nickname="alice")
    a = [add(chain, [mine], at=T0), add(chain, at=T0 + 1)]
    bad = reg(ids[1], ip="10.0.0.2", nickname="bob")
    bad_replay = reg(ids[1], ip="10.0.0.2", nickname="bob", issued=T0 + 1)
    b = branch(chain, chain.genesis.header, 3, T0 + 2, records=[[bad], [bad_replay]])
    results = feed(chain, b, T0 + 9)
    # b[1] is found invalid when the branch first looks preferable (at b[1] on a lower hash, else at b[2]).
    assert results[2].status == "invalid"
    assert b[1].hash not in chain and b[2].hash not in chain and b[0].hash in chain
    assert "replayed" in chain.add_block(b[1], T0 + 9).reason
    assert chain.tip_hash == a[1].hash
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 9).record == mine
    assert chain.bindings.lookup_ip("10.0.0.2", T0 + 9) is None


def test_blocks_on_an_invalid_block_are_invalid(chain):
    bad = Block(fail_pow(block_on(chain.tip, [], T0).header), ())
    assert chain.add_block(bad, T0).status == "invalid"
    child = block_on(bad.header, [], T0 + 1)
    result = chain.add_block(child, T0 + 1)
    assert result.status == "invalid" and "invalid block" in result.reason


def test_the_orphan_pool_is_bounded(chain, monkeypatch):
    monkeypatch.setattr(chain_module, "MAX_ORPHANS", 3)
    blocks = branch(chain, chain.genesis.header, 6, T0)
    for block in blocks[1:]:
        assert chain.add_block(block, T0 + 10).status == "orphan"
    assert sum(chain.is_orphan(b.hash) for b in blocks) == 3
    assert chain.is_orphan(blocks[-1].hash) and not chain.is_orphan(blocks[1].hash)
    result = chain.add_block(blocks[0], T0 + 10)
    assert result.status == "added" and chain.height == 1  # its child was evicted; sync fetches it again


def test_locator_and_headers_after_serve_a_syncing_peer(chain):
    blocks = [add(chain, at=T0 + i) for i in range(30)]
    locator = chain.locator()
    assert locator[0] == chain.tip_hash and locator[-1] == chain.genesis.hash
    assert locator[:10] == [b.hash for b in reversed(blocks[-10:])]
    assert len(locator) < 20
    # A peer at height 12 sends its locator: it gets the 18 headers after its tip.
    peer = Chain(PARAMS)
    for block in blocks[:12]:
        peer.add_block(block, T0 + 100)
    headers = chain.headers_after(peer.locator(), 500)
    assert [h.height for h in headers] == list(range(13, 31))
    assert chain.headers_after(peer.locator(), 5) == headers[:5]
    assert [h.height for h in chain.headers_after([b"\x01" * 32], 3)] == [1, 2, 3]
    assert chain.headers_after(chain.locator(), 10) == []


def test_a_locator_from_a_side_branch_resumes_at_the_fork(chain):
    main = [add(chain, at=T0 + i) for i in range(5)]
    side = branch(chain, main[1].header, 2, T0 + 50)
    for block in side:
        chain.add_block(block, T0 + 60)
    assert not chain.is_main(side[-1].hash)
    headers = chain.headers_after([side[1].hash, side[0].hash, main[1].hash], 100)
    assert [h.height for h in headers] == [3, 4, 5]


def test_proofs_and_confirmations_of_mined_records(chain, ids):
    records = [reg(ids[i], ip=f"10.0.0.{i + 1}", nickname=f"n{i}") for i in range(3)]
    block = add(chain, records, at=T0)
    add(chain, at=T0 + 1)
    header, index, path = chain.proof(records[2].id)
    assert header == block.header and index == 2
    assert verify_merkle_path(records[2].id, index, path, header.merkle_root)
    assert chain.confirmations(1) == 2 and chain.confirmations(2) == 1 and chain.confirmations(9) == 0
    assert chain.proof(b"\x00" * 32) is None
