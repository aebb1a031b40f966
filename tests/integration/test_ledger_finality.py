"""Local finality against real processes: an honest network whose chain has become final, an attacker that syncs
it and announces a heavier private branch rewriting a binding; the node parks it, says so, keeps answering the
honest key, keeps it parked across a restart, and switches only when the operator runs ``ledger reorg --accept``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import ROOT, Cluster, _env, run_ledger, wait_until

pytestmark = pytest.mark.slow
FAST_FINALITY = ("--finality-seconds", "2")


def test_a_private_heavier_branch_is_parked_after_the_honest_chain_is_final(tmp_path):
    seed_ip, victim_ip, attacker_ip = (free_loopback_ip() for _ in range(3))
    with Cluster(tmp_path, make_identities(3)) as cluster:
        seed = cluster.serve(seed_ip, *FAST_FINALITY)
        seed.wait_ready()
        victim = cluster.join(victim_ip, seed_ip, extra=FAST_FINALITY)
        victim.wait_ready()
        honest = {}
        for node in (seed, victim):
            for ip in (seed_ip, victim_ip):
                found = wait_until(lambda n=node, i=ip: n.client().find(i), 60, what=f"{ip} on {node.host}")
                honest[ip] = found.fingerprint
        victim_nick = victim.client().lookup(victim_ip).nickname

        def final_everywhere():
            statuses = [seed.quick_status(), victim.quick_status()]
            return all(s and s["pending"] == 0 and s["final_height"] == s["height"] for s in statuses)
        wait_until(final_everywhere, 30, what="the honest chain to become final on both nodes")

        # The attacker syncs the headers, mines a heavier branch holding its claim on the victim's IP and
        # nickname, then runs a node that announces it to the victim.
        attacker_dir = cluster.data_dir(attacker_ip)
        built = subprocess.run([sys.executable, "-m", "tests.integration.private_branch", seed_ip, victim_ip,
                                victim_nick, str(attacker_dir)], capture_output=True, text=True, timeout=120,
                               cwd=ROOT, env=_env())
        assert built.returncode == 0, built.stderr
        branch_tip = built.stdout.strip()
        attacker = cluster.serve(attacker_ip, "--no-mine", "--peer", victim_ip, "--peer", seed_ip)
        attacker.wait_ready()

        def alerted():     # parked, not only alerted: a split report (ledger/splits.py) may come first
            status = victim.quick_status()
            return status if status and status["alerts"] and status["parked"] else None
        status = wait_until(alerted, 60, what=f"the victim to park the attacker's branch\n{cluster.logs()}")
        parked = status["parked"][0]
        assert parked["tip"] == branch_tip and parked["heavier"] and parked["fork_height"] == 0
        assert parked["source"] and parked["source"].startswith(attacker_ip)
        warning = next(line for line in victim.output().splitlines() if "PARKED heavier branch" in line)
        assert f"sent by {attacker_ip}" in warning and "forks at block 0" in warning
        text = run_ledger("status", "--node", victim_ip)
        assert text.returncode == 0 and "ALERT" in text.stdout and branch_tip[:16] in text.stdout
        assert "ledger reorg --accept" in text.stdout
        wait_until(lambda: (seed.quick_status() or {}).get("alerts"), 60,
                   what=f"the seed to park the attacker's branch too\n{cluster.logs()}")
        for node in (victim, seed):   # parked on every node that held the honest chain; lookups answer honestly
            assert node.client().lookup(victim_ip).fingerprint == honest[victim_ip]
            assert node.quick_status()["tip"] != branch_tip
        attacker.stop()

        # Finality survives a restart: the branch stays parked, the honest key stays bound.
        victim.stop()
        listed = run_ledger("reorg", "--list", "--data-dir", str(cluster.data_dir(victim_ip)))
        assert listed.returncode == 0 and f"HEAVIER branch {branch_tip}" in listed.stdout
        victim.start()
        restarted = wait_until(lambda: victim.quick_status(), 30, what="the victim to restart")
        assert restarted["tip"] != branch_tip and restarted["alerts"]
        assert victim.client().lookup(victim_ip).fingerprint == honest[victim_ip]
        refused = run_ledger("reorg", "--accept", branch_tip, "--data-dir", str(cluster.data_dir(victim_ip)))
        assert refused.returncode == 2 and "is running; stop it" in refused.stderr

        # The operator decides deliberately: the node switches, and says so.
        victim.stop()
        accepted = run_ledger("reorg", "--accept", branch_tip[:16], "--data-dir", str(cluster.data_dir(victim_ip)))
        assert accepted.returncode == 0 and f"branch ending at {branch_tip[:16]}" in accepted.stdout, \
            accepted.stdout + accepted.stderr
        assert "operator accepted" in accepted.stderr
        victim.start()
        switched = wait_until(lambda: victim.quick_status(), 30, what="the victim to restart")
        assert switched["tip"] == branch_tip or switched["height"] > parked["tip_height"]
        assert victim.client().lookup(victim_ip).fingerprint != honest[victim_ip]


def test_a_joining_node_refuses_peers_that_disagree_about_final_history_until_the_operator_chooses(tmp_path):
    a_ip, b_ip, joiner_ip = (free_loopback_ip() for _ in range(3))
    with Cluster(tmp_path, make_identities(3)) as cluster:
        # Two networks with identical parameters (hence the same genesis) but different histories.
        a, b = cluster.serve(a_ip, *FAST_FINALITY), cluster.serve(b_ip, *FAST_FINALITY)
        for node in (a, b):
            node.wait_ready()
            wait_until(lambda n=node: (n.quick_status() or {}).get("final_height", 0) >= 1, 60,
                       what=f"a final block on {node.host}\n{cluster.logs()}")
        hash_a = a.client().checkpoint(1)[2]
        hash_b = b.client().checkpoint(1)[2]
        assert hash_a and hash_b and hash_a != hash_b
        joiner_dir = cluster.data_dir(joiner_ip)
        refused = run_ledger("join", a_ip, b_ip, "--host", joiner_ip, "--data-dir", str(joiner_dir), timeout=60)
        assert refused.returncode == 2, refused.stderr
        assert "disagree about final history" in refused.stderr and "--checkpoint 1:HASH" in refused.stderr
        assert hash_a.hex() in refused.stderr and hash_b.hex() in refused.stderr
        assert not list(joiner_dir.glob("ledger-*.sqlite3"))   # nothing adopted
        # The operator asks someone they trust and chooses.
        joiner = cluster.join(joiner_ip, a_ip, b_ip, extra=("--checkpoint", f"1:{hash_a.hex()}"))
        wait_until(lambda: (joiner.quick_status() or {}).get("tip") == a.quick_status()["tip"], 60,
                   what=f"the joiner to follow the chosen history\n{cluster.logs()}")
        assert joiner.quick_status()["checkpoint"] == {"height": 1, "hash": hash_a.hex()}
        assert "following the chosen checkpoint" in joiner.output()


def test_a_joining_node_pins_the_final_block_its_peers_agree_on(tmp_path):
    seed_ip, member_ip, joiner_ip = (free_loopback_ip() for _ in range(3))
    with Cluster(tmp_path, make_identities(3)) as cluster:
        seed = cluster.serve(seed_ip, *FAST_FINALITY)
        seed.wait_ready()
        member = cluster.join(member_ip, seed_ip, extra=FAST_FINALITY)
        member.wait_ready()
        wait_until(lambda: all((n.quick_status() or {}).get("final_height", 0) >= 2 for n in (seed, member)), 60,
                   what=f"final blocks on both nodes\n{cluster.logs()}")
        joiner = cluster.join(joiner_ip, seed_ip, member_ip)
        status = joiner.wait_ready()
        assert status["checkpoint"] is not None and status["checkpoint"]["height"] >= 2
        assert "peers agree that block" in joiner.output()


def _mined(params, parent, records, timestamp):
    import threading

    from ledger.blocks import Block, BlockHeader
    from ledger.merkle import merkle_root
    from ledger.miner import mine

    header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                         prev_hash=parent.hash, merkle_root=merkle_root([r.id for r in records]),
                         timestamp=timestamp, target_bits=params.difficulty_bits, nonce=0)
    solved = mine(header, threading.Event())
    assert solved is not None
    return Block(solved, tuple(records))


def test_a_block_dated_119_seconds_ahead_cannot_take_a_lapsed_address_from_a_running_node(tmp_path):
    import time

    from ledger.bindings import RECLAIM_GRACE_SECONDS
    from ledger.local_ledger import LocalLedger
    from ledger.params import NetworkParams
    from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
    from ledger.records import make_register
    from p2pchat.foundation import crypto
    from p2pchat.foundation.transport import connect
    from tests.integration.procs import TEST_DIFFICULTY

    node_ip, holder_ip, attacker_ip = (free_loopback_ip() for _ in range(3))
    holder, attacker = make_identities(5)[3:5]
    params = NetworkParams(difficulty_bits=TEST_DIFFICULTY)
    now = int(time.time())
    expires = now + 100 - RECLAIM_GRACE_SECONDS   # the holder's reservation ends 100 s from now
    with Cluster(tmp_path, make_identities(1)) as cluster:
        data_dir = cluster.data_dir(node_ip)
        record = make_register(holder, network=params.name, seq=0, prev=b"\0" * 32, nickname="holder",
                               ip=holder_ip, port=8471, ledger_port=8470, relay=None, issued=expires - 3600,
                               lifetime=3600)
        with LocalLedger(data_dir, params) as ledger:   # a history whose last blocks are a few minutes old
            tip = ledger.chain.tip
            for records, stamp in [([record], expires - 3000)] + [([], now - 300 + i) for i in range(6)]:
                block = _mined(params, tip, records, stamp)
                assert ledger.receive_block(block, now).status == "added"
                tip = block.header
        node = cluster.serve(node_ip)
        node.wait_ready()
        assert node.client().find(holder_ip) is None   # lapsed: no live binding, but still reserved

        status = wait_until(lambda: (lambda s: s if s["pending"] == 0 and s["own_record"] and
                                       s["own_record"]["state"] == "mined" else None)(node.client().status()), 60,
                            what=f"the node's own registration to be mined\n{node.output()}")
        claim = make_register(attacker, network=params.name, seq=0, prev=b"\0" * 32, nickname="mallory",
                              ip=holder_ip, port=8471, ledger_port=8470, relay=None, issued=now, lifetime=3600)
        conn = connect(node_ip, 8470, LEDGER_PROTOCOL, source_ip=attacker_ip, timeout=10)
        try:
            conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=params.name,
                                              genesis=params.genesis_hash, params=params.to_wire(), height=0,
                                              tip=params.genesis_hash, work=0))
            client = node.client()
            client.sync_headers()
            tip_header = client.header(status["height"])
            assert tip_header is not None and tip_header.hash.hex() == status["tip"]
            ahead = _mined(params, tip_header, [claim], int(time.time()) + 119)
            conn.send("block", block=ahead.to_wire())
            wait_until(lambda: "reserved for it" in node.output(), 30,
                       what=f"the node to refuse the block dated ahead\n{node.output()}")
        finally:
            conn.close()
        assert node.client().status()["tip"] == status["tip"]
        assert node.client().find(holder_ip) is None
        assert "invalid block" in node.output()
