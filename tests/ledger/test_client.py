"""The light client: lookups by IP, nickname and fingerprint with checked proofs; a node (here a tampering
proxy in front of an honest node) cannot make it accept a wrong answer."""

import dataclasses
import re
import threading
import time
from collections.abc import Callable

import pytest
from gossip_kit import PARAMS, Net, config, grow, next_block, wait_until

from ledger.blocks import BlockHeader
from ledger.client import LedgerClient, LookupNotFound
from ledger.errors import LedgerError
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import ProtocolError
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect
from tests.conftest import free_loopback_ip


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


@pytest.fixture
def two(net):
    """Two registered nodes; returns (a, b) once both bindings are mined on both."""
    a = net.node()
    b = net.node(seeds=[a.address])
    for node in (a, b):
        for other in (a, b):
            wait_until(lambda n=node, o=other: n.ledger.lookup("ip", o.host, n.clock()), what="registration")
    return a, b


def test_lookup_by_ip_nickname_and_fingerprint_prefix_returns_the_checked_binding(two):
    a, b = two
    client = LedgerClient(a.host, a.port, source_ip=free_loopback_ip())
    by_ip = client.lookup(b.host)
    assert by_ip.fingerprint == b.identity.fingerprint and by_ip.public_der == b.identity.public_der
    assert (by_ip.ip, by_ip.port, by_ip.ledger_port, by_ip.nickname) == (b.host, 8471, b.port, b.nickname)
    assert by_ip.confirmations == a.ledger.height - by_ip.height + 1 >= 1
    assert by_ip.address == f"{b.host}:8471"
    assert client.lookup(b.nickname.upper()).fingerprint == b.identity.fingerprint  # case-folded names
    fp = b.identity.fingerprint.hex()
    assert client.lookup(fp[:10]).ip == b.host
    assert client.lookup(" ".join(fp[i:i + 4] for i in range(0, 64, 4))).ip == b.host
    assert client.lookup(b.host, by="ip").to_json()["proof"] == "verified"
    assert client.height == a.ledger.height


def test_confirmations_grow_as_blocks_are_added(two):
    a, _ = two
    client = LedgerClient(a.host, a.port)
    first = client.lookup(a.host).confirmations
    grow(a.ledger, 3)
    assert client.lookup(a.host).confirmations == first + 3


def test_no_binding_raises_lookup_not_found(two):
    a, _ = two
    client = LedgerClient(a.host, a.port)
    with pytest.raises(LookupNotFound, match=re.escape("no ledger record for '127.1.2.3'")):
        client.lookup("127.1.2.3")
    with pytest.raises(LookupNotFound):
        client.lookup("nobody-here")
    assert client.find("deadbeef00") is None
    with pytest.raises(LedgerError, match="not an IP address"):
        client.lookup("nobody", by="ip")


def test_a_client_pinned_to_other_parameters_refuses_the_node(net):
    node = net.node(config=config(register=False))
    from ledger.network_pin import NetworkMismatch

    with pytest.raises(NetworkMismatch, match="same name with other parameters, difficulty 8 bits instead of 9"):
        LedgerClient(node.host, node.port, network=NetworkParams(name=PARAMS.name, difficulty_bits=9)).status()
    with pytest.raises(ProtocolError, match="wrong ledger network"):
        LedgerClient(node.host, node.port, network="othernet").status()
    assert LedgerClient(node.host, node.port, network=PARAMS).network() == PARAMS


class TamperingProxy:
    """A node in the middle: forwards every request to an honest node and lets a test rewrite the traffic."""

    def __init__(self, upstream, *, request: Callable[[Message], dict] | None = None,
                 answer: Callable[[Message], dict] | None = None) -> None:
        self.upstream = upstream
        self.request = request
        self.answer = answer
        self.ip = free_loopback_ip()
        self.server = FrameServer(self.ip, 0, LEDGER_PROTOCOL, self._serve, name="proxy", timeout=5).start()

    def _serve(self, conn: FramedSocket) -> None:
        with connect(self.upstream.host, self.upstream.port, LEDGER_PROTOCOL, source_ip=self.ip) as up:
            while True:
                msg = conn.recv()
                fields = self.request(msg) if self.request else msg.fields
                up.send(msg.type, **fields)
                reply = up.recv()
                fields = self.answer(reply) if self.answer else reply.fields
                conn.send(reply.type, **fields)

    def client(self) -> LedgerClient:
        return LedgerClient(self.ip, self.server.port)

    def close(self) -> None:
        self.server.close()


def tamper_answer(mutate: Callable[[dict], None]) -> Callable[[Message], dict]:
    def answer(msg: Message) -> dict:
        fields = dict(msg.fields)
        if msg.type == "lookup_result" and fields["found"]:
            mutate(fields)
        return fields
    return answer


def flip_path(fields):
    if not fields["path"]:  # the record is alone in its block: invent a sibling
        fields["path"] = [bytes(32)]
        return
    fields["path"] = [bytes([fields["path"][0][0] ^ 1]) + fields["path"][0][1:], *fields["path"][1:]]


def other_index(fields):
    fields["index"] ^= 1


def edit_record(fields):
    fields["record"] = {**fields["record"], "port": 9999}


def genesis_header(fields):
    fields["header"] = PARAMS.genesis().header.packed
    fields["height"] = 0


@pytest.mark.parametrize("mutate, reason", [
    (flip_path, "Merkle proof fails"),
    (other_index, "Merkle proof fails"),
    (edit_record, "Merkle proof fails"),
    (genesis_header, "Merkle proof fails"),
])
def test_a_tampered_proof_is_rejected(two, mutate, reason):
    a, b = two
    proxy = TamperingProxy(a, answer=tamper_answer(mutate))
    try:
        with pytest.raises(LedgerError, match=reason):
            proxy.client().lookup(b.host)
    finally:
        proxy.close()


def test_an_answer_about_someone_else_is_rejected(two):
    a, b = two

    def ask_for_a(msg):
        return {**msg.fields, "value": a.host} if msg.type == "lookup" else msg.fields
    proxy = TamperingProxy(a, request=ask_for_a)
    try:
        with pytest.raises(LedgerError, match=re.escape(f"answered a lookup of ip '{b.host}' with a record for")):
            proxy.client().lookup(b.host)
    finally:
        proxy.close()


def test_forged_headers_are_rejected(two):
    a, b = two

    def weaken(msg):
        fields = dict(msg.fields)
        if msg.type == "headers" and fields["headers"]:
            last = BlockHeader.unpack(fields["headers"][-1])
            forged = dataclasses.replace(last, nonce=last.nonce + 1)
            while forged.meets_target():
                forged = dataclasses.replace(forged, nonce=forged.nonce + 1)
            fields["headers"] = [*fields["headers"][:-1], forged.packed]
        return fields
    proxy = TamperingProxy(a, answer=weaken)
    try:
        with pytest.raises(LedgerError, match=r"invalid header chain: .*too little proof of work"):
            proxy.client().lookup(b.host)
    finally:
        proxy.close()


def test_a_record_proven_in_a_block_off_the_header_chain_is_rejected(two):
    a, b = two
    # Answer with a correct proof but claim the block sits at another height of the chain.
    def shift(fields):
        fields["height"] += 1
        header = BlockHeader.unpack(fields["header"])
        fields["header"] = dataclasses.replace(header, height=header.height + 1).packed
    grow(a.ledger, 1)
    proxy = TamperingProxy(a, answer=tamper_answer(shift))
    try:
        with pytest.raises(LedgerError, match="not on the verified header chain"):
            proxy.client().lookup(b.host)
    finally:
        proxy.close()


def test_the_client_follows_its_node_to_a_branch_with_more_work(net):
    node = net.node(config=config(register=False))
    main = grow(node.ledger, 5)
    client = LedgerClient(node.host, node.port)
    assert client.sync_headers() == 5
    branch, parent = [], main[1].header
    for i in range(5):  # heights 3..7 on block 2: more work than the old tip at 5
        block = next_block(parent, (), main[1].header.timestamp + 30 + i)
        assert node.ledger.receive_block(block, time.time()).status == "added"
        branch.append(block)
        parent = block.header
    assert node.ledger.tip_info()[1] == branch[-1].hash
    assert client.sync_headers() == 7
    assert [client.header(h).hash for h in (2, 3, 7)] == [main[1].hash, branch[0].hash, branch[-1].hash]


def test_a_lookup_stuck_at_a_slow_node_holds_no_lock_another_lookup_through_the_same_client_completes(two):
    a, b = two
    stuck, release = threading.Event(), threading.Event()

    def slow_for_a(msg: Message) -> dict:
        if msg.type == "lookup" and msg["value"] == a.host:
            stuck.set()
            release.wait(20)                 # this connection's answer is held; the others are not
        return msg.fields

    proxy = TamperingProxy(a, request=slow_for_a)
    client = proxy.client()
    results: dict[str, str] = {}
    slow = threading.Thread(target=lambda: results.setdefault("a", client.lookup(a.host).ip), name="test-slow")
    try:
        slow.start()
        assert stuck.wait(10)
        assert client.lookup(b.host).ip == b.host      # not serialised behind the stuck exchange
        assert "a" not in results
    finally:
        release.set()
        slow.join()
        proxy.close()
    assert results["a"] == a.host
