"""Block download from several peers at once, with real ``python -m ledger`` processes on 127.x addresses: a
joiner fetches the bodies of one chain from three serving peers and uses all of them, and its store equals one
synced from a single peer; a peer that serves wrong bodies, stalls or drops the connection mid-sync is cut off and
the join completes from the others."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.local_ledger import LocalLedger, store_path
from ledger.params import NetworkParams
from ledger.records import make_register
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import ROOT, TEST_DIFFICULTY, Cluster, _env, premine, wait_until
from tests.ledger.checkpoint_kit import snapshot

pytestmark = pytest.mark.slow
BLOCKS = 2500          # more than one headers answer (2,000) and than the download window (1,024)
NODES = 5              # identities of the serving and joining nodes; the records' key comes after them (6 keys in
                       # all: the number the other tests generate, so a test session makes no extra one)
PARAMS = NetworkParams(name="p2pchat", difficulty_bits=TEST_DIFFICULTY)


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory) -> Path:
    """A store of BLOCKS blocks whose first ones bind a key to addresses outside the test nodes', renewed and
    moved (records in blocks 1–12, each superseding the one before)."""
    ident = make_identities(NODES + 1)[NODES]
    issued = int(time.time()) - BLOCKS - 600
    records, prev = [], bytes(32)
    for i in range(12):
        record = make_register(ident, network=PARAMS.name, seq=i, prev=prev, nickname=f"chain{i % 3}",
                               ip=f"10.77.0.{i % 4 + 1}", port=9000 + i, ledger_port=8470, issued=issued + i,
                               lifetime=30 * 86400)
        prev = record.id
        records.append(record)
    path = tmp_path_factory.mktemp("multisync") / "chain"
    path.mkdir()
    premine(path, BLOCKS, records=records)
    return path


def _seed(cluster: Cluster, chain: Path, host: str) -> Path:
    """Give the node at ``host`` a copy of the chain's store (its own key stays)."""
    data_dir = cluster.data_dir(host)
    shutil.copyfile(store_path(chain, PARAMS.name), store_path(data_dir, PARAMS.name))
    return data_dir


def _delivered(status: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for peer in status["peers"]:
        ip = peer["address"].rsplit(":", 1)[0]
        out[ip] = out.get(ip, 0) + peer["blocks_delivered"]
    return out


def _synced(proc, height: int, cluster: Cluster) -> dict[str, Any]:
    return wait_until(lambda: (s := proc.quick_status()) is not None and s["height"] >= height and s,
                      60, what=f"{proc.host} to sync {height} blocks\n{cluster.logs()}")


def _state(data_dir: Path) -> dict[str, Any]:
    with LocalLedger(data_dir, PARAMS) as ledger:
        return snapshot(ledger, time.time())


def test_a_joiner_fetches_blocks_from_three_peers_at_once_and_ends_with_the_single_peer_state(tmp_path, chain_dir):
    ips = [free_loopback_ip() for _ in range(5)]
    servers, joiner_ip, single_ip = ips[:3], ips[3], ips[4]
    with Cluster(tmp_path, make_identities(NODES)) as cluster:
        serving = []
        for ip in servers:
            _seed(cluster, chain_dir, ip)
            serving.append(cluster.serve(ip, "--no-mine"))
        for proc in serving:
            proc.wait_ready()
        joiner = cluster.join(joiner_ip, *servers, extra=("--no-mine",))
        status = _synced(joiner, BLOCKS, cluster)
        delivered = _delivered(status)
        print(f"bodies delivered by each serving peer: {delivered}")
        assert all(delivered.get(ip, 0) > 0 for ip in servers), f"{delivered}\n{joiner.output()}"
        single = cluster.join(single_ip, servers[0], extra=("--no-mine", "--max-peers", "1"))
        _synced(single, BLOCKS, cluster)
        for proc in (joiner, single):
            assert proc.stop() == 0, proc.output()
        for proc in serving:
            proc.stop()
        joined, alone = _state(joiner.data_dir), _state(single.data_dir)
        assert joined["height"] == BLOCKS and len(joined["identities"]) == 1 and joined["ips"]
        assert joined == alone


@pytest.mark.parametrize("mode, sign", [
    ("wrong", "invalid block from {peer}"),
    ("stall", "{peer} stalled"),
    ("drop", "disconnected from {peer}"),
])
def test_a_peer_serving_wrong_bodies_stalling_or_dropping_mid_sync_is_cut_off_and_the_join_completes(
        tmp_path, chain_dir, mode, sign):
    ips = [free_loopback_ip() for _ in range(4)]
    servers, faulty_ip, joiner_ip = ips[:2], ips[2], ips[3]
    faulty_dir = tmp_path / "faulty"
    faulty_dir.mkdir()
    shutil.copyfile(store_path(chain_dir, PARAMS.name), store_path(faulty_dir, PARAMS.name))
    faulty = subprocess.Popen([sys.executable, "-m", "tests.integration.faulty_peer", faulty_ip, "8470",
                               str(faulty_dir), "--mode", mode, "--difficulty", str(TEST_DIFFICULTY)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=_env(), text=True)
    try:
        assert faulty.stdout is not None and faulty.stdout.readline().strip() == "ready"
        with Cluster(tmp_path, make_identities(NODES)) as cluster:
            serving = []
            for ip in servers:
                _seed(cluster, chain_dir, ip)
                serving.append(cluster.serve(ip, "--no-mine"))
            for proc in serving:
                proc.wait_ready()
            joiner = cluster.join(joiner_ip, faulty_ip, *servers, extra=("--no-mine", "-v"))
            _synced(joiner, BLOCKS, cluster)
            wait_until(lambda: sign.format(peer=f"{faulty_ip}:8470") in joiner.output(), 30,
                       what=f"the joiner to cut the {mode} peer off\n{joiner.output()}")
            honest, joined = serving[0].quick_status(), joiner.quick_status()
            assert honest is not None and joined is not None and joined["tip"] == honest["tip"]
    finally:
        if faulty.stdin is not None:
            faulty.stdin.close()
        faulty.wait(timeout=30)
