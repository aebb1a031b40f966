"""Child process for the crash-safety test: appends blocks and pending records to a LocalLedger in a loop,
printing a line after each acknowledged write, until it is killed (or runs out of input; with ``--hold`` it
then waits for stdin to close before closing the ledger)."""

import sys
from pathlib import Path

import msgpack

from ledger.blocks import Block
from ledger.local_ledger import LocalLedger
from ledger.params import NetworkParams
from ledger.records import Record


def main() -> None:
    data_dir, feed = Path(sys.argv[1]), Path(sys.argv[2])
    spec = msgpack.unpackb(feed.read_bytes(), raw=False)
    params = NetworkParams.from_wire(spec["params"])
    blocks = [Block.from_wire(b) for b in spec["blocks"]]
    records = [Record.from_wire(r) for r in spec["pending"]]
    now = spec["now"]
    with LocalLedger(data_dir, params, clock=lambda: now) as ledger:
        print("open", ledger.height, flush=True)
        for i, block in enumerate(blocks):
            result = ledger.receive_block(block, now)
            if result.status not in ("added", "duplicate"):
                raise SystemExit(f"block {i} refused: {result.reason}")
            print("block", block.height, flush=True)
            if i < len(records):
                ledger.submit_record(records[i], now)
                print("record", i, flush=True)
        print("done", flush=True)
        if "--hold" in sys.argv:   # keep the ledger open until stdin closes: a kill can never find it closed
            sys.stdin.read()


if __name__ == "__main__":
    main()
