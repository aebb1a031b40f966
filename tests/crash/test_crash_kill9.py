"""kill -9 at random instants while a process writes to its ledger, mines, and syncs from a peer: 100 iterations
in all. After every kill the store passes the full revalidation that ``ledger verify`` runs (every tenth time the
real ``ledger verify`` command is run too), and every record and block the child acknowledged is still there.

Each iteration starts the child (forked from one ``crash_child serve`` process per module, which imported
everything once) on a fresh copy of a pre-built data directory and kills it after a delay drawn
from ``random.Random(seed)`` (timing only; ``CRASH_SEED`` picks another seed, ``CRASH_ITERATIONS`` scales the
counts for a longer local run). What each iteration found is printed on failure together with the seed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest

from ledger.blocks import Block
from ledger.local_ledger import LocalLedger, store_path, verify_store
from ledger.node import LedgerNode, NodeConfig
from ledger.params import NetworkParams
from ledger.pool import MAX_PENDING_PER_IDENTITY
from ledger.records import Record, make_register
from tests.conftest import free_loopback_ip, make_identities
from tests.ledger.checkpoint_kit import checkpoint_and_replay
from tests.ledger.gossip_kit import grow, next_block

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CRASH_SEED", "20261122"))
SCALE = max(1, int(os.environ.get("CRASH_ITERATIONS", "1")))
ITERATIONS = {"write": 50 * SCALE, "batch": 25 * SCALE, "mine": 25 * SCALE, "sync": 25 * SCALE}
T0 = 1_700_000_000


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@dataclass
class Run:
    """What one killed child acknowledged."""

    lines: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[bytes]:
        return [bytes.fromhex(line.split()[1]) for line in self.lines if line.startswith("record ")]

    @property
    def blocks(self) -> list[tuple[int, bytes]]:
        return [(int(p[1]), bytes.fromhex(p[2])) for p in (line.split() for line in self.lines)
                if p[0] == "block"]


class ForkServer:
    """``crash_child serve``: starts each child by forking an already imported process (see crash_child.py)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.log = work / "fork-server.err"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.crash.crash_child", "serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                         cwd=ROOT, env=env())
        self.runs = 0

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def died(self) -> str:
        return f"the fork server ended: {self.log.read_text(errors='replace')[-3000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()      # it ends at the end of its requests
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    try:
        yield server
    finally:
        server.close()


def run_and_kill(server: ForkServer, args: list[str], delay: float, ready_timeout: float = 30.0,
                 after_block: int | None = None) -> Run:
    """Start the child, wait for ``ready`` (or, with ``after_block``, for its report of storing that height), let it
    work ``delay`` seconds more, then SIGKILL it. Counting from a reported height makes the kill land mid-work however
    fast the work has become; the delay after it stays the random variable."""
    server.runs += 1
    err = server.work / f"child-{server.runs}.err"
    run = Run()
    ready = threading.Event()
    started = threading.Event()
    exited = threading.Event()

    def read() -> None:
        # The server's stdout: this child's lines, then ``exited`` once it is reaped (or EOF if the server died).
        while line := server.readline():
            if line.startswith("exited "):
                exited.set()
                break
            if line.startswith("started "):
                continue
            run.lines.append(line.strip())
            if line.startswith("ready"):
                ready.set()
                if after_block is None:
                    started.set()
            elif after_block is not None and line.startswith("block ") and int(line.split()[1]) >= after_block:
                started.set()
        ready.set()
        started.set()

    reader = threading.Thread(target=read, name="crash-child-output")
    server.send(json.dumps({"args": args, "err": str(err)}))
    reader.start()
    try:
        if not ready.wait(ready_timeout) or not any(x.startswith("ready") for x in run.lines):
            raise AssertionError(f"the child did not start: {err.read_text(errors='replace') if err.exists() else ''}"
                                 + ("" if server.proc.poll() is None else server.died()))
        if not started.wait(ready_timeout * 2):
            raise AssertionError(f"the child never reported block {after_block}: {run.lines[-3:]}")
        time.sleep(delay)          # not waiting for a condition: the kill instant itself is the random variable
    finally:
        if server.proc.poll() is None:
            server.send("kill")
        reader.join(60)
    assert exited.is_set(), "the child was not reaped: " + server.died()
    errors = err.read_text(errors="replace")
    assert "Traceback" not in errors, errors
    return run


def check_after_kill(data_dir: Path, params: NetworkParams, run: Run, now: float, what: str,
                     reference: LocalLedger | None = None) -> int:
    """The crash-safety property; returns the height found. With ``reference`` (the peer a sync copied from),
    what was kept must be exactly that peer's chain up to the height kept."""
    report = verify_store(store_path(data_dir, params.name), params, now=now)
    assert report.ok, f"{what}: {report.summary()}"
    with LocalLedger(data_dir, params, clock=lambda: now) as ledger:
        assert not ledger.load_problems, f"{what}: {ledger.load_problems}"
        pending = {r.id for r in ledger.pending_records()}
        for rid in run.records:
            assert rid in pending or ledger.chain.has_record(rid), f"{what}: acknowledged record {rid.hex()} lost"
        for height, block_hash in run.blocks:
            assert ledger.has_block(block_hash), f"{what}: acknowledged block {height} lost"
            assert ledger.height >= height, f"{what}: height {ledger.height} < acknowledged {height}"
        if reference is not None and ledger.height:
            kept = reference.main_at(ledger.height)
            assert kept is not None and ledger.chain.tip_hash == kept.hash, f"{what}: not the peer's chain"
        report_line(what.split(" ")[0], len(run.records), len(run.blocks), ledger.height)
        height = ledger.height
    # The stored checkpoint (derived state) was written with the blocks: a start uses it, and it equals a replay.
    restored, replayed = checkpoint_and_replay(data_dir, params, now, data_dir.parent)
    assert restored == replayed, f"{what}: the stored checkpoint differs from a replay of the stored blocks"
    return height


def report_line(mode: str, records: int, blocks: int, height: int) -> None:
    """With CRASH_REPORT=path, append one line per iteration (for the figures in docs/security.md)."""
    path = os.environ.get("CRASH_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{mode} {records} {blocks} {height}\n")


def cli_verify(data_dir: Path, params: NetworkParams) -> None:
    result = subprocess.run([sys.executable, "-m", "ledger", "verify", "--data-dir", str(data_dir), "--network",
                             params.name], capture_output=True, text=True, cwd=ROOT, env=env(), timeout=60)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def fresh_copy(template: Path, work: Path, i: int) -> Path:
    target = work / f"run{i}"
    shutil.copytree(template, target)
    return target


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(SEED)


# --- writes -------------------------------------------------------------------------------------------------

def test_kill_9_during_writes_never_loses_an_acknowledged_record_or_block(tmp_path, rng, fork_server):
    params = NetworkParams(name="crashwrite", difficulty_bits=8)
    # the pending records come from five keys, eight chained records each: the pool holds at most
    # MAX_PENDING_PER_IDENTITY records of one key
    a, *waiting = make_identities(1 + 40 // MAX_PENDING_PER_IDENTITY)
    now = T0 + 10_000
    chained, pending, blocks = [], [], []
    prev_a = bytes(32)
    prev_b = {k: bytes(32) for k in range(len(waiting))}
    tip = params.genesis().header
    for i in range(40):
        ra = make_register(a, network=params.name, seq=i, prev=prev_a, nickname="writer", ip="10.3.0.1", port=8471,
                           ledger_port=8470, issued=T0 + i, lifetime=86400)
        k, seq = divmod(i, MAX_PENDING_PER_IDENTITY)
        rb = make_register(waiting[k], network=params.name, seq=seq, prev=prev_b[k], nickname=f"pending{k}",
                           ip=f"10.3.0.{2 + k}", port=8471 + i, ledger_port=8470, issued=T0 + i, lifetime=86400)
        prev_a, prev_b[k] = ra.id, rb.id
        block = next_block(tip, [ra], T0 + i, params)
        tip = block.header
        chained.append(ra)
        pending.append(rb)
        blocks.append(block)
    feed = tmp_path / "feed.msgpack"
    feed.write_bytes(msgpack.packb({"params": params.to_wire(), "now": now, "blocks": [x.to_wire() for x in blocks],
                                    "records": [r.to_wire() for r in pending]}, use_bin_type=True))
    template = tmp_path / "template"
    LocalLedger(template, params).close()
    heights = []
    for i in range(ITERATIONS["write"]):
        data_dir = fresh_copy(template, tmp_path, i)
        delay = rng.uniform(0.0, 0.25)
        run = run_and_kill(fork_server, ["write", str(data_dir), str(feed)], delay)
        heights.append(check_after_kill(data_dir, params, run, now, f"write #{i} (seed {SEED}, {delay:.3f} s)"))
        if i % 10 == 9:
            cli_verify(data_dir, params)
        shutil.rmtree(data_dir)
    assert len(set(heights)) > 3, f"the kills all landed at the same point: {heights}"


# --- batched writes with a reorg ------------------------------------------------------------------------------

def test_kill_9_during_batched_writes_and_a_reorg_leaves_a_checkpoint_equal_to_a_replay(tmp_path, rng,
                                                                                           fork_server):
    params = NetworkParams(name="crashbatch", difficulty_bits=8)
    idents = make_identities(3)
    now = T0 + 10_000
    prevs = [bytes(32)] * 3
    main: list[Block] = []
    tip = params.genesis().header
    for i in range(120):
        k = i % 3
        r = make_register(idents[k], network=params.name, seq=i // 3, prev=prevs[k], nickname=f"n{k}",
                          ip=f"10.5.0.{k + 1}", port=8471 + i, ledger_port=8470, issued=T0 + i, lifetime=86400)
        prevs[k] = r.id
        block = next_block(tip, [r], T0 + i, params)
        tip = block.header
        main.append(block)
    # A heavier branch from height 118 (above the final height, 115 at depth 6): the child reorganises onto it.
    fork_tip = main[117].header
    other: list[Block] = []
    for i in range(6):
        block = next_block(fork_tip, [], T0 + 100 + i, params)
        fork_tip = block.header
        other.append(block)
    blocks = main + other
    batches, i = [], 0
    while i < len(blocks):
        n = rng.randint(1, 6)
        batches.append([b.to_wire() for b in blocks[i:i + n]])
        i += n
    feed = tmp_path / "feed.msgpack"
    feed.write_bytes(msgpack.packb({"params": params.to_wire(), "now": now, "batches": batches}, use_bin_type=True))
    template = tmp_path / "template"
    LocalLedger(template, params).close()
    heights = []
    for i in range(ITERATIONS["batch"]):
        data_dir = fresh_copy(template, tmp_path, i)
        after = rng.randint(1, 100) if i % 2 else None     # half counted from a stored height, as for sync
        delay = rng.uniform(0.0, 0.01) if after else rng.uniform(0.0, 0.3)
        run = run_and_kill(fork_server, ["batch", str(data_dir), str(feed)], delay, after_block=after)
        what = f"batch #{i} (seed {SEED}, {delay:.3f} s after {after or 'ready'})"
        heights.append(check_after_kill(data_dir, params, run, now, what))
        shutil.rmtree(data_dir)
    assert len(set(heights)) > 3, f"the kills all landed at the same point: {heights}"


# --- mining ---------------------------------------------------------------------------------------------------

def test_kill_9_while_mining_leaves_a_valid_chain_with_every_acknowledged_record(tmp_path, rng, fork_server):
    params = NetworkParams(name="crashmine", difficulty_bits=14)
    ident = make_identities(3)[2]
    issued = int(time.time())
    records, prev = [], bytes(32)
    for i in range(40):
        r = make_register(ident, network=params.name, seq=i, prev=prev, nickname="miner", ip="10.4.0.1",
                          port=1000 + i, ledger_port=8470, issued=issued, lifetime=86400)
        records.append(r)
        prev = r.id
    feed = tmp_path / "feed.msgpack"
    feed.write_bytes(msgpack.packb({"params": params.to_wire(), "records": [r.to_wire() for r in records]},
                                   use_bin_type=True))
    template = tmp_path / "template"
    LocalLedger(template, params).close()
    mined = []
    for i in range(ITERATIONS["mine"]):
        data_dir = fresh_copy(template, tmp_path, i)
        delay = rng.uniform(0.05, 0.5)
        run = run_and_kill(fork_server, ["mine", str(data_dir), str(feed)], delay)
        check_after_kill(data_dir, params, run, time.time(), f"mine #{i} (seed {SEED}, {delay:.3f} s)")
        mined.append(len(run.blocks))
        if i % 10 == 9:
            cli_verify(data_dir, params)
        shutil.rmtree(data_dir)
    assert sum(mined) > 0, "the miner never found a block before it was killed"


# --- sync ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sync_seed(tmp_path_factory) -> Iterator[tuple[LedgerNode, NetworkParams, int]]:
    params = NetworkParams(name="crashsync", difficulty_bits=8)
    base = tmp_path_factory.mktemp("sync-seed")
    ledger = LocalLedger(base, params)
    ident = make_identities(4)[3]
    blocks = grow(ledger, 800)
    record = make_register(ident, network=params.name, seq=0, prev=bytes(32), nickname="seeded", ip="10.5.0.1",
                           port=8471, ledger_port=8470, issued=int(time.time()) - 30, lifetime=86400)
    block = next_block(blocks[-1].header, [record], blocks[-1].header.timestamp + 1, params)
    assert ledger.receive_block(block, time.time()).status == "added"
    node = LedgerNode(ident, ledger, host=free_loopback_ip(), port=0,
                      config=NodeConfig(mine=False, register=False)).start()
    try:
        yield node, params, ledger.height
    finally:
        node.close()
        ledger.close()


def test_kill_9_during_sync_leaves_a_valid_prefix_of_the_peers_chain(tmp_path, rng, sync_seed, fork_server):
    node, params, full_height = sync_seed
    template = tmp_path / "template"
    LocalLedger(template, params).close()
    make_identities(5)[4].save(template / "identity.pem")
    (template / "params.msgpack").write_bytes(msgpack.packb(params.to_wire(), use_bin_type=True))
    host = free_loopback_ip()
    heights = []
    for i in range(ITERATIONS["sync"]):
        data_dir = fresh_copy(template, tmp_path, i)
        # Half the kills count from the start (some land before the first block arrives), half from a random
        # stored height below the tip, so some always land mid-sync however fast syncing is.
        after = rng.randint(1, full_height - 50) if i % 2 else None
        delay = rng.uniform(0.0, 0.02) if after else rng.uniform(0.05, 0.6)
        run = run_and_kill(fork_server, ["sync", str(data_dir), node.address, host], delay, after_block=after)
        what = f"sync #{i} (seed {SEED}, {delay:.3f} s after {after or 'ready'})"
        height = check_after_kill(data_dir, params, run, time.time(), what, reference=node.ledger)
        heights.append(height)
        if i % 10 == 9:
            cli_verify(data_dir, params)
        shutil.rmtree(data_dir)
    assert any(0 < h < full_height for h in heights), f"no kill landed mid-sync: {heights} of {full_height}"


def test_the_feed_blocks_are_what_the_child_receives(tmp_path):
    # Sanity of the harness: a child that is not killed acknowledges every write of its feed.
    params = NetworkParams(name="crashsanity", difficulty_bits=8)
    a = make_identities(1)[0]
    r = make_register(a, network=params.name, seq=0, prev=bytes(32), nickname="sane", ip="10.6.0.1", port=8471,
                      ledger_port=8470, issued=T0, lifetime=86400)
    block = next_block(params.genesis().header, [r], T0, params)
    feed = tmp_path / "feed.msgpack"
    feed.write_bytes(msgpack.packb({"params": params.to_wire(), "now": T0 + 10, "blocks": [block.to_wire()],
                                    "records": []}, use_bin_type=True))
    result = subprocess.run([sys.executable, "-m", "tests.crash.crash_child", "write", str(tmp_path / "d"),
                             str(feed)], capture_output=True, text=True, cwd=ROOT, env=env(), timeout=60)
    assert result.stdout.split("\n")[:3] == ["ready 0", f"block 1 {block.hash.hex()}", "done"], result.stderr
    assert isinstance(Block.from_wire(block.to_wire()), Block) and isinstance(r, Record)
