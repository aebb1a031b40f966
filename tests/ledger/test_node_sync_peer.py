"""Choosing the sync peer by checked headers, never by the work a hello claims (in-process nodes, real sockets)."""

from __future__ import annotations

import pytest

from ledger.protocol import hello_fields
from p2pchat.foundation import crypto
from tests.ledger.gossip_kit import PARAMS, ROLE_PEER, Net, RawPeer, config, grow, wait_until


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def test_a_peer_claiming_huge_work_is_asked_but_the_honest_chain_is_synced_meanwhile(net):
    seed_ledger = net.ledger("honest")
    grow(seed_ledger, 5)
    honest = net.node(ledger=seed_ledger, config=config(register=False))
    joiner = net.node(config=config(register=False, request_timeout=60.0))
    # The liar connects first and claims 2^200 work; it never answers the headers it is asked for.
    liar = RawPeer(joiner, role=ROLE_PEER, hello=False)
    genesis = PARAMS.genesis_hash
    liar.conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                           genesis=genesis, params=PARAMS.to_wire(), height=10**6, tip=genesis,
                                           work=2**200))
    assert liar.recv_type("hello_ack").type == "hello_ack"
    assert liar.recv_type("get_headers").type == "get_headers"       # it is asked (its claim is a reason to ask)
    joiner.add_peer(honest.address)
    wait_until(lambda: joiner.ledger.height == 5, timeout=20, what="the honest chain on the joiner")
    assert joiner.ledger.chain.tip_hash == seed_ledger.chain.tip_hash
    [liar_peer] = [p for p in joiner.peers() if p.ip == liar.source_ip]
    assert liar_peer.awaiting == "headers" and liar_peer.validated_work == 0   # still unanswered, never ranked
    liar.close()


def test_a_peer_that_never_answers_a_sync_request_is_penalised_and_left(net):
    joiner = net.node(config=config(register=False, request_timeout=0.5))
    liar = RawPeer(joiner, role=ROLE_PEER, hello=False)
    genesis = PARAMS.genesis_hash
    liar.conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                           genesis=genesis, params=PARAMS.to_wire(), height=10**6, tip=genesis,
                                           work=2**200))
    assert liar.recv_type("get_headers").type == "get_headers"
    reason = liar.recv_type("error", timeout=10)["reason"]
    assert reason == "no answer to a sync request in time"
    assert joiner.stats["stalls"] == 1 and joiner.standing_points(liar.source_ip) > 30
    liar.close()


def test_a_peer_dripping_blocks_faster_than_the_deadline_is_still_left_for_stalling(net):
    import threading

    from ledger.protocol import LEDGER_PROTOCOL
    from p2pchat.foundation.errors import UserError
    from p2pchat.foundation.transport import FrameServer
    from tests.conftest import free_loopback_ip
    from tests.ledger.stalling_peer import build_chain, serve

    honest_ledger = net.ledger("honest")
    grow(honest_ledger, 8)
    honest = net.node(ledger=honest_ledger, config=config(register=False))
    stop = threading.Event()
    heavier = build_chain(PARAMS, 20)         # a real chain with more work than the honest one

    def handler(conn):
        try:
            serve(conn, PARAMS, heavier, 0.3, stop)   # one block per answer, every 0.3 s
        except UserError:
            pass

    staller = FrameServer(free_loopback_ip(), 0, LEDGER_PROTOCOL, handler, name="staller", timeout=30.0).start()
    try:
        joiner = net.node(seeds=[f"{staller.host}:{staller.port}"],
                          config=config(register=False, request_timeout=1.0))
        wait_until(lambda: joiner.peers(), what="the staller's connection")
        joiner.add_peer(honest.address)
        # Each drip comes well within 1 s, but an answer with 1 of the blocks asked does not move the deadline.
        wait_until(lambda: joiner.stats["stalls"] >= 1, timeout=20, what="the stall")
        wait_until(lambda: joiner.ledger.chain.tip_hash == honest_ledger.chain.tip_hash, timeout=20,
                   what="the honest chain on the joiner")
        assert joiner.standing_points(staller.host) > 30
    finally:
        stop.set()
        staller.close()
