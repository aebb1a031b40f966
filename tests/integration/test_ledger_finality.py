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
        attacker = cluster.serve(attacker_ip, "--no-mine", "--peer", victim_ip)
        attacker.wait_ready()

        def alerted():
            status = victim.quick_status()
            return status if status and status["alerts"] else None
        status = wait_until(alerted, 60, what=f"the victim to park the attacker's branch\n{cluster.logs()}")
        parked = status["parked"][0]
        assert parked["tip"] == branch_tip and parked["heavier"] and parked["fork_height"] == 0
        assert parked["source"] and parked["source"].startswith(attacker_ip)
        assert "PARKED" in victim.output() and branch_tip in victim.output()
        text = run_ledger("status", "--node", victim_ip)
        assert text.returncode == 0 and "ALERT" in text.stdout and branch_tip[:16] in text.stdout
        assert "ledger reorg --accept" in text.stdout
        for node in (victim, seed):   # lookups still answer the honest key
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
