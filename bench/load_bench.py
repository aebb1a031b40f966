"""Load benchmark: many chats on one node, long runs of handshakes, and a 16-node ledger under a steady stream of
registrations. Errors, memory (RSS) and thread counts are recorded; baselines are measured in the same run.

    python3 bench/load_bench.py [--sessions 200] [--handshakes 1000] [--nodes 16] [--records 160] [--quick] [--write]

1. **Concurrent sessions**: one responder ChatNode in a child process (auto-accept, keys looked up in a fixed
   directory, as in bench/chat_bench.py); the initiator opens ``--sessions`` chats at once, sends one message in
   each, waits for every receipt and ends them all. The responder's RSS and thread count are read from
   /proc/<pid>/status before, at the peak and after; the threads must come back to the idle count.
2. **Handshakes in a row**: ``--handshakes`` fresh sessions one after the other (four steps, then goodbye),
   against mutual TLS 1.3 handshakes (RSA-3072 certificates, Python's ssl) in the same run as the baseline;
   the responder's RSS is sampled every 10 % to show whether it grows.
3. **Ledger under load**: ``--nodes`` `ledger` processes (``serve`` + ``join``) on 127.0.x.y; ``--records``
   registrations/updates are submitted at ``--rate`` per second round robin; the run ends when every node has
   mined every record and all tips agree. Per process RSS and threads idle vs at the end of the stream.

Functions ``chat_load`` and ``ledger_load`` are used, with small numbers, by tests/security/test_hardening_load.py.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import socket
import ssl
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

from ledger.client import LedgerClient  # noqa: E402
from ledger.errors import LedgerError  # noqa: E402
from ledger.records import make_register  # noqa: E402
from p2pchat.admission import Admission  # noqa: E402
from p2pchat.events import DeliveryReceipt, SessionEnded, StepResult  # noqa: E402
from p2pchat.foundation.errors import UserError  # noqa: E402
from p2pchat.foundation.identity import KEY_FILE, Identity  # noqa: E402
from p2pchat.node import ChatNode  # noqa: E402
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory  # noqa: E402
from p2pchat.steps import Step  # noqa: E402

SERVER_IP, CLIENT_IP, TLS_IP = "127.0.93.2", "127.0.93.3", "127.0.93.4"
LEDGER_BASE = "127.0.94.10"


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """RSS (KiB) and thread count of a process, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


# --- the responder child ------------------------------------------------------------------------------------

def responder(pipe: Connection, key_dir: str, entries: list[DirectoryEntry], max_sessions: int, host: str) -> None:
    identity = Identity.load(Path(key_dir) / KEY_FILE)
    # The benchmark measures capacity from one client address, so that address is not held to the limits on
    # strangers (p2pchat.admission); what those limits do under floods is tests/security/test_admission_floods.py.
    roomy = Admission(per_address=max_sessions, total=max_sessions, per_minute=1_000_000, per_peer=max_sessions)
    node = ChatNode(identity, host=host, port=0, nickname="responder", directory=FixedDirectory(entries),
                    auto_accept=True, step_timeout=60, max_sessions=max_sessions, workers=8, admission=roomy)
    node.start()
    counts = {"failed": 0, "messages": 0, "ended": 0}
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                ev = node.events.get(timeout=0.2)
            except Exception:  # queue.Empty
                continue
            name = type(ev).__name__
            if name == "StepResult" and not ev.ok:
                counts["failed"] += 1
            elif name == "MessageReceived":
                counts["messages"] += 1
            elif name == "SessionEnded":
                counts["ended"] += 1

    drainer = threading.Thread(target=drain, name="bench-drain")
    drainer.start()
    pipe.send(node.port)
    while True:
        cmd = pipe.recv()
        if cmd == "stats":
            pipe.send({**proc_status(), **counts, "sessions": len(node.sessions())})
        elif cmd == "quit":
            break
    stop.set()
    drainer.join()
    node.close()
    pipe.send("closed")


class Responder:
    """The responder child and its pipe."""

    def __init__(self, key_dir: Path, entries: list[DirectoryEntry], max_sessions: int, host: str) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=responder, args=(child, str(key_dir), entries, max_sessions, host))
        self.proc.start()
        self.port: int = self._recv()

    def _recv(self, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while not self.pipe.poll(0.2):
            if not self.proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the responder process stopped answering (exit code {self.proc.exitcode})")
        return self.pipe.recv()

    def stats(self) -> dict[str, Any]:
        self.pipe.send("stats")
        return self._recv()

    def close(self) -> None:
        if self.proc.is_alive():
            self.pipe.send("quit")
            self._recv()
        self.proc.join(30)


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Caller:
    """The initiating ChatNode with an event log."""

    def __init__(self, identity: Identity, directory: FixedDirectory, host: str) -> None:
        self.node = ChatNode(identity, host=host, nickname="caller", directory=directory, listen=False,
                             step_timeout=60, workers=16)
        self.node.start()
        self.events: list[Any] = []

    def pump(self) -> list[Any]:
        while True:
            try:
                self.events.append(self.node.events.get_nowait())
            except Exception:  # queue.Empty
                return self.events

    def count(self, kind: type, **fields: Any) -> int:
        return sum(1 for e in self.pump() if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()))

    def close(self) -> None:
        self.node.close()


def keys_dir(base: Path, identity: Identity) -> Path:
    d = base / "responder-key"
    d.mkdir(mode=0o700, exist_ok=True)
    identity.save(d / KEY_FILE)
    return d


def chat_load(sessions: int, handshakes: int, identities: list[Identity], workdir: Path,
              tls_baseline: bool = False, server_ip: str = SERVER_IP, client_ip: str = CLIENT_IP) -> dict[str, Any]:
    """Parts 1 and 2; returns the figures (``errors`` counts everything that went wrong)."""
    caller_id, responder_id = identities[:2]
    entries = [DirectoryEntry(public_der=caller_id.public_der, nickname="caller", ip=client_ip, height=1,
                              confirmations=1)]
    resp = Responder(keys_dir(workdir, responder_id), entries, max(512, 2 * sessions), server_ip)
    directory = FixedDirectory([*entries, DirectoryEntry(public_der=responder_id.public_der, nickname="responder",
                                                         ip=server_ip, port=resp.port, height=1, confirmations=1)])
    caller = Caller(caller_id, directory, client_ip)
    out: dict[str, Any] = {"sessions": sessions, "handshakes": handshakes}
    try:
        idle = resp.stats()
        out["idle"] = idle
        target = f"{server_ip}:{resp.port}"
        # 1. concurrent sessions
        t0 = time.monotonic()
        sids = [caller.node.open_session(target) for _ in range(sessions)]
        for sid in sids:
            caller.node.run_all(sid)
        wait(lambda: caller.count(StepResult, step=Step.AGREE_KEY, ok=True) + caller.count(StepResult, ok=False)
             >= sessions, 600, "the concurrent handshakes")
        out["concurrent_ready_s"] = time.monotonic() - t0
        for sid in sids:
            try:
                caller.node.send_text(sid, f"hello from {sid}")
            except UserError:
                pass
        wait(lambda: caller.count(DeliveryReceipt) >= caller.count(StepResult, step=Step.AGREE_KEY, ok=True),
             300, "the receipts")
        out["peak"] = resp.stats()
        for sid in sids:
            caller.node.end_session(sid)
        wait(lambda: caller.count(SessionEnded) >= sessions, 300, "the goodbyes")
        wait(lambda: resp.stats()["threads"] <= idle["threads"], 30, "the responder's threads to return", 0.2)
        out["after_concurrent"] = resp.stats()
        out["concurrent_errors"] = (caller.count(StepResult, ok=False) + sessions - caller.count(DeliveryReceipt)
                                    + out["after_concurrent"]["failed"])
        # 2. handshakes in a row
        times: list[float] = []
        samples = []
        errors = 0
        for i in range(handshakes):
            caller.events.clear()
            t = time.monotonic()
            sid = caller.node.open_session(target)
            caller.node.run_all(sid)
            wait(lambda s=sid: caller.count(StepResult, session=s, step=Step.AGREE_KEY, ok=True)
                 or caller.count(StepResult, session=s, ok=False), 60, f"handshake {i}", 0.001)
            times.append(time.monotonic() - t)
            errors += caller.count(StepResult, session=sid, ok=False)
            caller.node.end_session(sid)
            wait(lambda s=sid: caller.count(SessionEnded, session=s), 60, f"goodbye {i}", 0.001)
            if handshakes >= 10 and i % max(1, handshakes // 10) == 0:
                samples.append(resp.stats()["rss_kib"])
        wait(lambda: resp.stats()["threads"] <= idle["threads"], 30, "the responder's threads to return", 0.2)
        after = resp.stats()
        out.update(handshake_p50_ms=1000 * statistics.median(times), handshake_p99_ms=1000 * sorted(times)[
            int(0.99 * (len(times) - 1))], handshakes_total_s=sum(times), handshake_errors=errors + after["failed"]
            - out["after_concurrent"]["failed"], rss_samples=samples, after_handshakes=after)
        out["errors"] = out["concurrent_errors"] + out["handshake_errors"]
        out["caller_threads_during"] = threading.active_count()
    finally:
        caller.close()
        resp.close()
    if tls_baseline:
        out["tls_p50_ms"] = tls_handshakes(min(handshakes, 1000), workdir)
    return out


def tls_handshakes(n: int, workdir: Path) -> float:
    """p50 of ``n`` sequential mutual TLS 1.3 handshakes (RSA-3072) over loopback, in ms."""
    sys.path.insert(0, str(ROOT / "bench"))
    import chat_bench  # the same certificates and contexts as the chat benchmark

    chat_bench.SERVER_IP, chat_bench.CLIENT_IP = TLS_IP, CLIENT_IP
    certs = chat_bench.make_certs(workdir)
    server_ctx, client_ctx = chat_bench.tls_context(certs, True), chat_bench.tls_context(certs, False)
    listener = socket.create_server((TLS_IP, 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, name="bench-tls")
    thread.start()
    times = []
    try:
        for _ in range(n):
            t = time.monotonic()
            raw = socket.create_connection((TLS_IP, port), source_address=(CLIENT_IP, 0))
            with client_ctx.wrap_socket(raw, server_hostname=TLS_IP) as tls:
                tls.sendall(b"x")
            times.append(time.monotonic() - t)
    finally:
        stop.set()
        listener.close()
        try:
            socket.create_connection((TLS_IP, port), timeout=1).close()
        except OSError:
            pass
        thread.join()
    return 1000 * statistics.median(times)


# --- 3. ledger under a stream of registrations ---------------------------------------------------------------

def ip_at(base: str, offset: int) -> str:
    parts = [int(p) for p in base.split(".")]
    parts[3] += offset
    return ".".join(str(p) for p in parts)


def _env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("P2PCHAT_HOME", None)
    return out


def ledger_load(n_nodes: int, n_records: int, rate: float, identities: list[Identity], workdir: Path,
                ips: list[str] | None = None, difficulty: int = 10) -> dict[str, Any]:
    """Part 3; ``identities`` supply the nodes' keys (first ``n_nodes``) and the registering keys (the rest);
    ``ips`` the nodes' addresses (default: consecutive addresses from LEDGER_BASE)."""
    ips = ips or [ip_at(LEDGER_BASE, i) for i in range(n_nodes)]
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {"nodes": n_nodes, "records": n_records, "rate": rate}
    try:
        for i, ip in enumerate(ips):
            data = workdir / f"ledger-{ip}"
            data.mkdir(mode=0o700)
            identities[i].save(data / KEY_FILE)
            args = (["serve", "--difficulty", str(difficulty)] if i == 0 else ["join", ips[0]])
            log = (workdir / f"ledger-{ip}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "ledger", *args, "--host", ip, "--data-dir",
                                           str(data)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=_env()))
            if i == 0:
                wait(lambda: _status(ips[0]), 60, "the first node")
        wait(lambda: all(_own_mined(ip) for ip in ips), 180, "every node's own record to be mined", 0.2)
        out["idle"] = [proc_status(p.pid) for p in procs]
        writers = identities[n_nodes:]
        if not writers:
            raise ValueError("give identities beyond the nodes' own for the registration stream")
        seqs = {w.fingerprint: (0, bytes(32)) for w in writers}
        submitted: list[tuple[bytes, int]] = []
        errors: list[str] = []
        t0 = time.monotonic()
        for n in range(n_records):
            w = writers[n % len(writers)]
            seq, prev = seqs[w.fingerprint]
            record = make_register(w, network="p2pchat", seq=seq, prev=prev, nickname=f"load{n % len(writers)}",
                                   relay=f"10.77.{n // 250}.{n % 250 + 1}:8472", issued=int(time.time()),
                                   lifetime=86400)
            node_ip = ips[writers.index(w) % n_nodes]     # one node per identity: its records arrive in order
            try:
                LedgerClient(node_ip, timeout=10.0).submit(record)
                seqs[w.fingerprint] = (seq + 1, record.id)
                submitted.append((w.fingerprint, seq))
            except (LedgerError, UserError) as exc:
                errors.append(str(exc))
            pause = t0 + (n + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        out["stream_s"] = time.monotonic() - t0
        latest = {fp: seq for fp, seq in submitted}
        wait(lambda: all(_all_mined(ip, latest) for ip in ips), 300, "every record mined on every node", 0.5)
        out["converge_s"] = time.monotonic() - t0 - out["stream_s"]
        tips = {(_status(ip) or {}).get("tip") for ip in ips}
        out["tips_agree"] = len(tips) == 1
        out["end"] = [proc_status(p.pid) for p in procs]
        out["height"] = (_status(ips[0]) or {}).get("height")
        out["errors"] = len(errors)
        out["error_samples"] = errors[:3]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        out["exit_codes"] = codes
    return out


def _status(ip: str) -> dict[str, Any] | None:
    try:
        return LedgerClient(ip, timeout=3.0).status()
    except UserError:
        return None


def _own_mined(ip: str) -> bool:
    status = _status(ip)
    return bool(status and status.get("own_record") and status["own_record"].get("state") == "mined")


def _all_mined(ip: str, latest: dict[bytes, int]) -> bool:
    client = LedgerClient(ip, timeout=5.0)
    try:
        for fp, seq in latest.items():
            binding = client.find(fp.hex(), by="fp")
            if binding is None or binding.seq < seq:
                return False
        status = client.status()
    except UserError:
        return False
    return status.get("pending") == 0


# --- report ---------------------------------------------------------------------------------------------------

def summary(values: list[dict[str, int]], key: str) -> str:
    xs = [v[key] for v in values]
    return f"min {min(xs)}, max {max(xs)}, total {sum(xs)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--handshakes", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--records", type=int, default=160)
    parser.add_argument("--rate", type=float, default=4.0, help="registrations per second")
    parser.add_argument("--writers", type=int, default=8, help="identities registering (their keys cost 0.5 s each)")
    parser.add_argument("--quick", action="store_true", help="20 sessions, 50 handshakes, 4 nodes, 16 records")
    parser.add_argument("--write", action="store_true", help="put the figures in docs/benchmarks.md (## Load)")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.handshakes, args.nodes, args.records = 20, 50, 4, 16
    print(f"generating {2 + args.nodes + args.writers} RSA-3072 identities…", flush=True)
    ids = [Identity.generate() for _ in range(2 + args.nodes + args.writers)]
    with tempfile.TemporaryDirectory(prefix="p2pchat-load-") as tmp:
        work = Path(tmp)
        chat = chat_load(args.sessions, args.handshakes, ids[:2], work, tls_baseline=True)
        print(f"\n1. {chat['sessions']} concurrent sessions on one node: all ready in "
              f"{chat['concurrent_ready_s']:.1f} s, errors {chat['concurrent_errors']}")
        for label, key in (("idle", "idle"), ("peak", "peak"), ("after", "after_concurrent")):
            s = chat[key]
            print(f"   responder {label:5}: RSS {s['rss_kib'] / 1024:.1f} MiB, {s['threads']} threads")
        per = (chat["peak"]["rss_kib"] - chat["idle"]["rss_kib"]) / max(1, chat["sessions"])
        print(f"   RSS per live session: {per:.0f} KiB")
        print(f"\n2. {chat['handshakes']} handshakes in a row: p50 {chat['handshake_p50_ms']:.1f} ms, "
              f"p99 {chat['handshake_p99_ms']:.1f} ms, total {chat['handshakes_total_s']:.1f} s, "
              f"errors {chat['handshake_errors']}")
        print(f"   TLS 1.3 mutual-auth p50 {chat['tls_p50_ms']:.2f} ms → ratio "
              f"{chat['handshake_p50_ms'] / chat['tls_p50_ms']:.1f}")
        samples = chat["rss_samples"]
        if samples:
            print(f"   responder RSS over the run (MiB): {', '.join(f'{s / 1024:.1f}' for s in samples)}; "
                  f"threads after: {chat['after_handshakes']['threads']} (idle {chat['idle']['threads']})")
        led = ledger_load(args.nodes, args.records, args.rate, ids[2:2 + args.nodes] + ids[2 + args.nodes:], work)
        print(f"\n3. {led['nodes']}-node ledger, {led['records']} registrations at {led['rate']:g}/s: "
              f"stream {led['stream_s']:.1f} s, all mined everywhere {led['converge_s']:.1f} s later, "
              f"height {led['height']}, tips agree: {led['tips_agree']}, errors {led['errors']} {led['error_samples']}")
        print(f"   RSS KiB idle: {summary(led['idle'], 'rss_kib')}; at the end: {summary(led['end'], 'rss_kib')}")
        print(f"   threads idle: {summary(led['idle'], 'threads')}; at the end: {summary(led['end'], 'threads')}")
        print(f"   exit codes: {sorted(set(led['exit_codes']))}")
        if args.write:
            sys.path.insert(0, str(ROOT / "bench"))
            from report import write_section

            print(f"wrote {write_section(SECTION, markdown(chat, led))}")
    return 0


SECTION = "## Load"


def markdown(chat: dict[str, Any], led: dict[str, Any]) -> str:
    """The docs/benchmarks.md section of a full run."""
    mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
    i, p, a = chat["idle"], chat["peak"], chat["after_concurrent"]
    per = (p["rss_kib"] - i["rss_kib"]) / max(1, chat["sessions"])
    li, le = led["idle"], led["end"]
    return f"""{SECTION}

Measured by `python3 bench/load_bench.py --write` on x86_64 (CPython {sys.version.split()[0]}, 2 cores shared with
other work, {time.strftime("%Y-%m-%d")}). The responder is a ChatNode in its own process (keys in a fixed
directory); RSS and threads come from /proc. Errors, threads and the rest of the hardening figures:
docs/security.md, "Fuzzing, crash and load figures".

| Measure | Result | Baseline (same run) | Ratio |
|---|---|---|---|
| {chat['sessions']} concurrent chats on one node: all four steps done | {chat['concurrent_ready_s']:.1f} s, \
{chat['concurrent_errors']} errors | — | — |
| responder RSS idle → peak → after | {mib(i['rss_kib'])} → {mib(p['rss_kib'])} → {mib(a['rss_kib'])} MiB \
({per:.0f} KiB per live session) | — | — |
| responder threads idle → peak → after | {i['threads']} → {p['threads']} → {a['threads']} | — | — |
| {chat['handshakes']} handshakes in a row, p50 (p99) | {chat['handshake_p50_ms']:.1f} ms \
({chat['handshake_p99_ms']:.0f} ms), {chat['handshake_errors']} errors | mutual TLS 1.3 p50 \
{chat['tls_p50_ms']:.1f} ms | {chat['handshake_p50_ms'] / chat['tls_p50_ms']:.1f} |
| {led['nodes']}-node ledger, {led['records']} registrations at {led['rate']:g}/s | every record mined everywhere \
{led['converge_s']:.1f} s after the last; tips agree: {led['tips_agree']}; {led['errors']} errors | — | — |
| ledger RSS, all nodes idle → end | {mib(sum(x['rss_kib'] for x in li))} → {mib(sum(x['rss_kib'] for x in le))} MiB \
| idle | {sum(x['rss_kib'] for x in le) / sum(x['rss_kib'] for x in li):.2f} |
| ledger threads, all nodes idle → end | {sum(x['threads'] for x in li)} → {sum(x['threads'] for x in le)} | idle \
| {sum(x['threads'] for x in le) / sum(x['threads'] for x in li):.2f} |
"""


if __name__ == "__main__":
    sys.exit(main())
