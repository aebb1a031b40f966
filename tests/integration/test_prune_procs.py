"""Pruning with real processes on 127.0.0.x: `ledger prune` on a chain of renewals, a `--prune` node that answers
a request for a pruned body with a plain "not available" (and says its prune height in its hello), and a joiner
that only knows the pruned node, finds the unpruned one through peer exchange and syncs its bodies from it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ledger.blocks import Block, BlockHeader
from ledger.chain import FinalityPolicy
from ledger.local_ledger import LocalLedger, store_path
from ledger.merkle import merkle_root
from ledger.miner import mine
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
from ledger.records import Record, make_register
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import LEDGER_PORT
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import connect
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import TEST_DIFFICULTY, Cluster, run_ledger, wait_until

PARAMS = NetworkParams(difficulty_bits=TEST_DIFFICULTY)
DAY = 86400


def renewal_chain(data_dir: Path, identity: Identity, blocks: int) -> list[bytes]:
    """A chain where one key renews its record in every block (dated a second apart, in the past); returns the
    main chain's hashes from height 1."""
    import threading

    stop = threading.Event()
    now = time.time()
    start = int(now) - blocks - 120
    prev: Record | None = None
    hashes = []
    # Depth finality at once (no minimum hold): the chain stands for one mined long before the test starts.
    with LocalLedger(data_dir, PARAMS, finality=FinalityPolicy(min_hold=0)) as ledger:
        tip = ledger.chain.tip
        for i in range(blocks):
            record = make_register(identity, network=PARAMS.name, seq=0 if prev is None else prev.seq + 1,
                                   prev=bytes(32) if prev is None else prev.id, nickname="renewer", ip="10.9.0.1",
                                   port=8471, ledger_port=8470, relay=None, issued=start + i - 1, lifetime=DAY)
            header = BlockHeader(version=PARAMS.version, network_id=PARAMS.network_id, height=tip.height + 1,
                                 prev_hash=tip.hash, merkle_root=merkle_root([record.id]), timestamp=start + i,
                                 target_bits=PARAMS.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            assert ledger.receive_block(Block(solved, (record,)), now).status == "added"
            tip, prev = solved, record
            hashes.append(solved.hash)
    return hashes


def ask_for_bodies(host: str, hashes: list[bytes]) -> tuple[dict[str, object], dict[str, object]]:
    """Talk to the node at ``host`` as a gossip peer: its ``hello_ack`` and its answer to ``get_blocks``."""
    conn = connect(host, LEDGER_PORT, LEDGER_PROTOCOL, source_ip=free_loopback_ip())
    try:
        conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                          genesis=PARAMS.genesis_hash, params=PARAMS.to_wire(), height=0,
                                          tip=PARAMS.genesis_hash, work=0, listen_port=None))
        ack = conn.recv(10.0)
        assert ack.type == "hello_ack"
        conn.send("get_blocks", hashes=hashes)
        for _ in range(20):   # the node may ask for our peers or headers first
            msg = conn.recv(10.0)
            if msg.type == "blocks":
                return dict(ack.fields), dict(msg.fields)
        raise AssertionError("no blocks answer")
    finally:
        conn.close()


def test_a_pruned_node_refuses_pruned_bodies_and_a_joiner_finds_an_unpruned_peer_to_sync_from(tmp_path):
    full_ip, pruned_ip, joiner_ip = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    *keys, renewer = make_identities(4)
    with Cluster(tmp_path, keys) as cluster:
        full_dir, pruned_dir = cluster.data_dir(full_ip), cluster.data_dir(pruned_ip)
        hashes = renewal_chain(full_dir, renewer, 40)
        shutil.copy(store_path(full_dir, PARAMS.name), store_path(pruned_dir, PARAMS.name))
        pruned_run = run_ledger("prune", "--prune-keep", "0", "--data-dir", str(pruned_dir))
        assert pruned_run.returncode == 0, pruned_run.stderr
        assert "pruned up to block 35: 34 superseded records dropped" in pruned_run.stdout
        assert "database file" in pruned_run.stdout
        full = cluster.serve(full_ip)
        full.wait_ready()
        pruned = cluster.serve(pruned_ip, "--prune", "--prune-keep", "0", "--peer", full_ip)
        status = pruned.wait_ready()
        assert status["pruned"]["height"] >= 35 and status["pruned"]["keep"] == 0
        shown = run_ledger("status", "--node", pruned_ip)
        assert "superseded records dropped" in shown.stdout and "serves bodies above it only" in shown.stdout

        ack, answer = ask_for_bodies(pruned_ip, hashes[:2] + hashes[-2:])
        assert ack["pruned"] >= 35
        assert answer["pruned"] >= 35 and "pruned block bodies up to height" in str(answer["reason"])
        assert len(answer["blocks"]) == 2   # the two newest, above the prune height
        _, from_full = ask_for_bodies(full_ip, hashes[:2])
        assert len(from_full["blocks"]) == 2 and from_full.get("pruned") is None

        # The joiner knows only the pruned node: it learns the full one through peer exchange and syncs from it.
        joiner = cluster.join(joiner_ip, pruned_ip, extra=("--verify-all",))
        joiner.wait_ready(60)
        wait_until(lambda: (joiner.quick_status() or {}).get("height", 0) >= 40, 60,
                   what=f"the joiner to sync 40 blocks\n{cluster.logs()}")
        # Bodies 1–35 exist only at the full node, which the joiner was never told about: it found it itself.
        assert any(p["address"].startswith(full_ip) for p in joiner.status()["peers"])  # type: ignore[index]
        assert joiner.client().lookup("10.9.0.1").record == full.client().lookup("10.9.0.1").record
        assert pruned.client().lookup("10.9.0.1").record == full.client().lookup("10.9.0.1").record
    verify = run_ledger("verify", "--data-dir", str(pruned_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "NOT CHECKED (pruned)" in verify.stdout and "valid, as far as kept" in verify.stdout
