"""The gossip node with real sockets on 127.x: handshake, sync, announcements, peer exchange, reconnects, limits."""

import logging
import threading

import pytest
from gossip_kit import PARAMS, Net, RawPeer, config, grow, record_for, wait_until

from ledger.client import LedgerClient
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
from p2pchat.foundation.transport import connect
from tests.conftest import free_loopback_ip


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def test_a_hello_for_another_network_or_version_is_refused_with_what_the_node_speaks(net, caplog):
    caplog.set_level(logging.INFO, logger="ledger")
    node = net.node(config=config(register=False))
    with connect(node.host, node.port, LEDGER_PROTOCOL, source_ip=free_loopback_ip()) as conn:
        conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=b"12345678", network="othernet",
                                          genesis=bytes(32), params={}, height=0, tip=bytes(32), work=0))
        msg = conn.recv(5)
    assert msg.type == "error"
    assert "'gossipnet'" in msg["reason"] and "'othernet'" in msg["reason"]
    with connect(node.host, node.port, LEDGER_PROTOCOL, source_ip=free_loopback_ip()) as conn:
        conn.send("hello", **{**hello_fields(role=ROLE_PEER, nonce=b"12345678"), "version": 99})
        msg = conn.recv(5)
    assert msg.type == "error" and "version 99 is not supported" in msg["reason"] and "version 1" in msg["reason"]
    # Same name, other parameters: refused by genesis.
    other = NetworkParams(name="gossipnet", difficulty_bits=9)
    stranger = net.node(params=other, seeds=[node.address], config=config(register=False))
    wait_until(lambda: "same name, other parameters" in caplog.text, what="the stranger to be refused")
    assert not node.peers() and not stranger.peers()
    assert node.standing_points(stranger.host) == 0  # an honest mismatch costs no standing
    assert LedgerClient(node.host, node.port).status()["peer_count"] == 0  # still serving


def test_a_joining_node_syncs_from_scratch_and_reports_progress(net):
    seed_ledger = net.ledger("seed")
    grow(seed_ledger, 600)
    seed = net.node(ledger=seed_ledger, config=config(register=False))
    seen = []
    joiner = net.node(seeds=[seed.address], config=config(register=False, block_batch=100),
                      on_progress=seen.append)
    wait_until(lambda: joiner.ledger.tip_info() == seed.ledger.tip_info(), what="sync")
    # The last block is applied a moment before the sync reports "done".
    wait_until(lambda: seen and seen[-1].phase == "done", what="the final progress report")
    phases = [p.phase for p in seen]
    assert "headers" in phases and "blocks" in phases
    assert any(0 < p.height < 600 and p.target == 600 for p in seen)
    assert joiner.ledger.verify_store().ok


def test_nodes_register_and_announce_records_and_blocks_to_each_other(net):
    a = net.node()
    b = net.node(seeds=[a.address])
    c = net.node(seeds=[b.address])
    for node in (a, b, c):
        for other in (a, b, c):
            wait_until(lambda n=node, o=other: n.ledger.lookup("ip", o.host, n.clock()), what="registration")
    tips = {n.ledger.tip_info() for n in (a, b, c)}
    assert len(tips) == 1
    # A record submitted to one node reaches the others (pending or mined) by announcement.
    assert c.status()["own_record"]["state"] == "mined"


def test_peer_exchange_connects_nodes_that_only_knew_the_seed(net):
    seed = net.node(config=config(register=False))
    b = net.node(seeds=[seed.address], config=config(register=False))
    c = net.node(seeds=[seed.address], config=config(register=False))

    def linked():
        return any(p.listen_addr == (c.host, c.port) for p in b.peers()) or \
            any(p.listen_addr == (b.host, b.port) for p in c.peers())
    wait_until(linked, what="b and c to find each other through the seed")


def test_a_node_reconnects_with_backoff_after_its_peer_restarts(net):
    a = net.node(config=config(register=False))
    ip, port = a.host, a.port
    b = net.node(seeds=[a.address], config=config(register=False))
    wait_until(lambda: b.peers(), what="first connection")
    a.close()
    wait_until(lambda: not b.peers(), what="b to notice")
    ledger = a.ledger
    ledger.close()
    again = net.node(ip=ip, port=port, ledger=net.ledger(f"node-{ip}"), config=config(register=False))
    wait_until(lambda: b.peers() and again.peers(), what="reconnect")


def test_the_peer_count_is_bounded_and_refused_peers_get_other_addresses(net):
    hub = net.node(max_peers=3, config=config(register=False))   # 2 inbound slots, 1 kept for its own dials
    others = [net.node(seeds=[hub.address], config=config(register=False, outbound_peers=1)) for _ in range(4)]
    wait_until(lambda: len([p for p in hub.peers() if p.inbound]) == 2, what="hub to fill up")
    # Refused nodes learnt addresses of other nodes from the hub and connect there instead.
    wait_until(lambda: all(n.peers() for n in others), what="everyone to find a peer")
    assert len(hub.peers()) <= 3 and len([p for p in hub.peers() if p.inbound]) <= 2


def test_records_announced_by_a_peer_are_relayed_and_mined_everywhere(net, identities):
    a = net.node(config=config(register=False))
    b = net.node(seeds=[a.address], config=config(register=False))
    c = net.node(seeds=[b.address], config=config(register=False))
    wait_until(lambda: len(b.peers()) == 2)
    # A relay-only record needs no reachability proof.
    record = record_for(identities[5], None, nickname="nat-user", relay="127.0.0.1:8472")
    assert LedgerClient(a.host, a.port).submit(record) == record.id
    for node in (a, b, c):
        wait_until(lambda n=node: n.ledger.lookup("nick", "nat-user", n.clock()), what="record mined everywhere")
    assert LedgerClient(c.host, c.port).lookup("nat-user").relay == "127.0.0.1:8472"


def test_close_joins_every_thread(net):
    a = net.node()
    b = net.node(seeds=[a.address])
    wait_until(lambda: b.peers())
    net.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ledger")]


def test_simultaneous_dials_keep_one_connection(net):
    a = net.node(config=config(register=False), start=False)
    b = net.node(config=config(register=False), start=False)
    a.start()
    b.start()
    a.add_peer(b.address)
    b.add_peer(a.address)
    wait_until(lambda: a.peers() and b.peers())
    wait_until(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, what="duplicate connection to be dropped")


def test_raw_peer_gets_our_tip_in_the_hello_ack(net):
    a = net.node(config=config(register=False))
    grow(a.ledger, 3)
    peer = RawPeer(a)
    try:
        assert peer.ack["height"] == 3 and peer.ack["genesis"] == PARAMS.genesis_hash
    finally:
        peer.close()
