"""Chat through the relay against the same chat over a direct connection, measured in the same run.

    python3 bench/relay_chat_bench.py [--quick]

What a user of a relayed chat gets compared with a direct one: the same two chat nodes, the same encrypted
channel, the only difference being the path. Three processes on loopback: the relay
(``python -m p2pchat.relay``, rate limit off), the responder (a ChatNode in a child process that listens directly
*and* is registered at the relay), and this process, whose initiator ChatNode reaches the responder either by its
address (direct) or as a relay-only peer (its directory entry carries only the relay hint). Direct and relayed
runs alternate, so load from other programs hits both alike. Measured: the four-step handshake (p50), 100-byte
messages per second one way (each with its delivery receipt, as in the chat), and MB/s of 1 MiB messages.
Goal (issue 5): relay/direct throughput ≥ 0.7. bench/relay_bench.py measures the relay's raw transport.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pchat.events import DeliveryReceipt, SessionEnded, StepResult  # noqa: E402
from p2pchat.foundation.errors import UserError  # noqa: E402
from p2pchat.foundation.identity import KEY_FILE, Identity  # noqa: E402
from p2pchat.node import ChatNode  # noqa: E402
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory  # noqa: E402
from p2pchat.relay.cli import query_status  # noqa: E402
from p2pchat.steps import Step  # noqa: E402

# Two benchmarks at once on one machine (parallel work on branches) need their own addresses: BENCH_NET=127.0.94
_NET = os.environ.get("BENCH_NET", "127.0.93")
RELAY_IP, RESPONDER_IP, INITIATOR_IP = f"{_NET}.1", f"{_NET}.2", f"{_NET}.3"
RELAY_PORT = 18473
RELAY = f"{RELAY_IP}:{RELAY_PORT}"


def responder(pipe: Connection, key_dir: str, entries: list[DirectoryEntry]) -> None:
    """Child process: a ChatNode listening directly and registered at the relay, accepting every chat."""
    node = ChatNode(Identity.load(Path(key_dir) / KEY_FILE), host=RESPONDER_IP, port=0, nickname="responder",
                    directory=FixedDirectory(entries), auto_accept=True, relay=RELAY)
    node.start()
    stop = threading.Event()

    def drain() -> None:          # nobody reads the events here; keep the queue from growing
        while not stop.is_set():
            try:
                node.events.get(timeout=0.05)
            except queue.Empty:
                pass

    drainer = threading.Thread(target=drain)
    drainer.start()
    deadline = time.monotonic() + 30
    while not (node.relay_state or "").startswith("registered") and time.monotonic() < deadline:
        time.sleep(0.05)
    pipe.send((node.port, node.relay_state or ""))
    pipe.recv()                   # "quit"
    stop.set()
    drainer.join()
    node.close()


class Initiator:
    """One ChatNode on this side; ``peer`` is what it dials (an address, or the nickname of a relay-only peer)."""

    def __init__(self, key_dir: Path, entries: list[DirectoryEntry], peer: str, relay: str | None) -> None:
        self.node = ChatNode(Identity.load(key_dir / KEY_FILE), host=INITIATOR_IP, nickname="initiator",
                             directory=FixedDirectory(entries), listen=False, relay=relay, step_timeout=60)
        self.node.start()
        self.peer = peer
        self.path: str | None = None

    def wait(self, match: Callable[[Any], bool], timeout: float = 300.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            ev = self.node.events.get(timeout=max(0.001, deadline - time.monotonic()))
            if isinstance(ev, StepResult) and not ev.ok:
                raise RuntimeError(ev.detail)
            if match(ev):
                return ev

    def handshake(self) -> tuple[str, float]:
        t0 = time.perf_counter()
        sid = self.node.open_session(self.peer)
        self.node.run_all(sid)
        self.wait(lambda e: isinstance(e, StepResult) and e.session == sid and e.step == Step.AGREE_KEY and e.ok)
        elapsed = time.perf_counter() - t0
        self.path = self.node.session_info(sid).path
        return sid, elapsed

    def end(self, sid: str) -> None:
        self.node.end_session(sid)
        self.wait(lambda e: isinstance(e, SessionEnded) and e.session == sid)

    def stream(self, sid: str, text: str, count: int) -> float:
        """Seconds from the first send to the delivery receipt of the last message."""
        t0 = time.perf_counter()
        last = 0
        for _ in range(count):
            last = self.node.send_text(sid, text)
        self.wait(lambda e: isinstance(e, DeliveryReceipt) and e.session == sid and e.msg_id == last)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.node.close()


def start_relay(tmp: Path, callers: list[bytes] | None, *, ip: str = RELAY_IP, port: int = RELAY_PORT,
                extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """The relay process: its link key in ``tmp``, and the initiator's key on its allow-list (the responder, like
    every host by default, takes calls only from keys with a ledger record); ``callers=None``: ``--no-ledger``.
    ``extra``: more options (relay_forward_bench: ``--no-box-records``)."""
    if callers is None:
        checks = ["--no-ledger"]
    else:
        (tmp / "allow").write_text("".join(fp.hex() + "\n" for fp in callers))
        checks = ["--allow", str(tmp / "allow")]
    relay = subprocess.Popen([sys.executable, "-m", "p2pchat.relay", "--host", ip, "--port", str(port),
                              "--rate", "0", "--key-file", str(tmp / "relay_key"), *checks,
                              "--rings-per-minute", "1000", *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        try:
            query_status(ip, port, timeout=2)
            return relay
        except UserError:
            if time.monotonic() > deadline or relay.poll() is not None:
                relay.kill()
                raise RuntimeError("the relay process did not start") from None
            time.sleep(0.1)


def run(quick: bool) -> dict[str, Any]:
    repeats, handshakes, small, big = (1, 3, 300, 4) if quick else (3, 10, 2000, 16)
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="relay-chat-bench-") as tmp:
        root = Path(tmp)
        idents = {}
        for name in ("responder", "initiator"):
            (root / name).mkdir(mode=0o700)
            idents[name] = Identity.generate()
            idents[name].save(root / name / KEY_FILE)
        relay = start_relay(root, [idents["initiator"].fingerprint])
        try:
            initiator_entry = DirectoryEntry(public_der=idents["initiator"].public_der, nickname="initiator",
                                             ip=INITIATOR_IP)
            parent, child = spawn.Pipe()
            proc = spawn.Process(target=responder, args=(
                child, str(root / "responder"),
                [initiator_entry, DirectoryEntry(public_der=idents["responder"].public_der, nickname="responder",
                                                 ip=RESPONDER_IP, relay=RELAY)]))
            proc.start()
            try:
                port, state = parent.recv()
                if not state.startswith("registered"):
                    raise RuntimeError(f"the responder is not registered at the relay: {state}")
                direct_entry = DirectoryEntry(public_der=idents["responder"].public_der, nickname="responder",
                                              ip=RESPONDER_IP, port=port)
                relay_entry = DirectoryEntry(public_der=idents["responder"].public_der, nickname="responder",
                                             relay=RELAY)
                sides = {"direct": Initiator(root / "initiator", [direct_entry, initiator_entry],
                                             f"{RESPONDER_IP}:{port}", None),
                         "relay": Initiator(root / "initiator", [relay_entry, initiator_entry], "responder", RELAY)}
                try:
                    return measure(sides, repeats, handshakes, small, big)
                finally:
                    for side in sides.values():
                        side.close()
            finally:
                parent.send("quit")
                proc.join(60)
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=60)


def measure(sides: dict[str, Initiator], repeats: int, handshakes: int, small: int, big: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    for side in sides.values():                        # warm-up (and check the path each one takes)
        sid, _ = side.handshake()
        side.end(sid)
    for _ in range(repeats):
        for name, side in sides.items():
            for _ in range(handshakes):
                sid, t = side.handshake()
                samples.setdefault(f"{name}_hs", []).append(t)
                side.end(sid)
            sid, _ = side.handshake()
            samples.setdefault(f"{name}_small", []).append(small / side.stream(sid, "x" * 100, small))
            samples.setdefault(f"{name}_big", []).append(big * 1.048576 / side.stream(sid, "x" * (1 << 20), big))
            side.end(sid)
    results: dict[str, Any] = {k: (statistics.median(v) if k.endswith("_hs") else max(v)) for k, v in samples.items()}
    results.update(paths={name: side.path for name, side in sides.items()}, repeats=repeats, small=small, big=big,
                   handshakes=handshakes)
    return results


def markdown(r: dict[str, Any]) -> str:
    rows = ["| measure | direct | via relay | relay / direct | goal |", "|---|---|---|---|---|",
            f"| four-step handshake p50 ({r['handshakes'] * r['repeats']} each) | {r['direct_hs'] * 1e3:.1f} ms | "
            f"{r['relay_hs'] * 1e3:.1f} ms | {r['relay_hs'] / r['direct_hs']:.2f} (time) | — |",
            f"| 100-byte messages one way ({r['small']:,}, each with its receipt) | {r['direct_small']:,.0f} msg/s | "
            f"{r['relay_small']:,.0f} msg/s | {r['relay_small'] / r['direct_small']:.2f} | ≥ 0.7 |",
            f"| 1 MiB messages ({r['big']}) | {r['direct_big']:.1f} MB/s | {r['relay_big']:.1f} MB/s | "
            f"{r['relay_big'] / r['direct_big']:.2f} | ≥ 0.7 |"]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, one run (a smoke test of the script)")
    args = parser.parse_args()
    results = run(args.quick)
    print(f"paths: {results['paths']} (best of {results['repeats']} runs for rates, median for handshakes)")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
