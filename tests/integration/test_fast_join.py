"""A fresh ``ledger join`` on a chain of 1,200 blocks serves proven lookups of records mined after it joined while
its background verification of the assumed-valid history is still running; a checkpoint the peer's headers do
not hold is refused with a plain message."""

from __future__ import annotations

import pytest

from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import Cluster, premine, run_ledger, wait_until

pytestmark = pytest.mark.slow
BLOCKS = 1200


def test_a_joining_node_answers_a_lookup_of_a_new_record_before_its_background_verification_ends(tmp_path):
    seed_ip, joiner_ip = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        premine(cluster.data_dir(seed_ip), BLOCKS)
        seed = cluster.serve(seed_ip)
        seed.wait_ready()
        wait_until(lambda: (seed.quick_status() or {}).get("final_height", 0) >= BLOCKS - 10, 60,
                   what="final blocks on the seed")
        # Two blocks a second: the background check of ~1,200 blocks takes minutes, the join far less.
        joiner = cluster.join(joiner_ip, seed_ip, extra=("--verify-rate", "2"))
        joiner.wait_ready(120)
        found = wait_until(lambda: joiner.client().find(joiner_ip), 120,
                           what=f"the joiner's own record, proven by the joiner\n{cluster.logs()}")
        status = joiner.status()
        assert status is not None
        check = status["background_verification"]
        assert found.height > check["target"] >= BLOCKS - 10   # mined after the join, above the checkpoint
        assert check["state"] in ("waiting", "running") and check["verified"] < check["target"]
        assert "without checking its signatures now" in joiner.output()
        assert seed.client().lookup(joiner_ip).fingerprint == found.fingerprint


def test_a_checkpoint_the_peers_headers_do_not_hold_is_refused(tmp_path):
    seed_ip, joiner_ip = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        premine(cluster.data_dir(seed_ip), 50)
        seed = cluster.serve(seed_ip)
        seed.wait_ready()
        forged = "ab" * 32
        result = run_ledger("join", seed_ip, "--host", joiner_ip, "--data-dir", str(cluster.data_dir(joiner_ip)),
                            "--checkpoint", f"40:{forged}", timeout=60)
        assert result.returncode == 2, result.stderr
        assert "no peer served a header chain holding the agreed checkpoint" in result.stderr
        assert f"not the agreed checkpoint {forged}; refusing to assume its history valid" in result.stderr
