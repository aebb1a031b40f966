"""kill -9 in the middle of pruning: the store still opens from its checkpoint, passes `ledger verify`, and once
pruning finishes it answers exactly like an unpruned copy."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from checkpoint_kit import snapshot
from ledger_kit import DAY, PARAMS, T0, block_on, reg

from ledger.chain import FinalityPolicy
from ledger.local_ledger import LocalLedger
from ledger.prune import PruneState, prune_all
from ledger.records import Record
from tests.conftest import make_identities

ROOT = Path(__file__).resolve().parents[2]
NOW = T0 + 90 * DAY
POLICY = FinalityPolicy(depth=3, min_hold=0, seconds=1000 * DAY)
CHILD = textwrap.dedent("""
    import sys
    import time
    from pathlib import Path
    from ledger.chain import FinalityPolicy
    from ledger.local_ledger import LocalLedger
    from ledger.params import NetworkParams
    from ledger.prune import prune_step, prune_target

    params = NetworkParams(name="testnet", difficulty_bits=8)
    now = float(sys.argv[2])
    with LocalLedger(Path(sys.argv[1]), params, clock=lambda: now,
                     finality=FinalityPolicy(depth=3, min_hold=0, seconds=1000 * 86400)) as ledger:
        target = prune_target(ledger.chain.final_height, 0)
        print("open", flush=True)
        while True:
            state = prune_step(ledger.store, target, step=1)   # one transaction a block: many places to die
            print(state.height, flush=True)
            if state.height >= target:
                break
            time.sleep(0.002)   # the parent's kill lands in this step or the next, mid-transaction or between
""")


def build(data_dir: Path) -> None:
    a, b = make_identities(2)
    blocks, tip = [], PARAMS.genesis().header
    last: dict[int, Record] = {}
    for i in range(60):
        who = i % 3 == 2
        key = (a, b)[who]
        prev = last.get(who)
        record = reg(key, seq=prev.seq + 1 if prev else 0, prev=prev.id if prev else bytes(32),
                     ip=("10.0.0.1", "10.0.0.2")[who], nickname=("alice", "bob")[who], issued=T0 + i * DAY,
                     lifetime=2 * DAY)
        last[who] = record
        blocks.append(block_on(tip, [record], T0 + i * DAY + 5))
        tip = blocks[-1].header
    with LocalLedger(data_dir, PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
        ledger.receive_blocks(blocks, NOW)


def test_kill_9_mid_prune_leaves_a_store_that_opens_verifies_and_finishes_pruning(tmp_path):
    source = tmp_path / "source"
    build(source)
    with LocalLedger(source, PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
        expected = snapshot(ledger, NOW)
    rng = random.Random(20261207)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    heights = []
    for i in range(6):
        work = tmp_path / f"run{i}"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("*.lock"))
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(work), str(NOW)], stdout=subprocess.PIPE,
                                 text=True, env=env, cwd=ROOT)
        assert child.stdout is not None
        assert child.stdout.readline() == "open\n"
        wanted = rng.randint(1, 50)
        while int(child.stdout.readline() or 58) < wanted:
            pass
        time.sleep(rng.random() * 0.003)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        with LocalLedger(work, PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
            assert ledger.rebuilt_checkpoint is None
            heights.append(ledger.pruned.height)
            report = ledger.verify_store()
            assert report.ok, report.problems
            assert snapshot(ledger, NOW) == expected
            state = prune_all(ledger, 0)
            assert state is not None and state.height == 58
        with LocalLedger(work, PARAMS, clock=lambda: NOW, finality=POLICY) as ledger:
            assert snapshot(ledger, NOW) == expected
            assert PruneState.of(ledger.store).records == 56   # every renewal but the two latest
        shutil.rmtree(work)
    assert len(set(heights)) > 1 and all(0 < h < 58 for h in heights)   # the kills did land mid-prune
