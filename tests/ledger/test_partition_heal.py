"""Partitions heal by themselves: equal-work forks settle on the lower tip hash with nothing new mined (tips
are compared in the hello and announced again to peers whose known tip differs), and a split older than the
finality window is reported, never merged."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ledger.blocks import Block
from ledger.chain import FinalityPolicy
from ledger.local_ledger import LocalLedger
from tests.ledger.gossip_kit import PARAMS, Net, RawPeer, config, next_block, wait_until

QUIET = config(mine=False, register=False, tip_announce_interval=0.3)


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def _branch(n: int, start: int) -> list[Block]:
    """``n`` empty blocks on genesis, dated from ``start`` (different starts give different branches)."""
    blocks, parent = [], PARAMS.genesis().header
    for i in range(n):
        block = next_block(parent, (), start + i)
        blocks.append(block)
        parent = block.header
    return blocks


def _ledger_with(net: Net, name: str, blocks: list[Block], finality: FinalityPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> LocalLedger:
    ledger = LocalLedger(net.base / name, PARAMS, finality=finality, clock=clock)
    for block in blocks:
        assert ledger.receive_block(block, time.time()).status == "added"
    return ledger


def _two_halves(net: Net, depth: int, finality: FinalityPolicy | None = None):
    now = int(time.time())
    left, right = _branch(depth, now - 600), _branch(depth, now - 300)
    halves = []
    for blocks, tag in ((left, "l"), (right, "r")):
        first = net.node(ledger=_ledger_with(net, f"{tag}1", blocks, finality), config=QUIET)
        second = net.node(ledger=_ledger_with(net, f"{tag}2", blocks, finality), config=QUIET,
                          seeds=[first.address])
        halves.append((first, second))
    for first, _second in halves:
        wait_until(lambda f=first: len(f.peers()) == 1, timeout=10)
    return left, right, halves


def test_equal_work_halves_converge_on_the_lower_tip_hash_after_reconnecting_without_mining(net):
    left, right, [(a, b), (c, d)] = _two_halves(net, 1)
    nodes = [a, b, c, d]
    assert left[-1].header.work == right[-1].header.work   # equal work: only the tie-break can decide
    winner = min(left[-1].hash, right[-1].hash)
    assert {n.ledger.tip_info()[1] for n in nodes} == {left[-1].hash, right[-1].hash}

    b.add_peer(c.address)   # the cut heals; nothing is mined anywhere from here on
    wait_until(lambda: all(n.ledger.tip_info()[1] == winner for n in nodes), timeout=20)

    assert all(n.ledger.height == 1 for n in nodes)
    for n in nodes:   # an honest equal-work fork costs nobody standing
        assert not n.banned()
        assert all(n.standing_points(p.ip) == 0 for p in n.peers())


def test_a_deeper_equal_work_fork_heals_and_every_node_holds_the_winning_branch(net):
    left, right, [(a, b), (c, d)] = _two_halves(net, 3)
    winner = left if left[-1].hash < right[-1].hash else right
    c.add_peer(b.address)
    nodes = [a, b, c, d]
    wait_until(lambda: all(n.ledger.tip_info()[1] == winner[-1].hash for n in nodes), timeout=20)
    for n in nodes:
        assert all(n.ledger.has_block(blk.hash) for blk in winner)


def test_a_node_announces_its_tip_to_a_connected_peer_whose_known_tip_differs_without_new_blocks(net):
    blocks = _branch(2, int(time.time()) - 120)
    node = net.node(ledger=_ledger_with(net, "n", blocks), config=QUIET)
    raw = RawPeer(node)   # its hello says its tip is genesis; nothing is mined or announced afterwards
    try:
        msg = raw.recv_type("block", timeout=10)
        assert msg.type == "block"
        assert Block.from_wire(msg["block"]).hash == blocks[-1].hash
        assert node.stats["tip_announcements"] == 1
        # Once told, the peer is not sent the same tip again every round (cheap: only differing tips go out).
        raw.conn.send("block", block=blocks[-1].to_wire())
        raw.conn.send("ping", nonce=1)
        assert raw.recv_type("pong").type == "pong"
        assert [p.known_tip for p in node.peers()] == [blocks[-1].hash]
    finally:
        raw.close()


def test_a_split_older_than_the_finality_window_is_reported_on_both_sides_and_never_merged(net, caplog):
    final = FinalityPolicy(depth=2, min_hold=0)
    left, right, [(a, b), (c, d)] = _two_halves(net, 3, finality=final)
    loser_side = [a, b] if left[-1].hash > right[-1].hash else [c, d]
    winner_side = [c, d] if loser_side[0] is a else [a, b]
    b.add_peer(c.address)
    caplog.set_level("WARNING")

    def alerts(n):
        return n.status()["alerts"]

    # The side whose tip hash is higher would have switched, but the fork lies below its final height: it parks
    # the other branch and raises an ALERT, keeping its own history. The other side's fork choice keeps its own
    # chain anyway; it reports the split too (ledger/splits.py), naming the peer and the fork point.
    wait_until(lambda: all(any("below final history" in x for x in alerts(n)) for n in loser_side), timeout=20)
    wait_until(lambda: all(any(x.startswith("the network is split") for x in alerts(n)) for n in winner_side),
               timeout=20)
    for n in winner_side:
        (split,) = n.status()["splits"]
        assert (split["fork_height"], split["tip"]) == (0, loser_side[0].ledger.tip_info()[1].hex())
    assert any(r.message.startswith("SPLIT the network is split") for r in caplog.records)
    for n in loser_side:   # the parked branch's ALERT says it; no second sentence about the same branch
        assert n.status()["splits"] == []
    # Never merged: each side keeps its own tip.
    for side, blocks in ((loser_side, left if loser_side[0] is a else right),
                         (winner_side, right if loser_side[0] is a else left)):
        assert {n.ledger.tip_info()[1] for n in side} == {blocks[-1].hash}


def test_a_short_fork_above_the_finality_window_is_no_split(net):
    left, right, [(a, b), (c, d)] = _two_halves(net, 1, finality=FinalityPolicy(depth=5, min_hold=0))
    b.add_peer(c.address)
    winner = min(left[-1].hash, right[-1].hash)
    wait_until(lambda: all(n.ledger.tip_info()[1] == winner for n in (a, b, c, d)), timeout=20)
    assert all(n.status()["splits"] == [] and n.status()["alerts"] == [] for n in (a, b, c, d))


def test_connected_nodes_whose_fork_announcements_were_lost_settle_within_two_announcement_rounds(net):
    a = net.node(config=QUIET)
    b = net.node(config=QUIET, seeds=[a.address])
    wait_until(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, timeout=10)
    now = int(time.time())
    x, y = _branch(1, now - 100)[0], _branch(1, now - 50)[0]
    for node, block in ((a, x), (b, y)):
        # Each side gets its block the way a sync delivers it (no announcement): as if the frames that would
        # have carried it were lost with a connection.
        node._ctx.bulk = True
        try:
            assert node.ledger.receive_block(block, time.time()).status == "added"
        finally:
            node._ctx.bulk = False
    winner = min(x.hash, y.hash)
    wait_until(lambda: all(n.ledger.tip_info()[1] == winner for n in (a, b)), timeout=20)
    # One round: each node announces its tip once to the peer whose known tip differs; the loser switches.
    assert a.stats["tip_announcements"] + b.stats["tip_announcements"] <= 4
