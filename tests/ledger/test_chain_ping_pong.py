"""An attacker who out-mines an idle network switches a node between two branches, one block at a time, every
30 s (red team 2026-12-07 night). Before, every switch restarted the hold time of every block above the fork, so
nothing above it ever became final: each switch re-applied a whole branch (node work growing with the branch,
the attacker's one block each time) and every block of both branches stayed stored. A block now counts its total
time on the main chain, so the branch in front once that is a minute becomes final and the other is parked
(bounded, and shown as an alert)."""

from ledger_kit import PARAMS, T0, block_on

from ledger.chain import Chain, FinalityPolicy
from ledger.defaults import FINALITY_DEPTH, FINALITY_MIN_HOLD


def test_switching_a_node_between_two_branches_does_not_stop_finality():
    chain = Chain(PARAMS)
    fork = chain.tip
    branches: dict[int, list] = {0: [], 1: []}
    now = float(T0)
    switches = 0
    for i in range(40):   # 20 minutes at 30 s a switch
        mine, other = branches[i % 2], branches[1 - i % 2]
        while len(mine) <= len(other):
            parent = mine[-1].header if mine else fork
            block = block_on(parent, (), max(int(now), parent.timestamp + 1))
            result = chain.add_block(block, now)
            assert result.status == "added", result.reason
            switches += bool(result.became_tip and result.disconnected)
            mine.append(block)
        now += 30
    assert chain.final_height > FINALITY_DEPTH
    # Once final, the other branch is parked and the switching stopped.
    assert switches <= 2 * (FINALITY_MIN_HOLD // 30 + FINALITY_DEPTH)
    assert len(chain.parked_branches()) == 1


def test_a_block_back_on_the_main_chain_counts_its_earlier_time_there_not_the_time_in_between():
    chain = Chain(PARAMS, FinalityPolicy(depth=2, seconds=10**9, min_hold=60))
    genesis = chain.tip

    def grow(parent, n, at):
        blocks = []
        for i in range(n):
            block = block_on(blocks[-1].header if blocks else parent, (), at + i)
            assert chain.add_block(block, at).status == "added"
            blocks.append(block)
        return blocks

    a = grow(genesis, 3, T0)                 # main for 40 s
    b = grow(genesis, 4, T0 + 40)            # then main for 30 s
    assert chain.main_at(4).hash == b[-1].hash
    a += grow(a[-1].header, 2, T0 + 70)      # back in front: 40 s of main time so far, 70 s since it first was
    assert chain.main_at(5).hash == a[-1].hash and chain.final_height == 0
    assert not chain.advance_finality(T0 + 89)
    assert chain.advance_finality(T0 + 90) and chain.final_height >= 1
