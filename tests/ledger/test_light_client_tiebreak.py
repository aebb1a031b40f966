"""The light client's header chain picks the same tip as a node between branches of equal work: the lower tip
hash (ledger.blocks.chain_preference), whichever branch it saw first."""

from ledger_kit import PARAMS, T0, block_on

from ledger.blocks import chain_preference
from ledger.chain import Chain
from ledger.sync import HeaderChain


def two_equal_branches():
    genesis = PARAMS.genesis().header
    x = block_on(genesis, [], T0 + 1)
    y = block_on(genesis, [], T0 + 2)
    return sorted([x, y], key=lambda b: b.hash)   # (lower hash, higher hash)


def test_equal_work_branches_end_on_the_lower_hash_in_either_order_like_the_node():
    low, high = two_equal_branches()
    for order in ((low, high), (high, low)):
        light = HeaderChain(PARAMS)
        node = Chain(PARAMS)
        for block in order:
            light.extend([block.header], T0 + 10)
            node.add_block(block, T0 + 10)
        assert light.tip.hash == low.hash == node.tip_hash
    assert chain_preference(1, low.hash) > chain_preference(1, high.hash)


def test_a_branch_with_more_work_wins_and_less_work_is_ignored():
    low, high = two_equal_branches()
    light = HeaderChain(PARAMS)
    light.extend([low.header], T0 + 10)
    longer = block_on(high.header, [], T0 + 3)
    light.extend([high.header, longer.header], T0 + 10)
    assert light.tip.hash == longer.hash and light.height == 2
    light.extend([low.header], T0 + 10)
    assert light.tip.hash == longer.hash
