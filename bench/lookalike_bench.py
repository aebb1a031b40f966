#!/usr/bin/env python3
"""What marking look-alikes of contacts costs the terminal (p2pchat/terminal_names.py), against its baselines in the
same run, over a real contact store (SQLite, sealed by a vault as a data directory with a passphrase is) of N
contacts:

- reading the store again (``ContactStore.all`` and the index of the names' keys) against ``ContactStore.all``
  alone: what the terminal pays at most once every ``REREAD_SECONDS``;
- finding the contact a name reads like through the index (``NameIndex.twin``) against comparing the name with
  every contact (``looks_alike`` pairwise);
- a marked sender label (``describe_name`` with the mark) against the plain label printed before (``one_line``).

    python3 bench/lookalike_bench.py [--contacts 500] [--rounds 7]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pchat.contacts import ContactStore
from p2pchat.display import one_line
from p2pchat.foundation import crypto
from p2pchat.lookalike import looks_alike
from p2pchat.terminal_names import PeerNames, describe_name
from p2pchat.vault import Vault


def median_seconds(fn: Callable[[], object], rounds: int, repeat: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - start) / repeat)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault.open(Path(tmp), "bench", scrypt_n=1 << 12)
        store = ContactStore.in_data_dir(Path(tmp), vault)
        for n in range(args.contacts):
            der = f"public key {n}".encode()
            store.record_chat(der, crypto.fingerprint(der), nickname=f"student{n:04d}",
                              ip=f"127.0.{n // 250}.{n % 250}", address=None)
        names = PeerNames(store, clock=lambda: 0.0)      # read once; index() never reads again
        index = names.index()
        contacts = [c for c in store.all() if c.replaced_by is None]
        peer, fp = "STUDENT0l23", "ab" * 16        # reads like student0123 ("l" like "1"), on another key
        assert names.twin(peer, fp) == "student0123"
        twin = names.twin(peer, fp)
        peers = itertools.cycle([f"STUDENT{n:04d}".replace("1", "l") for n in range(args.contacts)])
        rows = [
            ("read the store again", median_seconds(lambda: PeerNames(store).index(), args.rounds, 3),
             "ContactStore.all alone", median_seconds(store.all, args.rounds, 3)),
            ("the contact a name reads like (index)", median_seconds(lambda: index.twin(next(peers), fp),
                                                                     args.rounds, 200),
             "compared with every contact", median_seconds(
                 lambda: next((c for c in contacts if looks_alike(peer, c.nickname)), None), args.rounds, 3)),
            ("a marked sender label", median_seconds(lambda: describe_name(peer, "?", twin), args.rounds, 2000),
             "the plain label (before)", median_seconds(lambda: one_line(peer), args.rounds, 2000)),
        ]
        store.close()
    print(f"{args.contacts} contacts, median of {args.rounds} rounds")
    for what, t, base, bt in rows:
        print(f"  {what:<40} {t * 1e6:>10.1f} µs   {base:<28} {bt * 1e6:>10.1f} µs   ratio {t / bt:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
