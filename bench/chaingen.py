"""Realistic ledger chains for benchmarks: mined the way a quiet network mines them — one record per block, every
record from its own RSA-3072 key — so no key or signature cache stays warm.

    python3 bench/chaingen.py N [--out DIR] [--network NAME] [--bits 8]

writes a ledger store (``DIR/ledger-NAME.sqlite3``) holding ``N`` such blocks, which ``ledger serve --data-dir DIR
--network NAME`` can start from. Distinct keys are made fast from a pool of primes: key ``i`` has the modulus
``p_a * q_b`` for the ``i``-th pair of primes from the pool, so ``k`` primes give ``k(k-1)/2`` distinct keys for
the cost of ``k`` prime searches. Such keys share factors and are worthless for secrecy: they exist only here, to
build test chains quickly; the product generates its keys with ``Identity.generate`` alone.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from Crypto.PublicKey import RSA  # noqa: E402
from Crypto.Util.number import getPrime, inverse  # noqa: E402

from ledger.blocks import Block, BlockHeader  # noqa: E402
from ledger.merkle import merkle_root  # noqa: E402
from ledger.miner import mine  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402
from ledger.records import ZERO_HASH, Record, make_register  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402

T0 = 1_700_000_000
E = 65537


def test_identities(count: int) -> Iterator[Identity]:
    """``count`` distinct RSA-3072 identities built from a shared pool of 1536-bit primes (bench-only keys)."""
    primes: list[int] = []
    made = 0
    while made < count:
        p = getPrime(1536)
        if (p - 1) % E == 0:
            continue
        for q in primes:
            n = p * q
            if n.bit_length() != 3072:
                continue
            d = inverse(E, (p - 1) * (q - 1))
            yield Identity(RSA.construct((n, E, d, p, q), consistency_check=False))
            made += 1
            if made == count:
                return
        primes.append(p)


def registration(identity: Identity, index: int, network: str) -> Record:
    """The identity's first record: its own address 10.x.y.z and nickname."""
    ip = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
    return make_register(identity, network=network, seq=0, prev=ZERO_HASH, nickname=f"user{index}", ip=ip,
                         port=8471, ledger_port=8470, issued=T0 + index, lifetime=30 * 86400)


def records(count: int, network: str) -> Iterator[Record]:
    for index, identity in enumerate(test_identities(count)):
        yield registration(identity, index, network)


def blocks(params: NetworkParams, recs: Iterator[Record]) -> Iterator[Block]:
    """One mined block per record, timestamps one second apart after each record's issue time."""
    parent = params.genesis().header
    for i, rec in enumerate(recs):
        header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                             prev_hash=parent.hash, merkle_root=merkle_root([rec.id]), timestamp=T0 + i + 1,
                             target_bits=params.difficulty_bits, nonce=0)
        solved = mine(header, threading.Event())
        assert solved is not None
        yield Block(solved, (rec,))
        parent = solved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, help="records (= blocks) to generate")
    parser.add_argument("--out", type=Path, default=Path("bench-chain"), help="data directory to write")
    parser.add_argument("--network", default="bench")
    parser.add_argument("--bits", type=int, default=8, help="difficulty of the generated network")
    args = parser.parse_args()
    from ledger.local_ledger import store_path
    from ledger.store import Store

    params = NetworkParams(name=args.network, difficulty_bits=args.bits)
    args.out.mkdir(parents=True, exist_ok=True)
    path = store_path(args.out, args.network)
    if path.exists():
        sys.exit(f"{path} exists already; choose another --out")
    start = time.monotonic()
    digest = hashlib.sha256()
    with Store(path) as store:
        store.save_params(params)
        for i, block in enumerate(blocks(params, records(args.count, args.network)), 1):
            store.save_block(block)
            digest.update(block.hash)
            if i % 100 == 0 or i == args.count:
                rate = i / (time.monotonic() - start)
                print(f"\r{i:,}/{args.count:,} blocks ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(f"\nwrote {args.count:,} blocks to {path}; chain digest {digest.hexdigest()[:16]}", file=sys.stderr)


if __name__ == "__main__":
    main()
