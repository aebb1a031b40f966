"""Property test of the chain: after any sequence of blocks on any branches, the chain sits on the preferred branch
and its incrementally maintained state (bindings, record index) equals a fresh replay of its main chain."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_kit import PARAMS, T0, block_on, reg

from ledger.blocks import chain_preference
from ledger.chain import Chain
from tests.conftest import make_identities


@pytest.fixture(scope="module")
def record_pool():
    """Records that conflict in interesting ways: two keys claim one IP, updates depend on first records."""
    a, b, c = make_identities(3)
    a0 = reg(a, ip="10.0.0.1", nickname="alice")
    b0 = reg(b, ip="10.0.0.1", nickname="bob")           # conflicts with a0 (IP)
    c0 = reg(c, ip="10.0.0.3", nickname="Alice")         # conflicts with a0 (nickname)
    a1 = reg(a, seq=1, prev=a0.id, ip="10.0.0.2", nickname="alice", issued=T0 + 1)  # frees 10.0.0.1
    b1 = reg(b, seq=1, prev=b0.id, ip="10.0.0.4", nickname="bob", issued=T0 + 1)
    c1 = reg(c, seq=1, prev=c0.id, ip="10.0.0.1", nickname="carol", issued=T0 + 1)
    return [a0, b0, c0, a1, b1, c1]


steps = st.lists(st.tuples(st.integers(0, 50), st.lists(st.integers(0, 5), max_size=2, unique=True)),
                 min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_incremental_state_equals_a_replay_of_the_main_chain(record_pool, plan):
    chain = Chain(PARAMS)
    created = [chain.genesis]
    for i, (parent_pick, record_picks) in enumerate(plan):
        parent = created[parent_pick % len(created)]
        block = block_on(parent.header, [record_pool[k] for k in record_picks], T0 + 10 + i)
        chain.add_block(block, T0 + 100)
        created.append(block)

    # Fork choice: the tip is the preferred chain among all accepted blocks (most work, then lowest hash).
    accepted = [b for b in created if b.hash in chain]
    best = max(accepted, key=lambda b: chain_preference(chain.chain_work(b.hash), b.hash))
    assert best.hash == chain.tip_hash

    # State: a fresh chain fed only the main chain reaches the same tip and the same bindings.
    fresh = Chain(PARAMS)
    for block in chain.main_blocks():
        assert fresh.add_block(block, T0 + 100).status == "added"
    assert fresh.tip_hash == chain.tip_hash
    assert fresh.bindings.identities == chain.bindings.identities
    assert fresh.bindings.by_ip == chain.bindings.by_ip
    assert fresh.bindings.by_nick == chain.bindings.by_nick
    main_ids = {r.id for b in chain.main_blocks() for r in b.records}
    for record in record_pool:
        assert chain.has_record(record.id) == (record.id in main_ids)
