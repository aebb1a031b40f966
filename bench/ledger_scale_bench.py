"""Ledger at scale, on realistic chains from bench/chaingen.py (one record per block, every record its own RSA-3072
key): ``ledger serve`` start to listening, its memory, in-process lookup latency and ``ledger verify`` throughput,
each beside a baseline measured in the same run.

    python3 bench/ledger_scale_bench.py CHAIN_DIR [CHAIN_DIR ...] [--network bench] [--runs 3] [--no-verify]
                                        [--no-write]

Each CHAIN_DIR is a data directory written by ``bench/chaingen.py N --out CHAIN_DIR``; it is copied first (the
original stays a store without a stored checkpoint). Per chain:

- *first start*: ``LocalLedger`` opening the copy; a store without a checkpoint replays every block once and
  writes the checkpoint (what an upgrade costs, and what every start cost before the checkpoint); a store that
  has one (e.g. a copy kept after an earlier run) skips this row;
- *start to listening*: ``python -m ledger serve --no-mine`` on a loopback address until it logs "listening"
  (median of ``--runs``, after one unmeasured start that creates the node's key), each after a clean shutdown
  (SIGTERM), and each once more after the previous node was killed with SIGKILL (no clean-shutdown mark: the
  whole file is checked at open), beside ``python -c pass`` and a bare ``sqlite3`` open with the whole-file
  ``PRAGMA quick_check`` (what every start ran before the clean-shutdown mark);
- *RSS*: the serving process's VmRSS and peak VmHWM once listening;
- *lookup p50/p99*: ``LocalLedger.lookup`` by IP (record and Merkle proof) in process, for random bound
  addresses, beside a bare SQLite primary-key query on the same file;
- *verify*: ``verify_store`` with one process per core (signatures in parallel, rules in order) and with one
  process, alternated twice, best of each, beside a bare PSS-verify loop on one core over the same records with
  their keys parsed beforehand.

``--synthetic N`` also builds, in a temporary directory, an N-block chain shaped like chaingen's (one register
record per block, distinct 3072-bit-sized keys, addresses and nicknames, mined blocks) whose records carry random
bytes in place of keys and signatures: a start, its memory and lookups never check signatures (they were checked
before a block was stored), so these figures hold for a real chain of that length, while ``verify`` is skipped
for it. It exists because chaingen makes about 6–15 real blocks a second here, so 100k real blocks take hours;
the synthetic generator makes 1,000–2,000 blocks a second (1,000,000 in about 12 minutes). A store it wrote has no
checkpoint, so the bench's first start replays it once (≈ 6.5 minutes and ≈ 7 GiB of memory at 1,000,000); pass
an existing CHAIN_DIR to measure the same chain again without building it.

Writes the table to docs/benchmarks.md under "### Ledger at scale: latest run of bench/ledger_scale_bench.py" (the last
subsection of "## Ledger at scale", whose analysis it leaves alone) unless --no-write. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import signal
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

from report import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)

from ledger.local_ledger import LocalLedger, store_path, verify_store, verify_workers  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402
from ledger.records import SIGN_CONTEXT, Record, public_key  # noqa: E402
from p2pchat.foundation import crypto  # noqa: E402

SECTION = "### Ledger at scale: latest run of bench/ledger_scale_bench.py"
LOOKUPS = 2000
VERIFY_BASELINE = 1000


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def timed_run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    return time.perf_counter() - start


def proc_memory(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def serve_until_listening(data_dir: Path, network: str, host: str, port: int,
                          stop: signal.Signals = signal.SIGTERM) -> tuple[float, float, float]:
    """Start ``ledger serve``; returns (seconds until it logged "listening", RSS MiB, peak RSS MiB). ``stop`` is
    the signal that ends it: SIGTERM closes the store cleanly, SIGKILL leaves the next start to check it all."""
    args = [sys.executable, "-m", "ledger", "serve", "--data-dir", str(data_dir), "--network", network,
            "--host", host, "--port", str(port), "--no-mine", "-v"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    listening = threading.Event()
    seen: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "listening on" in line:
                listening.set()

    reader = threading.Thread(target=read, name="serve-output")
    reader.start()
    try:
        deadline = time.monotonic() + 900
        while not listening.wait(0.01):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ledger serve did not start:\n" + "".join(seen[-20:]))
        elapsed = time.perf_counter() - start
        rss, hwm = proc_memory(proc.pid)
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join()
    return elapsed, rss, hwm


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lookups(data_dir: Path, params: NetworkParams) -> tuple[float, float, float, float, float]:
    """In-process lookup by IP with proof: (open seconds, p50 ms, p99 ms), and the bare SQLite p50/p99 ms."""
    path = store_path(data_dir, params.name)
    start = time.perf_counter()
    with LocalLedger(data_dir, params) as ledger:
        opened = time.perf_counter() - start
        ips = list(ledger.chain.bindings.by_ip)
        rng = random.Random(7)
        picks = [rng.choice(ips) for _ in range(LOOKUPS)]
        now = time.time()
        times = []
        for ip in picks:
            t = time.perf_counter()
            answer = ledger.lookup("ip", ip, 0)  # at time 0 every chaingen record is live
            times.append(time.perf_counter() - t)
            assert answer is not None
        del now
    conn = sqlite3.connect(path)
    hashes = [row[0] for row in conn.execute("SELECT hash FROM blocks ORDER BY RANDOM() LIMIT ?", (LOOKUPS,))]
    bare = []
    for h in hashes:
        t = time.perf_counter()
        conn.execute("SELECT records FROM blocks WHERE hash=?", (h,)).fetchone()
        bare.append(time.perf_counter() - t)
    conn.close()
    ms = 1000
    return (opened, percentile(times, 0.5) * ms, percentile(times, 0.99) * ms, percentile(bare, 0.5) * ms,
            percentile(bare, 0.99) * ms)


def bare_verify_rate(data_dir: Path, params: NetworkParams) -> float:
    """Records/s of a bare PSS-verify loop on one core (keys parsed beforehand, no cache, no rules)."""
    conn = sqlite3.connect(store_path(data_dir, params.name))
    import msgpack

    records: list[Record] = []
    for (blob,) in conn.execute("SELECT records FROM blocks ORDER BY n LIMIT ?", (VERIFY_BASELINE,)):
        records.extend(Record.from_wire(w) for w in msgpack.unpackb(blob, raw=False))
    conn.close()
    work = [(public_key(r.key), r.signing_bytes(params.name), r.sig) for r in records]
    start = time.perf_counter()
    for key, data, sig in work:
        crypto.verify(key, SIGN_CONTEXT, data, sig)
    return len(work) / (time.perf_counter() - start)


def synthetic_chain(count: int, out: Path, network: str = "bench") -> Path:
    """A chaingen-shaped chain of ``count`` blocks with unsigned records (see the module docstring)."""
    import threading as _threading

    from ledger.blocks import Block, BlockHeader
    from ledger.merkle import merkle_root
    from ledger.miner import mine
    from ledger.records import ZERO_HASH
    from ledger.store import Store

    params = NetworkParams(name=network, difficulty_bits=8)
    out.mkdir(parents=True, exist_ok=True)
    t0 = 1_700_000_000
    rng = random.Random(count)
    parent = params.genesis().header
    stop = _threading.Event()
    with Store(store_path(out, network)) as store:
        store.save_params(params)
        batch: list[Block] = []
        for i in range(count):
            key = b"\x30\x82\x01\xa2" + rng.randbytes(418)   # the size of an RSA-3072 SubjectPublicKeyInfo
            rec = Record(kind="register", key=key, seq=0, prev=ZERO_HASH, nickname=f"user{i}",
                         ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", port=8471, ledger_port=8470, relay=None,
                         issued=t0 + i, expires=t0 + i + 30 * 86400, sig=rng.randbytes(384))
            header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                                 prev_hash=parent.hash, merkle_root=merkle_root([rec.id]), timestamp=t0 + i + 1,
                                 target_bits=params.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            batch.append(Block(solved, (rec,)))
            parent = solved
            if len(batch) == 1000 or i == count - 1:
                store.save_blocks(batch)
                batch = []
                print(f"\rsynthetic chain: {i + 1:,}/{count:,} blocks", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def bench_chain(chain_dir: Path, network: str, runs: int, do_verify: bool | None, work: Path) -> dict[str, object]:
    """Figures of one chain; ``do_verify`` None marks a synthetic chain (no verify)."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / chain_dir.name
    shutil.copytree(chain_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    path = store_path(copy, network)
    params = NetworkParams(name=network, difficulty_bits=8)
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT value FROM meta WHERE key='params'").fetchone()
        records = conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
    import msgpack

    params = NetworkParams.from_wire(msgpack.unpackb(stored[0], raw=False))
    out: dict[str, object] = {"chain": chain_dir.name, "records": records, "synthetic": do_verify is None,
                              "file_mib": path.stat().st_size / 2**20}
    with sqlite3.connect(path) as conn:
        checkpointed = conn.execute("SELECT 1 FROM meta WHERE key='derived'").fetchone() is not None
    start = time.perf_counter()
    with LocalLedger(copy, params) as ledger:
        if not checkpointed:   # a store written before checkpoints (or by the generators): replayed once
            out["first_start"] = time.perf_counter() - start
            assert ledger.rebuilt_checkpoint is not None
            print(f"{chain_dir.name}: first start (rebuild by replay) {out['first_start']:.2f} s", file=sys.stderr)
    host = f"127.{random.randint(64, 250)}.{random.randint(0, 250)}.{random.randint(2, 250)}"
    port = random.randint(20000, 60000)
    serve_until_listening(copy, network, host, port)  # creates the node's key and own record
    starts, unclean, rss, hwm = [], [], [], []
    pass_t, sqlite_t = [], []
    for _ in range(runs):
        pass_t.append(timed_run([sys.executable, "-c", "pass"]))
        sqlite_t.append(timed_run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                                   "c.execute('PRAGMA quick_check').fetchall()", str(path)]))
        s, r, h = serve_until_listening(copy, network, host, port)   # after a clean shutdown (SIGTERM)
        starts.append(s)
        rss.append(r)
        hwm.append(h)
        # Killed: the next start finds no clean-shutdown mark (where the store keeps one) and checks the file.
        serve_until_listening(copy, network, host, port, stop=signal.SIGKILL)
        unclean.append(serve_until_listening(copy, network, host, port)[0])
    out.update(start=statistics.median(starts), unclean_start=statistics.median(unclean),
               pass_start=statistics.median(pass_t), sqlite_open=statistics.median(sqlite_t),
               rss=statistics.median(rss), hwm=max(hwm))
    print(f"{chain_dir.name}: serve start {out['start']:.2f} s (after kill -9: {out['unclean_start']:.2f} s), "
          f"RSS {out['rss']:.0f} MiB", file=sys.stderr)
    opened, p50, p99, bare50, bare99 = lookups(copy, params)
    out.update(open_in_process=opened, lookup_p50=p50, lookup_p99=p99, bare_p50=bare50, bare_p99=bare99)
    if do_verify:
        from ledger.records import clear_caches


        clear_caches()
        out["bare_verify"] = bare_verify_rate(copy, params)
        # Alternated, best of two each: the machine is shared, so a slow round says more about the neighbours.
        rates: dict[int, list[float]] = {verify_workers(): [], 1: []}
        cpu: dict[int, list[tuple[float, float]]] = {w: [] for w in rates}
        for _ in range(2):
            for workers in rates:
                clear_caches()
                before = cpu_seconds()
                t = time.perf_counter()
                report = verify_store(path, params, workers=workers)
                rates[workers].append(report.records / (time.perf_counter() - t))
                after = cpu_seconds()
                cpu[workers].append(((after[0] - before[0]) / report.records * 1e6,
                                     (after[1] - before[1]) / report.records * 1e6))
                assert report.ok, report.summary()
        out["verify_parallel"] = max(rates[verify_workers()])
        out["verify_serial"] = max(rates[1])
        # CPU per record does not depend on what else the shared machine runs (the rates do).
        out["verify_cpu_parallel"] = min(cpu[verify_workers()], key=sum)
        out["verify_cpu_serial"] = min(cpu[1], key=sum)
        print(f"{chain_dir.name}: verify {out['verify_parallel']:.0f} rec/s ({verify_workers()} processes), "
              f"{out['verify_serial']:.0f} rec/s (1), bare PSS {out['bare_verify']:.0f}/s", file=sys.stderr)
    shutil.rmtree(copy)
    return out


def table(results: list[dict[str, object]]) -> str:
    def f(value: object, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "–"

    lines = [SECTION, "",
             f"`python3 bench/ledger_scale_bench.py` on chains from `bench/chaingen.py` (one record per block, every "
             f"record its own RSA-3072 key), {platform.python_implementation()} {platform.python_version()}, "
             f"{os.cpu_count()} cores shared with other work. Baselines are measured in the same run.", "",
             "| measure | " + " | ".join(f"{r['records']:,} records" + (" (synthetic)" if r["synthetic"] else "")
                                        for r in results) + " |",
             "|---|" + "---|" * len(results)]
    rows = [
        ("store file (MiB)", lambda r: f(r["file_mib"], ",.0f")),
        ("first start of an old store: rebuild by replay (s)", lambda r: f(r.get("first_start"), ".2f")),
        ("`ledger serve` start to listening (s)", lambda r: f(r["start"], ".2f")),
        ("`ledger serve` start to listening after a kill -9 (s)", lambda r: f(r["unclean_start"], ".2f")),
        ("— baseline `python -c pass` (s)", lambda r: f(r["pass_start"], ".3f")),
        ("— baseline bare SQLite open + quick_check (s)", lambda r: f(r["sqlite_open"], ".3f")),
        ("— ratio start / `python -c pass`", lambda r: f(r["start"] / r["pass_start"], ".1f")),  # type: ignore
        ("`ledger serve` RSS once listening (MiB)", lambda r: f(r["rss"], ".0f")),
        ("`ledger serve` peak RSS (MiB)", lambda r: f(r["hwm"], ".0f")),
        ("LocalLedger open in process (s)", lambda r: f(r["open_in_process"], ".2f")),
        ("lookup by IP with proof, in process p50 / p99 (ms)",
         lambda r: f"{f(r['lookup_p50'], '.3f')} / {f(r['lookup_p99'], '.3f')}"),
        ("— baseline bare SQLite key query p50 / p99 (ms)",
         lambda r: f"{f(r['bare_p50'], '.3f')} / {f(r['bare_p99'], '.3f')}"),
        ("`ledger verify`, one process per core (rec/s)", lambda r: f(r.get("verify_parallel"), ",.0f")),
        ("`ledger verify`, one process (rec/s)", lambda r: f(r.get("verify_serial"), ",.0f")),
        ("— baseline bare PSS verify, one core (rec/s)", lambda r: f(r.get("bare_verify"), ",.0f")),
        ("`ledger verify` CPU per record, one process per core: parent + workers (µs)",
         lambda r: "–" if "verify_cpu_parallel" not in r else
         f"{r['verify_cpu_parallel'][0]:.0f} + {r['verify_cpu_parallel'][1]:.0f}"),  # type: ignore[index]
        ("`ledger verify` CPU per record, one process (µs)",
         lambda r: "–" if "verify_cpu_serial" not in r else f"{r['verify_cpu_serial'][0]:.0f}"),  # type: ignore[index]
    ]
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chains", nargs="+", type=Path, help="data directories written by bench/chaingen.py")
    parser.add_argument("--network", default="bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--synthetic-dir", type=Path, action="append", default=[], metavar="DIR",
                        help="a chain written by synthetic_chain() earlier (benched like --synthetic)")
    parser.add_argument("--synthetic", type=int, action="append", default=[], metavar="N",
                        help="also bench an N-block chain with unsigned records (start, memory, lookups; no verify)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-scale-") as tmp:
        results = [bench_chain(c, args.network, args.runs, not args.no_verify, Path(tmp)) for c in args.chains]
        for chain in args.synthetic_dir:
            results.append(bench_chain(chain, "bench", args.runs, None, Path(tmp) / "work"))
        for n in args.synthetic:
            chain = synthetic_chain(n, Path(tmp) / f"synthetic-{n}")
            results.append(bench_chain(chain, "bench", args.runs, None, Path(tmp) / "work"))
            shutil.rmtree(chain)
    text = table(results)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
