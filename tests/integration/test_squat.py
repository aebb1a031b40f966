"""Issue 10's squat with real processes: an attacker's block binds an unregistered host's IP to the attacker's
key, with a closed port and a relay hint to a relay where the attacker's listener waits.

- ``p2pchat chat VICTIM_IP`` fails with a plain reason and never reaches the attacker (no relay by address);
- the real host then starts its ledger node: its registration is refused, its ``ledger status`` shows the
  alert, and it gossips its evidence: the node it joined and a third node show the conflict;
- the nodes dial the address themselves, and ``ledger lookup VICTIM_IP`` says "disputed";
- the chat by IP now reaches the real host at its chat port and refuses the squatter's binding in step 2;
  the attacker's listener still never sees a call.

And a rewrite: a heavier private branch without a registered host's record, holding the attacker's claim on
its address, makes the host's node alert ("vanished" and "address"), and two other nodes show its evidence
with the header that held the record.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from ledger.blocks import Block, BlockHeader
from ledger.client import LedgerClient
from ledger.merkle import merkle_root
from ledger.miner import mine
from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
from ledger.records import make_register
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import RELAY_PORT
from p2pchat.foundation.identity import KEY_FILE
from p2pchat.foundation.transport import connect
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.integration.chat_procs import ChatProcess, _env
from tests.integration.procs import ROOT, Cluster, run_ledger, wait_until

pytestmark = pytest.mark.slow


def relay_registered(relay_ip: str) -> int:
    result = subprocess.run([sys.executable, "-m", "p2pchat", "relay", "--status", "--json", "--host", relay_ip],
                            capture_output=True, text=True, timeout=20, cwd=ROOT, env=_env())
    return json.loads(result.stdout)["registered"] if result.returncode == 0 else 0


def announce_squat(node_ip: str, attacker, victim_ip: str, relay: str, source_ip: str) -> bytes:
    """Mine a block on the node's tip binding ``victim_ip`` to ``attacker`` (closed ports, relay hint) and
    announce it as a peer would; returns the attacker's fingerprint."""
    client = LedgerClient(node_ip)
    params = client.network()
    tip = client.header(client.sync_headers())
    assert tip is not None
    closed = free_port(victim_ip)
    record = make_register(attacker, network=params.name, seq=0, prev=bytes(32), nickname="not-the-victim",
                           ip=victim_ip, port=closed, ledger_port=closed, relay=relay, issued=int(time.time()),
                           lifetime=86400)
    header = BlockHeader(version=params.version, network_id=params.network_id, height=tip.height + 1,
                         prev_hash=tip.hash, merkle_root=merkle_root([record.id]),
                         timestamp=max(int(time.time()), tip.timestamp + 1), target_bits=params.difficulty_bits,
                         nonce=0)
    solved = mine(header, threading.Event())
    assert solved is not None
    with connect(node_ip, 8470, LEDGER_PROTOCOL, source_ip=source_ip, timeout=5.0) as conn:
        genesis = params.genesis()
        conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=params.name,
                                          genesis=params.genesis_hash, params=params.to_wire(), height=0,
                                          tip=genesis.hash, work=0))
        assert conn.recv(5.0).type == "hello_ack"
        conn.send("block", block=Block(solved, (record,)).to_wire())
        wait_until(lambda: client.find(victim_ip), 30, what="the squat to be mined in")
    return record.fingerprint


def status_text(node_ip: str) -> str:
    result = run_ledger("status", "--node", node_ip)
    return result.stdout + result.stderr


def test_a_squatted_address_never_reaches_the_squatter_and_becomes_disputed(tmp_path):
    h, j, v, c, x, r = (free_loopback_ip() for _ in range(6))
    relay_addr = f"{r}:{RELAY_PORT}"
    ids = make_identities(6)
    attacker = ids[5]
    procs: list[ChatProcess] = []
    relay = ChatProcess("relay", "--host", r, "--heartbeat", "1")
    procs.append(relay)
    with Cluster(tmp_path, ids[:5]) as cluster:
        try:
            relay.wait_for("relay listening on")
            honest = cluster.serve(h)
            honest.wait_ready()
            third = cluster.join(j, h)
            third.wait_ready()
            # The attacker listens behind its relay with the key it will bind to the victim's address.
            attacker_dir = tmp_path / "attacker"
            attacker_dir.mkdir(mode=0o700)
            attacker.save(attacker_dir / KEY_FILE)
            trap = ChatProcess("listen", "--host", x, "--no-inbound", "--relay", relay_addr, "--accept-all",
                               "--ledger", h, "--data-dir", str(attacker_dir))
            procs.append(trap)
            trap.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="the attacker's registration at the relay")
            bad_fp = announce_squat(h, attacker, v, relay_addr, x)
            third.wait_lookup(v, 30, what=f"the squat on the third node\n{cluster.logs()}")

            # 1. By address, nobody answers at the squatted address: a plain refusal, no relay.
            call = ChatProcess("chat", v, "--host", c, "--ledger", h, "--direct-timeout", "1",
                               "--data-dir", str(cluster.data_dir(c)))
            procs.append(call)
            call.close_input()
            assert call.wait_exit(60) == 1, call.output()
            out = call.output()
            assert f"{v} is bound to key {crypto.format_fingerprint(bad_fp, 4)}" in out, out
            assert f"did not answer at {v}:" in out
            assert "a relay is not used for calls by address" in out

            # 2. The real host comes up: refused, alerts, gossips; the other nodes show the conflict.
            victim = cluster.join(v, h)
            victim.wait_ready()
            own_status = wait_until(lambda: (s := victim.status()) and s.get("binding_alerts") and s, 60,
                                    what=f"the victim's alert\n{cluster.logs()}")
            assert own_status["binding_alerts"][0]["kind"] == "address"
            assert own_status["binding_alerts"][0]["other_key"] == bad_fp.hex()
            assert "ALERT" in status_text(v) and f"this node's address {v} is bound to another key" in status_text(v)
            assert "BINDING ALERT" in victim.output()
            for node in (honest, third):
                got = wait_until(lambda n=node: (s := n.status()) and s.get("binding_conflicts") and s, 60,
                                 what=f"the evidence at {node.host}\n{cluster.logs()}")
                conflict = got["binding_conflicts"][0]
                assert conflict["ip"] == v and conflict["holder"] == bad_fp.hex()
                assert "conflict" in status_text(node.host)

            # 3. The nodes dialled the address themselves: lookups by IP say "disputed".
            disputed = honest.wait_lookup(v, 60, what=f"the dispute mark\n{cluster.logs()}",
                                          until=lambda b: b and b.get("disputed"))
            assert disputed["fingerprint"] == bad_fp.hex()
            assert disputed["disputed"]["answering"] == own_status["fingerprint"]
            text = run_ledger("lookup", v, "--node", h).stdout
            assert "DISPUTED" in text and "does not answer there" in text

            # 4. The chat by IP reaches the real host, and refuses the squatter's binding in step 2.
            host_chat = ChatProcess("listen", "--host", v, "--accept-all", "--ledger", v,
                                    "--data-dir", str(cluster.data_dir(v)))
            procs.append(host_chat)
            host_chat.wait_for("Waiting for chats")
            again = ChatProcess("chat", v, "--host", c, "--ledger", h, "--direct-timeout", "1",
                                "--data-dir", str(cluster.data_dir(c)))
            procs.append(again)
            again.close_input()
            assert again.wait_exit(60) == 1, again.output()
            assert "✓ 1" in again.output()
            assert "disputed: the key bound to" in again.output() and "does not answer there" in again.output()
            assert "✓ 4" not in again.output()
            assert "✓" not in trap.output() and "Chat with" not in trap.output() and "Incoming" not in trap.output()
        finally:
            for proc in reversed(procs):
                proc.stop()


def test_a_rewrite_that_drops_a_hosts_record_makes_it_alert_and_other_nodes_see_the_evidence(tmp_path):
    h, v, j, x = (free_loopback_ip() for _ in range(4))
    with Cluster(tmp_path, make_identities(4)) as cluster:   # the fourth key is the attacker's (at x)
        honest = cluster.serve(h)
        honest.wait_ready()
        victim = cluster.join(v, h)
        victim.wait_ready()
        mined = honest.wait_lookup(v, 60, what=f"the victim's record\n{cluster.logs()}")
        third = cluster.join(j, h)                        # its registration buries the victim's under a block
        third.wait_ready()
        wait_until(lambda: (s := victim.status()) and s["height"] >= mined["height"] + 1 and s, 60,
                   what=f"a block on top of the victim's\n{cluster.logs()}")
        assert victim.status()["binding_alerts"] == []

        # A heavier private branch from genesis holding the attacker's claim on the victim's address, served by the
        # attacker's own node: the honest node checks its headers, fetches it and reorganises (nothing is final
        # yet at the default finality of 6 blocks or 30 minutes).
        attacker_dir = cluster.data_dir(x)
        built = subprocess.run([sys.executable, "-m", "tests.integration.private_branch", h, v, "rewriter",
                                str(attacker_dir)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                               env=_env())
        assert built.returncode == 0, built.stderr
        # The node that serves the branch runs another key, so its own registration does not move the claim.
        make_identities(5)[4].save(attacker_dir / KEY_FILE)
        rogue = cluster.serve(x, "--no-mine", "--peer", h)
        rogue.wait_ready()
        client = LedgerClient(h)
        claim_fp = wait_until(lambda: (b := client.find(v)) and b.nickname == "rewriter" and b.fingerprint, 60,
                              what=f"the rewrite on the honest node\n{cluster.logs()}")
        rogue.stop()

        alerts = wait_until(lambda: (s := victim.status()) and {a["kind"] for a in s["binding_alerts"]} >= {
            "vanished", "address"} and s["binding_alerts"], 60, what=f"the victim's alerts\n{cluster.logs()}")
        assert any("is no longer on the main chain" in a["text"] for a in alerts)
        assert "ALERT" in status_text(v)
        for node in (honest, third):
            conflicts = wait_until(lambda n=node: [c for c in (n.status() or {}).get("binding_conflicts", [])
                                                   if "vanished" in c["kinds"]], 60,
                                   what=f"the evidence at {node.host}\n{cluster.logs()}")
            assert conflicts[0]["block"] == mined["block"] and conflicts[0]["holder"] == claim_fp.hex()
