#!/usr/bin/env python3
"""A group message to every member on loopback (issue 18): time until the last member has it, and the sender's
CPU per message, against the same run's baseline — the same text sent 1:1 to each member over the same open
chats (what a user without groups would do).

    python3 bench/group_bench.py [--members 16] [--messages 50]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pchat.events import GroupMessage, GroupNotice, MessageReceived  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402
from p2pchat.node import ChatNode  # noqa: E402
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory  # noqa: E402


class Arrivals:
    """Drains every node's events on one thread; records when each text first reached each node."""

    def __init__(self, nodes: list[ChatNode]) -> None:
        self.nodes = nodes
        self.seen: dict[tuple[int, str], float] = {}
        self.joined: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            idle = True
            for i, n in enumerate(self.nodes):
                try:
                    while True:
                        ev = n.events.get_nowait()
                        idle = False
                        now = time.perf_counter()
                        with self.lock:
                            if isinstance(ev, (GroupMessage, MessageReceived)):
                                self.seen.setdefault((i, ev.text), now)
                            elif isinstance(ev, GroupNotice) and ev.text.startswith("you were added"):
                                self.joined.add(i)
                except queue.Empty:
                    pass
            if idle:
                time.sleep(0.0005)

    def wait_all(self, text: str, receivers: range, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                times = [self.seen.get((i, text)) for i in receivers]
            if all(t is not None for t in times):
                return max(t for t in times if t is not None)
            time.sleep(0.0005)
        raise SystemExit(f"timed out waiting for {text!r}")


def thread_cpu(name: str) -> float:
    for t in threading.enumerate():
        if t.name == name and t.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    n = args.members
    t = time.perf_counter()
    ids = [Identity.generate() for _ in range(n)]
    print(f"{n} identities in {time.perf_counter() - t:.1f} s")
    directory = FixedDirectory()
    nodes: list[ChatNode] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, ident in enumerate(ids):
            d = Path(tmp) / f"m{i}"
            d.mkdir()
            node = ChatNode(ident, host=f"127.0.88.{i + 1}", port=0, nickname=f"m{i}", directory=directory,
                            data_dir=d, outbox=True, auto_accept=True)
            node.start()
            directory.add(DirectoryEntry(public_der=ident.public_der, nickname=f"m{i}", ip=f"127.0.88.{i + 1}",
                                         port=node.port, relay=None, height=5, confirmations=2))
            nodes.append(node)
        arrivals = Arrivals(nodes)
        try:
            sender = nodes[0]
            assert sender.groups is not None
            members = [(ident.fingerprint.hex(), ident.public_der, f"m{i}") for i, ident in enumerate(ids) if i]
            t = time.perf_counter()
            gid = sender.groups.create("bench", members)
            deadline = time.monotonic() + 120
            while len(arrivals.joined) < n - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            print(f"group of {n} set up (every chat open) in {time.perf_counter() - t:.1f} s")
            receivers = range(1, n)
            sessions = [sender.live_session_with(ident.fingerprint.hex()) for ident in ids[1:]]
            results: dict[str, tuple[list[float], list[float]]] = {}
            for label in ("1:1 to each member (baseline)", "group message"):
                lat, cpu = [], []
                for k in range(args.messages):
                    text = f"{label} {k}"
                    c0 = thread_cpu("groups") if label == "group message" else time.thread_time()
                    t0 = time.perf_counter()
                    if label == "group message":
                        sender.groups.say(gid, text)
                        cpu.append(thread_cpu("groups") - c0)
                    else:
                        for sid in sessions:
                            assert sid is not None
                            sender.send_text(sid, text)
                        cpu.append(time.thread_time() - c0)
                    lat.append(arrivals.wait_all(text, receivers) - t0)
                results[label] = (lat, cpu)
            base = results["1:1 to each member (baseline)"]
            for label, (lat, cpu) in results.items():
                q = statistics.quantiles(lat, n=100)
                print(f"{label:<32} to all {n - 1}: p50 {q[49] * 1000:6.1f} ms  p99 {q[98] * 1000:6.1f} ms  "
                      f"(×{q[98] / statistics.quantiles(base[0], n=100)[98]:.2f} of baseline p99); sender CPU "
                      f"{statistics.mean(cpu) * 1000:.2f} ms/message")
        finally:
            arrivals.stop.set()
            arrivals.thread.join()
            for node in nodes:
                node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
