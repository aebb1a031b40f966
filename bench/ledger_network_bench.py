"""Ledger network benchmark: initial sync of a 10,000-block chain from one peer, and the time a new record
takes to reach every node of a 16-node network on 127.0.0.x. Each figure is compared with a baseline measured
in the same run.

    python3 bench/ledger_network_bench.py [--quick] [--no-write] [--samples N] [--base-ip 127.0.0.100]

1. Sync: a 10,000-block chain (bench/chaingen.py: one registration per block, every record from its own RSA-3072
   key, 8-bit proof of work) is mined and stored in
   a data directory; ``python -m ledger serve --no-mine`` serves it from its own process; a fresh in-process
   ``LedgerNode`` joins and syncs it. Baseline: the same blocks handed straight to a fresh ``LocalLedger``
   (validation and storage without the network).
2. Propagation: 16 ``python -m ledger`` processes join one seed and find each other by peer exchange. The bench
   connects to every node as a silent gossip peer, hands a record to one node and notes when each node
   announces it (a node announces a record the moment it admits it). Baseline: the first hop (the node the
   record was handed to).

Appends the table to docs/benchmarks.md under "## Ledger network" (replacing that section if present) unless
--no-write is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chaingen  # noqa: E402  (bench/ is on sys.path when run as a script)
from report import write_section  # noqa: E402

from ledger.blocks import Block  # noqa: E402
from ledger.client import LedgerClient  # noqa: E402
from ledger.local_ledger import LocalLedger  # noqa: E402
from ledger.node import LedgerNode, NodeConfig  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402
from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, hello_fields  # noqa: E402
from ledger.records import ZERO_HASH, Record, clear_caches, make_register  # noqa: E402
from ledger.sync import SyncProgress  # noqa: E402
from p2pchat.foundation import crypto  # noqa: E402
from p2pchat.foundation.errors import UserError  # noqa: E402
from p2pchat.foundation.identity import KEY_FILE, Identity  # noqa: E402
from p2pchat.foundation.transport import FramedSocket, connect  # noqa: E402

SECTION = "## Ledger network"
NETWORK = "p2pchat"
DAY = 86400


def ip_at(base: str, offset: int) -> str:
    parts = [int(p) for p in base.split(".")]
    parts[3] += offset
    return ".".join(str(p) for p in parts)


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("P2PCHAT_HOME", None)
    return out


def start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "ledger", *args], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env())


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


def status_of(ip: str) -> dict | None:
    try:
        return LedgerClient(ip, timeout=3.0).status()
    except UserError:
        return None


# --- 1. initial sync --------------------------------------------------------------------------------------

def build_chain(params: NetworkParams, n_blocks: int) -> list[Block]:
    """``n_blocks`` blocks the way a quiet network mines them (bench/chaingen.py): one registration per block, every
    record from its own RSA-3072 key, so the joiner's key and signature caches never help."""
    return list(chaingen.blocks(params, chaingen.records(n_blocks, params.name)))


def local_import(params: NetworkParams, blocks: list[Block], where: Path) -> float:
    clear_caches()
    now = time.time()
    with LocalLedger(where, params) as ledger:
        start = time.perf_counter()
        for block in blocks:
            assert ledger.receive_block(block, now).status == "added"
        return time.perf_counter() - start


def bench_sync(params: NetworkParams, blocks: list[Block], base_ip: str, tmp: Path) -> dict[str, float]:
    seed_dir, join_dir = tmp / "seed", tmp / "joiner"
    print("storing the chain for the serving node …", flush=True)
    local_s = local_import(params, blocks, seed_dir)  # also the seed's store
    print("baseline: the same blocks into a second fresh LocalLedger …", flush=True)
    local_s = min(local_s, local_import(params, blocks, tmp / "baseline"))
    seed_ip, join_ip = ip_at(base_ip, 1), ip_at(base_ip, 2)
    Identity.generate().save(seed_dir / KEY_FILE)
    seed = start_node(["serve", "--host", seed_ip, "--data-dir", str(seed_dir), "--no-mine"], tmp / "seed.log")
    try:
        wait_for(lambda: status_of(seed_ip), 60, "the serving node")
        clear_caches()  # the joiner verifies every signature itself
        phases: dict[str, float] = {}

        def progress(p: SyncProgress) -> None:
            phases.setdefault(p.phase, time.perf_counter())
        join_dir.mkdir()
        with LocalLedger(join_dir, params) as ledger:
            node = LedgerNode(Identity.generate(), ledger, host=join_ip, seeds=[seed_ip], on_progress=progress,
                              config=NodeConfig(register=False, mine=False))
            start = time.perf_counter()
            node.start()
            try:
                wait_for(lambda: ledger.height >= len(blocks), 300, "the sync")
                elapsed = time.perf_counter() - start
            finally:
                node.close()
            assert ledger.verify_store().ok
    finally:
        stop_all([seed])
    return {"sync_s": elapsed, "local_s": local_s,
            "headers_s": phases.get("blocks", start) - start}


# --- 2. propagation ---------------------------------------------------------------------------------------

class Observer:
    """A silent gossip peer of every node: notes when each node announces a record."""

    def __init__(self, params: NetworkParams) -> None:
        self.params = params
        self.seen: dict[bytes, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[FramedSocket] = []
        self._threads: list[threading.Thread] = []

    def add(self, ip: str, source_ip: str) -> None:
        """Become a silent peer of the node at ``ip`` (right after it starts, so that it still has a slot)."""
        params = self.params
        conn = connect(ip, 8470, LEDGER_PROTOCOL, source_ip=source_ip, timeout=5.0)
        conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=params.name,
                                          genesis=params.genesis_hash, params=params.to_wire(), height=0,
                                          tip=params.genesis().hash, work=0, listen_port=None))
        ack = conn.recv(5.0)
        assert ack.type == "hello_ack", ack
        self._conns.append(conn)
        thread = threading.Thread(target=self._read, args=(ip, conn), name=f"observe-{ip}")
        self._threads.append(thread)
        thread.start()

    def _read(self, ip: str, conn: FramedSocket) -> None:
        while not self._stop.is_set():
            try:
                msg = conn.recv(1.0)
            except UserError as exc:
                if self._stop.is_set() or "in time" not in str(exc):
                    return  # stopping, or the node went away
                continue
            now = time.perf_counter()
            if msg.type == "record":
                ids = [Record.from_wire(msg["record"]).id]
            elif msg.type == "block":
                # A record can reach a node inside a block before its own announcement does (mining is quick).
                ids = Block.from_wire(msg["block"]).record_ids
            else:
                ids = []
            with self._lock:
                for record_id in ids:
                    self.seen.setdefault(record_id, {}).setdefault(ip, now)
            if msg.type == "ping":
                conn.send("pong", nonce=msg["nonce"])
            elif msg.type == "get_peers":
                conn.send("peers", addrs=[])
            elif msg.type == "get_headers":
                conn.send("headers", headers=[])

    def arrivals(self, record_id: bytes) -> dict[str, float]:
        with self._lock:
            return dict(self.seen.get(record_id, {}))

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            conn.close()
        for thread in self._threads:
            thread.join()


def bench_propagation(n_nodes: int, samples: int, base_ip: str, tmp: Path) -> dict[str, float]:
    params = NetworkParams(name=NETWORK, difficulty_bits=8)
    ips = [ip_at(base_ip, 10 + i) for i in range(n_nodes)]
    procs: list[subprocess.Popen[bytes]] = []
    observer = Observer(params)
    print(f"starting {n_nodes} ledger processes …", flush=True)
    try:
        for i, ip in enumerate(ips):
            data = tmp / f"net-{i}"
            data.mkdir()
            Identity.generate().save(data / KEY_FILE)
            args = (["serve", "--difficulty", "8"] if i == 0 else ["join", ips[0]])
            # Two inbound slots more than the default 16 (8 inbound), and the bench's silent observer connects
            # as soon as the node answers, before the nodes started after it dial it: it always has a slot.
            procs.append(start_node([*args, "--host", ip, "--data-dir", str(data), "--max-peers", "18"],
                                    tmp / f"net-{i}.log"))
            wait_for(lambda ip=ip: status_of(ip), 60, f"node {ip}")
            observer.add(ip, ip_at(base_ip, 40 + i))

        def registered() -> bool:
            statuses = [status_of(ip) for ip in ips]
            return all(s and s["live_bindings"] >= n_nodes and s["peer_count"] >= 2 for s in statuses)
        wait_for(registered, 120, "every node to register and find peers")
        peers = [status_of(ip)["peer_count"] - 1 for ip in ips]      # the observer is not one of them
        client = LedgerClient(ips[0], network=params)
        rtt = []
        for _ in range(20):
            t = time.perf_counter()
            client.status()
            rtt.append(time.perf_counter() - t)
        identities = list(chaingen.test_identities(samples))    # a new key per record, as in a real network
        latencies, first_hop = [], []
        print(f"{samples} records, each handed to one node and announced by all {n_nodes} …", flush=True)
        for seq, identity in enumerate(identities):
            record = make_register(identity, network=params.name, seq=0, prev=ZERO_HASH,
                                   nickname=f"bench-gossip{seq}", relay="127.0.0.1:8472",
                                   issued=int(time.time()), lifetime=DAY)
            target = LedgerClient(ips[seq % n_nodes], network=params)
            start = time.perf_counter()
            target.submit(record)
            arrivals = wait_for(lambda r=record: (a := observer.arrivals(r.id)) and len(a) == n_nodes and a,
                                30, "the record to reach every node")
            latencies.append(max(arrivals.values()) - start)
            first_hop.append(arrivals[ips[seq % n_nodes]] - start)
            time.sleep(0.2)     # the same pace as before (a block mined for each record settles first)
    finally:
        observer.close()
        stop_all(procs)
    latencies.sort()
    return {"p50": statistics.median(latencies), "p99": latencies[min(len(latencies) - 1,
                                                                       int(0.99 * len(latencies)))],
            "max": latencies[-1], "first_hop": statistics.median(first_hop), "rtt": statistics.median(rtt),
            "samples": len(latencies), "peers_min": min(peers), "peers_max": max(peers)}


# --- report -----------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--samples", type=int, default=None, help="records to time across the network (50)")
    parser.add_argument("--nodes", type=int, default=16, help="nodes in the propagation network (16)")
    parser.add_argument("--base-ip", default="127.0.0.100", help="first of the 127.x addresses used")
    args = parser.parse_args()
    n_blocks = 1000 if args.quick else 10_000
    samples = args.samples or (10 if args.quick else 50)
    params = NetworkParams(name=NETWORK, difficulty_bits=8)
    with tempfile.TemporaryDirectory(prefix="ledger-net-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"mining a {n_blocks}-block chain, one record per block, every record its own key …", flush=True)
        blocks = build_chain(params, n_blocks)
        sync = bench_sync(params, blocks, args.base_ip, tmp)
        prop = bench_propagation(args.nodes, samples, args.base_ip, tmp)
    rate = n_blocks / sync["sync_s"]
    rows = [
        (f"Initial sync from one peer, {n_blocks:,} blocks, one record each, every record its own key "
         "(headers-first, separate processes)",
         f"{sync['sync_s']:.2f} s ({rate:,.0f} blocks/s; first block body after {sync['headers_s']:.2f} s)",
         f"same blocks into LocalLedger without network {sync['local_s']:.2f} s",
         f"{sync['sync_s'] / sync['local_s']:.2f}", "≤ 10 s"),
        (f"New record reaches all {args.nodes} nodes, p99 of {prop['samples']} (p50 {prop['p50'] * 1000:.0f} ms, "
         f"max {prop['max'] * 1000:.0f} ms)", f"{prop['p99'] * 1000:.0f} ms",
         f"first hop (the node it was handed to) {prop['first_hop'] * 1000:.0f} ms",
         f"{prop['p99'] / prop['first_hop']:.1f}", "p99 ≤ 1 s"),
        ("Request round trip to one node (status, fresh connection)", f"{prop['rtt'] * 1000:.1f} ms", "—", "—", "—"),
    ]
    table = "| Measure | Result | Baseline (same run) | Ratio | Goal |\n|---|---|---|---|---|\n"
    table += "\n".join("| " + " | ".join(r) + " |" for r in rows)
    print("\n" + table)
    note = (f"{SECTION}\n\nMeasured by `python3 bench/ledger_network_bench.py` on {platform.machine()} "
            f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores shared with "
            f"other work, load average {os.getloadavg()[0]:.1f} at the end, {time.strftime('%Y-%m-%d')}). Sync: a "
            "chain from bench/chaingen.py (one registration per block, every record from its own RSA-3072 key) "
            "served by a `ledger serve` process and fetched by a fresh in-process node (headers first, every "
            "signature verified cold, blocks stored in batches as a joining node stores them). Propagation: "
            f"{args.nodes} `ledger` processes on 127.0.0.x that joined one seed and found each other by peer "
            "exchange (`--max-peers 18`: two inbound slots above the default, so the bench has one; "
            f"{prop['peers_min']}–{prop['peers_max']} peers each); each sample hands a new identity's relay-only "
            "registration to one node (round robin) and waits until every node has announced it, or a block "
            "holding it (the bench is a silent peer of every node).\n\n" + table + "\n")
    if not args.no_write:
        print(f"\nwritten to {write_section(SECTION, note)}")


if __name__ == "__main__":
    main()
