"""Child process of the kill -9 tests: works on a ledger data directory and prints one line per acknowledged
write (after the call that makes it durable returned), until the parent kills it.

    python -m tests.crash.crash_child write DATA_DIR FEED   # submit records and receive blocks from FEED
    python -m tests.crash.crash_child batch DATA_DIR FEED   # receive blocks from FEED in batches (sync)
    python -m tests.crash.crash_child mine  DATA_DIR FEED   # submit records from FEED while the miner mines them
    python -m tests.crash.crash_child sync  DATA_DIR SEED   # a ledger node syncing from SEED (ip:port)

Lines: ``ready``, ``record <id hex>`` (submit_record returned True: durable), ``block <height> <hash hex>``
(receive_block stored it, or the node's ledger listener heard of it: listeners run after the write).

    python -m tests.crash.crash_child serve                 # a fork server: one child per request, see serve()

The kill tests start their 125 children through one fork server: a Python start with these imports cost each
child about 0.3 s, more than half of an iteration, and none of it is what a kill can land in (every delay counts
from the child's ``ready`` line or a later one).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import msgpack

from ledger.blocks import Block
from ledger.local_ledger import LocalLedger
from ledger.params import NetworkParams
from ledger.records import Record


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def load_feed(path: Path) -> dict:
    return msgpack.unpackb(path.read_bytes(), raw=False)


def write(data_dir: Path, feed_path: Path) -> None:
    feed = load_feed(feed_path)
    params = NetworkParams.from_wire(feed["params"])
    now = feed["now"]
    blocks = [Block.from_wire(b) for b in feed["blocks"]]
    records = [Record.from_wire(r) for r in feed["records"]]
    with LocalLedger(data_dir, params, clock=lambda: now) as ledger:
        say("ready", ledger.height)
        for i in range(max(len(blocks), len(records))):
            if i < len(records) and ledger.submit_record(records[i], now):
                say("record", records[i].id.hex())
            if i < len(blocks):
                result = ledger.receive_block(blocks[i], now)
                if result.status == "added":
                    say("block", blocks[i].height, blocks[i].hash.hex())
        say("done")


def batch(data_dir: Path, feed_path: Path) -> None:
    """Blocks in sync-sized batches (one transaction each, with the stored checkpoint), possibly reorganising."""
    feed = load_feed(feed_path)
    params = NetworkParams.from_wire(feed["params"])
    now = feed["now"]
    with LocalLedger(data_dir, params, clock=lambda: now) as ledger:
        say("ready", ledger.height)
        for wires in feed["batches"]:
            blocks = [Block.from_wire(b) for b in wires]
            for block, result in zip(blocks, ledger.receive_blocks(blocks, now), strict=True):
                if result.status == "added":
                    say("block", block.height, block.hash.hex())
        say("done")


def mine(data_dir: Path, feed_path: Path) -> None:
    feed = load_feed(feed_path)
    params = NetworkParams.from_wire(feed["params"])
    records = [Record.from_wire(r) for r in feed["records"]]
    with LocalLedger(data_dir, params) as ledger:
        say("ready", ledger.height)
        ledger.start_mining(on_block=lambda b: say("block", b.height, b.hash.hex()))
        for record in records:
            if ledger.submit_record(record, time.time()):
                say("record", record.id.hex())
            time.sleep(0.01)   # a steady stream, so kills land while mining, storing and submitting
        threading.Event().wait()


def sync(data_dir: Path, seed: str) -> None:
    from ledger.node import LedgerNode, NodeConfig
    from p2pchat.foundation.identity import Identity

    params = NetworkParams.from_wire(load_feed(data_dir / "params.msgpack"))
    identity = Identity.load(data_dir / "identity.pem")
    host = sys.argv[4]
    with LocalLedger(data_dir, params) as ledger:
        ledger.add_listener(on_block=lambda b, r: say("block", b.height, b.hash.hex()))
        node = LedgerNode(identity, ledger, host=host, port=0, seeds=[seed],
                          config=NodeConfig(mine=False, register=False, maintain_interval=0.05))
        say("ready", ledger.height)
        node.start()
        threading.Event().wait()


def serve() -> None:
    """Read requests from stdin, one at a time: ``{"args": [MODE, …], "err": PATH}`` forks a child that runs
    MODE with its stderr in PATH and its stdout lines on this process's stdout (answered ``started PID``);
    ``kill`` SIGKILLs that child, reaps it and answers ``exited PID STATUS`` after every line the child wrote.
    Only this process kills and reaps its children, so a pid is never signalled after it could be reused."""
    import ledger.node  # noqa: F401  (sync's imports, made once here rather than in every child)
    import p2pchat.foundation.identity  # noqa: F401

    child = 0
    for request in sys.stdin:
        if request.strip() == "kill":
            if child:
                os.kill(child, signal.SIGKILL)
                _, status = os.waitpid(child, 0)
                say("exited", child, status)
                child = 0
            continue
        if child:
            raise RuntimeError("a request to start a child while one runs")
        job = json.loads(request)
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            _run_forked(job["args"], job["err"])
        say("started", child)


def _run_forked(args: list[str], err: str) -> None:
    code = 1
    try:
        fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
        fd = os.open(os.devnull, os.O_RDONLY)     # the requests are the server's, not the child's
        os.dup2(fd, 0)
        os.close(fd)
        sys.argv = [sys.argv[0], *args]
        main()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    if sys.argv[1] == "serve":
        serve()
        return
    mode, data_dir, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    {"write": lambda: write(data_dir, Path(arg)), "batch": lambda: batch(data_dir, Path(arg)),
     "mine": lambda: mine(data_dir, Path(arg)), "sync": lambda: sync(data_dir, arg)}[mode]()


if __name__ == "__main__":
    main()
