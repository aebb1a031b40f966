"""Local finality (sans-IO): blocks final by depth once held a minimum time, or by time held, conflicting branches
parked and bounded, the operator's deliberate accept, the saved finality state and the operator's checkpoint."""

import pytest
from ledger_kit import PARAMS, T0, add, block_on, branch, feed, reg

from ledger.chain import Chain, FinalityPolicy
from ledger.errors import LedgerError
from tests.conftest import make_identities

DEEP = FinalityPolicy(depth=3, seconds=10**9, min_hold=0)   # final by depth only
TIMED = FinalityPolicy(depth=10**6, seconds=60)      # final by time only


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


def honest(chain, n, start=T0):
    return [add(chain, at=start + i) for i in range(n)]


def test_a_block_becomes_final_at_the_configured_depth():
    chain = Chain(PARAMS, DEEP)
    honest(chain, 2)
    assert chain.final_height == 0
    honest(chain, 1, T0 + 2)
    assert chain.final_height == 1 and chain.is_final(1) and not chain.is_final(2)
    honest(chain, 2, T0 + 3)
    assert chain.final_height == 3


def test_depth_counts_only_for_blocks_held_the_minimum_time():
    chain = Chain(PARAMS, FinalityPolicy(depth=3, seconds=10**9, min_hold=60))
    honest(chain, 5)                        # connected at T0 … T0 + 4: deep enough at once, held too briefly
    assert chain.final_height == 0
    assert not chain.advance_finality(T0 + 59)
    assert chain.advance_finality(T0 + 60) and chain.final_height == 1
    assert chain.advance_finality(T0 + 62) and chain.final_height == 3      # depth still caps it at tip - 2
    assert not chain.advance_finality(T0 + 10_000)


def test_a_burst_of_blocks_cannot_finalize_a_branch_before_the_network_is_heard():
    # Two halves of a class mine at once at low difficulty: each side's branch is deeper than the finality depth
    # within a second. With the minimum hold the heavier branch, heard seconds later, still wins everywhere;
    # without it (depth alone) the node would have finalized its own branch and parked the other one for good.
    for min_hold, rejoined in ((60.0, True), (0.0, False)):
        chain = Chain(PARAMS, FinalityPolicy(depth=6, seconds=1800, min_hold=min_hold))
        mine = [add(chain, at=T0 + i, now=T0 + i / 10) for i in range(8)]
        theirs = branch(chain, chain.genesis.header, 9, T0 + 1)
        results = feed(chain, theirs, T0 + 5)
        assert (chain.tip_hash == theirs[-1].hash) is rejoined
        assert bool(chain.parked_alerts()) is not rejoined
        assert chain.final_height == (0 if rejoined else len(mine) - 6 + 1)
        assert all(r.status == "added" for r in results)


def test_a_block_becomes_final_once_held_for_the_configured_time_even_without_new_blocks():
    chain = Chain(PARAMS, TIMED)
    honest(chain, 2)
    assert chain.final_height == 0 and chain.held_since(1) == T0
    assert not chain.advance_finality(T0 + 59)
    assert chain.advance_finality(T0 + 60) and chain.final_height == 1
    assert chain.advance_finality(T0 + 61) and chain.final_height == 2


def test_a_heavier_branch_that_rewrites_final_history_is_parked_and_reported_with_its_sender(ids):
    chain = Chain(PARAMS, TIMED)
    victim = reg(ids[0], ip="10.0.0.1", nickname="alice")
    honest_blocks = [add(chain, [victim], at=T0), add(chain, at=T0 + 1)]
    attack = branch(chain, chain.genesis.header, 4, T0 + 2,
                    records=[[reg(ids[1], ip="10.0.0.1", nickname="alice")]])
    results = [chain.add_block(b, T0 + 120, source="127.0.0.66:8470") for b in attack]
    assert all(r.status == "added" and not r.became_tip for r in results)
    assert chain.tip_hash == honest_blocks[1].hash
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 120).record == victim
    assert results[0].parked == []   # still lighter than the main chain (at equal work the lower hash wins)
    alert = results[2].parked[0]
    assert alert.heavier and alert.fork_height == 0 and alert.fork_hash == PARAMS.genesis_hash
    assert alert.tip_hash == attack[2].hash and alert.source == "127.0.0.66:8470"
    assert [b.tip_hash for b in chain.parked_alerts()] == [attack[3].hash]
    assert "sent by 127.0.0.66:8470" in chain.parked_alerts()[0].describe()


def test_a_branch_forking_above_the_final_height_still_reorgs_normally():
    chain = Chain(PARAMS, DEEP)
    main = honest(chain, 4)
    assert chain.final_height == 2
    rival = branch(chain, main[1].header, 3, T0 + 10)   # forks at height 2, the final block
    feed(chain, rival, T0 + 20)
    assert chain.tip_hash == rival[2].hash
    # Finality then moved past the fork: the former main blocks 3 and 4 are a lighter parked branch now.
    assert chain.final_height == 3
    assert [(b.tip_hash, b.heavier) for b in chain.parked_branches()] == [(main[3].hash, False)]


def test_a_side_branch_is_parked_when_finality_passes_its_fork_point():
    chain = Chain(PARAMS, DEEP)
    main = honest(chain, 2)
    side = branch(chain, main[0].header, 1, T0 + 10)
    feed(chain, side, T0 + 10)
    assert chain.parked_branches() == []
    honest(chain, 2, T0 + 11)   # height 4: block 2 final, the side branch forks at 1
    parked = chain.parked_branches()
    assert [(b.tip_hash, b.fork_height, b.heavier) for b in parked] == [(side[0].hash, 1, False)]
    more = block_on(side[0].header, [], T0 + 20)
    assert chain.add_block(more, T0 + 20).status == "added" and chain.parked_branches()[0].blocks == 2


def test_parked_branches_are_bounded_and_the_lightest_are_dropped():
    chain = Chain(PARAMS, FinalityPolicy(depth=1, min_hold=0, seconds=10**9, max_parked_branches=2))
    honest(chain, 3)
    branches = [branch(chain, chain.genesis.header, n, T0 + 100 * n) for n in (1, 2, 3)]
    pruned = []
    for blocks in branches:
        for result in feed(chain, blocks, T0 + 500):
            pruned += result.pruned
    assert pruned == [branches[0][0].hash]
    assert {b.tip_hash for b in chain.parked_branches()} == {branches[1][1].hash, branches[2][2].hash}
    again = chain.add_block(branches[0][0], T0 + 500)
    assert again.status == "duplicate" and "final history" in again.reason
    assert branches[0][0].hash not in chain


def test_parked_bytes_are_bounded(ids):
    chain = Chain(PARAMS, FinalityPolicy(depth=1, seconds=10**9, min_hold=0, max_parked_bytes=1000))
    honest(chain, 2)
    big = branch(chain, chain.genesis.header, 1, T0 + 5, records=[[reg(ids[0])]])
    assert big[0].size > 1000
    result = chain.add_block(big[0], T0 + 10)
    assert result.pruned == [big[0].hash] and result.accepted == [] and chain.parked_branches() == []


def test_the_operator_can_accept_a_parked_branch_which_then_becomes_the_main_chain(ids):
    chain = Chain(PARAMS, TIMED)
    victim = reg(ids[0], ip="10.0.0.1", nickname="alice")
    add(chain, [victim], at=T0)
    taker = reg(ids[1], ip="10.0.0.1", nickname="alice")
    attack = branch(chain, chain.genesis.header, 3, T0 + 2, records=[[taker]])
    feed(chain, attack, T0 + 120)
    assert chain.tip_hash != attack[2].hash
    with pytest.raises(LedgerError, match="not in a parked branch"):
        chain.accept_branch(chain.tip_hash, T0 + 121)
    result = chain.accept_branch(attack[1].hash, T0 + 121)
    assert result.became_tip and [b.hash for b in result.connected] == [b.hash for b in attack]
    assert chain.tip_hash == attack[2].hash and chain.final_height == 0
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 121).record == taker
    assert chain.parked_branches() == []


def test_the_saved_finality_state_survives_a_reload_in_any_stored_order():
    chain = Chain(PARAMS, TIMED)
    main = honest(chain, 2)
    attack = branch(chain, chain.genesis.header, 4, T0 + 2)
    feed(chain, attack, T0 + 61)            # block 1 final (held 61 s), block 2 not yet (60 s at T0 + 61)
    add(chain, at=T0 + 3, now=T0 + 62)      # block 3 held since T0 + 62
    state = chain.finality_state()
    assert state["final_height"] == 2 and [h for h, _ in state["held"]] == [chain.main_at(3).hash]
    stored = [*attack, *main, chain.main_at(3)]  # the attacker's blocks first: replay must not follow them
    fresh = Chain(PARAMS, TIMED)
    assert fresh.load(stored, T0 + 100, finality=state) == []
    assert fresh.tip_hash == chain.tip_hash and fresh.final_height == 2
    assert fresh.held_since(3) == T0 + 62   # the clock of a non-final block did not restart
    assert [b.tip_hash for b in fresh.parked_alerts()] == [attack[3].hash]
    assert fresh.advance_finality(T0 + 122) and fresh.final_height == 3
    # Without the saved state the replay would follow the heavier branch: the state is what protects it.
    plain = Chain(PARAMS, TIMED)
    assert plain.load(stored, T0 + 100) == [] and plain.tip_hash == attack[3].hash


def test_a_checkpoint_refuses_any_other_block_at_its_height():
    chain = Chain(PARAMS, TIMED)
    good = branch(chain, chain.genesis.header, 2, T0)
    other = branch(chain, chain.genesis.header, 3, T0 + 10)
    chain.set_checkpoint(1, good[0].hash)
    results = feed(chain, other, T0 + 20)
    assert results[0].status == "invalid" and "checkpoint" in results[0].reason
    assert all(r.status == "invalid" for r in results[1:])
    feed(chain, good, T0 + 20)
    assert chain.tip_hash == good[1].hash
    with pytest.raises(LedgerError, match="another block at height 1"):
        chain.set_checkpoint(1, other[0].hash)


def test_the_finality_check_does_not_walk_the_chain(monkeypatch):
    """Adding a block on the tip touches the finality state through a bisection only (no side branch: no sweep)."""
    chain = Chain(PARAMS, TIMED)
    honest(chain, 30)
    calls = []
    original = chain._park_subtree
    monkeypatch.setattr(chain, "_park_subtree", lambda *a: calls.append(a) or original(*a))
    monkeypatch.setattr(chain, "_median_from", _counting(chain._median_from, calls))
    add(chain, at=T0 + 30, now=T0 + 100)
    assert chain.final_height == 30 and len(calls) == 2   # the median rule (linkage, lapse), no parking walk


def _counting(fn, calls):
    def wrapped(*args):
        calls.append(args)
        return fn(*args)
    return wrapped


def test_the_saved_state_holds_one_entry_per_second_of_arrivals_and_a_reload_never_finalizes_sooner():
    """A burst of blocks (a sync, or an attacker feeding blocks) is saved as one connection time per whole second,
    so saving the state after each new tip does not cost O(blocks not final yet); a reload gives every block of a
    run the run's saved time (its second's end): at most a second late, never early."""
    policy = FinalityPolicy(depth=3, seconds=1800, min_hold=60)
    chain = Chain(PARAMS, policy)
    arrivals = [T0 + 0.1 + i * 0.25 for i in range(40)]      # 40 blocks over 10 s, four a second
    blocks = [add(chain, at=T0 + i, now=t) for i, t in enumerate(arrivals)]
    state = chain.finality_state()
    assert state["final_height"] == 0 and len(state["held"]) == 10
    assert [t for _, t in state["held"]] == [float(T0 + s) for s in range(1, 11)]
    assert [h for h, _ in state["held"]] == [blocks[i].hash for i in range(3, 40, 4)]    # each run's last block
    fresh = Chain(PARAMS, policy)
    assert fresh.load(blocks, T0 + 30, finality=state) == []
    for height, t in enumerate(arrivals, start=1):
        assert t <= fresh.held_since(height) <= t + 1
    for now in (T0 + 59, T0 + 60.5, T0 + 63, T0 + 70):
        chain.advance_finality(now)
        fresh.advance_finality(now)
        assert fresh.final_height <= chain.final_height
    assert fresh.final_height == chain.final_height == 38      # depth caps both once every block is held
