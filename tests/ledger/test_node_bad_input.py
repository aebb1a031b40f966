"""Bad input never kills a node: malformed, oversized and unknown frames, silent and flooding peers, invalid
blocks, forged records, failed reachability proofs and IP hijacks are refused; everyone else is still served."""

import dataclasses
import socket

import msgpack
import pytest
from gossip_kit import PARAMS, Net, RawPeer, config, grow, next_block, record_for, wait_until

from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.protocol import MAX_FRAME, ROLE_CLIENT
from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import PeerUnreachable
from tests.conftest import free_loopback_ip


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def raw_socket(node, source_ip=None):
    sock = socket.socket()
    sock.bind((source_ip or free_loopback_ip(), 0))
    sock.settimeout(5)
    sock.connect((node.host, node.port))
    return sock


def read_all(sock):
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def still_serving(node):
    return LedgerClient(node.host, node.port).status()["address"] == node.address


@pytest.mark.parametrize("frame, expected", [
    (HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1", b"not valid msgpack"),
    (HEADER.pack(MAX_FRAME + 1), b"over the"),
    (HEADER.pack(9) + msgpack.packb({"t": "gimme"}), b"unknown message type 'gimme'"),
    (HEADER.pack(20) + msgpack.packb({"t": "hello", "version": "one"})[:20].ljust(20, b"\x00"), b""),
])
def test_malformed_oversized_and_unknown_frames_get_an_error_and_the_node_keeps_serving(net, frame, expected):
    node = net.node(config=config(register=False))
    sock = raw_socket(node)
    sock.sendall(frame)
    answer = read_all(sock)
    sock.close()
    assert expected in answer
    assert b"error" in answer
    assert still_serving(node)


def test_frames_out_of_order_after_the_handshake_close_the_connection(net):
    node = net.node(config=config(register=False))
    peer = RawPeer(node)
    peer.conn.send("blocks", blocks=[])  # an answer nobody asked for
    msg = peer.recv_type("error")
    assert msg.type == "error" and "without being asked" in msg["reason"]
    peer.close()
    client = RawPeer(node, role=ROLE_CLIENT)
    client.conn.send("get_peers")  # gossip is for nodes, not light clients
    assert "light client cannot send get_peers" in client.recv_type("error")["reason"]
    client.close()
    assert still_serving(node)


def test_a_peer_that_connects_and_says_nothing_is_dropped(net):
    node = net.node(config=config(register=False, handshake_timeout=0.3))
    sock = raw_socket(node)
    assert read_all(sock) == b""  # closed by the node, without a word from us
    sock.close()
    assert node.stats["silent_drops"] == 1
    assert still_serving(node)


def test_a_flooding_peer_is_slowed_down_then_dropped_while_others_are_served(net):
    node = net.node(config=config(register=False, message_rate=50, message_burst=20, flood_grace=0.5))
    flooder = RawPeer(node, role=ROLE_CLIENT)
    frame = b"".join(flooder.conn.protocol.encode("ping", nonce=i) for i in range(3000))
    flooder.conn.sock.sendall(frame)
    assert still_serving(node)  # while the flood is being throttled
    answer = read_all(flooder.conn.sock)
    flooder.close()
    assert b"too many messages" in answer
    pongs = answer.count(b"pong")
    assert pongs < 1000  # far from all 3000 pings were answered before the drop
    assert node.stats["rate_limited"] > 0 and node.stats["flood_drops"] == 1
    assert node.standing_points(flooder.source_ip) > 0


def test_an_invalid_block_costs_the_sender_its_standing_and_gets_it_banned(net):
    node = net.node(config=config(register=False))
    grow(node.ledger, 2)
    bad = RawPeer(node)
    tip = node.ledger.chain.tip
    block = next_block(tip, (), tip.timestamp + 1)
    forged = dataclasses.replace(block.header, nonce=block.header.nonce + 1)
    while forged.meets_target():
        forged = dataclasses.replace(forged, nonce=forged.nonce + 1)
    bad.conn.send("block", block={"header": forged.packed, "records": []})
    msg = bad.recv_type("error")
    assert "too little proof of work" in msg["reason"]
    bad.close()
    assert bad.source_ip in node.banned()
    # A new connection from the banned address is refused at once; others are still served.
    again = RawPeer(node, source_ip=bad.source_ip, hello=False)
    refusal = again.conn.recv(5)
    again.close()
    assert refusal.type == "error" and "does not talk to" in refusal["reason"]
    assert node.ledger.height == 2
    assert still_serving(node)


def test_invalid_headers_during_sync_ban_the_peer(net):
    victim = net.node(config=config(register=False))
    liar = RawPeer(victim)
    # Claim more work in a second hello-less way: announce an orphan block so the victim asks for headers.
    tip = victim.ledger.chain.tip
    b1 = next_block(tip, (), tip.timestamp + 1)
    b2 = next_block(b1.header, (), tip.timestamp + 2)
    liar.conn.send("block", block=b2.to_wire())
    ask = liar.recv_type("get_headers")
    assert ask.type == "get_headers" and ask["locator"][-1] == PARAMS.genesis_hash
    broken = dataclasses.replace(b1.header, height=7)
    liar.conn.send("headers", headers=[broken.packed, b2.header.packed])
    msg = liar.recv_type("error")
    liar.close()
    assert "invalid headers" in msg["reason"]
    assert liar.source_ip in victim.banned()


def test_a_record_with_a_forged_signature_costs_standing(net, identities):
    node = net.node(config=config(register=False))
    peer = RawPeer(node)
    good = record_for(identities[4], None, nickname="forger", relay="127.0.0.1:8472")
    forged = dataclasses.replace(good, nickname="forged")
    peer.conn.send("record", record=forged.to_wire())
    wait_until(lambda: node.standing_points(peer.source_ip) > 0, what="the forger to lose standing")
    peer.close()
    assert node.ledger.pending_records() == []


def test_a_claim_on_an_address_where_nobody_answers_is_refused(net, identities):
    node = net.node(config=config(register=False))
    record = record_for(identities[4], free_loopback_ip(), nickname="ghost", ledger_port=8470)
    with pytest.raises(LedgerError, match=r"reachability proof .* failed"):
        LedgerClient(node.host, node.port).submit(record)
    assert node.ledger.pending_records() == []
    assert node.stats["reachability_failures"] == 1


def test_a_claim_on_an_address_where_another_key_answers_is_refused(net, identities):
    honest = net.node(config=config(register=False))  # listens at its address but has not registered
    node = net.node(config=config(register=False))
    record = record_for(identities[4], honest.host, nickname="squatter", ledger_port=honest.port)
    with pytest.raises(LedgerError, match="holds another key"):
        LedgerClient(node.host, node.port).submit(record)
    assert node.ledger.pending_records() == []


def test_an_ip_hijack_of_a_live_binding_is_refused(net, identities):
    owner = net.node()
    wait_until(lambda: owner.ledger.lookup("ip", owner.host, owner.clock()), what="owner to be registered")
    hijack = record_for(identities[4], owner.host, nickname="mallory", ledger_port=owner.port)
    with pytest.raises(LedgerError, match="bound to another key"):
        LedgerClient(owner.host, owner.port).submit(hijack)
    assert LedgerClient(owner.host, owner.port).lookup(owner.host).fingerprint == owner.identity.fingerprint


def test_a_claim_proven_at_its_address_is_admitted(net):
    claimant = net.node(config=config(register=False))
    node = net.node(config=config(register=False))
    record = record_for(claimant.identity, claimant.host, nickname="prover", ledger_port=claimant.port)
    LedgerClient(node.host, node.port).submit(record)
    assert node.ledger.pending_records() == [record] or node.ledger.lookup("ip", claimant.host, node.clock())


def test_lookups_against_a_dead_node_say_so(net):
    ip = free_loopback_ip()
    with pytest.raises(PeerUnreachable, match="cannot connect"):
        LedgerClient(ip, 1).status()


def test_a_client_that_asks_but_never_reads_makes_one_answer_at_a_time_and_is_dropped(net):
    # Red team 2026-12-07: the node used to answer every request of a connection that read nothing, up to its
    # 32 MiB send queue (16 such connections from one address took a `ledger serve` from 38 to 305 MB).
    node = net.node(config=config(register=False))
    grow(node.ledger, 1500)
    greedy = RawPeer(node, role=ROLE_CLIENT)
    greedy.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer = wait_until(lambda: next((p for p in list(node._peers) if p.ip == greedy.source_ip), None), what="the client")
    frame = greedy.conn.protocol.encode("get_headers", locator=[PARAMS.genesis_hash], limit=2000)
    one_answer = len(greedy.conn.protocol.encode(
        "headers", headers=[h.packed for h in node.ledger.headers_after([PARAMS.genesis_hash], 2000)]))
    greedy.conn.sock.sendall(frame * 300)  # 300 answers of ~190 kB each asked, none read
    wait_until(peer.closed.is_set, what="the node to drop the client that does not read")
    # What the kernel's buffers took (Linux: at most 4 MiB to send, plus the client's receive window) and the
    # one answer waiting: far below the 300 answers asked (57 MB) and the 32 MiB send queue it used to fill.
    assert peer.queued_total < 8 * 1024 * 1024 + one_answer
    greedy.close()
    assert still_serving(node)
