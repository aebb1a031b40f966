"""Work per stranger (red team 2026-12-07): what one address can make a node do is bounded per address, not per
connection, and a reachability proof — an RSA signature for a 40-byte frame — has a budget of its own."""

import pytest
from gossip_kit import Net, RawPeer, config, wait_until

from ledger.peers import SenderBudgets, TokenBucket
from ledger.protocol import ROLE_CLIENT
from ledger.reachability import check_proof
from tests.conftest import free_loopback_ip


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def test_every_connection_of_one_address_spends_the_same_budget():
    budgets = SenderBudgets(rate=1.0, burst=3.0)
    assert [budgets.take("10.0.0.1", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budgets.take("10.0.0.1", 0.0) > 0      # a fourth connection of the same address waits
    assert budgets.take("10.0.0.2", 0.0) == 0.0   # another address has its own budget


def test_a_budget_that_refuses_work_records_no_debt():
    bucket = TokenBucket(rate=1.0, burst=2.0, now=0.0)
    assert bucket.try_take(0.0) == 0.0 and bucket.try_take(0.0) == 0.0
    assert all(bucket.try_take(0.0) is None for _ in range(50))   # refused, and refusals cost nothing
    assert bucket.try_take(1.0) == 0.0                              # so one second later there is one again
    assert bucket.try_take(1.0, within=2.0) == 1.0                  # or wait for one that is a second off
    assert bucket.try_take(1.0, within=0.5) is None


def test_senders_are_forgotten_oldest_first_past_the_limit():
    budgets = SenderBudgets(rate=0.0, burst=1.0, limit=2)
    assert budgets.try_take("a", 0.0) == 0.0 and budgets.try_take("b", 0.0) == 0.0
    assert budgets.try_take("c", 0.0) == 0.0    # "a" is forgotten…
    assert budgets.try_take("a", 0.0) == 0.0    # …and starts afresh, so memory stays bounded
    assert budgets.try_take("c", 0.0) is None


def ping(peer, nonce):
    peer.conn.send("ping", nonce=nonce)
    return peer.recv_type("pong").type


def test_a_second_connection_from_the_same_address_does_not_get_a_fresh_message_budget(net):
    node = net.node(config=config(register=False, message_rate=0.5, message_burst=4))
    ip = free_loopback_ip()
    first = RawPeer(node, source_ip=ip, role=ROLE_CLIENT)
    for n in range(4):   # the burst is spent (the handshake itself is not counted)
        assert ping(first, n) == "pong"
    assert node.stats["rate_limited"] == 0
    second = RawPeer(node, source_ip=ip, role=ROLE_CLIENT)
    assert ping(second, 9) == "pong"                          # answered, after waiting for a token
    assert node.stats["rate_limited"] == 1
    other = RawPeer(node, role=ROLE_CLIENT)                   # another address is not slowed by it
    assert ping(other, 10) == "pong"
    assert node.stats["rate_limited"] == 1
    for peer in (first, second, other):
        peer.close()


def prove(node, source_ip):
    peer = RawPeer(node, source_ip=source_ip, role=ROLE_CLIENT)
    nonce = bytes(range(32))
    peer.conn.send("prove", nonce=nonce)
    answer = peer.recv_type("proof")
    peer.close()
    if answer.type == "proof":
        check_proof(answer.fields, nonce=nonce, ip=node.host, network=node.params.name,
                    expected_fp=node.identity.fingerprint)
        return "proof"
    return answer["reason"]


def test_reachability_proofs_have_a_budget_per_address_and_the_node_keeps_serving_others(net):
    node = net.node(config=config(register=False, proof_burst_per_ip=2, proof_rate_per_ip=0.001))
    attacker = free_loopback_ip()
    assert [prove(node, attacker) for _ in range(2)] == ["proof", "proof"]
    refused = prove(node, attacker)
    assert refused.startswith(f"too many reachability proofs asked from {attacker}")
    assert "try again later" in refused
    assert node.standing_points(attacker) == 0      # an honest asker may be refused too: no standing lost
    assert prove(node, free_loopback_ip()) == "proof"   # another address is still answered
    assert node.stats["proofs_refused"] == 1


def test_reachability_proofs_have_a_budget_for_everyone_together(net):
    node = net.node(config=config(register=False, proof_burst=3, proof_rate=0.001))
    assert [prove(node, free_loopback_ip()) for _ in range(3)] == ["proof"] * 3
    assert "more reachability proofs than it signs" in prove(node, free_loopback_ip())
    # A refusal is not a failure of the node: it still answers everything else.
    peer = RawPeer(node, role=ROLE_CLIENT)
    assert ping(peer, 1) == "pong"
    peer.close()
    wait_until(lambda: node.stats["proofs_refused"] == 1, what="the refusal to be counted")


def test_new_connections_have_a_budget_per_address(net):
    node = net.node(config=config(register=False, handshake_rate=0.01, handshake_burst=3, handshake_wait=0.5))
    churner = free_loopback_ip()
    for _ in range(3):
        RawPeer(node, source_ip=churner, role=ROLE_CLIENT).close()
    refused = RawPeer(node, source_ip=churner, role=ROLE_CLIENT, hello=False).recv_type("hello_ack")
    assert refused.type == "error" and f"too many new connections from {churner}" in refused["reason"]
    assert node.standing_points(churner) == 0
    other = RawPeer(node, role=ROLE_CLIENT)     # another address connects as ever
    assert ping(other, 3) == "pong"
    other.close()
    assert node.stats["connections_refused"] == 1
