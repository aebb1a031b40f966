"""Light client at 10k and 100k headers: memory, suffix sync, and ``ledger lookup`` end to end.

    python3 bench/light_client_bench.py [--sizes 10000,100000] [--work DIR] [--runs 15]

For each size it builds (once, cached in ``--work``) a **headers-only** chain — empty blocks at 1-bit difficulty:
the light client's cost is per header, and a header weighs the same whatever its block holds, so this measures
the header part of a chain of that length without the hours of RSA-key generation a full realistic chain takes
(bench/chaingen.py builds those; the join figures use it). A real ``ledger serve`` process serves it on
127.0.0.x, registers its own record (mined on top), and then, each in a fresh process:

- **sync from genesis**: a light client with a data directory syncs every header (time, headers/s) and the peak
  RSS of that process, beside the same process with the old in-memory behaviour (no data directory) and a bare
  ``import ledger.client`` — the difference is the light client's header memory;
- **suffix sync**: the stored header file is cut back by 100 headers (a client that was away for 100 blocks) and
  synced again: time, and the headers it was sent;
- **``ledger lookup IP``** end to end (interpreter start included, the installed script) with the stored headers
  (proven), and from the server's own data directory (its node answers over the control socket, ledger/control.py),
  ``--runs`` times each, beside ``python -c pass`` in the same run (median, p90, ratio), and a lookup in process:
  with a warm client, and with a new client each time (what the command does after its imports);
- with ``--join-chain DIR`` (a bench/chaingen.py chain): ``ledger join`` until the joiner proves its own record,
  with the assumed-valid history and with ``--verify-all`` in the same run;
- with ``--join-chain DIR --seeds N``: N ``ledger serve`` seeds of the chain (the first mines, the others follow
  it without mining), and in the same run a join from one seed (``--max-peers 1``) and a join through all N
  (blocks fetched from all of them at once): seconds until in sync with the chain's height, blocks/s, and until
  usable (``--join-modes one`` measures only the former join; ``--sync-only`` stops at the sync, for synthetic
  chains whose background verification fails at once).

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands import installed_command  # noqa: E402  (bench/ is on sys.path when run as a script)

from ledger.blocks import Block, BlockHeader  # noqa: E402
from ledger.header_store import header_file_path  # noqa: E402
from ledger.merkle import merkle_root  # noqa: E402
from ledger.miner import mine  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402

NETWORK = "lightbench"
BITS = 1
HOST = "127.0.0.91"
PORT = 8470


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("P2PCHAT_HOME", None)
    # Measure what an installed program does: byte code cached (this sandbox sets PYTHONDONTWRITEBYTECODE).
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    return e


def build_headers_chain(count: int, out: Path) -> Path:
    """``count`` empty blocks at 1 bit into a ledger store under ``out`` (kept for the next run)."""
    from ledger.local_ledger import store_path
    from ledger.store import Store

    params = NetworkParams(name=NETWORK, difficulty_bits=BITS)
    path = store_path(out, NETWORK)
    done = out / "complete"
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = int(time.time()) - count - 3600
    parent = params.genesis().header
    root = merkle_root([])
    never = threading.Event()
    with Store(path) as store:
        store.save_params(params)
        for i in range(count):
            header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                                 prev_hash=parent.hash, merkle_root=root, timestamp=start + i,
                                 target_bits=BITS, nonce=0)
            solved = mine(header, never)
            assert solved is not None
            store.save_block(Block(solved, ()))
            parent = solved
            if (i + 1) % 5000 == 0:
                print(f"\r  built {i + 1:,}/{count:,} headers", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    done.write_text("ok")
    return out


class Server:
    """A ``ledger serve`` process on a copy of the chain."""

    def __init__(self, chain_dir: Path, work: Path) -> None:
        self.dir = work / "server"
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.copytree(chain_dir, self.dir)
        self.log = open(work / "server.log", "w")
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--host", HOST, "--port", str(PORT),
                                      "--data-dir", str(self.dir), "--network", NETWORK, "--nickname", "benchhost"],
                                     cwd=ROOT, env=env(), stdout=self.log, stderr=subprocess.STDOUT)
        self.ready_after = self._wait_registered(started)

    def _wait_registered(self, started: float) -> float:
        from ledger.client import LedgerClient
        from p2pchat.foundation.errors import UserError

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"ledger serve exited; see {self.log.name}")
            try:
                status = LedgerClient(HOST, PORT, timeout=5.0).status()
                own = status.get("own_record") or {}
                if own.get("state") == "mined":
                    return time.monotonic() - started
            except UserError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not register its record in 600 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


SYNC_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from ledger.client import LedgerClient
imported = time.perf_counter()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mode, host, port, data_dir = sys.argv[1:5]
client = None
if mode != "import":
    client = LedgerClient(host, int(port), pin_dir=Path(data_dir) if mode == "disk" else None, timeout=30.0)
    t1 = time.perf_counter()
    height = client.sync_headers()
    took = time.perf_counter() - t1
else:
    height, took = 0, 0.0
print(json.dumps({"height": height, "seconds": took, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "after_import_kib": base, "received": client.headers_received if client else 0}))
"""


def run_child(mode: str, data_dir: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", SYNC_CHILD, mode, HOST, str(PORT), str(data_dir)], cwd=ROOT,
                         env=env(), capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cut_back(data_dir: Path, params: NetworkParams, count: int) -> None:
    path = header_file_path(data_dir, params, HOST, PORT)
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM headers WHERE height > (SELECT max(height) FROM headers) - ?", (count,))
        db.execute("DELETE FROM meta WHERE key = 'final'")
    db.close()


def timed(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - t)
    return times


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.9) - 1)]


def bench_size(count: int, work: Path, runs: int) -> dict[str, float]:
    chain = build_headers_chain(count, work / f"chain-{count}")
    server = Server(chain, work)
    try:
        from ledger.client import LedgerClient

        params = NetworkParams(name=NETWORK, difficulty_bits=BITS)
        client_dir = work / f"client-{count}"
        shutil.rmtree(client_dir, ignore_errors=True)
        client_dir.mkdir()
        bare = run_child("import", client_dir)
        memory = run_child("memory", client_dir)
        disk = run_child("disk", client_dir)
        height = int(disk["height"])
        cut_back(client_dir, params, 100)
        suffix = run_child("disk", client_dir)
        # End to end: `ledger lookup` of the server's own record with the stored headers (proven), and from the
        # server's own data directory (answered over its control socket), against `python -c pass`.
        ledger = installed_command(sys.executable, "ledger")
        lookup = [*ledger, "lookup", "--data-dir", str(client_dir), "--node", f"{HOST}:{PORT}", HOST]
        own_lookup = [*ledger, "lookup", "--data-dir", str(server.dir), "--node", f"{HOST}:{PORT}", HOST]
        baseline_cmd = [sys.executable, "-c", "pass"]
        timed(lookup, 2)
        timed(own_lookup, 2)
        base_t, look_t, own_t = [], [], []
        for _ in range(runs):   # interleaved, so load on the shared machine hits all alike
            base_t += timed(baseline_cmd, 1)
            look_t += timed(lookup, 1)
            own_t += timed(own_lookup, 1)
        warm = LedgerClient(HOST, PORT, pin_dir=client_dir)
        warm.lookup(HOST)
        inproc = []
        for _ in range(50):
            t = time.perf_counter()
            warm.lookup(HOST)
            inproc.append(time.perf_counter() - t)
        warm.close()
        cold = []   # what the command does after its imports: open the header file, connect, sync, check
        for _ in range(20):
            t = time.perf_counter()
            fresh = LedgerClient(HOST, PORT, pin_dir=client_dir)
            fresh.lookup(HOST)
            fresh.close()
            cold.append(time.perf_counter() - t)
        file_size = header_file_path(client_dir, params, HOST, PORT).stat().st_size
        return {
            "count": count, "height": height, "server_ready_s": server.ready_after,
            "sync_s": disk["seconds"], "sync_rate": height / disk["seconds"],
            "rss_bare_mib": bare["maxrss_kib"] / 1024, "rss_disk_mib": disk["maxrss_kib"] / 1024,
            "rss_memory_mib": memory["maxrss_kib"] / 1024,
            "headers_mem_disk_mib": (disk["maxrss_kib"] - bare["maxrss_kib"]) / 1024,
            "headers_mem_old_mib": (memory["maxrss_kib"] - bare["maxrss_kib"]) / 1024,
            "suffix_s": suffix["seconds"], "suffix_received": suffix["received"],
            "lookup_median_s": statistics.median(look_t), "lookup_p90_s": p90(look_t),
            "pass_median_s": statistics.median(base_t), "pass_p90_s": p90(base_t),
            "lookup_ratio": statistics.median(look_t) / statistics.median(base_t),
            "own_median_s": statistics.median(own_t), "own_p90_s": p90(own_t),
            "own_ratio": statistics.median(own_t) / statistics.median(base_t),
            "inproc_median_ms": statistics.median(inproc) * 1000, "inproc_p90_ms": p90(inproc) * 1000,
            "cold_median_ms": statistics.median(cold) * 1000, "cold_p90_ms": p90(cold) * 1000,
            "file_mib": file_size / 2**20,
        }
    finally:
        server.stop()


JOIN_SEED, JOIN_FAST, JOIN_FULL = "127.0.0.92", "127.0.0.93", "127.0.0.94"


def join_until_usable(chain_dir: Path, work: Path) -> dict[str, float | str]:
    """``ledger join`` of a fresh node against a ``ledger serve`` of a bench/chaingen.py chain: seconds until the
    joiner answers a proven lookup of its own record (mined after it joined), with the assumed-valid history
    (default) and with ``--verify-all`` (every signature checked first: the old behaviour) in the same run."""
    from ledger.client import LedgerClient
    from p2pchat.foundation.errors import UserError
    from p2pchat.foundation.identity import KEY_FILE, Identity

    network = next(chain_dir.glob("ledger-*.sqlite3")).name[len("ledger-"):-len(".sqlite3")]
    seed_dir = work / "join-seed"
    shutil.rmtree(seed_dir, ignore_errors=True)
    shutil.copytree(chain_dir, seed_dir)
    logs = []

    def start(args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(work / f"{name}.log", "w")
        logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "ledger", *args], cwd=ROOT, env=env(), stdout=log,
                                stderr=subprocess.STDOUT)

    def poll(what: str, probe, limit: float = 1800.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for proc, log in ((procs[0], logs[0]), (procs[-1], logs[-1])):   # the seed and the current joiner
                if proc.poll() is not None:
                    raise SystemExit(f"a ledger process exited ({proc.returncode}); see {log.name}")
            try:
                value = probe()
            except UserError:   # a node still starting: ask again
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise SystemExit(f"timed out waiting for {what}")

    procs = [start(["serve", "--host", JOIN_SEED, "--data-dir", str(seed_dir), "--network", network], "join-seed")]
    results: dict[str, float | str] = {}
    try:
        seed_started = time.monotonic()
        poll("the seed's final blocks",
             lambda: LedgerClient(JOIN_SEED, timeout=5.0).status().get("final_height", 0) > 0)
        results["seed_ready_s"] = time.monotonic() - seed_started
        for host, mode, extra in ((JOIN_FAST, "assumed", []), (JOIN_FULL, "full", ["--verify-all"])):
            data = work / f"join-{mode}"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            Identity.generate().save(data / KEY_FILE)   # key generation is not what is measured here
            t0 = time.monotonic()
            procs.append(start(["join", JOIN_SEED, "--host", host, "--data-dir", str(data), *extra], f"join-{mode}"))
            poll(f"the {mode} joiner's own record", lambda h=host: LedgerClient(h, timeout=5.0).find(h))
            results[f"{mode}_usable_s"] = time.monotonic() - t0
            status = LedgerClient(host, timeout=5.0).status()
            check = status.get("background_verification")
            results[f"{mode}_height"] = status["height"]
            if check:
                results[f"{mode}_verified_at_usable"] = f"{check['verified']}/{check['target']} ({check['state']})"
                poll("the background verification", lambda h=host: (LedgerClient(h, timeout=5.0).status()
                                                                    .get("background_verification") or {})
                     .get("state") == "done")
                results[f"{mode}_verified_s"] = time.monotonic() - t0
            procs[-1].terminate()
            procs[-1].wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        for log in logs:
            log.close()
    return results


JOIN_SEEDS = [f"127.0.0.{i}" for i in range(100, 108)]
JOIN_ONE, JOIN_MANY = "127.0.0.95", "127.0.0.96"


def join_from_seeds(chain_dir: Path, work: Path, seeds: int, finality_depth: int | None = None,
                    modes: tuple[str, ...] = ("one", "many"), usable: bool = True) -> dict[str, float | str]:
    """A fresh ``ledger join`` through one seed (``--max-peers 1``) and through ``seeds`` seeds, in the same run,
    against ``seeds`` ``ledger serve`` processes on copies of ``chain_dir``: seconds until the joiner's height
    reaches the chain's (the block download), and until it proves its own record (mined by the first seed).
    ``finality_depth`` (seeds only): a bench/ledger_scale_bench.py synthetic chain has random-bytes signatures, so every
    block of it must be below the seeds' final height, where a joiner assumes signatures valid. Without ``usable``
    only the sync is timed: on a synthetic chain the background verification fails at its first record, so whether
    the joiner proves its own record before that is a race."""
    from ledger.client import LedgerClient
    from p2pchat.foundation.errors import UserError
    from p2pchat.foundation.identity import KEY_FILE, Identity

    network = next(chain_dir.glob("ledger-*.sqlite3")).name[len("ledger-"):-len(".sqlite3")]
    hosts = JOIN_SEEDS[:seeds]
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(work / f"{name}.log", "w")
        logs.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "ledger", *args], cwd=ROOT, env=env(), stdout=log,
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def poll(what: str, probe, limit: float = 1800.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    raise SystemExit(f"a ledger process exited ({proc.returncode}); see {log.name}")
            try:
                value = probe()
            except UserError:   # a node still starting: ask again
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    results: dict[str, float | str] = {"seeds": seeds}
    try:
        for i, host in enumerate(hosts):
            data = work / f"seed-{i}"
            shutil.rmtree(data, ignore_errors=True)
            shutil.copytree(chain_dir, data)
            extra = [] if i == 0 else ["--no-mine", "--peer", hosts[0]]
            if finality_depth is not None:
                extra += ["--finality-depth", str(finality_depth)]
            start(["serve", "--host", host, "--data-dir", str(data), "--network", network, *extra], f"seed-{i}")
        poll("the seeds' final blocks", lambda: all(LedgerClient(h, timeout=5.0).status().get("final_height", 0) > 0
                                                     for h in hosts))
        # Every seed at the first seed's height (its own record mined on top), so that all can serve everything.
        height = poll("the seeds to agree", lambda: len({LedgerClient(h, timeout=5.0).status()["tip"]
                                                          for h in hosts}) == 1
                      and LedgerClient(hosts[0], timeout=5.0).status()["height"])
        results["chain_height"] = height
        for host, mode, args in ((JOIN_ONE, "one", [hosts[0], "--max-peers", "1"]), (JOIN_MANY, "many", hosts)):
            if mode not in modes:
                continue
            data = work / f"join-{mode}"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            Identity.generate().save(data / KEY_FILE)   # key generation is not what is measured here
            t0 = time.monotonic()
            proc = start(["join", *args, "--host", host, "--data-dir", str(data), "--no-mine"], f"join-{mode}")
            poll(f"the {mode} joiner's sync", lambda h=host: LedgerClient(h, timeout=5.0).status()["height"] >= height)
            results[f"{mode}_synced_s"] = time.monotonic() - t0
            status = LedgerClient(host, timeout=5.0).status()
            results[f"{mode}_peers_delivering"] = sum(1 for p in status["peers"] if p.get("blocks_delivered"))
            if usable:
                poll(f"the {mode} joiner's own record", lambda h=host: LedgerClient(h, timeout=5.0).find(h))
            results[f"{mode}_usable_s"] = time.monotonic() - t0 if usable else float("nan")
            proc.terminate()
            proc.wait(30)
            procs.pop()
            logs.pop().close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        for log in logs:
            log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "p2pchat-light-bench")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--join-chain", type=Path, help="a bench/chaingen.py data directory: measure join until usable")
    parser.add_argument("--seeds", type=int, default=0,
                        help="with --join-chain: serve it from this many seeds, join from one and from all")
    parser.add_argument("--seed-finality-depth", type=int,
                        help="with --seeds: the seeds' --finality-depth (1 for a synthetic chain: see join_from_seeds)")
    parser.add_argument("--join-modes", default="one,many",
                        help="with --seeds: which joins to measure (one: through one seed; many: through all)")
    parser.add_argument("--sync-only", action="store_true",
                        help="with --seeds: time the sync only (for synthetic chains: see join_from_seeds)")
    args = parser.parse_args()
    if args.join_chain is not None and args.seeds:
        args.work.mkdir(parents=True, exist_ok=True)
        modes = tuple(args.join_modes.split(","))
        r = join_from_seeds(args.join_chain, args.work, args.seeds, args.seed_finality_depth, modes,
                            usable=not args.sync_only)
        print(json.dumps(r), file=sys.stderr)
        n = r["chain_height"]
        print(f"| join of {args.join_chain.name} ({n:,} blocks) | in sync | blocks/s | peers delivering "
              "| usable (own record proven) |")
        print("|---|---|---|---|---|")
        for mode, label in (("one", "from 1 seed (`--max-peers 1`)"), ("many", f"from {args.seeds} seeds")):
            if mode in modes:
                print(f"| {label} | {r[f'{mode}_synced_s']:.1f} s | {n / r[f'{mode}_synced_s']:,.0f} "
                      f"| {r[f'{mode}_peers_delivering']} | {r[f'{mode}_usable_s']:.1f} s |")
        if len(modes) == 2:
            print(f"| ratio (many / one) | {r['many_synced_s'] / r['one_synced_s']:.2f} × | | "
                  f"| {r['many_usable_s'] / r['one_usable_s']:.2f} × |")
        return
    if args.join_chain is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        joined = join_until_usable(args.join_chain, args.work)
        print(json.dumps(joined), file=sys.stderr)
        print(f"| join (chain {args.join_chain.name}) | usable (own record proven by the joiner) | history checked |")
        print("|---|---|---|")
        print(f"| assumed-valid history (default) | {joined['assumed_usable_s']:.1f} s (background check at "
              f"{joined.get('assumed_verified_at_usable')}) | {joined.get('assumed_verified_s', 0):.1f} s |")
        print(f"| `--verify-all` (every signature first, same run) | {joined['full_usable_s']:.1f} s | "
              f"{joined['full_usable_s']:.1f} s |")
        print(f"| ratio | {joined['assumed_usable_s'] / joined['full_usable_s']:.2f} × | |")
    if not args.sizes:
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        print(f"headers-only chain of {size:,} blocks…", file=sys.stderr)
        results.append(bench_size(size, args.work, args.runs))
        print(json.dumps(results[-1]), file=sys.stderr)
    print("| headers | sync from genesis | header memory, no data dir (SQLite in memory) | header memory (file) "
          "| header file | suffix of 100 | `ledger lookup` median / p90 | `python -c pass` median / p90 | ratio "
          "| lookup in process, warm client median / p90 | new client per lookup median / p90 "
          "| `ledger lookup`, own node median / p90 | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['count']:,} | {r['sync_s']:.2f} s ({r['sync_rate']:,.0f}/s) | {r['headers_mem_old_mib']:.1f} MiB "
              f"| {r['headers_mem_disk_mib']:.1f} MiB | {r['file_mib']:.1f} MiB | {r['suffix_s'] * 1000:.1f} ms "
              f"({r['suffix_received']:.0f} headers) | {r['lookup_median_s'] * 1000:.0f} / "
              f"{r['lookup_p90_s'] * 1000:.0f} ms | {r['pass_median_s'] * 1000:.0f} / {r['pass_p90_s'] * 1000:.0f} ms "
              f"| {r['lookup_ratio']:.1f} × | {r['inproc_median_ms']:.2f} / {r['inproc_p90_ms']:.2f} ms "
              f"| {r['cold_median_ms']:.2f} / {r['cold_p90_ms']:.2f} ms "
              f"| {r['own_median_s'] * 1000:.0f} / {r['own_p90_s'] * 1000:.0f} ms | {r['own_ratio']:.1f} × |")


if __name__ == "__main__":
    main()
