#!/usr/bin/env python3
"""What keeping the history costs, with and without a passphrase, against baselines of the same run.

- **write**: messages kept per second one transaction each (what the recorder did first, and the baseline: the
  same with ``synchronous = FULL``, SQLite's WAL default) and in bursts of 500 (what the recorder does now);
- **search**: one case-insensitive search over N messages, decrypt-and-scan (the plain store as baseline): the
  first in a process, then the next ones (opened bodies are kept in memory);
- **open**: opening the vault (scrypt at the default cost) — paid once per process start.

    python3 bench/history_bench.py [--messages 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pchat.history import HistoryStore, NewMessage  # noqa: E402
from p2pchat.vault import SCRYPT_N, Vault  # noqa: E402

FP = "ab" * 32


def _store(folder: Path, passphrase: str | None, synchronous: str = "NORMAL") -> HistoryStore:
    store = HistoryStore.in_data_dir(folder, Vault.open(folder, passphrase, scrypt_n=1 << 12))
    store._db.execute(f"PRAGMA synchronous = {synchronous}")
    return store


def write_rates(passphrase: str | None, n: int) -> dict[str, float]:
    rates = {}
    for name, synchronous, burst in (("one per transaction, FULL (baseline)", "FULL", 1),
                                     ("one per transaction, NORMAL", "NORMAL", 1),
                                     ("bursts of 500, NORMAL (recorder)", "NORMAL", 500)):
        with tempfile.TemporaryDirectory() as tmp:
            store = _store(Path(tmp), passphrase, synchronous)
            count = n if burst > 1 else min(n, 1000)
            start = time.perf_counter()
            for first in range(0, count, burst):
                store.append_many([NewMessage(FP, "out", f"message number {i} of the bench", float(i))
                                   for i in range(first, min(count, first + burst))])
            rates[name] = count / (time.perf_counter() - start)
            store.close()
    return rates


def search_time(passphrase: str | None, n: int) -> tuple[float, float]:
    """(the first search in a fresh process, the median of the next five)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp), passphrase)
        for first in range(0, n, 500):
            store.append_many([NewMessage(FP, "out", f"message number {i} of the bench", float(i))
                               for i in range(first, min(n, first + 500))])
        store.close()
        store = _store(Path(tmp), passphrase)
        times = []
        for _ in range(6):
            start = time.perf_counter()
            store.search("NOT THERE", limit=100)
            times.append(time.perf_counter() - start)
        store.close()
        return times[0], statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    n = parser.parse_args().messages
    for label, passphrase in (("plain", None), ("passphrase", "bench passphrase")):
        rates = write_rates(passphrase, n)
        base = next(iter(rates.values()))
        for name, rate in rates.items():
            print(f"write {label:<10} {name:<38} {rate:>9.0f} msg/s  ×{rate / base:.1f}")
    plain = search_time(None, n)
    sealed = search_time("bench passphrase", n)
    for k, which in enumerate(("first search", "next searches")):
        print(f"search {n} messages, {which}: plain {plain[k] * 1000:.0f} ms (baseline), with passphrase "
              f"{sealed[k] * 1000:.0f} ms ×{sealed[k] / plain[k]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        Vault.open(Path(tmp), "bench passphrase")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            Vault.open(Path(tmp), "bench passphrase")
            times.append(time.perf_counter() - start)
    cost = f"scrypt N=2^{SCRYPT_N.bit_length() - 1}, r=8, p=1"
    print(f"open the vault ({cost}): {statistics.median(times) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
