"""Where one chat handshake spends its time: a timeline of both sides, per step and per thread.

    python3 bench/handshake_trace.py [HANDSHAKES] [--window FROM TO] [--apart] [--profile DIR]

Runs HANDSHAKES (default 15) sequential four-step handshakes between two ChatNodes on loopback, the responder in
a child process, the initiator in this one (the same set-up as ``bench/chat_bench.py --handshake``: bindings from
an in-memory directory, the responder accepting every chat). In both processes the functions that matter are
wrapped to note a timestamp on entry and exit — frames read and written (with their types), each core call, the
RSA signatures and verifications, the X25519 key generations and agreements, work made ahead
(``Handshake.prepare``), the ledger lookups and the step results — with ``time.perf_counter``, which is
``CLOCK_MONOTONIC`` on Linux and so comparable across the two processes. Prints the handshake times and the
timeline of the median handshake: milliseconds since the initiator opened the session, ``I``/``R`` for the side,
the thread, ``>`` entering and ``<`` leaving a function (with its wall time and its thread's own CPU time: a
wall time far above the CPU time is a thread waiting for the interpreter lock or a core), garbage collections
included. Before it, the critical path cut at its milestones (:data:`MILESTONES`), each segment's median over all
the handshakes. ``--window FROM TO`` also prints every handshake's timeline between two milestones; ``--profile``
replaces the timeline by a CPU profile of every thread of both sides. The wrappers add a few microseconds per
event; the figures to quote come from ``bench/chat_bench.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import multiprocessing as mp
import os
import pstats
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

Entry = tuple[float, int, str, str]      # (perf_counter, pid, thread name, what)
LOG: list[Entry] = []


def note(what: str) -> None:
    LOG.append((time.perf_counter(), os.getpid(), threading.current_thread().name, what))


def wrap(owner: Any, name: str, label: str | None = None, detail: Callable[..., str] | None = None) -> None:
    """Replace ``owner.name`` by a function that notes entry (with ``detail(*args)``) and exit."""
    original = getattr(owner, name)
    shown = label or name

    def traced(*args: Any, **kwargs: Any) -> Any:
        note(f"> {shown}" + (f" {detail(*args, **kwargs)}" if detail is not None else ""))
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            note(f"< {shown}  [{wall * 1000:.3f} wall, {cpu * 1000:.3f} cpu]")
    setattr(owner, name, traced)


PROFILES: list[cProfile.Profile] = []


def profile_threads() -> None:
    """Profile every thread started from now on, and this one, by CPU time (cProfile with each thread's own CPU
    clock, so time spent waiting does not count; the stats of all threads are merged)."""
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)
        PROFILES.append(prof)
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()
    threading.Thread.run = profiled         # type: ignore[method-assign]
    prof = cProfile.Profile(time.thread_time)
    PROFILES.append(prof)
    prof.enable()


def dump_profiles(path: str) -> None:
    for prof in PROFILES:
        prof.disable()
    stats = pstats.Stats(PROFILES[0])
    for prof in PROFILES[1:]:
        stats.add(prof)
    stats.dump_stats(path)


def note_gc(phase: str, info: dict[str, int]) -> None:
    note(f"{'> ' if phase == 'start' else '< '}garbage collection, generation {info['generation']}")


def instrument() -> None:
    gc.callbacks.append(note_gc)
    from p2pchat import event_queue, handshake, handshake_driver, node
    from p2pchat.chat_protocol import CHAT
    from p2pchat.foundation import crypto, identity, transport

    def frames(_sock: Any, data: bytes | memoryview, *_: Any) -> str:
        try:
            types = ",".join(m.type for m in CHAT.reader().feed(bytes(data)))
        except Exception:       # a sealed frame or a partial write: its size says enough
            types = "?"
        return f"{types} {len(data)} B"

    wrap(transport.FramedSocket, "send_nowait", "write", frames)
    wrap(transport.FramedSocket, "send_frame", "write (waiting)", frames)
    receive = transport.FramedSocket.recv

    def recv(self: transport.FramedSocket, timeout: float | None = None) -> Any:
        msg = receive(self, timeout)
        note(f"read {msg.type}")
        return msg
    transport.FramedSocket.recv = recv      # type: ignore[method-assign]
    wrap(handshake.Handshake, "receive", detail=lambda _hs, msg: msg.type)
    wrap(handshake.Handshake, "start", detail=lambda _hs, step: f"step {int(step)}")
    wrap(handshake.Handshake, "accept")
    wrap(handshake.Handshake, "ledger_answer")
    wrap(handshake.Handshake, "prepare", "prepare (work ahead)")
    wrap(identity.Identity, "sign", "RSA sign")
    wrap(crypto, "is_valid_signature", "RSA verify")
    wrap(crypto.EphemeralKey, "__init__", "X25519 key generation")
    wrap(crypto.EphemeralKey, "agree", "X25519 agreement")
    wrap(handshake_driver.HandshakeDriver, "_lookup", "ledger lookup")
    wrap(handshake_driver.HandshakeDriver, "_on_step_done", "step done")
    wrap(node.ChatNode, "_connect_and_serve", "connect and serve")
    wrap(node, "resolve_target", "resolve the peer")
    wrap(node, "dial", "dial (TCP connect)")
    wrap(node.ChatNode, "_serve_incoming", "serve incoming")
    wrap(event_queue.EventQueue, "get", "UI takes an event", lambda *_a, **_k: "")


def responder(pipe: Connection, key_dir: str, entries: list[Any], profile: str | None) -> None:
    if profile:
        profile_threads()
    else:
        instrument()
    import chat_bench

    from p2pchat.foundation.identity import KEY_FILE, Identity
    from p2pchat.node import ChatNode
    from p2pchat.peer_directory import FixedDirectory

    node = ChatNode(Identity.load(Path(key_dir) / KEY_FILE), host=chat_bench.SERVER_IP, port=0,
                    nickname="responder", directory=FixedDirectory(entries), auto_accept=True)
    node.start()
    pipe.send(node.port)
    stop = threading.Event()

    def drain() -> None:        # the UI's part: take the events as they come
        while not stop.is_set():
            try:
                node.events.get(timeout=0.05)
            except queue.Empty:
                pass

    ui = threading.Thread(target=drain, name="ui")
    ui.start()
    while pipe.recv() == "log":
        pipe.send(list(LOG))
        LOG.clear()
    stop.set()
    ui.join()
    node.close()
    if profile:
        dump_profiles(profile)


# The handshake's critical path cut at its milestones: (name, side, what the timeline entry starts with). Each
# segment runs from one milestone to the next; the table gives its median over the handshakes.
MILESTONES = (
    ("open", "I", "=== open the session"),
    ("dialled", "I", "< dial (TCP connect)"),
    ("hello out", "I", "> write hello"),
    ("hello in", "R", "read hello"),
    ("welcome out", "R", "> write welcome"),
    ("welcome in", "I", "read welcome"),
    ("key out", "I", "> write key"),
    ("key in", "R", "read key"),
    ("key back out", "R", "> write key"),
    ("key back in", "I", "read key"),
    ("I signs", "I", "> RSA sign"),
    ("I signed", "I", "< RSA sign"),
    ("auth out", "I", "> write auth"),
    ("auth in", "R", "read auth"),
    ("R signs", "R", "> RSA sign"),
    ("R signed", "R", "< RSA sign"),
    ("auth_reply out", "R", "> write auth_reply"),
    ("auth_reply in", "I", "read auth_reply"),
    ("confirm out", "I", "> write auth_ok,confirm"),
    ("confirm in", "R", "read confirm"),
    ("confirm_reply out", "R", "> write confirm_reply"),
    ("confirm_reply in", "I", "read confirm_reply"),
    ("UI told", "I", "=== step 4 reported to the UI"),
)


def milestones(timeline: list[Entry], me: int) -> list[float] | None:
    """The time of each milestone in one handshake's timeline (each searched after the one before), or None when
    one is missing."""
    found: list[float] = []
    i = 0
    for _, side, prefix in MILESTONES:
        while i < len(timeline):
            t, pid, _, what = timeline[i]
            i += 1
            if ("I" if pid == me else "R") == side and (what == prefix or what.startswith(prefix + " ")):
                found.append(t)
                break
        else:
            return None
    return found


def windows(runs: list[tuple[float, list[Entry]]], me: int, first: str, last: str) -> str:
    """Every handshake's timeline between the milestones ``first`` and ``last``."""
    names = [m[0] for m in MILESTONES]
    a, b = names.index(first), names.index(last)
    lines = []
    for _, timeline in runs:
        cut = milestones(timeline, me)
        if cut is None:
            continue
        start, end = cut[a], cut[b]
        lines.append(f"--- {first} -> {last}: {(end - start) * 1000:.3f} ms")
        lines += [f"  {(t - start) * 1000:8.3f}  {'I' if pid == me else 'R'}  {thread[:20]:20}  {what}"
                  for t, pid, thread, what in timeline if start <= t <= end]
    return "\n".join(lines)


def segment_table(runs: list[tuple[float, list[Entry]]], me: int) -> str:
    """Median milliseconds of each segment between two milestones, over the handshakes."""
    cut = [m for m in (milestones(timeline, me) for _, timeline in runs) if m is not None]
    if not cut:
        return "(no handshake had every milestone)"
    lines = [f"segments of the critical path, median of {len(cut)} handshakes (ms):"]
    total = 0.0
    for k in range(1, len(MILESTONES)):
        median = statistics.median(m[k] - m[k - 1] for m in cut) * 1000
        total += median
        lines.append(f"  {MILESTONES[k - 1][0]:>17} -> {MILESTONES[k][0]:<17} {median:6.3f}")
    lines.append(f"  {'sum of medians':>38} {total:6.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", nargs="?", type=int, default=15, help="handshakes to trace (default 15)")
    parser.add_argument("--window", nargs=2, metavar=("FROM", "TO"), choices=[m[0] for m in MILESTONES],
                        help="also print, for every handshake, the timeline between these two milestones")
    parser.add_argument("--apart", action="store_true",
                        help="wait 50 ms after each session ends, so its closing does not overlap the next one")
    parser.add_argument("--profile", metavar="DIR",
                        help="instead of the timeline: profile every thread of both sides (cProfile, CPU time), "
                             "print where each side's CPU goes and keep the stats in DIR/{initiator,responder}.prof")
    args = parser.parse_args()
    count = args.count
    if not args.profile:
        instrument()
    import chat_bench

    from p2pchat.foundation.identity import KEY_FILE, Identity
    from p2pchat.peer_directory import DirectoryEntry

    spawn = mp.get_context("spawn")
    runs: list[tuple[float, list[Entry]]] = []
    with tempfile.TemporaryDirectory(prefix="handshake-trace-") as tmp:
        root = Path(tmp)
        entries = []
        for name, ip in (("responder", chat_bench.SERVER_IP), ("initiator", chat_bench.CLIENT_IP)):
            (root / name).mkdir(mode=0o700)
            ident = Identity.generate()
            ident.save(root / name / KEY_FILE)
            entries.append(DirectoryEntry(public_der=ident.public_der, nickname=name, ip=ip, port=None))
        parent, child = spawn.Pipe()
        out = Path(args.profile) if args.profile else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        profile = str(out / "responder.prof") if out is not None else None
        proc = spawn.Process(target=responder, args=(child, str(root / "responder"), entries, profile))
        proc.start()
        port = parent.recv()
        entries[0] = DirectoryEntry(**{**entries[0].__dict__, "port": port})
        if args.profile:
            profile_threads()
        client = chat_bench.ChatClient(root / "initiator", entries, port)
        try:
            sid, _ = client.handshake()                     # warm-up: imports, the peer's key parsed once
            client.end(sid)
            for _ in range(count):
                parent.send("log")
                parent.recv()
                LOG.clear()
                note("=== open the session")
                sid, elapsed = client.handshake()
                note("=== step 4 reported to the UI")
                ours = list(LOG)
                client.end(sid)
                if args.apart:
                    time.sleep(0.05)
                parent.send("log")
                runs.append((elapsed, sorted(ours + parent.recv())))
        finally:
            client.close()
            parent.send("quit")
            proc.join()
        if out is not None:
            dump_profiles(str(out / "initiator.prof"))
            for side in ("initiator", "responder"):
                print(f"===== {side}: CPU by function over {count + 1} handshakes (cProfile, all threads)")
                pstats.Stats(str(out / f"{side}.prof")).sort_stats("tottime").print_stats(30)
                pstats.Stats(str(out / f"{side}.prof")).sort_stats("cumtime").print_stats(70)
            return 0
    times = [t * 1000 for t, _ in runs]
    if args.window:
        print(windows(runs, os.getpid(), *args.window))
    print(segment_table(runs, os.getpid()))
    print(f"{count} handshakes: p50 {statistics.median(times):.1f} ms; " + ", ".join(f"{t:.1f}" for t in times))
    elapsed, timeline = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    print(f"timeline of the median handshake ({elapsed * 1000:.1f} ms):")
    start = next(t for t, _, _, what in timeline if what.startswith("=== open"))
    me = os.getpid()
    for t, pid, thread, what in timeline:
        if t < start:
            continue         # the previous session's last frames
        print(f"{(t - start) * 1000:8.3f}  {'I' if pid == me else 'R'}  {thread[:20]:20}  {what}")
        if what.startswith("=== step 4"):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
