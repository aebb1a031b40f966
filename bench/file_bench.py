"""File transfer benchmark: `p2pchat send`'s path (a file offered in an established chat) direct and through the
relay, against an scp-like bulk copy over TLS 1.3 (Python's ssl), and the latency of texts while a file runs.

    python3 bench/file_bench.py [--quick] [--size MiB] [--rounds N] [--no-write] [--only direct|relay]

Processes on loopback: the receiver (a ChatNode accepting files into a temporary downloads folder, listening
directly and registered at a relay; and a TLS 1.3 server writing what it receives to a file) in a child process,
the relay (rate limit off) in another, the sender in this one. Measured in the same run, alternating:

- TLS 1.3 bulk copy: the file read in 64 KiB blocks and written to a socket, the receiver writing it to disk
  (mutual authentication with RSA-3072 certificates, the handshake not counted): MB/s from the first byte sent
  to the receiver's file closed;
- p2pchat direct and via relay: from ``send_file`` (which reads the file once for the offer's digest: its root
  over 1 MiB pieces, hashed on both cores, since the receiver announced in step 1 that it checks roots;
  protocol.md §3.1, §5.7) to the sender's ``FileFinished`` (the receiver has every byte on disk and checked the whole
  file's digest); the four steps not counted; also the seconds ``send_file`` took to offer (the hash);
- text latency while a transfer runs: a 100-byte text every 10 ms while a direct transfer runs (the texts stop when
  it finishes, so each one overlapped it; as many transfers as it takes for 200 texts), one-way latency (send →
  the receiver's node has decrypted it) p50 / p99, next to the same texts with no transfer;
- CPU (user + system) of all the processes per GB moved, median of the rounds: what a path costs whatever else
  the machine runs (MB/s on a shared machine follow the CPU left over).
Goals (issue 16): file MB/s ≥ 0.5 × TLS; text p99 during a transfer ≤ 50 ms. ``--only`` runs one path without
texts and writes nothing (profiling); ``--no-write`` prints the table without writing docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import queue
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from chat_bench import CLIENT_IP, SERVER_IP, make_certs, tls_context  # noqa: E402
from relay_chat_bench import INITIATOR_IP, RELAY, RESPONDER_IP, Initiator, start_relay  # noqa: E402
from report import BENCHMARKS, write_section  # noqa: E402

from p2pchat.events import FileFinished, MessageReceived  # noqa: E402
from p2pchat.foundation.identity import KEY_FILE, Identity  # noqa: E402
from p2pchat.node import ChatNode  # noqa: E402
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory  # noqa: E402

BLOCK = 64 * 1024


def receiver(pipe: Connection, key_dir: str, entries: list[DirectoryEntry], certs: dict[str, str],
             downloads: str) -> None:
    """Child process: a ChatNode taking every chat and file, and a TLS server writing each connection to a file."""
    node = ChatNode(Identity.load(Path(key_dir) / KEY_FILE), host=RESPONDER_IP, port=0, nickname="receiver",
                    directory=FixedDirectory(entries), auto_accept=True, relay=RELAY, downloads=Path(downloads),
                    accept_files=True, max_file_size=2**40)
    node.start()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    received: list[str] = []        # files to delete before the next measurement (outside every timed part)

    def drain() -> None:
        while not stop.is_set():
            try:
                ev = node.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(ev, MessageReceived):
                with lock:
                    latencies.append(ev.received_at - ev.sent_at)
            elif isinstance(ev, FileFinished) and ev.path:
                with lock:
                    received.append(ev.path)

    ctx = tls_context(certs, server=True)
    listener = socket.create_server((SERVER_IP, 0))
    tls_done: queue.Queue[float] = queue.Queue()

    def tls_loop() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            # a new file every round, as p2pchat's receiver writes (truncating last round's file costs the
            # kernel its pages first: every TLS round after the first was slower)
            target = Path(downloads) / "tls.bin"
            with ctx.wrap_socket(raw, server_side=True) as tls, open(target, "xb") as fh:
                while data := tls.recv(262144):
                    fh.write(data)
            tls_done.put(time.perf_counter())
            with lock:
                received.append(str(target))

    threads = [threading.Thread(target=drain), threading.Thread(target=tls_loop)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not (node.relay_state or "").startswith("registered") and time.monotonic() < deadline:
        time.sleep(0.05)
    pipe.send((node.port, node.relay_state or "", listener.getsockname()[1]))
    while (cmd := pipe.recv()) != "quit":
        if cmd == "latencies":
            with lock:
                pipe.send(list(latencies))
                latencies.clear()
        elif cmd == "tls_done":
            pipe.send(tls_done.get(timeout=600))
        elif cmd == "cpu":
            pipe.send(cpu_seconds())
        elif cmd == "clean":        # before each measurement: the files of the last one go (freeing their pages)
            with lock:
                done, received[:] = list(received), []
            for path in done:
                os.unlink(path)
            pipe.send(len(done))
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for t in threads:
        t.join()
    node.close()


def tls_copy(path: Path, port: int, certs: dict[str, str], parent: Connection) -> float:
    """MB/s of an scp-like copy over TLS 1.3: read blocks, sendall; until the receiver closed its file."""
    ctx = tls_context(certs, server=False)
    raw = socket.create_connection((SERVER_IP, port), source_address=(CLIENT_IP, 0))
    tls = ctx.wrap_socket(raw, server_hostname=SERVER_IP)
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            tls.sendall(block)
    tls.close()
    parent.send("tls_done")
    end = parent.recv()           # the receiver's perf_counter: same machine, same clock
    return path.stat().st_size / 1e6 / (end - t0)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (or of ``pid``, from /proc on Linux)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_file(side: Initiator, sid: str, path: Path) -> tuple[float, float]:
    """MB/s of one transfer, and the seconds ``send_file`` took to hash the file and offer it."""
    t0 = time.perf_counter()
    tid = side.node.send_file(sid, str(path))
    offered = time.perf_counter() - t0
    ev = side.wait(lambda e: isinstance(e, FileFinished) and e.transfer == tid, timeout=600)
    if not ev.ok:
        raise RuntimeError(ev.text)
    return path.stat().st_size / 1e6 / (time.perf_counter() - t0), offered


def texts_during(side: Initiator, sid: str, path: Path | None, parent: Connection, count: int) -> list[float]:
    """Latencies of up to ``count`` texts sent every 10 ms: with no transfer (``path`` None), or only while a
    transfer of ``path`` runs (the texts stop when it finishes, so every one of them overlapped it)."""
    parent.send("latencies")
    parent.recv()                  # drop earlier ones
    if path is None:
        for i in range(count):
            side.node.send_text(sid, f"{i:>99}")
            time.sleep(0.01)
    else:
        tid = side.node.send_file(sid, str(path))
        sent, finished = 0, False
        while not finished and sent < count:
            side.node.send_text(sid, f"{sent:>99}")
            sent += 1
            pause_until = time.monotonic() + 0.01
            while not finished and (left := pause_until - time.monotonic()) > 0:
                try:
                    ev = side.node.events.get(timeout=left)
                except queue.Empty:
                    break
                finished = isinstance(ev, FileFinished) and ev.transfer == tid
        if not finished:
            side.wait(lambda e: isinstance(e, FileFinished) and e.transfer == tid, timeout=600)
        count = sent
    deadline = time.monotonic() + 30
    got: list[float] = []
    while len(got) < count and time.monotonic() < deadline:
        parent.send("latencies")
        got += parent.recv()
        time.sleep(0.05)
    return got


def part_rates() -> dict[str, float]:
    """MB/s of the per-byte work a side does, on this process's core: AES-256-GCM of one 256 KiB chunk with the
    project's crypto library, and SHA-256 (each side hashes the whole file once)."""
    from p2pchat.chat_protocol import MAX_CHUNK, pad
    from p2pchat.foundation import crypto

    key, data = os.urandom(32), pad(os.urandom(MAX_CHUNK))
    n = 64
    t0 = time.perf_counter()
    for i in range(n):
        crypto.seal(key, i.to_bytes(12, "big"), data, b"aad")
    gcm = n * len(data) / 1e6 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(n):
        h.update(data)
    sha = n * len(data) / 1e6 / (time.perf_counter() - t0)
    return {"gcm": gcm, "sha": sha, "ceiling": 1 / (1 / gcm + 1 / sha)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool, size_mib: int, rounds: int = 3, paths: tuple[str, ...] = ("direct", "relay"),
        texts: bool = True) -> dict[str, Any]:
    rounds = 1 if quick else rounds
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="file-bench-") as tmp:
        root = Path(tmp)
        src = root / "payload.bin"
        with open(src, "wb") as fh:
            for i in range(size_mib):
                fh.write(hashlib.shake_256(i.to_bytes(4, "big")).digest(1 << 20))
        certs = make_certs(root)
        idents = {}
        for name in ("responder", "initiator"):
            (root / name).mkdir(mode=0o700)
            idents[name] = Identity.generate()
            idents[name].save(root / name / KEY_FILE)
        (root / "downloads").mkdir()
        relay = start_relay(root, [idents["initiator"].fingerprint])
        initiator_entry = DirectoryEntry(public_der=idents["initiator"].public_der, nickname="initiator",
                                         ip=INITIATOR_IP)
        parent, child = spawn.Pipe()
        proc = spawn.Process(target=receiver, args=(
            child, str(root / "responder"),
            [initiator_entry, DirectoryEntry(public_der=idents["responder"].public_der, nickname="responder",
                                             ip=RESPONDER_IP, relay=RELAY)], certs, str(root / "downloads")))
        proc.start()
        sides: dict[str, Initiator] = {}
        try:
            port, state, tls_port = parent.recv()
            if not state.startswith("registered"):
                raise RuntimeError(f"the receiver is not registered at the relay: {state}")
            direct = DirectoryEntry(public_der=idents["responder"].public_der, nickname="responder",
                                    ip=RESPONDER_IP, port=port)
            relayed = DirectoryEntry(public_der=idents["responder"].public_der, nickname="responder", relay=RELAY)
            sides = {"direct": Initiator(root / "initiator", [direct, initiator_entry], f"{RESPONDER_IP}:{port}",
                                         None),
                     "relay": Initiator(root / "initiator", [relayed, initiator_entry], "responder", RELAY)}
            for name in [name for name in sides if name not in paths]:
                sides.pop(name).close()
            sessions = {name: side.handshake()[0] for name, side in sides.items()}
            samples: dict[str, list[float]] = {"tls": [], "direct": [], "relay": []}
            cpu: dict[str, list[float]] = {"tls": [], "direct": [], "relay": []}
            # seconds from send_file to the offer sent (the sender's pass over the file for the offer's digest;
            # the root, known from step 1 to be checked by the receiver: protocol.md §3.1, §5.7)
            offer_s: dict[str, list[float]] = {"direct": [], "relay": []}
            # per process: sender, receiver, relay (CPU seconds of each, per round)
            parts: dict[str, list[tuple[float, float, float]]] = {"tls": [], "direct": [], "relay": []}

            def cpu_now() -> tuple[float, float, float]:
                parent.send("cpu")
                relay_cpu = cpu_seconds(relay.pid) if sys.platform == "linux" else 0.0
                return cpu_seconds(), parent.recv(), relay_cpu

            def clean() -> None:
                parent.send("clean")
                parent.recv()

            def account(name: str, before: tuple[float, float, float]) -> None:
                spent = tuple(b - a for a, b in zip(before, cpu_now(), strict=True))
                parts[name].append((spent[0], spent[1], spent[2]))
                cpu[name].append(sum(spent))

            for _ in range(rounds):
                clean()
                before = cpu_now()
                samples["tls"].append(tls_copy(src, tls_port, certs, parent))
                account("tls", before)
                for name, side in sides.items():
                    clean()
                    before = cpu_now()
                    rate, offered = send_file(side, sessions[name], src)
                    samples[name].append(rate)
                    offer_s[name].append(offered)
                    account(name, before)
            rates = {k: max(v) if v else 0.0 for k, v in samples.items()}
            if not texts or "direct" not in sides:
                return {"size": size_mib, "rounds": rounds, "paths": {n: s.path for n, s in sides.items()},
                        "samples": samples, "offer_s": offer_s, "cpu": cpu, "parts": parts, **rates}
            n_texts = 60 if quick else 200
            idle = texts_during(sides["direct"], sessions["direct"], None, parent, n_texts)
            busy: list[float] = []
            while len(busy) < n_texts:     # as many transfers as it takes to cover the texts
                busy += texts_during(sides["direct"], sessions["direct"], src, parent, min(n_texts, 50))
            return {"size": size_mib, "rounds": rounds, "paths": {n: s.path for n, s in sides.items()}, **part_rates(),
                    "samples": samples, "offer_s": offer_s, "cpu": cpu, "parts": parts, **rates,
                    "idle_p50": statistics.median(idle), "idle_p99": pct(idle, 0.99),
                    "busy_p50": statistics.median(busy), "busy_p99": pct(busy, 0.99), "texts": len(busy)}
        finally:
            for side in sides.values():
                side.close()
            parent.send("quit")
            proc.join(60)
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=60)


def cpu_per_gb(r: dict[str, Any], path: str) -> float:
    """Median CPU seconds of all processes per GB (10⁹ bytes) a path moved."""
    return float(statistics.median(r["cpu"][path])) * 1000 / (r["size"] * 1.048576)


def cpu_split(r: dict[str, Any], path: str) -> str:
    """Median CPU seconds per GB of the sender, the receiver and the relay process, as ``s / r / relay``."""
    per = [float(statistics.median(p[i] for p in r["parts"][path])) * 1000 / (r["size"] * 1.048576)
           for i in range(3)]
    return " / ".join(f"{x:.2f}" for x in per)


def markdown(r: dict[str, Any]) -> str:
    return "\n".join([
        f"{r['size']} MiB file on loopback, best of {r['rounds']} (same run, alternating); "
        f"{os.cpu_count()} CPUs shared with other work.", "",
        "| measure | value | × TLS 1.3 bulk copy | goal |", "|---|---|---|---|",
        f"| TLS 1.3 bulk copy (Python `ssl`, scp-like) | {r['tls']:.1f} MB/s | 1.00 | — |",
        f"| p2pchat file, direct | {r['direct']:.1f} MB/s | {r['direct'] / r['tls']:.2f} | ≥ 0.5 |",
        f"| p2pchat file, via relay | {r['relay']:.1f} MB/s | {r['relay'] / r['tls']:.2f} | ≥ 0.5 |",
        f"| text latency, no transfer (p50 / p99) | {r['idle_p50'] * 1e3:.1f} / {r['idle_p99'] * 1e3:.1f} ms | — | — |",
        f"| text latency during a transfer (p50 / p99, {r['texts']} texts) | {r['busy_p50'] * 1e3:.1f} / "
        f"{r['busy_p99'] * 1e3:.1f} ms | — | p99 ≤ 50 ms |",
        f"| CPU of all processes per GB moved (TLS / direct / relay) | {cpu_per_gb(r, 'tls'):.2f} / "
        f"{cpu_per_gb(r, 'direct'):.2f} / {cpu_per_gb(r, 'relay'):.2f} s | 1.00 / "
        f"{cpu_per_gb(r, 'direct') / cpu_per_gb(r, 'tls'):.2f} / {cpu_per_gb(r, 'relay') / cpu_per_gb(r, 'tls'):.2f} "
        "| — |",
        f"| … of which sender / receiver / relay process, direct | {cpu_split(r, 'direct')} s | — | — |",
        f"| … of which sender / receiver / relay process, via relay | {cpu_split(r, 'relay')} s | — | — |",
        "", "Where the time goes, per side (measured in this run, one core):", "",
        "| per-byte work | MB/s |", "|---|---|",
        f"| AES-256-GCM, 1 MiB chunks (pycryptodome, the project's crypto module) | {r['gcm']:.0f} |",
        f"| SHA-256 of the whole file (sender before the offer, receiver while writing) | {r['sha']:.0f} |",
        f"| both, one after the other: the ceiling of one side before any copy or system call | {r['ceiling']:.0f} "
        f"({r['ceiling'] / r['tls']:.2f} × TLS) |",
        "", ANALYSIS,
    ])


ANALYSIS = """The TLS baseline encrypts with OpenSSL's AES-GCM inside `ssl` and hashes nothing; a p2pchat transfer
seals every chunk with pycryptodome's AES-GCM (the project's one crypto module) and checks the whole file against
the offer's digest on both sides (the offer's promise, and what makes a resume safe: its root over 1 MiB pieces,
which the sender hashes on both cores, for a receiver that says in step 1 that it checks roots, else its SHA-256);
through the relay each byte is sealed once more between the two clients (docs/relay.md) and passes a third process.
The per-byte rows bound one side before any copy or system call. The CPU row is what decides MB/s on a shared
machine: with both cores busy, a path reaches 0.5 × TLS only if it needs at most about twice TLS's CPU per GB.
Chunks are up to 1 MiB (16 padding buckets) when the receiver announces that it takes them (`max_chunk`, protocol.md
§5.7): besides its bytes, every chunk costs each side two AES-GCM key setups (pycryptodome: about as much as sealing
100 KiB), an acknowledgement and the Python path around a frame. Around the crypto, the per-chunk path: the sender
reads a chunk and seals it from its parts straight into its frame; the frame IO tries each read and write on the
socket's descriptor at once and polls only when it would block; the receiver reads a frame straight into a buffer of
its own, decrypts the box where it lies, and hands the chunk's data (a view of that buffer, not a copy) to the
partial file's writer thread, which writes it (one system call, unbuffered) and hashes it while the reader goes back
to the socket, never waiting for the disk; a chunk is acknowledged once written (every second chunk while more wait,
protocol.md §5.7), so a slow disk slows the sender's window, not the texts; and glibc keeps freed chunk-sized
buffers for reuse. Through the relay, chunks travel in box records (docs/relay.md): the frame's head sealed for the
hop, its end-to-end box authenticated but not encrypted a second time. For texts, compare the two latency rows: the
texts "during a transfer" are sent only while one runs, and wait behind what its window holds, paced to about 25 ms
of the acknowledged rate; on a loaded machine the scheduler's delays come on top. The figures move with the other
work on the machine; the dated subsections below give series measured against the code before each change, in the
same runs."""


HEADING = "## File transfer"


def dated_subsections() -> str:
    """The ``###`` subsections of the section as it stands (dated records of past work), kept by a new run."""
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    section = current.partition(HEADING)[2]
    end = section.find("\n## ")
    section = section[:end] if end >= 0 else section
    start = section.find("\n### ")
    return section[start:].strip("\n") + "\n" if start >= 0 else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 8 MiB (a smoke test of the script)")
    parser.add_argument("--size", type=int, default=50, help="file size in MiB (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of TLS, direct and relay (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print the table only, do not write docs/")
    parser.add_argument("--only", choices=("direct", "relay"), help="one path only, no texts, nothing written "
                                                                     "to docs/ (for profiling)")
    args = parser.parse_args()
    if args.only:
        results = run(False, args.size, args.rounds, (args.only,), texts=False)
        got = results["samples"]
        print(" ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)} MB/s" for k, v in got.items() if v),
              "| x TLS per round:", ", ".join(f"{p / t:.2f}" for p, t in zip(got[args.only], got["tls"], strict=True)),
              "| CPU s per GB (all processes): " + ", ".join(
                  f"{k} {cpu_per_gb(results, k):.2f}" for k, v in results["cpu"].items() if v),
              "| sender / receiver / relay:", cpu_split(results, args.only),
              "| offer after (s):", ", ".join(f"{x:.3f}" for x in results["offer_s"][args.only]))
        return 0
    size = 8 if args.quick else args.size
    results = run(args.quick, size, args.rounds)
    print(f"paths: {results['paths']}")
    print(" ".join(f"{k}: {', '.join(f'{x:.1f}' for x in v)} MB/s" for k, v in results["samples"].items()),
          "| CPU s per GB (all processes): " + ", ".join(
              f"{k} {cpu_per_gb(results, k):.2f}" for k, v in results["cpu"].items() if v),
          "| sender / receiver / relay, direct:", cpu_split(results, "direct"), "via relay:",
          cpu_split(results, "relay"),
          "| offer after (s), direct:", ", ".join(f"{x:.3f}" for x in results["offer_s"]["direct"]),
          "via relay:", ", ".join(f"{x:.3f}" for x in results["offer_s"]["relay"]))
    table = markdown(results)
    print(table)
    if not args.quick and not args.no_write:
        intro = f"{HEADING}\n\n`python3 bench/file_bench.py` (issue 16). "
        write_section(HEADING, f"{intro}{table}\n\n{dated_subsections()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
