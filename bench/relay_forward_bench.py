"""What forwarding costs the relay process, per GB, with box records and with pair records only (issue 16).

    python3 bench/relay_forward_bench.py [--size MiB] [--rounds N] [--frame KiB]

A relay process (``python -m p2pchat.relay``, rate limit off) and, in this process, a caller that sends chat-like
frames whose last part is a box (random bytes marked as :class:`~p2pchat.foundation.codec.BoxedFrame`, like a
sealed file chunk) and a callee that receives them. Each round runs twice, alternating: the relay started with
``--no-box-records`` (every payload in pair records of at most 256 KiB, sealed and opened whole by the clients)
and without (one box record per frame: the head sealed, the box authenticated). Printed: MB/s, the relay
process's CPU (user + system, from /proc) per GB, and this process's (both clients) per GB; the ratios are
box records over pair records of the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from relay_chat_bench import start_relay  # noqa: E402

from p2pchat.foundation.codec import BoxedFrame, Field, Protocol  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402
from p2pchat.relay import RelayLink, RelayRegistration, open_relay_link  # noqa: E402

NET = os.environ.get("BENCH_NET", "127.0.96")
RELAY_IP, CALLEE_IP, CALLER_IP = f"{NET}.1", f"{NET}.2", f"{NET}.3"
BENCH = Protocol("forward-bench", {"chunk": {"n": Field(int), "data": Field(bytes, max_len=2 << 20)}},
                 max_frame=4 << 20)
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def one_run(tmp: Path, port: int, box_records: bool, caller: Identity, callee: Identity, frames: list[BoxedFrame],
            count: int) -> tuple[float, float, float]:
    """MB/s, relay CPU s/GB and clients' CPU s/GB of ``count`` frames through a fresh relay process."""
    relay = start_relay(tmp, None, ip=RELAY_IP, port=port, extra=() if box_records else ("--no-box-records",))
    links: list[RelayLink] = []
    got = threading.Event()
    try:
        reg = RelayRegistration(callee, RELAY_IP, port, on_invite=links.append, inner_protocol=BENCH,
                                source_ip=CALLEE_IP, accept_unregistered=True).start()
        if not reg.wait_registered(20):
            raise RuntimeError(reg.state_text)
        link = open_relay_link(caller, RELAY_IP, port, callee.fingerprint, inner_protocol=BENCH,
                               source_ip=CALLER_IP)
        deadline = time.monotonic() + 20
        while not links and time.monotonic() < deadline:
            time.sleep(0.01)
        peer = links[0]
        if (link.box_max is not None) != box_records:
            raise RuntimeError("box records were not agreed as asked")
        moved = sum(len(frames[i % len(frames)]) for i in range(count))

        def receive() -> None:
            for _ in range(count):
                peer.recv(timeout=30)
            got.set()

        reader = threading.Thread(target=receive)
        relay_before, own_before, start = proc_cpu(relay.pid), own_cpu(), time.perf_counter()
        reader.start()
        for i in range(count):
            link.send_frame(frames[i % len(frames)])
        reader.join()
        elapsed = time.perf_counter() - start
        relay_cpu, clients_cpu = proc_cpu(relay.pid) - relay_before, own_cpu() - own_before
        link.close()
        peer.close()
        reg.close()
        gb = moved / 1e9
        return moved / elapsed / 1e6, relay_cpu / gb, clients_cpu / gb
    finally:
        relay.terminate()
        relay.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=300, help="MiB per run (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs of runs (default 3)")
    parser.add_argument("--frame", type=int, default=1024, help="box size in KiB (default 1024, a file chunk)")
    args = parser.parse_args()
    caller, callee = Identity.generate(), Identity.generate()
    box = args.frame * 1024
    frames = []
    for n in range(4):
        frame = BENCH.encode("chunk", n=n, data=os.urandom(box))
        frames.append(BoxedFrame(frame, len(frame) - box))
    count = max(1, args.size * 1024 * 1024 // len(frames[0]))
    results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="relay-forward-bench-") as tmp:
        port = 18600 + os.getpid() % 300
        for _ in range(args.rounds):
            for box_records in (False, True):
                results[box_records].append(one_run(Path(tmp), port, box_records, caller, callee, frames, count))
    for box_records, name in ((False, "pair records only"), (True, "box records")):
        rows = results[box_records]
        print(f"{name:18} MB/s {', '.join(f'{r[0]:.0f}' for r in rows):24} relay CPU s/GB "
              f"{', '.join(f'{r[1]:.2f}' for r in rows):20} clients CPU s/GB {', '.join(f'{r[2]:.2f}' for r in rows)}")
    ratio = [b[1] / p[1] for p, b in zip(results[False], results[True], strict=True)]
    clients = [b[2] / p[2] for p, b in zip(results[False], results[True], strict=True)]
    print(f"box / pair, same round: relay CPU {', '.join(f'{r:.2f}' for r in ratio)} "
          f"(median {statistics.median(ratio):.2f}); clients CPU {', '.join(f'{r:.2f}' for r in clients)} "
          f"(median {statistics.median(clients):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
