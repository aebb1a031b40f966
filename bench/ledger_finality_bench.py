"""Local-finality benchmark: the cost of the finality check per added block, at several chain lengths, against a
baseline chain in the same run whose finality never moves (same code path minus the check).

    python3 bench/ledger_finality_bench.py [--quick]

Prints, per chain length n: the time of one finality check (bisection over the main chain's connection times),
the time to add one block on the tip with finality and without, and their ratio. Growth with n shows whether
the check is O(log n) as designed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.blocks import Block, BlockHeader  # noqa: E402
from ledger.chain import Chain, FinalityPolicy  # noqa: E402
from ledger.merkle import EMPTY_ROOT  # noqa: E402
from ledger.miner import mine  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402

PARAMS = NetworkParams(name="bench", difficulty_bits=1)
T0 = 1_700_000_000


class NoFinality(Chain):
    """Baseline: the same chain with the finality check removed."""

    def _advance_final(self, now: float) -> bool:
        return False


def blocks(n: int) -> list[Block]:
    out: list[Block] = []
    prev = PARAMS.genesis().header
    stop = threading.Event()
    for i in range(n):
        header = BlockHeader(version=PARAMS.version, network_id=PARAMS.network_id, height=prev.height + 1,
                             prev_hash=prev.hash, merkle_root=EMPTY_ROOT, timestamp=T0 + i,
                             target_bits=PARAMS.difficulty_bits, nonce=0)
        solved = mine(header, stop)
        assert solved is not None
        out.append(Block(solved, ()))
        prev = solved
    return out


def per_block(chain: Chain, tail: list[Block], now: float) -> float:
    start = time.perf_counter()
    for block in tail:
        assert chain.add_block(block, now).status == "added"
    return (time.perf_counter() - start) / len(tail)


def interleaved(with_f: Chain, base: Chain, tail: list[Block], now: float, chunks: int) -> tuple[float, float]:
    """Per-block add time of both chains, measured in alternating chunks (best chunk of each), so that load from
    other processes on a shared machine hits both alike."""
    size = len(tail) // chunks
    best_with = best_base = float("inf")
    for i in range(chunks):
        part = tail[i * size:(i + 1) * size]
        best_with = min(best_with, per_block(with_f, part, now))
        best_base = min(best_base, per_block(base, part, now))
    return best_with, best_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller chains")
    args = parser.parse_args()
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    tail_len = 2000
    all_blocks = blocks(max(sizes) + tail_len)
    policy = FinalityPolicy(depth=10**9, seconds=10**9)  # nothing final: the check runs its full bisection
    print(f"{'n':>8} {'check µs':>9} {'add µs (finality)':>18} {'add µs (baseline)':>18} {'ratio':>6}")
    for n in sizes:
        with_f, base = Chain(PARAMS, policy), NoFinality(PARAMS, policy)
        for chain in (with_f, base):
            for block in all_blocks[:n]:
                chain.add_block(block, T0 + n)
        reps = 20_000
        start = time.perf_counter()
        for _ in range(reps):
            with_f._advance_final(T0 + n)
        check = (time.perf_counter() - start) / reps
        tail = all_blocks[n:n + tail_len]
        t_with, t_base = interleaved(with_f, base, tail, T0 + n + tail_len, chunks=20)
        print(f"{n:>8} {check * 1e6:>9.2f} {t_with * 1e6:>18.1f} {t_base * 1e6:>18.1f} {t_with / t_base:>6.3f}")


if __name__ == "__main__":
    main()
