"""Pruning on a chain with realistic expiries: disk, `ledger serve` start and `ledger verify` of an unpruned store
beside the same store after `ledger prune`, measured in the same run.

    python3 bench/prune_bench.py [--identities 150] [--days 365] [--runs 3] [--keep 288] [--write]

The chain is the one a quiet network mines over ``--days`` days: ``--identities`` nodes, each publishing its
record with the default 7-day lifetime and renewing it when a quarter of the lifetime is left (every 5.25 days,
about 70 renewals a year, as ledger/node.py does), one record per block, every key distinct (bench/chaingen.py's
fast test keys). Blocks are added through ``LocalLedger`` (signatures assumed valid, every other rule checked) so
the store has its checkpoint, as a node's store does. Then, on two copies of it:

- *unpruned*: compacted with SQLite's ``VACUUM`` (so both files are compared without free pages);
- *pruned*: ``python -m ledger prune --prune-keep KEEP`` (prunes, then compacts), timed;

and for each, alternated ``--runs`` times: ``ledger serve --no-mine`` until it logs "listening" (median) and its
RSS, beside ``python -c pass``; an in-process ``LocalLedger`` open and lookup by IP with proof; ``verify_store``
(the unpruned one with one process per core, the pruned one checks what it keeps). With ``--write`` the table
replaces the section "### Pruning: latest run of bench/prune_bench.py" in docs/benchmarks.md. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaingen import test_identities  # noqa: E402  (bench/ is on sys.path when run as a script)
from ledger_scale_bench import env, lookups, serve_until_listening, timed_run  # noqa: E402
from report import write_section  # noqa: E402

from ledger.blocks import Block, BlockHeader  # noqa: E402
from ledger.local_ledger import LocalLedger, store_path, verify_store, verify_workers  # noqa: E402
from ledger.merkle import merkle_root  # noqa: E402
from ledger.miner import mine  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402
from ledger.prune import PruneState  # noqa: E402
from ledger.records import ZERO_HASH, Record, make_register  # noqa: E402

SECTION = "### Pruning: latest run of bench/prune_bench.py"
NETWORK = "bench"
LIFETIME = 7 * 86400
RENEW_EVERY = LIFETIME * 3 // 4   # ledger/node.py renews with a quarter of the lifetime left


def build_chain(out: Path, identities: int, days: int) -> tuple[int, int]:
    """Write the chain (see the module docstring) into ``out``; returns (blocks, identities)."""
    import threading

    params = NetworkParams(name=NETWORK, difficulty_bits=8)
    now = int(time.time())
    start = now - days * 86400 - 3600
    keys = list(test_identities(identities))
    rng = random.Random(12)
    offsets = [rng.randrange(RENEW_EVERY) for _ in range(identities)]   # when each node first published
    events = sorted((start + offsets[i] + k * RENEW_EVERY, i) for i in range(identities)
                    for k in range(days * 86400 // RENEW_EVERY + 1) if start + offsets[i] + k * RENEW_EVERY < now - 120)
    latest: dict[int, Record] = {}
    stop = threading.Event()
    made = 0
    with LocalLedger(out, params, clock=lambda: float(now)) as ledger:
        parent = ledger.chain.tip
        batch: list[Block] = []
        last_time = 0
        for at, i in events:
            prev = latest.get(i)
            record = make_register(keys[i], network=NETWORK, seq=prev.seq + 1 if prev else 0,
                                   prev=prev.id if prev else ZERO_HASH, nickname=f"user{i}",
                                   ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", port=8471, ledger_port=8470,
                                   relay=None, issued=at, lifetime=LIFETIME)
            latest[i] = record
            stamp = max(at + 1, last_time + 1)
            last_time = stamp
            header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                                 prev_hash=parent.hash, merkle_root=merkle_root([record.id]), timestamp=stamp,
                                 target_bits=params.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            batch.append(Block(solved, (record,)))
            parent = solved
            made += 1
            if len(batch) == 500:
                results = ledger.receive_blocks(batch, now, assume_valid=True)
                assert all(r.status == "added" for r in results), [r.reason for r in results if r.status != "added"]
                batch = []
                print(f"\rchain: {made:,}/{len(events):,} blocks", end="", file=sys.stderr, flush=True)
        if batch:
            assert all(r.status == "added" for r in ledger.receive_blocks(batch, now, assume_valid=True))
    print(file=sys.stderr)
    return made, identities


def file_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20


def measure(args: argparse.Namespace, work: Path) -> dict[str, object]:
    source = work / "source"
    started = time.perf_counter()
    blocks, identities = build_chain(source, args.identities, args.days)
    print(f"built {blocks:,} blocks in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    params = NetworkParams(name=NETWORK, difficulty_bits=8)
    host = f"127.{random.randint(64, 250)}.{random.randint(0, 250)}.{random.randint(2, 250)}"
    port = random.randint(20000, 60000)
    serve_until_listening(source, NETWORK, host, port)   # creates the node's key once; both copies share it
    dirs = {"unpruned": work / "unpruned", "pruned": work / "pruned"}
    for d in dirs.values():
        shutil.copytree(source, d, ignore=shutil.ignore_patterns("*.lock"))
    out: dict[str, object] = {"blocks": blocks, "identities": identities, "days": args.days, "keep": args.keep}
    with sqlite3.connect(store_path(dirs["unpruned"], NETWORK)) as conn:
        conn.execute("VACUUM")
    out["unpruned_mib"] = file_mib(store_path(dirs["unpruned"], NETWORK))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ledger", "prune", "--data-dir", str(dirs["pruned"]), "--network", NETWORK,
                    "--prune-keep", str(args.keep)], check=True, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=3600)
    out["prune_s"] = time.perf_counter() - t
    out["pruned_mib"] = file_mib(store_path(dirs["pruned"], NETWORK))
    with LocalLedger(dirs["pruned"], params) as ledger:
        state = PruneState.of(ledger.store)
        out.update(prune_height=state.height, pruned_records=state.records, height=ledger.height)
    starts: dict[str, list[float]] = {k: [] for k in dirs}
    rss: dict[str, list[float]] = {k: [] for k in dirs}
    bare: list[float] = []
    for _ in range(args.runs):
        bare.append(timed_run([sys.executable, "-c", "pass"]))
        for name, d in dirs.items():
            s, r, _ = serve_until_listening(d, NETWORK, host, port)
            starts[name].append(s)
            rss[name].append(r)
    out["pass_s"] = statistics.median(bare)
    for name, d in dirs.items():
        out[f"{name}_start"] = statistics.median(starts[name])
        out[f"{name}_rss"] = statistics.median(rss[name])
        opened, p50, p99, _, _ = lookups(d, params)
        out.update({f"{name}_open": opened, f"{name}_p50": p50, f"{name}_p99": p99})
        t = time.perf_counter()
        report = verify_store(store_path(d, NETWORK), params, workers=verify_workers())
        out[f"{name}_verify"] = time.perf_counter() - t
        assert report.ok, report.summary()
        print(f"{name}: start {out[f'{name}_start']:.2f} s, verify {out[f'{name}_verify']:.1f} s", file=sys.stderr)
    return out


def table(r: dict[str, object]) -> str:
    def ratio(a: str, b: str) -> str:
        x, y = r[a], r[b]
        assert isinstance(x, float) and isinstance(y, float)
        return f"{x / y:.2f}"

    lines = [SECTION, "",
             f"`python3 bench/prune_bench.py --identities {r['identities']} --days {r['days']} --keep {r['keep']}`, "
             f"{time.strftime('%Y-%m-%d')}: {r['blocks']:,} blocks, one record each (every node renews every 5.25 "
             f"days), {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores shared "
             f"with other work. `ledger prune` pruned up to block {r['prune_height']:,} of {r['height']:,} and "
             f"dropped {r['pruned_records']:,} superseded records in {r['prune_s']:.1f} s (compaction included).", "",
             "| measure | unpruned (same run) | pruned | pruned / unpruned |", "|---|---|---|---|"]
    rows = [("store file after VACUUM (MiB)", "mib", ".1f"),
            ("`ledger serve` start to listening, median (s)", "start", ".2f"),
            ("`ledger serve` RSS once listening (MiB)", "rss", ".0f"),
            ("LocalLedger open in process (s)", "open", ".3f"),
            ("lookup by IP with proof, p50 (ms)", "p50", ".3f"),
            ("lookup by IP with proof, p99 (ms)", "p99", ".3f"),
            ("`ledger verify` (s; pruned: what is kept)", "verify", ".1f")]
    for name, key, fmt in rows:
        a, b = r[f"unpruned_{key}"], r[f"pruned_{key}"]
        assert isinstance(a, float) and isinstance(b, float)
        lines.append(f"| {name} | {format(a, fmt)} | {format(b, fmt)} | "
                     f"{ratio(f'pruned_{key}', f'unpruned_{key}')} |")
    lines.append(f"| — baseline `python -c pass` (s) | {r['pass_s']:.3f} | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=150)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=int, default=288)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-prune-") as tmp:
        result = measure(args, Path(tmp))
    text = table(result)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
