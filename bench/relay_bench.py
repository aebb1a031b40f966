"""Relay benchmark: latency the relay adds, and throughput through it compared with a direct connection.

    python3 bench/relay_bench.py [--quick]

Three processes on loopback: this one (the sender), a receiver (this script with ``--role receiver``) that
listens directly with a FrameServer *and* is registered at a relay, and the relay itself
(``python -m p2pchat.relay``, rate limit off). The baseline is a direct FramedSocket connection between the
same two processes, measured in the same run with the same frames:

- latency: ping-pong of small frames; the receiver takes the one-way time from the sender's CLOCK_MONOTONIC
  stamp (one clock for all processes on Linux); p50 over many round trips;
- throughput: a stream of 100-byte and 64 KiB frames, timed from the first send to the receiver's report.

Prints a table and the relay/direct ratios (goal: throughput ratio >= 0.7) plus a Markdown block for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pchat.foundation.codec import Field, Protocol  # noqa: E402
from p2pchat.foundation.errors import UserError  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect  # noqa: E402
from p2pchat.relay import RelayLink, RelayRegistration, open_relay_link  # noqa: E402
from p2pchat.relay.cli import query_status  # noqa: E402

BENCH = Protocol("bench", {
    "lat": {"ts": Field(int)},        # field names must not be "t": that is the codec's type key
    "ack": {"ts": Field(int)},
    "lat_end": {},
    "blk": {"body": Field(bytes, max_len=1 << 20)},
    "blk_end": {"n": Field(int)},
    "result": {"value": Field(int), "n": Field(int)},
}, max_frame=(1 << 20) + 64)

HOST_RELAY, HOST_RECEIVER, HOST_SENDER = "127.0.0.61", "127.0.0.62", "127.0.0.63"
Link = FramedSocket | RelayLink
KINDS = (("raw", "one pre-encoded frame resent"), ("enc", "each frame encoded when sent"))


# --- receiver process ----------------------------------------------------------------------------------

def serve_link(link: Link) -> None:
    """Answer one sender: acks for latency probes, byte counts for throughput streams."""
    one_way: list[int] = []
    received = count = 0
    first = 0
    while True:
        try:
            msg = link.recv(timeout=120)
        except UserError:
            return
        now = time.monotonic_ns()
        if msg.type == "lat":
            one_way.append(now - msg["ts"])
            link.send("ack", ts=msg["ts"])
        elif msg.type == "lat_end":
            link.send("result", value=int(statistics.median(one_way)), n=len(one_way))
            one_way.clear()
        elif msg.type == "blk":
            if count == 0:
                first = now
            count += 1
            received += len(msg["body"])
        elif msg.type == "blk_end":
            link.send("result", value=now - first, n=received if count == msg["n"] else -1)
            received = count = 0


def receiver(relay_port: int) -> int:
    identity = Identity.generate()
    threads: list[threading.Thread] = []
    links: list[Link] = []

    def on_invite(link: RelayLink) -> None:
        links.append(link)
        t = threading.Thread(target=serve_link, args=(link,), name="bench-relayed")
        threads.append(t)
        t.start()

    server = FrameServer(HOST_RECEIVER, 0, BENCH, serve_link, name="bench-direct", timeout=120).start()
    reg = RelayRegistration(identity, HOST_RELAY, relay_port, on_invite=on_invite, inner_protocol=BENCH,
                            source_ip=HOST_RECEIVER, accept_unregistered=True).start()   # the sender has no record
    if not reg.wait_registered(30):
        print(f"FAILED {reg.state_text}", flush=True)
        return 1
    print(f"READY {server.port} {identity.fingerprint.hex()}", flush=True)
    sys.stdin.read()          # the sender closes our stdin when it is done
    reg.close()
    for link in links:
        link.close()
    for t in threads:
        t.join()
    server.close()
    return 0


# --- sender (this process) -----------------------------------------------------------------------------

def measure_latency(link: Link, rounds: int) -> tuple[float, float]:
    """(receiver-side one-way p50, sender-side round-trip/2 p50) in microseconds."""
    halves = []
    for i in range(rounds + rounds // 10):
        t = time.monotonic_ns()
        link.send("lat", ts=t)
        ack = link.recv(timeout=30)
        assert ack.type == "ack" and ack["ts"] == t
        if i >= rounds // 10:          # the first tenth warms up caches and TCP
            halves.append((time.monotonic_ns() - t) / 2)
    link.send("lat_end")
    result = link.recv(timeout=30)
    return result["value"] / 1000, statistics.median(halves) / 1000


def measure_throughput(link: Link, size: int, count: int, encode_each: bool) -> float:
    """Payload bytes per second from the first send until the receiver has counted every frame.

    ``encode_each``: encode every frame as it is sent, as the chat node does (each message is sealed and
    encoded once); otherwise send one pre-encoded frame again and again (transport cost only)."""
    body = os.urandom(size)
    frame = BENCH.encode("blk", body=body)
    start = time.perf_counter()
    if encode_each:
        for _ in range(count):
            link.send("blk", body=body)
    else:
        for _ in range(count):
            link.send_frame(frame)
    link.send("blk_end", n=count)
    result = link.recv(timeout=300)
    elapsed = time.perf_counter() - start
    if result["n"] != size * count:
        raise RuntimeError(f"the receiver counted {result['n']} bytes instead of {size * count}")
    return size * count / elapsed


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None where that is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(quick: bool) -> dict[str, Any]:
    repeats = 5 if not quick else 1
    rounds = 2000 if not quick else 300
    streams = [(100, 20000 if not quick else 3000), (64 * 1024, 1000 if not quick else 200)]
    relay_port = 18472
    key_dir = tempfile.mkdtemp(prefix="relay-bench-")      # the relay's link key, removed at the end
    relay = subprocess.Popen([sys.executable, "-m", "p2pchat.relay", "--host", HOST_RELAY, "--port", str(relay_port),
                              "--rate", "0", "--rings-per-minute", "100000",
                              "--key-file", str(Path(key_dir) / "relay_key")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    receiver_proc = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                query_status(HOST_RELAY, relay_port, timeout=2)
                break
            except UserError:
                if time.monotonic() > deadline or relay.poll() is not None:
                    raise RuntimeError("the relay process did not start") from None
                time.sleep(0.1)
        receiver_proc = subprocess.Popen([sys.executable, __file__, "--role", "receiver", "--relay-port",
                                          str(relay_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, cwd=ROOT)
        assert receiver_proc.stdout is not None
        ready = receiver_proc.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"receiver failed: {' '.join(ready)}")
        direct_port, fingerprint = int(ready[1]), bytes.fromhex(ready[2])
        sender = Identity.generate()

        direct = connect(HOST_RECEIVER, direct_port, BENCH, source_ip=HOST_SENDER, timeout=120)
        relayed = open_relay_link(sender, HOST_RELAY, relay_port, fingerprint, inner_protocol=BENCH,
                                  source_ip=HOST_SENDER, timeout=30)
        relayed.timeout = 120
        links = (("direct", direct), ("relay", relayed))
        # Direct and relayed runs alternate so that load from other programs hits both alike.
        samples: dict[str, list[float]] = {}
        for _ in range(repeats):
            for name, link in links:
                one_way, rtt2 = measure_latency(link, rounds)
                samples.setdefault(f"{name}_oneway_us", []).append(one_way)
                samples.setdefault(f"{name}_rtt2_us", []).append(rtt2)
        for size, count in streams:
            for encode_each, kind in ((False, "raw"), (True, "enc")):
                for _ in range(repeats):
                    for name, link in links:
                        before = cpu_seconds(relay.pid)
                        samples.setdefault(f"{name}_{kind}_{size}", []).append(
                            measure_throughput(link, size, count, encode_each))
                        after = cpu_seconds(relay.pid)
                        if name == "relay" and before is not None and after is not None and after > before:
                            # What one core of the relay can forward: bytes per second of relay CPU time.
                            samples.setdefault(f"relaycpu_{kind}_{size}", []).append(size * count / (after - before))
        # Latency: median of the runs' p50s; throughput: the best run (other programs only ever slow it down).
        results: dict[str, Any] = {key: (statistics.median(v) if key.endswith("_us") else max(v))
                                   for key, v in samples.items()}
        direct.close()
        relayed.close()
        results["streams"] = streams
        results["rounds"] = rounds
        results["repeats"] = repeats
        return results
    finally:
        if receiver_proc is not None:
            assert receiver_proc.stdin is not None
            receiver_proc.stdin.close()
            receiver_proc.wait(timeout=60)
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=60)
        shutil.rmtree(key_dir, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    def rate(v: float) -> str:
        return f"{v / 1e6:.1f} MB/s"

    lines = [
        f"latency, one-way p50 ({r['rounds']} ping-pongs, median of {r['repeats']} runs; "
        f"throughput: best of {r['repeats']} runs):",
        f"  direct {r['direct_oneway_us']:.0f} µs, via relay {r['relay_oneway_us']:.0f} µs "
        f"-> the relay adds {r['relay_oneway_us'] - r['direct_oneway_us']:.0f} µs "
        f"(round-trip/2: {r['direct_rtt2_us']:.0f} vs {r['relay_rtt2_us']:.0f} µs)",
        "throughput (payload bytes; goal relay/direct >= 0.7):",
    ]
    for size, count in r["streams"]:
        for kind, label in KINDS:
            d, v = r[f"direct_{kind}_{size}"], r[f"relay_{kind}_{size}"]
            lines.append(f"  {size:>6}-byte frames x{count}, {label}: direct {rate(d)}, via relay {rate(v)}, "
                         f"ratio {v / d:.2f}")
    lines.append("relay capacity (payload bytes per second of the relay's own CPU time, best run):")
    for size, _ in r["streams"]:
        for kind, label in KINDS:
            cap = r.get(f"relaycpu_{kind}_{size}")
            if cap is not None:
                lines.append(f"  {size:>6}-byte frames, {label}: {rate(cap)} per relay CPU core")
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    rows = [
        "| measure | direct | via relay | relay / direct |",
        "|---|---|---|---|",
        f"| one-way latency p50 | {r['direct_oneway_us']:.0f} µs | {r['relay_oneway_us']:.0f} µs | "
        f"+{r['relay_oneway_us'] - r['direct_oneway_us']:.0f} µs |",
    ]
    for size, _ in r["streams"]:
        for kind, label in KINDS:
            d, v = r[f"direct_{kind}_{size}"], r[f"relay_{kind}_{size}"]
            size_label = "100 B" if size == 100 else f"{size // 1024} KiB"
            cap = r.get(f"relaycpu_{kind}_{size}")
            capacity = f" (relay alone: {cap / 1e6:.0f} MB/s per CPU core)" if cap else ""
            rows.append(f"| throughput, {size_label} frames, {label} | {d / 1e6:.1f} MB/s | {v / 1e6:.1f} MB/s"
                        f"{capacity} | {v / d:.2f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds, one run (a smoke test of the script)")
    p.add_argument("--role", choices=("sender", "receiver"), default="sender", help=argparse.SUPPRESS)
    p.add_argument("--relay-port", type=int, default=18472, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "receiver":
        return receiver(args.relay_port)
    results = run(args.quick)
    print(report(results))
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
