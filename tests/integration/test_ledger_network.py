"""Real ``python -m ledger`` processes on 127.x addresses: joining and converging, kill -9 and restart, a healing
partition, simultaneous registrations and an IP hijack attempt."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.records import make_register
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import Cluster, premine, run_ledger, wait_until

pytestmark = pytest.mark.slow


def hosts(n: int) -> list[str]:
    return [free_loopback_ip() for _ in range(n)]


def everyone_finds_everyone(cluster: Cluster, ips: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for proc in cluster.procs:
        if proc.proc is None or proc.proc.poll() is not None:
            continue
        for ip in ips:
            wait_until(lambda p=proc, i=ip: p.client().find(i), max(1.0, deadline - time.monotonic()),
                       what=f"the record of {ip} on {proc.host}\n{cluster.logs()}")


def tips(procs) -> set[str]:
    return {(p.quick_status() or {}).get("tip", "?") for p in procs}


def test_serve_join_join_converge_answer_lookups_everywhere_and_survive_kill_9(tmp_path):
    """The issue's "done when": serve, join, join; lookups of every IP on every node; kill -9; verify."""
    a, b, c = hosts(3)
    with Cluster(tmp_path, make_identities(3)) as cluster:
        first = cluster.serve(a, difficulty=10)
        first.wait_ready()
        second = cluster.join(b, a)
        second.wait_ready()
        third = cluster.join(c, b)
        third.wait_ready()
        for node in (a, b, c):
            for ip in (a, b, c):
                answer = wait_until(lambda i=ip, n=node: first.lookup(i, node=n), 30,
                                    what=f"ledger lookup {ip} --node {node}\n{cluster.logs()}")
                assert answer["ip"] == ip and answer["proof"] == "verified" and answer["confirmations"] >= 1
        second.kill(signal.SIGKILL)
        result = run_ledger("verify", "--data-dir", str(cluster.data_dir(b)))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "valid" in result.stdout
        # Ctrl-C/SIGTERM stops a node cleanly.
        assert third.stop() == 0
        assert "stopping" in third.output()


def test_a_node_killed_mid_sync_restarts_with_a_valid_chain_and_catches_up(tmp_path):
    seed_ip, joiner_ip = hosts(2)
    with Cluster(tmp_path, make_identities(2)) as cluster:
        tip = premine(cluster.data_dir(seed_ip), 4000).hex()
        seed = cluster.serve(seed_ip)
        seed.wait_ready()
        joiner = cluster.join(joiner_ip, seed_ip)

        def mid_sync():
            status = joiner.quick_status()
            return status is not None and 0 < status["height"] < 4000
        wait_until(mid_sync, 60, interval=0.01, what="the joiner to be part way through the sync")
        joiner.kill(signal.SIGKILL)
        result = run_ledger("verify", "--data-dir", str(cluster.data_dir(joiner_ip)))
        assert result.returncode == 0, result.stdout + result.stderr
        joiner.start()
        wait_until(lambda: tips([seed, joiner]) == {(seed.quick_status() or {}).get("tip")}
                   and (seed.quick_status() or {}).get("height", 0) >= 4000, 60, what="the restarted node to catch up")
        client = joiner.client()
        client.sync_headers()
        assert client.header(4000).hash.hex() == tip  # the premined chain, then the registrations on top
        everyone_finds_everyone(cluster, [seed_ip, joiner_ip])


def test_a_partition_heals_and_every_node_reorgs_to_the_most_work_chain(tmp_path):
    group_a, group_b = hosts(3), hosts(2)
    bridge_ip = free_loopback_ip()
    with Cluster(tmp_path, make_identities(6)) as cluster:
        # Two groups that only know their own seed; same network and parameters, so they can merge later.
        a_nodes = [cluster.serve(group_a[0])]
        b_nodes = [cluster.serve(group_b[0])]
        a_nodes[0].wait_ready()
        b_nodes[0].wait_ready()
        a_nodes += [cluster.join(ip, group_a[0]) for ip in group_a[1:]]
        b_nodes += [cluster.join(ip, group_b[0]) for ip in group_b[1:]]
        for node in a_nodes + b_nodes:
            node.wait_ready()
        for group, nodes in ((group_a, a_nodes), (group_b, b_nodes)):
            for node in nodes:
                for ip in group:
                    wait_until(lambda n=node, i=ip: n.client().find(i), 60, what=f"{ip} on {node.host}")
        # Make sure group A has strictly more work (a relay-only record mined per round).
        extra = make_identities(7)[6]  # not one of the six node keys
        for seq in range(5):
            work_a = a_nodes[0].quick_status()["cumulative_work"]
            work_b = b_nodes[0].quick_status()["cumulative_work"]
            if work_a > work_b:
                break
            record = make_register(extra, network="p2pchat", seq=seq, prev=_prev(a_nodes[0], extra, seq),
                                   nickname="filler", relay="127.0.0.1:8472", issued=int(time.time()),
                                   lifetime=86400)
            a_nodes[0].client().submit(record)
            wait_until(lambda s=seq: a_nodes[0].client().find("filler") and
                       a_nodes[0].client().lookup("filler").seq == s, 30, what="filler record mined")
        assert a_nodes[0].quick_status()["cumulative_work"] > b_nodes[0].quick_status()["cumulative_work"]
        a_tip = a_nodes[0].quick_status()["tip"]
        b_tip = b_nodes[0].quick_status()["tip"]
        assert a_tip != b_tip
        # Heal: a node that knows one seed of each group.
        bridge = cluster.join(bridge_ip, group_a[0], group_b[0])
        bridge.wait_ready()
        every = a_nodes + b_nodes + [bridge]

        def converged():
            statuses = [p.quick_status() for p in every]
            return all(statuses) and len({s["tip"] for s in statuses}) == 1 and statuses[0]["pending"] == 0
        wait_until(converged, 60, what=f"every node on one chain\n{cluster.logs()}")
        everyone_finds_everyone(cluster, group_a + group_b + [bridge_ip])
        # Group B's nodes left their own chain for group A's (which had more work): A's old tip is on it.
        client = LedgerClient(b_nodes[-1].host)
        height = client.sync_headers()
        chain = {client.header(h).hash.hex() for h in range(height + 1)}
        assert a_tip in chain and b_tip not in chain
        for node in b_nodes:
            result = run_ledger("verify", "--data-dir", str(cluster.data_dir(node.host)))
            assert result.returncode == 0, result.stdout + result.stderr


def _prev(node, identity, seq: int) -> bytes:
    if seq == 0:
        return bytes(32)
    return node.client().lookup(identity.fingerprint.hex()).record.id


def test_simultaneous_registrations_on_two_nodes_both_end_up_mined(tmp_path):
    seed_ip, one, two = hosts(3)
    with Cluster(tmp_path, make_identities(5)) as cluster:
        seed = cluster.serve(seed_ip)
        seed.wait_ready()
        first, second = cluster.join(one, seed_ip), cluster.join(two, seed_ip)  # both start (and register) at once
        first.wait_ready()
        second.wait_ready()
        everyone_finds_everyone(cluster, [seed_ip, one, two])
        # Two more records handed to two different nodes at the same instant.
        ids = make_identities(5)[3:5]
        records = [make_register(i, network="p2pchat", seq=0, prev=bytes(32), nickname=f"nat-{n}",
                                 relay="127.0.0.1:8472", issued=int(time.time()), lifetime=86400)
                   for n, i in enumerate(ids)]
        errors: list[Exception] = []
        start = threading.Barrier(2)

        def submit(proc, record):
            start.wait()
            try:
                proc.client().submit(record)
            except LedgerError as exc:
                errors.append(exc)
        threads = [threading.Thread(target=submit, args=(p, r)) for p, r in zip((first, second), records,
                                                                                  strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for proc in (seed, first, second):
            for name in ("nat-0", "nat-1"):
                wait_until(lambda p=proc, n=name: p.client().find(n), 30, what=f"{name} mined on {proc.host}")


def test_an_ip_hijack_attempt_is_refused(tmp_path):
    owner_ip = free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        owner = cluster.serve(owner_ip)
        owner.wait_ready()
        wait_until(lambda: owner.client().find(owner_ip), 30, what="the owner's record")
        # The attacker runs its own node on the same address (another port) with another key and tries to
        # register the owner's IP.
        attacker = cluster.join(owner_ip, owner_ip, extra=("--port", "9470", "--nickname", "mallory"),
                                name="attacker")
        wait_until(attacker.quick_status, 30, what="the attacker's node to answer")

        def refused():
            status = attacker.quick_status()
            return status and status.get("registration_error")
        reason = wait_until(refused, 30, what="the attacker's registration to be refused")
        assert "bound to another key" in reason
        for node in (owner, attacker):
            binding = node.client().lookup(owner_ip)
            assert binding.nickname != "mallory"
            assert binding.fingerprint == make_identities(1)[0].fingerprint
