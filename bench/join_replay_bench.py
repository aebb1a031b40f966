"""The assumed-valid join's replay, in process: blocks/s of applying downloaded bodies, as a joining node does.

    python3 bench/join_replay_bench.py CHAIN_DIR [--blocks 20000] [--frame 32] [--profile out.prof]

``CHAIN_DIR`` holds a ``ledger-<network>.sqlite3`` (a bench/chaingen.py chain, or a bench/ledger_scale_bench.py
synthetic one); it is only read (SQLite ``immutable``), never written. The first ``--blocks`` main-chain blocks are
packed into ``blocks`` frames of ``--frame`` bodies the way a serving peer sends them (outside the timing). Timed,
for each frame, the same steps as the joining node's download and applier (ledger/node.py): decoding the frame
through the ledger protocol's codec, parsing the bodies, checking each against its header's Merkle root, then
handing them to a fresh :class:`~ledger.local_ledger.LocalLedger` (pinned to the last block as its checkpoint)
inside ``batched()`` (``--apply-batch`` bodies a turn, as the node's sync applier) with ``assume_valid=True``
(signatures assumed, every other rule checked, the store written).

Run it from two trees in the same run to compare them (``--root`` imports the ledger code from another
checkout, e.g. ``main``'s); the figure printed is blocks/s, and with ``--baseline-root`` both are printed with
their ratio.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(chain_dir: Path, count: int, frame: int, apply_batch: int, profile: Path | None) -> dict[str, float]:
    import msgpack

    from ledger.blocks import Block
    from ledger.local_ledger import LocalLedger
    from ledger.params import NetworkParams
    from ledger.protocol import LEDGER_PROTOCOL

    path = next(chain_dir.glob("ledger-*.sqlite3"))
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        params = NetworkParams.from_wire(msgpack.unpackb(
            conn.execute("SELECT value FROM meta WHERE key='params'").fetchone()[0], raw=False))
        # Acceptance order is height order on a generated chain (no side branches: checked below).
        rows = conn.execute("SELECT header, records FROM blocks WHERE height <= ? ORDER BY n", (count,)).fetchall()
    finally:
        conn.close()
    frames = []
    for i in range(0, len(rows), frame):
        wires = [{"header": h, "records": msgpack.unpackb(r, raw=False)} for h, r in rows[i:i + frame]]
        frames.append(LEDGER_PROTOCOL.encode_body("blocks", blocks=wires))
    last = Block.from_wire({"header": rows[-1][0], "records": msgpack.unpackb(rows[-1][1], raw=False)})
    if last.height != len(rows):
        raise SystemExit(f"{path} is not one straight chain (side blocks stored): use a generated chain")
    records = sum(len(msgpack.unpackb(r)) for _, r in rows)
    del rows
    with tempfile.TemporaryDirectory(prefix="join-replay-") as tmp:
        ledger = LocalLedger(Path(tmp), params, checkpoint=(last.height, last.hash))
        try:
            prof = None
            if profile is not None:
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            written0 = written()
            per_turn = max(1, apply_batch // frame)
            for i in range(0, len(frames), per_turn):
                blocks = []
                for body in frames[i:i + per_turn]:
                    message = LEDGER_PROTOCOL.decode(body)
                    blocks += [Block.from_wire(w) for w in message.fields["blocks"]]
                for block in blocks:   # what the download scheduler checks before the applier sees a body
                    if block.computed_merkle_root() != block.header.merkle_root:
                        raise SystemExit(f"{block.header.describe()}: Merkle root mismatch")
                with ledger.batched():   # one turn of the node's sync applier
                    for block in blocks:
                        result = ledger.receive_block(block, time.time(), source="bench", assume_valid=True)
                        if result.status != "added":
                            raise SystemExit(f"{block.header.describe()}: {result.status} {result.reason}")
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            wrote = written() - written0
            if prof is not None:
                prof.disable()
                prof.dump_stats(str(profile))
            height = ledger.height
        finally:
            ledger.close()
    if height != last.height:
        raise SystemExit(f"replayed to height {height}, expected {last.height}")
    return {"blocks": float(height), "records": float(records), "wall_s": wall, "cpu_s": cpu,
            "blocks_per_s": height / wall, "blocks_per_cpu_s": height / cpu,
            "written_kib_per_block": wrote / height / 1024}


def written() -> int:
    """Bytes this process has passed to write() so far (Linux ``/proc/self/io`` ``wchar``; 0 elsewhere): what the
    store writes (its WAL and checkpoints), the same from run to run whatever the machine's load."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
    except (OSError, StopIteration, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chain", type=Path)
    parser.add_argument("--blocks", type=int, default=20_000)
    parser.add_argument("--frame", type=int, default=32, help="bodies per blocks frame (the download's batch)")
    parser.add_argument("--apply-batch", type=int, default=256,
                        help="bodies applied per batched() turn (the node's apply_batch)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the timed part here")
    parser.add_argument("--root", type=Path, default=ROOT, help="import the ledger code from this checkout")
    parser.add_argument("--baseline-root", type=Path, help="also measure this checkout, interleaved")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used for --baseline-root)")
    args = parser.parse_args()
    if args.baseline_root is None:
        sys.path.insert(0, str(args.root))
        result = measure(args.chain, args.blocks, args.frame, args.apply_batch, args.profile)
        print(json.dumps(result) if args.json else
              f"{result['blocks']:,.0f} blocks ({result['records']:,.0f} records): {result['wall_s']:.2f} s, "
              f"{result['blocks_per_s']:,.0f} blocks/s ({result['blocks_per_cpu_s']:,.0f} per CPU second), "
              f"{result['written_kib_per_block']:.1f} KiB written a block")
        return
    runs: dict[str, list[dict[str, float]]] = {"after": [], "before": []}
    for _ in range(args.rounds):
        for name, root in (("before", args.baseline_root), ("after", args.root)):
            out = subprocess.run([sys.executable, __file__, str(args.chain), "--blocks", str(args.blocks),
                                  "--frame", str(args.frame), "--apply-batch", str(args.apply_batch),
                                  "--root", str(root), "--json"], check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
            print(name, runs[name][-1], file=sys.stderr)
    print("| round | before: blocks/s (per CPU s) | after: blocks/s (per CPU s) | ratio (wall / CPU) "
          "| written a block, before / after |")
    print("|---|---|---|---|---|")
    for i, (b, a) in enumerate(zip(runs["before"], runs["after"], strict=True), 1):
        print(f"| {i} | {b['blocks_per_s']:,.0f} ({b['blocks_per_cpu_s']:,.0f}) | {a['blocks_per_s']:,.0f} "
              f"({a['blocks_per_cpu_s']:,.0f}) | {a['blocks_per_s'] / b['blocks_per_s']:.2f} / "
              f"{a['blocks_per_cpu_s'] / b['blocks_per_cpu_s']:.2f} × | {b['written_kib_per_block']:.1f} / "
              f"{a['written_kib_per_block']:.1f} KiB |")


if __name__ == "__main__":
    main()
