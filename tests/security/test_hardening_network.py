"""Attacks on running processes that the other attack files do not already make: a real ledger network of three
`ledger` processes (the victim's `ledger serve` was pre-mined to height 5) and the victim's `p2pchat listen`.

Ledger: forged and malformed blocks, side branches with less work, replayed and reordered records, an old protocol
version, an oversized frame and a connection flood. Chat: a signature reflected back to its signer, old protocol
versions and other networks, a peer claiming another host's address, slowloris, and a flood of silent
connections from one address. After each attack the victim still serves honest peers."""

from __future__ import annotations

import dataclasses
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.blocks import Block, BlockHeader
from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.miner import mine
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
from ledger.records import make_register
from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.foundation.transport import FramedSocket, connect
from p2pchat.handshake import Handshake
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster, premine, run_ledger
from tests.ledger.gossip_kit import next_block
from tests.security.attack_kit import RawPeer, Victim, closed_by_peer

pytestmark = pytest.mark.slow
PARAMS = NetworkParams(name="p2pchat", difficulty_bits=8)
PREMINED = 5


@dataclass
class World:
    cluster: Cluster
    victim: Victim
    v: str
    h: str
    m: str
    ids: dict[str, Identity]

    def client(self) -> LedgerClient:
        return LedgerClient(self.v, LEDGER_PORT, source_ip=free_loopback_ip(), timeout=5.0)

    def tip(self) -> tuple[int, str]:
        status = self.client().status()
        return status["height"], status["tip"]

    def header_chain(self) -> list[BlockHeader]:
        with self.peer() as conn:
            conn.send("get_headers", locator=[PARAMS.genesis_hash], limit=2000)
            msg = recv_type(conn, "headers")
        return [PARAMS.genesis().header] + [BlockHeader.unpack(h) for h in msg["headers"]]

    def peer(self, ip: str | None = None) -> FramedSocket:
        """A handshaken gossip connection to the victim's ledger node from ``ip`` (a fresh address by default)."""
        conn = connect(self.v, LEDGER_PORT, LEDGER_PROTOCOL, source_ip=ip or free_loopback_ip(), timeout=10)
        conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                          genesis=PARAMS.genesis_hash, params=PARAMS.to_wire(), height=0,
                                          tip=PARAMS.genesis_hash, work=0))
        ack = recv_type(conn, "hello_ack")
        assert ack.type == "hello_ack", ack.fields
        return conn

    def refusal(self, ip: str) -> str:
        """What the ledger node answers a new connection from ``ip`` (its error text, or '' if it talks)."""
        conn = connect(self.v, LEDGER_PORT, LEDGER_PROTOCOL, source_ip=ip, timeout=10)
        try:
            conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                              genesis=PARAMS.genesis_hash, params=PARAMS.to_wire(), height=0,
                                              tip=PARAMS.genesis_hash, work=0))
            answer = recv_type(conn, "hello_ack")
        except UserError as exc:
            return str(exc)
        finally:
            conn.close()
        return answer["reason"] if answer.type == "error" else ""

    def honest_chat_works(self, text: str) -> None:
        """A chat process of the honest host completes the four steps with the victim and delivers ``text``."""
        self.victim.mark()
        chat = ChatProcess("chat", self.v, "--host", self.h, "--data-dir", str(self.cluster.data_dir(self.h)),
                           "--step-timeout", "10")
        try:
            chat.wait_for("✓ 4 Agree AES key", timeout=30)
            chat.write(text, "/quit")
            self.victim.wait_new(text, timeout=30)
            assert chat.wait_exit(30) == 0, chat.output()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe honest chat process said:\n{chat.output()}") from None
        finally:
            chat.stop()


def recv_type(conn: FramedSocket, type_: str, timeout: float = 10.0) -> Any:
    """The next frame of ``type_`` or an ``error`` frame, skipping the gossip a node sends meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        msg = conn.recv(max(0.01, deadline - time.monotonic()))
        if msg.type in (type_, "error"):
            return msg


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    v, h, m = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path_factory.mktemp("hardening"), make_identities(3)) as cluster:
        premine(cluster.data_dir(v), PREMINED)
        ledger_network(cluster, [v, h, m])
        ids = {ip: Identity.load(cluster.data_dir(ip) / KEY_FILE) for ip in (v, h, m)}
        proc = ChatProcess("listen", "--host", v, "--accept-all", "--step-timeout", "1.5",
                           "--data-dir", str(cluster.data_dir(v)))
        try:
            proc.wait_for("Waiting for chats")
            yield World(cluster, Victim(proc, v, ids[v]), v, h, m, ids)
            assert proc.proc.poll() is None, proc.output()
        finally:
            proc.stop()
        # the victim's store is intact after every attack
        assert cluster.procs[0].stop() == 0
        verify = run_ledger("verify", "--data-dir", str(cluster.data_dir(v)))
        assert verify.returncode == 0, verify.stdout + verify.stderr


# --- ledger: blocks -------------------------------------------------------------------------------------------

def forged_blocks(w: World) -> dict[str, dict[str, Any]]:
    tip = w.header_chain()[-1]
    now = int(time.time())
    rec = make_register(make_identities(6)[5], network=PARAMS.name, seq=0, prev=bytes(32), nickname="forger",
                        relay="10.7.0.9:8472", issued=now, lifetime=3600)
    good = next_block(tip, [rec], max(now, tip.timestamp + 1), PARAMS)
    bad_sig = dataclasses.replace(rec, sig=bytes(len(rec.sig)))
    header = good.header

    def remined(**changes: Any) -> dict[str, Any]:
        h = BlockHeader(**{**{f: getattr(header, f) for f in header.__dataclass_fields__}, **changes})
        solved = mine(h, threading.Event())
        assert solved is not None
        return Block(solved, good.records).to_wire()

    no_work = header
    nonce = 0
    while no_work.meets_target():
        nonce += 1
        no_work = header.with_nonce(header.nonce + nonce)
    return {
        "too little work": {"header": no_work.packed, "records": [rec.to_wire()]},
        "wrong Merkle root": remined(merkle_root=bytes(32)),
        "forged record signature": Block.assemble(header, [bad_sig]).to_wire() | {
            "header": next_block(tip, [bad_sig], header.timestamp, PARAMS).header.packed},
        "another network": remined(network_id=crypto.sha256(b"othernet")),
        "wrong height": remined(height=header.height + 5),
        "malformed header": {"header": header.packed[:100], "records": []},
        "malformed record": {"header": header.packed, "records": [{"kind": "register", "key": b"x"}]},
    }


def test_forged_and_malformed_blocks_are_refused_the_sender_banned_and_the_chain_untouched(world):
    before = world.tip()
    for name, wire in forged_blocks(world).items():
        ip = free_loopback_ip()
        conn = world.peer(ip)
        try:
            conn.send("block", block=wire)
            answer = recv_type(conn, "never")
        finally:
            conn.close()
        assert answer.type == "error" and "invalid block" in answer["reason"], (name, answer.fields)
        assert "does not talk to" in world.refusal(ip), name          # the sender lost its standing
    assert world.tip() == before


def test_side_branches_with_less_work_never_replace_the_most_work_chain(world):
    headers = world.header_chain()
    height_before, tip_before = world.tip()
    now = int(time.time())
    conn = world.peer()
    try:
        # a branch from genesis one block shorter than the main chain, and one from height 2 as long as allowed
        for fork_at, length in ((0, len(headers) - 2), (2, len(headers) - 4)):
            parent = headers[fork_at]
            for i in range(length):
                block = next_block(parent, [], max(now - 100 + i, parent.timestamp + 1), PARAMS)
                conn.send("block", block=block.to_wire())
                parent = block.header
                conn.send("ping", nonce=i)
                answer = recv_type(conn, "pong")
                assert answer.type == "pong", (fork_at, i, answer.fields)
        conn.send("ping", nonce=99)
        pong = recv_type(conn, "pong")
        assert pong.type == "pong", pong.fields          # valid blocks: the sender keeps its standing
    finally:
        conn.close()
    assert world.tip() == (height_before, tip_before)


# --- ledger: records -----------------------------------------------------------------------------------------

def test_replayed_and_reordered_records_are_refused_and_the_newest_binding_stands(world):
    ident = make_identities(6)[4]
    client = world.client()
    now = int(time.time())

    def record(seq: int, prev: bytes, port: int) -> Any:
        return make_register(ident, network=PARAMS.name, seq=seq, prev=prev, nickname="replayer",
                             relay=f"10.8.0.1:{port}", issued=now, lifetime=3600)

    r0 = record(0, bytes(32), 1000)
    r1 = record(1, r0.id, 1001)
    r2 = record(2, r1.id, 1002)
    with pytest.raises(LedgerError, match="must have seq 0"):   # reordered: seq 1 before seq 0 arrived
        client.submit(r1)
    client.submit(r0)
    with pytest.raises(LedgerError, match="skips"):        # reordered: seq 2 before seq 1
        client.submit(r2)
    client.submit(record(1, r0.id, 1001))                  # seq 1 after seq 0 (a fresh copy: another id)
    wait_until(lambda: client.find(ident.fingerprint.hex(), by="fp") is not None
               and client.find(ident.fingerprint.hex(), by="fp").relay == "10.8.0.1:1001", 30, interval=0.2,
               what="seq 1 mined")
    stale = record(1, r0.id, 1999)                         # another record with an old sequence number
    with pytest.raises(LedgerError, match="replayed or stale"):
        client.submit(stale)
    client.submit(r0)                                      # the original seq 0 again: known, changes nothing
    assert client.lookup(ident.fingerprint.hex(), by="fp").relay == "10.8.0.1:1001"


def test_a_record_refused_only_because_it_came_before_its_predecessor_is_accepted_after_it(world):
    # Found by this suite (fixed in d3f953c): a record refused because its predecessor had not arrived yet (gossip
    # may reorder) was remembered as rejected for two minutes, so it was refused again after its predecessor came.
    ident = make_identities(6)[3]
    client = world.client()
    now = int(time.time())
    r0 = make_register(ident, network=PARAMS.name, seq=0, prev=bytes(32), nickname="reordered",
                       relay="10.8.0.2:1000", issued=now, lifetime=3600)
    r1 = make_register(ident, network=PARAMS.name, seq=1, prev=r0.id, nickname="reordered",
                       relay="10.8.0.2:1001", issued=now, lifetime=3600)
    with pytest.raises(LedgerError, match="must have seq 0"):
        client.submit(r1)
    client.submit(r0)
    client.submit(r1)   # now in order: must be admitted


# --- ledger: protocol level --------------------------------------------------------------------------------------

def test_an_old_ledger_protocol_version_is_refused_naming_the_one_spoken(world):
    for version in (0, 2):
        conn = connect(world.v, LEDGER_PORT, LEDGER_PROTOCOL, source_ip=free_loopback_ip(), timeout=10)
        try:
            fields = hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                  genesis=PARAMS.genesis_hash, params=PARAMS.to_wire(), height=0,
                                  tip=PARAMS.genesis_hash, work=0)
            conn.send_frame(LEDGER_PROTOCOL.encode("hello", **{**fields, "version": version}))
            answer = conn.recv()
        finally:
            conn.close()
        assert answer.type == "error" and f"version {version} is not supported" in answer["reason"]
        assert "speaks version 1" in answer["reason"]


def test_an_oversized_frame_and_a_connection_flood_are_refused_while_others_are_served(world):
    sock = socket.create_connection((world.v, LEDGER_PORT), timeout=10, source_address=(free_loopback_ip(), 0))
    try:
        sock.sendall(struct.pack(">I", 100 * 1024 * 1024))
        answer = sock.recv(4096)
    finally:
        sock.close()
    assert b"over the" in answer
    flood_ip = free_loopback_ip()
    socks, refused = [], 0
    try:
        for _ in range(40):
            s = socket.create_connection((world.v, LEDGER_PORT), timeout=10, source_address=(flood_ip, 0))
            socks.append(s)
        waiting, deadline = list(socks), time.monotonic() + 5
        while waiting and refused < 40 - 16 and time.monotonic() < deadline:
            readable, _, _ = select.select(waiting, [], [], 0.2)
            for s in readable:
                waiting.remove(s)
                if b"too many connections" in s.recv(4096):
                    refused += 1
        assert refused >= 40 - 16
        assert world.client().status()["height"] >= PREMINED    # another address is served meanwhile
    finally:
        for s in socks:
            s.close()


# --- chat ---------------------------------------------------------------------------------------------------------

def test_a_signature_reflected_back_to_the_victim_fails_step_3(world):
    """The victim signs only after the initiator's signature verified, so the attacker takes one from a session
    it authenticated honestly and sends it back to the victim as its own in a second session."""
    first = RawPeer(world.ids[world.m], world.m, world.victim)
    peer: RawPeer | None = None
    try:
        first.run_step(Step.CONNECT)
        first.run_step(Step.SWAP_KEYS)
        first._act(first.hs.start(Step.AUTHENTICATE))          # the attacker's own, valid signature
        reply = first.recv()
        assert reply.type == "auth_reply"
        peer = RawPeer(world.ids[world.m], world.m, world.victim)
        peer.run_step(Step.CONNECT)
        events = peer.run_step(Step.SWAP_KEYS)
        assert any(type(e).__name__ == "StepDone" for e in events), events
        world.victim.mark()
        # the victim's own signature, sent back
        peer.send_raw(CHAT.encode("auth", sig=reply["sig"], ledgers=reply["ledgers"]))
        frames = closed_by_peer(peer.conn)
    finally:
        first.close()
        if peer is not None:
            peer.close()
    assert any(f.type == "error" for f in frames) and not any(f.type == "auth_reply" for f in frames)
    out = world.victim.wait_new("✗ 3 Authenticate")
    assert "does not verify" in out


@pytest.mark.parametrize(("version", "network"), [(0, "p2pchat"), (1, "p2pchat"), (3, "p2pchat"),
                                                  (PROTOCOL_VERSION, "othernet")])
def test_an_old_or_unknown_chat_version_or_another_network_is_refused_with_what_exists(world, version, network):
    conn = connect(world.v, CHAT_PORT, CHAT, source_ip=world.m, timeout=10)
    try:
        conn.send("hello", version=version, network=network, nickname="mallory",
                  address=format_address(world.m, CHAT_PORT))
        frames = closed_by_peer(conn)
    finally:
        conn.close()
    reasons = " ".join(f["reason"] for f in frames if f.type == "error")
    if version != PROTOCOL_VERSION:
        assert f"version {PROTOCOL_VERSION}" in reasons and str(version) in reasons, reasons
    else:
        assert "othernet" in reasons or "network" in reasons, reasons
    assert not any(f.type == "welcome" for f in frames)


def test_a_peer_claiming_another_hosts_address_is_known_by_its_own_record(world):
    honest_claim = format_address(world.h, CHAT_PORT)
    peer = RawPeer(world.ids[world.m], world.m, world.victim, nickname="honest")
    # the attacker's handshake core claims the honest host's address in its hello
    peer.hs = Handshake(initiator=True, identity=world.ids[world.m], nickname="honest", network="p2pchat",
                        local_address=honest_claim, peer_address=format_address(world.v, CHAT_PORT))
    world.victim.mark()
    try:
        peer.run_step(Step.CONNECT)
        peer.run_step(Step.SWAP_KEYS)
    finally:
        peer.close()
    out = world.victim.wait_new("✓ 2 Swap public keys")
    line = next(x for x in out.splitlines() if "✓ 2 Swap public keys" in x)
    # The victim checked the key against the record of the address the connection came from, not the claim.
    assert f"matches the ledger record for {world.m}" in line and "it calls itself 'honest'" in line, line
    assert crypto.format_fingerprint(world.ids[world.m].fingerprint, 4) in line


def test_slowloris_on_the_chat_port_is_dropped_while_an_honest_chat_goes_on(world):
    hello = CHAT.encode("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname="slow", address="")
    sock = socket.create_connection((world.v, CHAT_PORT), timeout=10, source_address=(world.m, 0))
    dropped_after = None
    try:
        start = time.monotonic()
        for byte in hello:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                dropped_after = time.monotonic() - start
                break
            sock.settimeout(0.25)
            try:
                if sock.recv(4096) == b"":
                    dropped_after = time.monotonic() - start
                    break
            except TimeoutError:
                pass
            except OSError:
                dropped_after = time.monotonic() - start
                break
    finally:
        sock.close()
    assert dropped_after is not None, "the victim kept a connection that trickled its hello for the whole frame"
    world.honest_chat_works("after slowloris")


def test_a_flood_of_silent_connections_from_one_address_does_not_lock_out_honest_peers(world):
    # The chat port has no per-address limit (the ledger and relay ports have 16): a flood from one address is
    # drained by the hello deadline (--step-timeout), so an honest peer still gets its answer.
    socks = []
    try:
        for _ in range(530):
            socks.append(socket.create_connection((world.v, CHAT_PORT), timeout=10, source_address=(world.m, 0)))
        probe = connect(world.v, CHAT_PORT, CHAT, source_ip=world.h, timeout=10)
        try:
            probe.send("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname="honest",
                       address=format_address(world.h, CHAT_PORT))
            answer = probe.recv(5)
        finally:
            probe.close()
        assert answer.type == "welcome", f"an honest peer was refused during the flood: {answer.fields}"
    finally:
        for s in socks:
            s.close()
