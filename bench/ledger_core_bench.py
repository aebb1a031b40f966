"""Ledger core benchmark: mining hash rate, record validation rate, SQLite block appends, and the core's share of
an initial sync, on a chain mined the way a quiet network mines it (one record per block, every record from its
own key: bench/chaingen.py). Each figure is compared with a baseline measured in the same run.

    python3 bench/ledger_core_bench.py [--quick] [--no-write]

Appends the table to docs/benchmarks.md under "## Ledger core" (replacing that section if present) unless
--no-write is given.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chaingen  # noqa: E402  (bench/ is on sys.path when run as a script)
from report import write_section  # noqa: E402

from ledger.blocks import HEADER_SIZE, NONCE_SIZE, Block, BlockHeader  # noqa: E402
from ledger.chain import Chain  # noqa: E402
from ledger.local_ledger import LocalLedger  # noqa: E402
from ledger.miner import mine  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402
from ledger.records import Record, clear_caches  # noqa: E402
from ledger.store import Store  # noqa: E402

NET = "bench"
T0 = 1_700_000_000
SECTION = "## Ledger core"


def best_of(runs: int, fn) -> float:
    return min(fn() for _ in range(runs))


# --- 1. mining ---------------------------------------------------------------------------------------------

def bench_mining(hashes: int, rounds: int) -> tuple[float, float]:
    header = BlockHeader(version=1, network_id=b"\x01" * 32, height=7, prev_hash=b"\x02" * 32,
                         merkle_root=b"\x03" * 32, timestamp=T0, target_bits=64, nonce=0)
    prefix = header.packed[:HEADER_SIZE - NONCE_SIZE]

    def baseline() -> float:
        base = hashlib.sha256(prefix)
        start = time.perf_counter()
        for n in range(hashes):
            h = base.copy()
            h.update(n.to_bytes(8, "big"))
            h.digest()
        return time.perf_counter() - start

    def miner() -> float:
        start = time.perf_counter()
        result = mine(header, threading.Event(), max_hashes=hashes)
        elapsed = time.perf_counter() - start
        assert result is None or result.meets_target()
        return elapsed

    # Many short interleaved rounds, best of each: the machine is shared, so single runs swing by ±50 %.
    base_t, mine_t = [], []
    for i in range(rounds):  # alternate which goes first, so neither always runs on a warmer/colder CPU
        if i % 2:
            mine_t.append(miner())
            base_t.append(baseline())
        else:
            base_t.append(baseline())
            mine_t.append(miner())
    return hashes / min(base_t), hashes / min(mine_t)


# --- 2. record validation ----------------------------------------------------------------------------------

def bench_validation(params: NetworkParams, records: list[Record], rounds: int) -> dict[str, float]:
    wires = [r.to_wire() for r in records]

    def full(cold: bool) -> float:
        if cold:
            clear_caches()
        chain = Chain(params)
        state = chain.bindings.overlay()
        start = time.perf_counter()
        for wire in wires:
            rec = Record.from_wire(wire)
            rec.verify_signatures(NET)
            state.apply(rec, T0 + 10_000, None, None, None)
        return len(wires) / (time.perf_counter() - start)

    def signature_only_baseline() -> float:
        """Bare RSA-PSS verification through the crypto module, keys pre-parsed: the floor of cold validation."""
        from p2pchat.foundation import crypto
        keys = {r.key: crypto.load_public(r.key) for r in records}
        data = [(keys[r.key], r.signing_bytes(NET), r.sig) for r in records]
        start = time.perf_counter()
        for key, payload, sig in data:
            crypto.verify(key, "ledger-record", payload, sig)
        return len(data) / (time.perf_counter() - start)

    cold, cached, floor = [], [], []
    for _ in range(rounds):  # interleaved, best of each (shared machine)
        floor.append(signature_only_baseline())
        cold.append(full(True))
        cached.append(full(False))
    return {"cold": max(cold), "cached": max(cached), "verify_floor": max(floor)}


# --- 3. SQLite appends and 4. sync ---------------------------------------------------------------------------

def bench_store(blocks: list[Block]) -> tuple[float, float]:
    """Blocks/s appended by Store.save_block (one transaction each), vs raw sqlite INSERTs in one transaction
    per row with the same pragmas (the baseline)."""
    import sqlite3
    with tempfile.TemporaryDirectory() as tmp:
        with Store(Path(tmp) / "s.sqlite3") as store:
            start = time.perf_counter()
            for block in blocks:
                store.save_block(block)
            ours = len(blocks) / (time.perf_counter() - start)
        conn = sqlite3.connect(Path(tmp) / "raw.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, hash BLOB UNIQUE, body BLOB)")
        payloads = [(b.hash, b.header.packed + b"x" * sum(r.size for r in b.records)) for b in blocks]
        start = time.perf_counter()
        for h, body in payloads:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t(hash, body) VALUES(?, ?)", (h, body))
            conn.execute("COMMIT")
        raw = len(blocks) / (time.perf_counter() - start)
        conn.close()
    return ours, raw


def bench_sync(params: NetworkParams, blocks: list[Block]) -> tuple[float, float, int]:
    """Seconds for LocalLedger.receive_block over the whole chain (cold signature cache, SQLite included),
    the in-memory Chain alone, and the resulting height."""
    clear_caches()
    chain = Chain(params)
    start = time.perf_counter()
    for block in blocks:
        chain.add_block(block, T0 + len(blocks))
    chain_s = time.perf_counter() - start
    clear_caches()
    with tempfile.TemporaryDirectory() as tmp, LocalLedger(Path(tmp), params) as ledger:
        start = time.perf_counter()
        for block in blocks:
            result = ledger.receive_block(block, T0 + len(blocks))
            assert result.status == "added", result.reason
        total = time.perf_counter() - start
        height = ledger.height
    return total, chain_s, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    hashes, rounds = (100_000, 4) if args.quick else (131_072, 20)
    n_records = 200 if args.quick else 3000
    params = NetworkParams(name=NET, difficulty_bits=8)

    print(f"mining: {hashes} hashes per run, best of {rounds} interleaved rounds …", flush=True)
    base_rate, mine_rate = bench_mining(hashes, rounds)

    print(f"generating {n_records} records, each from its own key …", flush=True)
    records = list(chaingen.records(n_records, NET))
    print("record validation …", flush=True)
    validation = bench_validation(params, records, 2 if args.quick else 4)

    n_blocks = len(records)
    print(f"mining a {n_blocks}-block chain at {params.difficulty_bits} bits, one record per block …", flush=True)
    blocks = list(chaingen.blocks(params, iter(records)))
    print("SQLite appends …", flush=True)
    store_rate, raw_rate = bench_store(blocks[:2000])
    print("sync through LocalLedger …", flush=True)
    sync_s, chain_s, height = bench_sync(params, blocks)
    assert height == n_blocks

    rows = [
        ("Mining hash rate (ledger.miner.mine)", f"{mine_rate / 1e6:.3f} MH/s",
         f"bare hashlib loop {base_rate / 1e6:.3f} MH/s", f"{mine_rate / base_rate:.2f}", "≥ 0.8"),
        ("Record validation, cold (parse + RSA-PSS verify + binding rules)", f"{validation['cold']:,.0f} rec/s",
         f"bare RSA-PSS verify {validation['verify_floor']:,.0f} /s",
         f"{validation['cold'] / validation['verify_floor']:.2f}", "≥ 4,000 rec/s"),
        ("Record validation, signature cached (gossiped before mined)", f"{validation['cached']:,.0f} rec/s",
         f"bare RSA-PSS verify {validation['verify_floor']:,.0f} /s",
         f"{validation['cached'] / validation['verify_floor']:.1f}", "≥ 4,000 rec/s"),
        ("SQLite block append (Store.save_block, 1 txn/block)", f"{store_rate:,.0f} blocks/s",
         f"raw sqlite3 INSERT, 1 txn/row {raw_rate:,.0f} /s", f"{store_rate / raw_rate:.2f}", "—"),
        (f"Core share of initial sync, {n_blocks:,} blocks / {len(records):,} records "
         "(LocalLedger.receive_block, cold)", f"{sync_s:.2f} s",
         f"in-memory Chain alone {chain_s:.2f} s", f"{sync_s / chain_s:.2f}", "≤ 10 s end-to-end"),
    ]
    header = ("| Measure | Result | Baseline (same run) | Ratio | Goal |", "|---|---|---|---|---|")
    table = "\n".join([*header, *(f"| {' | '.join(r)} |" for r in rows)])
    print()
    print(table)
    if args.quick or args.no_write:
        return
    note = (
        f"{SECTION}\n\nMeasured by `python3 bench/ledger_core_bench.py` on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}). "
        f"Records are {n_records:,} RSA-3072 registrations, each from its own key, one per block "
        "(`bench/chaingen.py`); \"cold\" clears the verified-signature and parsed-key caches first, so every record "
        "parses its key and verifies its signature; \"cached\" is the path of a record that was verified when it was "
        "gossiped and is validated again inside a block. Sync figures exclude the network transfer (see the network "
        "section for end-to-end sync). The machine's cores are shared with other jobs, so single runs swing by up "
        "to ±50 %: each rate is the best of several interleaved rounds of the measure and its baseline.\n\n"
        + table + "\n")
    print(f"\nwritten to {write_section(SECTION, note)}")


if __name__ == "__main__":
    main()
