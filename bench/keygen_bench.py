#!/usr/bin/env python3
"""First-run key generation: the distribution of RSA-3072 generation time, one process versus the race.

- single: pycryptodome's ``RSA.generate(3072)`` (``crypto.generate_rsa``) in this process, ``--keys`` times;
- race: :func:`p2pchat.foundation.keygen.generate_identity_key` — one full generation per core in separate
  processes, the first finished wins and the others are stopped (what the first run does).

The time is the prime search: two 1536-bit primes, each found by drawing random odd candidates, sieving them
by small primes and running Miller–Rabin rounds on the survivors; the number of candidates before a prime is
roughly geometric (mean ≈ ln(2^1536)/2 ≈ 530 odd numbers), so the time has a long tail. The race takes the
minimum of two independent draws: its p99 is the single search's p90. Goal: p99 ≤ 2 s.

    python3 bench/keygen_bench.py [--keys 50] [--mode single|race|both]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gui.lag import percentile  # noqa: E402
from p2pchat.foundation import crypto  # noqa: E402


def line(name: str, times: list[float]) -> str:
    qs = "  ".join(f"p{q} {percentile(times, q):.2f} s" for q in (50, 90, 99))
    return f"{name:<8} n={len(times)}  {qs}  max {max(times):.2f} s  mean {sum(times) / len(times):.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--mode", choices=("single", "race", "both"), default="both")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    results = {}
    modes = ("single", "race") if args.mode == "both" else (args.mode,)
    for mode in modes:
        times = []
        for _ in range(args.keys):
            start = time.perf_counter()
            if mode == "single":
                crypto.generate_rsa()
            else:
                from p2pchat.foundation.keygen import generate_identity_key

                generate_identity_key()
            times.append(time.perf_counter() - start)
        results[mode] = times
        print(line(mode, times), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
