"""Strangers cannot move a node's clock (red team 2026-12-07 night): only peers the node dialed are measured for
its network-adjusted time. Before, three addresses connecting in with a clock 28 minutes behind moved the node's
time back 28 minutes: its peers' new blocks were then "from the future" to it."""

import time

from gossip_kit import PARAMS, Net, config, wait_until

from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
from p2pchat.foundation import crypto
from p2pchat.foundation.transport import connect
from tests.conftest import free_loopback_ip

SKEW = 28 * 60


def test_peers_that_connect_in_do_not_move_the_nodes_clock(tmp_path):
    with Net(tmp_path) as net:
        node = net.node(config=config(register=False))
        conns = []
        try:
            for _ in range(3):
                conn = connect(node.host, node.port, LEDGER_PROTOCOL, source_ip=free_loopback_ip(), timeout=5.0)
                genesis = PARAMS.genesis()
                conn.send("hello", **hello_fields(
                    role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name, genesis=PARAMS.genesis_hash,
                    params=PARAMS.to_wire(), height=0, tip=genesis.hash, work=0, listen_port=None,
                    time=int(time.time()) - SKEW))
                assert conn.recv(5.0).type == "hello_ack"
                conns.append(conn)
            wait_until(lambda: len(node.status()["peers"]) >= 3, what="the three connections served")
            clock = node.status()["clock"]
            assert clock["samples"] == 0 and clock["applied"] == 0 and clock["offset"] is None
            assert abs(node.clock() - time.time()) < 5
            # heard, for the warning alone: too few peers dialled, so the user is told what they say, and why
            # nothing was corrected by it
            assert clock["heard"] == 3
            assert "your clock is 28 min ahead of your peers; fix the system time" in clock["warning"]
            assert "peers that connected to this node, which never correct its clock" in clock["warning"]
        finally:
            for conn in conns:
                conn.close()


def test_peers_the_node_dialed_are_still_measured(tmp_path):
    with Net(tmp_path) as net:
        seeds = [net.node(config=config(register=False)) for _ in range(3)]
        node = net.node(config=config(register=False), seeds=[s.address for s in seeds])
        wait_until(lambda: node.status()["clock"]["samples"] == 3, what="three dialed peers measured")


def test_a_ledger_node_dialled_because_of_a_strangers_report_is_not_measured(tmp_path):
    with Net(tmp_path) as net:
        ahead = net.node(config=config(register=False), clock=lambda: time.time() + SKEW)
        node = net.node(config=config(register=False))
        # What a checkpoint_evidence report makes the node do (ledger/checkpoint_evidence.py): dial the ledger node
        # its own ledger names for the reported chat peer, as an ordinary peer.
        assert node.checkpoint_evidence._dial(ahead.host, ahead.port) is not None
        wait_until(lambda: any(p["address"] == ahead.address for p in node.status()["peers"]),
                   what="the reported ledger node to be connected")
        assert node.status()["clock"]["samples"] == 0


def test_a_node_whose_peers_all_connected_in_dials_them_once_to_read_their_clocks(tmp_path):
    # A small network whose other nodes dialled this one first: nothing is left for it to dial, so it reads the
    # clock of each peer that connected in by dialling that peer's listening address once (docs/ledger-protocol.md
    # §2.2). Before, such a node never measured its clock, and one 10 min behind refused every block as from the
    # future (the lab's clock-skew scenario).
    with Net(tmp_path) as net:
        node = net.node(config=config(register=False), clock=lambda: time.time() - 600)
        others = [net.node(config=config(register=False), seeds=[node.address]) for _ in range(3)]
        wait_until(lambda: node.status()["clock"]["samples"] == 3, what="three peers' clocks read by dialling them")
        clock = node.status()["clock"]
        assert clock["offset"] is not None and abs(clock["offset"] - 600) < 30 and abs(clock["applied"] - 600) < 30
        assert len(others) == 3
