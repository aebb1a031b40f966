"""Sync attacks against real ``python -m ledger`` processes: a stalling sync peer (a separate process that
claims huge work, serves a genuinely heavier chain's headers at once but drips one block every 30 s) next to an
honest node; the joining node syncs the honest chain without waiting for the staller."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import ROOT, TEST_DIFFICULTY, Cluster, _env, wait_until

pytestmark = pytest.mark.slow


def test_a_joining_node_syncs_from_the_honest_peer_while_a_staller_claims_more(tmp_path):
    honest_ip, staller_ip, joiner_ip = (free_loopback_ip() for _ in range(3))
    staller = subprocess.Popen([sys.executable, "-m", "tests.ledger.stalling_peer", staller_ip, "8470",
                                "--difficulty", str(TEST_DIFFICULTY), "--blocks", "20", "--drip", "30"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=_env(), text=True)
    try:
        assert staller.stdout is not None and staller.stdout.readline().strip() == "ready"
        with Cluster(tmp_path, make_identities(2)) as cluster:
            honest = cluster.serve(honest_ip)
            honest.wait_ready()
            wait_until(lambda: honest.client().find(honest_ip), 30, what="the honest node's own record")
            started = time.monotonic()
            joiner = cluster.join(joiner_ip, honest_ip, staller_ip)
            wait_until(lambda: joiner.quick_status(), 30, what="the joiner to answer")
            found = wait_until(lambda: joiner.client().find(honest_ip), 40,
                               what=f"the honest registration on the joiner\n{cluster.logs()}")
            elapsed = time.monotonic() - started
            print(f"joiner had the honest chain {elapsed:.1f} s after starting (staller drips a block per 30 s)")
            assert found.ip == honest_ip
            # The staller's checked chain is heavier, so the joiner asks it for blocks at some point (first, or
            # right after the honest sync): its drip misses the deadline, it is penalised and left.
            status = wait_until(lambda: (joiner.quick_status() or {}).get("stalls", 0) >= 1 and joiner.quick_status(),
                                30, what="the joiner to notice the stall")
            assert status["height"] >= 1 and found.height <= status["height"]
            assert f"{staller_ip}:8470 stalled: no answer to a sync request" in joiner.output()
            assert wait_until(lambda: joiner.client().find(honest_ip), 10, what="the honest record still there")
    finally:
        if staller.stdin is not None:
            staller.stdin.close()
        staller.wait(timeout=30)


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _disk_bytes(data_dir) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("ledger-*"))


def test_side_branch_and_orphan_floods_are_not_stored_and_get_the_senders_banned(tmp_path):
    import threading

    from ledger.blocks import Block, BlockHeader
    from ledger.local_ledger import LocalLedger
    from ledger.merkle import merkle_root
    from ledger.miner import mine
    from ledger.params import NetworkParams
    from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields
    from ledger.records import make_register
    from p2pchat.foundation import crypto
    from p2pchat.foundation.errors import PeerUnreachable
    from p2pchat.foundation.transport import connect
    from tests.ledger.gossip_kit import grow

    # Blocks of ~1 MB: a network whose blocks may hold 1,100 records (the byte limit stays 1,000,000).
    params = NetworkParams(difficulty_bits=TEST_DIFFICULTY, max_block_records=1100)
    ids = make_identities(2)
    victim_ip = free_loopback_ip()
    with Cluster(tmp_path, ids[:1]) as cluster:
        data_dir = cluster.data_dir(victim_ip)
        with LocalLedger(data_dir, params) as ledger:
            grow(ledger, 5)                                   # the honest chain: 5 blocks of work
        victim = cluster.serve(victim_ip)
        status = victim.wait_ready()
        assert status["difficulty_bits"] == TEST_DIFFICULTY
        wait_until(lambda: victim.client().find(victim_ip), 30, what="the victim's own record")
        base = victim.quick_status()
        pid = victim.proc.pid

        records, prev = [], bytes(32)
        for seq in range(1060):
            record = make_register(ids[1], network=params.name, seq=seq, prev=prev, nickname="flood",
                                   ip=None, port=None, ledger_port=None, relay="127.0.0.1:8472",
                                   issued=int(time.time()), lifetime=86400)
            records.append(record)
            prev = record.id
        root = merkle_root([r.id for r in records])
        stop = threading.Event()

        def block_on(prev_hash: bytes, height: int, stamp: int) -> Block:
            header = BlockHeader(version=params.version, network_id=params.network_id, height=height,
                                 prev_hash=prev_hash, merkle_root=root, timestamp=stamp,
                                 target_bits=params.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            return Block(solved, tuple(records))

        genesis = params.genesis_hash
        now = int(time.time())
        side = [block_on(genesis, 1, now - 3000 + i) for i in range(100)]   # 100 one-block branches from genesis
        orphans = [block_on(crypto.random_bytes(32), 7, now - 100 + i) for i in range(60)]
        assert all(900_000 < b.size <= params.max_block_bytes for b in side[:1] + orphans[:1])

        def flood(blocks: list[Block], senders: int) -> tuple[int, list[str]]:
            sent, ips = 0, []
            share = len(blocks) // senders
            for s in range(senders):
                ip = free_loopback_ip()
                ips.append(ip)
                conn = connect(victim_ip, 8470, LEDGER_PROTOCOL, source_ip=ip, timeout=10.0)
                conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=params.name,
                                                  genesis=genesis, params=params.to_wire(), height=0, tip=genesis,
                                                  work=0))
                try:
                    for block in blocks[s * share:(s + 1) * share]:
                        conn.send("block", block=block.to_wire())
                        sent += 1
                    while True:                               # read until the victim hangs up on us
                        conn.recv(10.0)
                except PeerUnreachable:
                    pass
                finally:
                    conn.close()
            return sent, ips

        rss_before, disk_before = _rss_kb(pid), _disk_bytes(data_dir)
        sent_side, side_ips = flood(side, 10)
        after_side = wait_until(lambda: (s := victim.quick_status()) and set(side_ips) <= set(s["banned"]) and s,
                                30, what="the side-branch senders to be banned")
        rss_side, disk_side = _rss_kb(pid), _disk_bytes(data_dir)
        sent_orphans, orphan_ips = flood(orphans, 5)
        after = wait_until(lambda: (s := victim.quick_status()) and set(orphan_ips) <= set(s["banned"]) and s,
                           30, what="the orphan senders to be banned")
        rss_after, disk_after = _rss_kb(pid), _disk_bytes(data_dir)
        print(f"\nside branches: {sent_side} blocks of {side[0].size / 1e6:.2f} MB sent; RSS {rss_before / 1024:.0f} → "
              f"{rss_side / 1024:.0f} MB, store {disk_before / 1e6:.2f} → {disk_side / 1e6:.2f} MB")
        print(f"orphans: {sent_orphans} blocks of {orphans[0].size / 1e6:.2f} MB sent; "
              f"RSS → {rss_after / 1024:.0f} MB, store → {disk_after / 1e6:.2f} MB; "
              f"kept {after['orphan_blocks']} ({after['orphan_bytes']} bytes)")

        # Each sender is banned at its 9th low-work block (12 points each): the 10th is never looked at.
        assert sent_side == 100 and 90 <= after_side["side_blocks_refused"] <= 100
        assert after_side["height"] == base["height"] and after_side["tip"] == base["tip"]   # nothing switched
        assert sent_orphans == 60
        assert after["orphan_blocks"] == 0 and after["orphan_bytes"] == 0  # banned senders' orphans went with them
        assert after["height"] == base["height"] and after["tip"] == base["tip"]
        # Nothing of the floods reached the store (~160 MB had they been kept): a few pages of WAL at most.
        assert disk_after - disk_before < 1_000_000
