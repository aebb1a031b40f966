"""Orphans and side branches from peers, in-process nodes over real sockets: held in bounded per-sender shares,
connected once their parent arrives, never stored when their branch has no more work than ours, and charged to
the sender's standing."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.peers import BAN_THRESHOLD, PENALTY_ORPHAN, OrphanBuffer
from tests.ledger.gossip_kit import PARAMS, ROLE_PEER, Net, RawPeer, config, grow, next_block, wait_until


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def chain_of(n: int, parent=None, start: int | None = None):
    parent = parent or PARAMS.genesis().header
    t = start or int(time.time()) - 1000
    blocks = []
    for i in range(n):
        block = next_block(parent, (), t + i)
        blocks.append(block)
        parent = block.header
    return blocks


def test_the_orphan_buffer_is_bounded_per_sender_and_in_total():
    blocks = chain_of(12)
    buf = OrphanBuffer(per_peer=3, per_peer_bytes=10_000, total_bytes=1_000)
    pushed = [buf.add(b, 200, "a") for b in blocks[:5]]
    assert [len(p) for p in pushed] == [0, 0, 0, 1, 1]             # the sender's oldest make room
    assert buf.held_by("a") == (3, 600) and len(buf) == 3
    assert pushed[3] == [blocks[0]]
    for b in blocks[5:9]:
        buf.add(b, 200, "b")
    assert buf.bytes <= 1_000 and len(buf) == 5                    # the total pushes out anyone's oldest
    assert buf.add(blocks[9], 20_000, "c") == [blocks[9]]           # larger than a share: not held
    kids = buf.children(blocks[7].hash)
    assert kids == [("b", blocks[8])] and blocks[8].hash not in buf
    assert buf.drop_owner("b") == 2 and buf.held_by("b") == (0, 0)


def test_an_orphan_waits_for_its_parent_then_joins_the_chain(net):
    node = net.node(config=config(register=False))
    a, b = chain_of(2)
    peer = RawPeer(node, role=ROLE_PEER)
    peer.conn.send("block", block=b.to_wire())                     # child first: an orphan
    wait_until(lambda: node.status()["orphan_blocks"] == 1, what="the orphan to be held")
    peer.conn.send("block", block=a.to_wire())
    wait_until(lambda: node.ledger.height == 2, what="both blocks to connect")
    assert node.status()["orphan_blocks"] == 0 and node.standing_points(peer.source_ip) == 0
    peer.close()


def test_orphans_over_a_senders_share_are_dropped_and_cost_standing(net):
    node = net.node(config=config(register=False, orphans_per_peer=4))
    peer = RawPeer(node, role=ROLE_PEER)
    unknown = next_block(PARAMS.genesis().header, (), int(time.time()) - 500)
    orphans = chain_of(6, parent=unknown.header)[1:]              # 5 blocks whose ancestors we never get
    orphans = [*orphans, next_block(orphans[-1].header, (), int(time.time()) - 100)]
    for block in orphans:
        peer.conn.send("block", block=block.to_wire())
    wait_until(lambda: node.stats["orphans_dropped"] == 2, what="two orphans to be pushed out")
    held = node._orphans.held_by(peer.source_ip)
    assert held[0] == 4 and held[1] == sum(b.size for b in orphans[2:])
    assert node.status()["orphan_blocks"] == 4
    assert node.standing_points(peer.source_ip) >= 2 * PENALTY_ORPHAN - 1
    assert node.ledger.chain.block_count() == 1                     # nothing stored
    peer.close()
    wait_until(lambda: node.status()["orphan_blocks"] == 0, what="its orphans to go with its connection")


def test_side_blocks_with_less_work_are_not_stored_and_repeats_are_free(net):
    ledger = net.ledger("victim")
    grow(ledger, 3)
    node = net.node(ledger=ledger, config=config(register=False))
    peer = RawPeer(node, role=ROLE_PEER)
    side = chain_of(2, start=int(time.time()) - 900)
    for block in side:                                             # a 2-block branch from genesis: less work
        peer.conn.send("block", block=block.to_wire())
        peer.conn.send("block", block=block.to_wire())             # sent twice: looked at once
    # The first is refused (less work than ours); the second builds on it, which was not kept: an orphan.
    wait_until(lambda: node.stats["side_blocks_refused"] == 1 and node.status()["orphan_blocks"] == 1,
               what="the side block to be refused")
    assert node.ledger.chain.block_count() == 4 and node.ledger.height == 3
    assert 0 < node.standing_points(peer.source_ip) < BAN_THRESHOLD
    peer.close()


def test_an_equal_work_competitor_costs_no_standing(net):
    ledger = net.ledger("victim")
    mine = grow(ledger, 1)
    node = net.node(ledger=ledger, config=config(register=False))
    peer = RawPeer(node, role=ROLE_PEER)
    rival = next_block(PARAMS.genesis().header, (), mine[0].header.timestamp + 1)
    peer.conn.send("block", block=rival.to_wire())
    if rival.hash < mine[0].hash:                                 # the tie-break prefers it: we switch
        wait_until(lambda: node.ledger.chain.tip_hash == rival.hash, what="the switch")
    else:
        wait_until(lambda: node.stats["side_blocks_refused"] == 1, what="the refusal")
        assert node.ledger.chain.block_count() == 2
    assert node.standing_points(peer.source_ip) == 0
    peer.close()


_POOL = chain_of(8) + chain_of(8, start=int(time.time()) - 5000)


@given(st.lists(st.tuples(st.sampled_from(["add", "children", "drop"]), st.integers(0, len(_POOL) - 1),
                          st.sampled_from(["a", "b", "c"]), st.integers(1, 900)), max_size=60))
def test_the_orphan_buffer_never_exceeds_its_bounds_whatever_the_order(ops):
    buf = OrphanBuffer(per_peer=3, per_peer_bytes=1_500, total_bytes=2_500)
    for op, i, owner, size in ops:
        block = _POOL[i]
        if op == "add":
            buf.add(block, size, owner)
        elif op == "children":
            for _, kid in buf.children(block.header.prev_hash):
                assert kid.header.prev_hash == block.header.prev_hash
        else:
            buf.drop_owner(owner)
        assert buf.bytes <= 2_500
        for o in "abc":
            count, used = buf.held_by(o)
            assert count <= 3 and used <= 1_500
        assert sum(buf.held_by(o)[1] for o in "abc") == buf.bytes
        assert sum(buf.held_by(o)[0] for o in "abc") == len(buf)
