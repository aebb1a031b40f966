"""``ledger lookup`` from a running ``ledger serve``'s own data directory (real processes on 127.x): answered over
the node's control socket, the same binding as the proven lookup; after the node is killed its socket file is
refused, and a restarted node replaces it (docs/ledger.md, "Asking this machine's own node")."""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import pytest

from ledger.control import socket_path
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import Cluster, run_ledger, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")]


def lookup(host: str, data_dir: Path, *extra: str):
    return run_ledger("lookup", host, "--node", host, "--data-dir", str(data_dir), "--json", *extra)


def test_the_own_node_answers_a_lookup_and_a_restart_replaces_its_socket():
    host = free_loopback_ip()
    # A short base directory: a Unix socket's path is bounded (108 bytes on Linux).
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="lc-") as base, \
            Cluster(Path(base), make_identities(1)) as cluster:
        node = cluster.serve(host, "--nickname", "erin")
        node.wait_ready()
        data = cluster.data_dir(host)
        wait_until(lambda: ((node.quick_status() or {}).get("own_record") or {}).get("state") == "mined", 60,
                   what=f"the node's registration\n{cluster.logs()}")

        own = lookup(host, data)
        assert own.returncode == 0, own.stderr
        proven = lookup(host, data, "--prove")
        assert proven.returncode == 0, proven.stderr
        own_binding, proven_binding = json.loads(own.stdout), json.loads(proven.stdout)
        assert own_binding.pop("proof") == "own node" and proven_binding.pop("proof") == "verified"
        assert own_binding == proven_binding and own_binding["nickname"] == "erin"

        node.kill()                     # SIGKILL: the socket file stays behind, refusing connections
        assert socket_path(data).is_socket()
        gone = lookup(host, data)
        assert gone.returncode == 2 and "cannot connect" in gone.stderr and "Traceback" not in gone.stderr

        node.start()
        node.wait_ready()
        again = wait_until(lambda: (r := lookup(host, data)).returncode == 0 and r, 30,
                           what=f"a lookup after the restart\n{cluster.logs()}")
        assert json.loads(again.stdout)["proof"] == "own node"
