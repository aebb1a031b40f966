"""Issue 13's ledger cross-check with real processes: bob and carol joined one ledger network; then carol's ledger
node was cut off and its history rewritten (another branch from genesis, heavier, holding the same two records).
Both ledgers still name the right keys, so the chat works — and both users are told that their ledgers disagree
about final history, and bob's ledger node records carol's checkpoint as evidence and parks her branch."""

from __future__ import annotations

import shutil

import pytest

from ledger.local_ledger import store_path
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess
from tests.integration.private_branch import rewritten_history
from tests.integration.procs import Cluster, run_ledger, wait_until

pytestmark = pytest.mark.slow
FAST_FINALITY = ("--finality-seconds", "2")
WARNING = "disagree about final history"


def test_two_users_whose_ledgers_were_split_and_rewritten_both_see_it_and_the_ledger_node_keeps_the_evidence(
        tmp_path):
    b, c = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        bob_node = cluster.serve(b, *FAST_FINALITY)
        bob_node.wait_ready()
        carol_node = cluster.join(c, b, extra=FAST_FINALITY)
        carol_node.wait_ready()
        for node in (bob_node, carol_node):
            for ip in (b, c):
                wait_until(lambda n=node, i=ip: n.client().find(i), 60, what=f"{ip} on {node.host}")

        def final(node):
            s = node.quick_status()
            return s and s["pending"] == 0 and s["final_height"] == s["height"] > 0
        wait_until(lambda: final(bob_node) and final(carol_node), 30, what="the shared history to become final")

        # Carol's ledger node is cut off; its ledger is replaced by a rewritten history (her light client's
        # verified headers go with it), and it comes back alone.
        carol_node.stop()
        carol_dir = cluster.data_dir(c)
        for path in [store_path(carol_dir, "p2pchat"), *carol_dir.glob("light-headers-*")]:
            shutil.move(str(path), str(tmp_path / f"old-{path.name}"))
        rewritten_history(b, [b, c], carol_dir)
        carol_node = cluster.serve(c, *FAST_FINALITY)
        carol_node.wait_ready()
        wait_until(lambda: final(carol_node), 30, what="the rewritten history to become final on carol's node")

        carol = ChatProcess("listen", "--host", c, "--accept-all", "--data-dir", str(carol_dir))
        carol.wait_for("Waiting for chats")
        bob = ChatProcess("chat", c, "--host", b, "--data-dir", str(cluster.data_dir(b)))
        try:
            bob.wait_for("4 Agree AES key", timeout=60)
            bob.write("hello carol")
            carol.wait_for("hello carol")                  # the chat goes on: both ledgers name the same keys
            bob.wait_for(WARNING)
            carol.wait_for(WARNING)
            for proc in (bob, carol):
                assert "cut off from the network" in proc.output() and "ledger was rewritten" in proc.output()
        except BaseException:
            print(f"--- bob ---\n{bob.output()}\n--- carol ---\n{carol.output()}")
            raise
        finally:
            bob.stop()
            carol.stop()

        # Bob's ledger node got carol's checkpoint from his chat node, and (dialling carol's ledger node, named by
        # its own ledger) the heavier rewritten branch: parked below its final history, with its ALERT.
        def evidence():
            s = bob_node.quick_status() or {}
            reports = s.get("checkpoint_evidence") or []
            return reports if reports and reports[0]["confirmed"] and s.get("alerts") else None
        (report, *_) = wait_until(evidence, 60, what=f"bob's ledger node to confirm the evidence\n{cluster.logs()}")
        # Bob's node may have met carol's again on its own (it reconnects to its old peers) and parked her branch
        # before the report came; otherwise the report made it dial carol's ledger node.
        assert report["reporter"] == b and report["verdict"] in ("conflict", "beyond", "parked")
        assert report["verdict"] == "parked" or report["asked"].startswith(c)
        status = run_ledger("status", "--node", b)
        assert status.returncode == 0 and "evidence" in status.stdout and "ALERT" in status.stdout
