"""What an attacker who out-mines an idle network can make a node store by switching it between two branches
(red team 2026-12-07 night): a probe of the ledger core, in process, with simulated time.

    python3 bench/ledger_side_branch_bench.py [--switches 60] [--records 20]

The attacker forks at the node's tip and extends the lighter of two branches A and B until it is heavier, again
and again, ``--seconds`` of simulated time apart; the block at height F+j of either branch carries the same
``--records`` pre-signed relay-only updates (so the records are signed once and verified once: the node's
signature cache). Printed: blocks mined by the attacker, blocks the node stores (main and side), the store's size,
the node's final height against the fork point, and the attacker's signing CPU against the node's CPU. The
figures scale with the block size: 1 MB blocks (about 500 such records) store about 25× more per block.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ledger"))

from ledger.blocks import Block, BlockHeader  # noqa: E402
from ledger.local_ledger import LocalLedger  # noqa: E402
from ledger.records import ZERO_HASH, Record, make_register  # noqa: E402
from tests.conftest import make_identities  # noqa: E402
from tests.ledger.gossip_kit import PARAMS, next_block  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=60)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="simulated time between switches")
    args = parser.parse_args()
    identity = make_identities(1)[0]
    t0 = int(time.time()) - 100_000
    with tempfile.TemporaryDirectory() as tmp:
        ledger = LocalLedger(Path(tmp) / "node", PARAMS)
        now = float(t0)
        parent = PARAMS.genesis().header
        for i in range(8):   # some honest history, final by the time the attack starts
            block = next_block(parent, (), t0 + i)
            ledger.receive_block(block, now)
            parent = block.header
        now += 3600
        ledger.receive_block(block := next_block(parent, (), int(now)), now)
        fork = block.header
        base_size = dir_size(Path(tmp))
        chunks: list[list[Record]] = []
        sign_cpu = 0.0
        seq, prev = 0, ZERO_HASH

        def chunk(j: int) -> list[Record]:
            nonlocal seq, prev, sign_cpu
            while len(chunks) <= j:
                start = cpu()
                batch = []
                for _ in range(args.records):
                    record = make_register(identity, network=PARAMS.name, seq=seq, prev=prev, nickname="spammer",
                                           relay="127.0.0.1:9000", issued=int(now), lifetime=86400)
                    seq, prev = seq + 1, record.id
                    batch.append(record)
                sign_cpu += cpu() - start
                chunks.append(batch)
            return chunks[j]

        branches: dict[str, list[BlockHeader]] = {"A": [], "B": []}
        mined = 0
        node_cpu = 0.0
        for i in range(args.switches):
            name = "A" if i % 2 == 0 else "B"
            other = branches["B" if name == "A" else "A"]
            mine = branches[name]
            step = 0
            while len(mine) <= len(other):
                tip = mine[-1] if mine else fork
                step += 1
                block: Block = next_block(tip, chunk(len(mine)), max(int(now) + step, tip.timestamp + 1))
                mined += 1
                start = cpu()
                result = ledger.receive_block(block, now)
                node_cpu += cpu() - start
                if result.status != "added":
                    raise SystemExit(f"switch {i}: {result.status} {result.reason}")
                mine.append(block.header)
            now += args.seconds
        size = dir_size(Path(tmp))
        stored = ledger.chain.block_count()
        final = ledger.chain.final_height
        print(f"switches {args.switches}, {args.seconds:.0f} s apart ({args.switches * args.seconds / 60:.0f} min "
              f"simulated); {args.records} records a block")
        print(f"attacker: {mined} blocks mined, {sign_cpu:.2f} CPU s signing {len(chunks) * args.records} records")
        print(f"node: {stored} blocks held ({stored - ledger.height - 1} off the main chain), store "
              f"{base_size / 1e6:.2f} -> {size / 1e6:.2f} MB, {node_cpu:.2f} CPU s receiving")
        print(f"final height {final}, fork point {fork.height}: "
              f"{'finality stalled at the fork point' if final <= fork.height else 'finality advanced'}")
        ledger.close()


if __name__ == "__main__":
    main()
