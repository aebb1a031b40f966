"""Connection slots (red team 2026-12-07): a few addresses that open every connection a node serves and keep them
alive cannot keep another address out — light clients (the chat's lookups) and peers still get in."""

import socket
import threading

import pytest
from gossip_kit import PARAMS, Net, RawPeer, config, grow, wait_until

from ledger.client import LedgerClient
from ledger.protocol import ROLE_CLIENT
from p2pchat.foundation.errors import PeerUnreachable
from tests.conftest import free_loopback_ip


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def alive(peer):
    try:
        peer.conn.send("ping", nonce=1)
        return peer.recv_type("pong", timeout=2.0).type == "pong"
    except PeerUnreachable:
        return False


def test_addresses_holding_every_slot_cannot_keep_another_address_out(net):
    node = net.node(config=config(register=False, extra_connections=2), max_peers=2)
    assert node.max_connections == 4
    attacker = free_loopback_ip()
    held = [RawPeer(node, source_ip=attacker, role=ROLE_CLIENT) for _ in range(4)]   # every slot, kept alive
    # Another address is served: the newest connection of the address holding most made room.
    honest = RawPeer(node, role=ROLE_CLIENT)
    honest.conn.send("status")
    assert honest.recv_type("status_result")["status"]["address"] == node.address
    assert sum(alive(p) for p in held) == 3
    # The address holding most cannot take the slot back while it holds more than the others.
    again = RawPeer(node, source_ip=attacker, role=ROLE_CLIENT, hello=False)
    refusal = again.recv_type("error")
    assert "at its limit of 4 connections" in refusal["reason"] and attacker in refusal["reason"]
    assert alive(honest)
    for peer in [*held, again, honest]:
        peer.close()
    wait_until(lambda: not node._inbound, what="the node to let go of the closed connections")
    # Once the flood is gone, a light client's one-shot connection is served as ever.
    assert LedgerClient(node.host, node.port).status()["address"] == node.address


def test_closing_a_node_under_a_flood_joins_every_thread_it_started(tmp_path):
    # Connections that never read (their reader waits for the writer), connections being displaced, and the
    # rest: close() must end and join all of them.
    with Net(tmp_path) as net:
        before = {t.ident for t in threading.enumerate()}
        node = net.node(config=config(register=False, extra_connections=4), max_peers=2)
        grow(node.ledger, 300)
        source = free_loopback_ip()
        flood = [RawPeer(node, source_ip=source, role=ROLE_CLIENT) for _ in range(6)]
        ask = flood[0].conn.protocol.encode("get_headers", locator=[PARAMS.genesis_hash], limit=2000)
        for peer in flood:
            peer.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.conn.sock.sendall(ask * 50)
        others = [RawPeer(node, role=ROLE_CLIENT) for _ in range(3)]   # displace three of the flood
        wait_until(lambda: len(node._inbound) == 6, what="three of the flood to be displaced")
        node.close()
        started = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("ledger")]
        assert started == []
        for peer in flood + others:
            peer.close()
