"""Networks pinned by their genesis, against real ``python -m ledger`` processes: ``serve`` prints the network id,
a first ``join`` pins it (trust on first use), and a same-named network re-created at difficulty 1 is refused by
a later join, by a join given ``--network-id`` and by the light client reading the pin."""

from __future__ import annotations

import re

import pytest

from ledger.network_pin import load_pin
from ledger.params import NetworkParams
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import TEST_DIFFICULTY, Cluster, run_ledger, wait_until

pytestmark = pytest.mark.slow

ID = re.compile(r"network id ((?:[0-9a-f]{4} ){7}[0-9a-f]{4})")


def test_a_joining_node_pins_the_network_id_and_refuses_a_forged_same_named_network(tmp_path):
    honest = NetworkParams(difficulty_bits=TEST_DIFFICULTY)
    forged = NetworkParams(difficulty_bits=1)
    a_ip, f_ip, b_ip, c_ip = (free_loopback_ip() for _ in range(4))
    with Cluster(tmp_path, make_identities(3)) as cluster:
        a = cluster.serve(a_ip)
        f = cluster.serve(f_ip, difficulty=1)          # the attacker's re-created "p2pchat"
        a.wait_ready()
        f.wait_ready()
        printed = wait_until(lambda: ID.search(a.output()), 10, what="serve to print the network id")
        assert printed.group(1) == honest.id_text
        assert ID.search(f.output()).group(1) == forged.id_text != honest.id_text

        b = cluster.join(b_ip, a_ip)                   # first join: trust on first use
        b.wait_ready()
        assert f"pinned its network id {honest.id_text}" in wait_until(
            lambda: "pinned its network id" in b.output() and b.output(), 10, what="the pin message")
        assert load_pin(b.data_dir, "p2pchat") == honest
        b.stop()

        # Later joins of B through the forged node: refused, naming both ids.
        result = run_ledger("join", f_ip, "--host", b_ip, "--data-dir", str(b.data_dir), "--wait", "3")
        assert result.returncode == 2
        assert forged.id_text in result.stderr and honest.id_text in result.stderr, result.stderr
        assert "difficulty 1 bits instead of 8" in result.stderr

        # A new machine given the id 'serve' printed: the forged network is refused before anything is stored.
        c_dir = cluster.data_dir(c_ip)
        result = run_ledger("join", f_ip, "--host", c_ip, "--data-dir", str(c_dir), "--wait", "3",
                            "--network-id", honest.id_text)
        assert result.returncode == 2
        assert "not the id given with --network-id" in result.stderr and forged.id_text in result.stderr
        assert load_pin(c_dir, "p2pchat") is None and not list(c_dir.glob("ledger-*.sqlite3"))

        # The light client reads the pin of its data dir (as the chat node does): the forged node is refused,
        # the honest one answers.
        result = run_ledger("status", "--node", f_ip, "--data-dir", str(b.data_dir))
        assert result.returncode == 2 and forged.id_text in result.stderr and honest.id_text in result.stderr
        assert run_ledger("status", "--node", a_ip, "--data-dir", str(b.data_dir)).returncode == 0


def test_the_chat_nodes_light_client_uses_the_pin_of_its_data_dir(tmp_path):
    from ledger.network_pin import save_pin
    from p2pchat.peer_directory import LedgerDirectory, PeerNotFound

    honest = NetworkParams(difficulty_bits=TEST_DIFFICULTY)
    f_ip = free_loopback_ip()
    with Cluster(tmp_path, make_identities(1)) as cluster:
        f = cluster.serve(f_ip, difficulty=1)
        f.wait_ready()
        pin_dir = tmp_path / "chat-user"
        pin_dir.mkdir()
        save_pin(pin_dir, honest)
        directory = LedgerDirectory(f_ip, f.port, source_ip=None, network="p2pchat", pin_dir=pin_dir)
        with pytest.raises(PeerNotFound, match="same name with other parameters, difficulty 1 bits instead of 8"):
            directory.lookup(f_ip)
        unpinned = LedgerDirectory(f_ip, f.port, source_ip=None, network="p2pchat")
        wait_until(lambda: unpinned.client.find(f_ip), 30, what="the forged node's own record")
