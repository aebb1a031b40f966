"""Peer-slot eclipse: inbound connections from a few addresses cannot take the outbound slots, and the node keeps
dialling known peers until it reaches an honest one (real sockets on 127.x, in-process nodes)."""

from __future__ import annotations

import pytest

from ledger.peers import AddressBook
from tests.conftest import free_loopback_ip
from tests.ledger.gossip_kit import ROLE_PEER, Net, RawPeer, config, wait_until


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def test_sixteen_inbound_connections_from_two_addresses_cannot_keep_the_node_from_an_honest_peer(net):
    honest_ip = free_loopback_ip()
    victim = net.node(seeds=[f"{honest_ip}:8470"], config=config(register=False))
    attackers = [free_loopback_ip(), free_loopback_ip()]
    conns = [RawPeer(victim, source_ip=attackers[i % 2], role=ROLE_PEER) for i in range(16)]
    accepted = [c for c in conns if c.ack.type == "hello_ack"]
    refused = [c for c in conns if c.ack.type == "error"]
    assert len(accepted) == 4                        # 2 per address
    assert len(refused) == 12
    assert any("at most 2 peer connections from one address" in c.ack["reason"] for c in refused)
    wait_until(lambda: len([p for p in victim.peers() if p.inbound]) == 4, what="the attackers' slots")

    # The honest node comes up later: the victim keeps dialling it (backoff) and gets its registration.
    honest = net.node(ip=honest_ip, port=8470)
    wait_until(lambda: any(not p.inbound for p in victim.peers()), what="the victim to dial out")
    wait_until(lambda: victim.ledger.lookup("ip", honest_ip, victim.clock()), timeout=30,
               what="the honest registration, mined elsewhere, to reach the victim")
    assert honest.ledger.lookup("ip", honest_ip, honest.clock()) is not None
    assert len([p for p in victim.peers() if p.inbound]) == 4
    for c in conns:
        c.close()


def test_inbound_peers_never_take_the_reserved_outbound_slots(net):
    victim = net.node(max_peers=4, config=config(register=False))
    assert (victim.outbound_target, victim.max_inbound) == (4, 2)
    conns = [RawPeer(victim, source_ip=free_loopback_ip(), role=ROLE_PEER) for _ in range(4)]
    assert [c.ack.type for c in conns].count("hello_ack") == 2
    assert "inbound peer slots taken" in next(c.ack["reason"] for c in conns if c.ack.type == "error")
    for c in conns:
        c.close()


def test_the_address_book_takes_at_most_a_share_of_addresses_from_one_peer():
    book = AddressBook(max_per_source=3)
    added = [book.add((f"10.0.0.{i}", 8470), 0.0, source="192.0.2.1") for i in range(10)]
    assert added.count(True) == 3
    assert book.add(("10.0.1.1", 8470), 0.0, source="192.0.2.2")
    assert book.add(("10.0.2.1", 8470), 0.0, seed=True)
    assert len(book) == 5


def test_an_idle_connection_outlives_many_ping_intervals_without_a_drop(net, caplog):
    """The churn bug: the writer's send timeout used to shorten the reader's idle wait. With sends allowed
    only 50 ms and pings every 0.2 s, an idle pair of nodes keeps the same connection through 15+ pings."""
    import logging

    caplog.set_level(logging.INFO, logger="ledger")
    cfg = config(register=False, ping_interval=0.2, idle_timeout=1.5, send_timeout=0.05)
    a = net.node(config=cfg)
    b = net.node(seeds=[a.address], config=cfg)
    wait_until(lambda: a.peers() and b.peers(), what="the connection")
    pa, pb = a.peers()[0], b.peers()[0]
    wait_until(lambda: pa.pongs >= 15 and pb.pongs >= 15, timeout=30, what="15 pings each way")
    assert a.peers() == [pa] and b.peers() == [pb] and not pa.closed.is_set() and not pb.closed.is_set()
    assert "did not answer in time" not in caplog.text and "disconnected" not in caplog.text
