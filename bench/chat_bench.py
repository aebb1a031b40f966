"""Chat channel benchmark: the p2pchat node against TLS 1.3 (Python's ssl), measured in the same run.

    python3 bench/chat_bench.py [--quick] [--handshake] [--bulk ROUNDS]

Both sides run in separate processes on loopback: the responder (a ChatNode, or a threaded TLS server) in a
child process, the initiator in this one. Measured:

- four-step handshake, p50 of sequential fresh sessions, vs mutual TLS 1.3 with RSA-3072 certificates signed
  by a throwaway CA made at start (the ``cryptography`` package, used only here); one TLS handshake and one chat
  handshake alternately, both responders running, so both see the same load. The chat nodes look keys up
  in a fixed in-memory directory (``p2pchat.peer_directory.FixedDirectory``) holding both bindings, the
  counterpart of TLS checking a certificate against a CA it already holds; a ledger lookup over loopback adds
  one local round trip per side;
- 100-byte messages per second one way (each answered by a delivery receipt, as in the chat) vs the same codec
  frames (message + receipt) over TLS 1.3;
- 1 MiB messages, MB/s, vs the same over TLS 1.3;
- one-way latency p50 (send → the receiver's node has decrypted it and queued the event), vs TLS;
- memory per idle established session on the responder (RSS growth / sessions), next to the same for TLS;
- the responder's CPU per attempt of a registered attacker who sends hello, key and key_ok and hangs up (a bounded
  loop on loopback, the attacker's own CPU for the same attempts as the baseline): the cheapest way to make a
  responder work. The attacker runs the project's own handshake core (whatever version is checked out).

``--handshake`` runs only the handshake comparison and the attacker loop.
``--bulk ROUNDS`` runs the handshakes and then only 1 MiB messages: per round one TLS stream and one chat stream,
alternating, each round's ratio printed (the figures of a loaded machine swing between rounds), with the CPU each
side spent per MiB (``getrusage``: this process for the sender, the responder process for the receiver, read once
it is idle again) — steadier than the wall clock on a shared machine.
``--rotate-every N`` sets the sending node's key rotation interval (default 10, the product's default).
``--per-stream N`` sets the 1 MiB messages of one ``--bulk`` stream (default 24; longer streams give steadier CPU
figures, shorter ones weigh each stream's start and end more).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import multiprocessing as mp
import os
import queue
import resource
import socket
import ssl
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

from p2pchat.admission import Admission
from p2pchat.channel_driver import OutboxFull
from p2pchat.chat_protocol import CHAT, Send
from p2pchat.events import DeliveryReceipt, MessageReceived, SessionEnded, StepResult
from p2pchat.foundation.codec import Field, Protocol
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.foundation.transport import connect
from p2pchat.handshake import Failed, Handshake, LedgerBinding, NeedLookup, StepDone
from p2pchat.node import ChatNode
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory
from p2pchat.steps import Step

# The TLS baseline speaks the same codec: a text frame (id, time, text) answered by a receipt frame.
BENCH = Protocol("bench", {"text": {"id": Field(int), "sent_at": Field(float), "text": Field(str)},
                           "receipt": {"id": Field(int)}}, max_frame=4 * 1024 * 1024)
SERVER_IP, CLIENT_IP = "127.0.91.2", "127.0.91.3"
HANDSHAKES, SMALL, BIG, LATENCY, IDLE = 30, 3000, 24, 300, 200
IDLE_BATCH = 4                               # sessions opened at once (p2pchat.admission's per-address bound)
ATTACKS, ATTACK_SECONDS = 300, 60.0          # the attacker loop: at most this many attempts, at most this long


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def p50(values: list[float]) -> float:
    return statistics.median(values)


def cpu_seconds() -> float:
    """User + system CPU of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process (``/proc/self/task/*/schedstat``: nanoseconds, where ``stat``
    counts 10 ms ticks), by thread name; threads of one kind (the node's pool workers) are summed under one name,
    and what threads that ended since used is under "ended threads". Empty where there is no /proc."""
    names = {t.native_id: t.name.rstrip("0123456789").rstrip("_-") or t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                ran = int(fh.read().split()[0]) / 1e9
        except OSError:
            continue                      # the thread ended meanwhile
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + ran
    out["ended threads"] = max(0.0, cpu_seconds() - sum(out.values()))
    return out


# --- certificates for the TLS baseline ------------------------------------------------------------------------

def make_certs(directory: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key() -> Any:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)

    now = datetime.datetime.now(datetime.UTC)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    paths = {"ca": str(directory / "ca.pem")}
    Path(paths["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for i, (name, ip) in enumerate((("server", SERVER_IP), ("client", CLIENT_IP)), start=2):
        k = key()
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(k.public_key()).serial_number(i)
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths[f"{name}_cert"] = str(directory / f"{name}.pem")
        paths[f"{name}_key"] = str(directory / f"{name}.key")
        Path(paths[f"{name}_cert"]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(paths[f"{name}_key"]).write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    return paths


def tls_context(certs: dict[str, str], server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    side = "server" if server else "client"
    ctx.load_cert_chain(certs[f"{side}_cert"], certs[f"{side}_key"])
    ctx.load_verify_locations(certs["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED        # mutual authentication
    if server:
        ctx.num_tickets = 0                    # every handshake is a full one
    return ctx


# --- responder processes ----------------------------------------------------------------------------------------

def tls_server(pipe: Connection, certs: dict[str, str]) -> None:
    ctx = tls_context(certs, server=True)
    listener = socket.create_server((SERVER_IP, 0))
    pipe.send(listener.getsockname()[1])
    latencies: list[float] = []
    conns: list[socket.socket] = []
    threads: list[threading.Thread] = []
    lock = threading.Lock()

    def serve(raw: socket.socket) -> None:
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with lock:
            conns.append(tls)
        reader = BENCH.reader()
        try:
            while data := tls.recv(262144):
                for msg in reader.feed(data):
                    if msg.type == "text":
                        now = time.time()
                        with lock:
                            latencies.append(now - msg["sent_at"])
                        tls.sendall(BENCH.encode("receipt", id=msg["id"]))
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls.close()

    def accept_loop() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            t = threading.Thread(target=serve, args=(raw,))
            threads.append(t)
            t.start()

    acceptor = threading.Thread(target=accept_loop)
    acceptor.start()
    serve_commands(pipe, lambda: list(latencies), lambda: latencies.clear())
    listener.shutdown(socket.SHUT_RDWR)      # wakes the blocked accept()
    listener.close()
    acceptor.join()
    with lock:
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    for t in threads:
        t.join()


class CountingIdentity(Identity):
    """The responder's identity, counting its RSA private-key operations (``sign`` is the only one)."""

    signatures = 0
    _lock = threading.Lock()

    def sign(self, context: str, data: bytes) -> bytes:
        with self._lock:
            CountingIdentity.signatures += 1
        return super().sign(context, data)


def chat_server(pipe: Connection, key_dir: str, entries: list[DirectoryEntry]) -> None:
    identity = CountingIdentity.load(Path(key_dir) / KEY_FILE)
    # The attacker loop opens ATTACKS unauthenticated connections from one address, far more than the per-minute
    # allowance of a stranger (p2pchat.admission): an attacker with as many addresses gets that far, and what each
    # attempt then costs the responder is what is measured.
    node = ChatNode(identity, host=SERVER_IP, port=0, nickname="responder", directory=FixedDirectory(entries),
                    auto_accept=True, max_sessions=1024, admission=Admission(per_minute=2 * ATTACKS))
    node.start()
    pipe.send(node.port)
    latencies: list[float] = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                ev = node.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(ev, MessageReceived):
                latencies.append(ev.received_at - ev.sent_at)

    drainer = threading.Thread(target=drain)
    drainer.start()
    serve_commands(pipe, lambda: list(latencies), latencies.clear)
    stop.set()
    drainer.join()
    node.close()


def serve_commands(pipe: Connection, stats: Callable[[], list[float]], reset: Callable[[], None]) -> None:
    while True:
        cmd = pipe.recv()
        if cmd == "stats":
            pipe.send(stats())
        elif cmd == "reset":
            reset()
            pipe.send(True)
        elif cmd == "rss":
            import gc

            gc.collect()
            pipe.send(rss_kib())
        elif cmd == "cpu":
            pipe.send(cpu_seconds())
        elif cmd == "threads":
            pipe.send(thread_cpu())
        elif cmd == "signatures":
            pipe.send(CountingIdentity.signatures)
        elif cmd == "quit":
            return


# --- initiator side -------------------------------------------------------------------------------------------

class ChatClient:
    def __init__(self, key_dir: Path, entries: list[DirectoryEntry], port: int, rotate_every: int = 10) -> None:
        self.node = ChatNode(Identity.load(key_dir / KEY_FILE), host=CLIENT_IP, nickname="initiator",
                             directory=FixedDirectory(entries), listen=False, step_timeout=60, workers=8,
                             rotate_every=rotate_every)
        self.node.start()
        self.peer = f"{SERVER_IP}:{port}"
        self.pending: list[Any] = []

    def wait(self, match: Callable[[Any], bool], timeout: float = 120.0) -> Any:
        for i, ev in enumerate(self.pending):
            if match(ev):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self.node.events.get(timeout=max(0.001, deadline - time.monotonic()))
            if match(ev):
                return ev
            if isinstance(ev, StepResult) and not ev.ok:
                raise RuntimeError(ev.detail)
            self.pending.append(ev) if isinstance(ev, (StepResult, SessionEnded)) else None

    def handshake(self) -> tuple[str, float]:
        t0 = time.perf_counter()
        sid = self.node.open_session(self.peer)
        self.node.run_all(sid)
        self.wait(lambda e: isinstance(e, StepResult) and e.session == sid and e.step == Step.AGREE_KEY and e.ok)
        return sid, time.perf_counter() - t0

    def end(self, sid: str) -> None:
        self.node.end_session(sid)
        self.wait(lambda e: isinstance(e, SessionEnded) and e.session == sid)

    def stream(self, sid: str, text: str, count: int) -> float:
        """Seconds from the first send to the receipt of the last message."""
        t0 = time.perf_counter()
        last = 0
        for _ in range(count):
            while True:
                try:
                    last = self.node.send_text(sid, text)
                    break
                except OutboxFull:     # the node holds 8 MiB for the wire at most: wait as a user would
                    self.wait(lambda e: isinstance(e, DeliveryReceipt) and e.session == sid, 300)
        self.wait(lambda e: isinstance(e, DeliveryReceipt) and e.session == sid and e.msg_id == last, 300)
        return time.perf_counter() - t0

    def paced(self, sid: str, count: int) -> None:
        for i in range(count):
            msg_id = self.node.send_text(sid, f"ping {i}")
            self.wait(lambda e, m=msg_id: isinstance(e, DeliveryReceipt) and e.session == sid and e.msg_id == m)
            time.sleep(0.002)

    def close(self) -> None:
        self.node.close()


class TlsClient:
    def __init__(self, certs: dict[str, str], port: int) -> None:
        self.ctx = tls_context(certs, server=False)
        self.port = port

    def connect(self) -> ssl.SSLSocket:
        raw = socket.socket()
        raw.bind((CLIENT_IP, 0))
        raw.connect((SERVER_IP, self.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ctx.wrap_socket(raw, server_hostname=SERVER_IP)

    def handshake(self) -> float:
        t0 = time.perf_counter()
        tls = self.connect()
        elapsed = time.perf_counter() - t0
        tls.close()
        return elapsed

    def stream(self, text: str, count: int) -> float:
        tls = self.connect()
        receipts = threading.Thread(target=self._read_receipts, args=(tls, count))
        t0 = time.perf_counter()
        receipts.start()
        for i in range(1, count + 1):
            tls.sendall(BENCH.encode("text", id=i, sent_at=time.time(), text=text))
        receipts.join()
        elapsed = time.perf_counter() - t0
        tls.close()
        return elapsed

    def paced(self, count: int) -> None:
        tls = self.connect()
        reader = BENCH.reader()
        for i in range(1, count + 1):
            tls.sendall(BENCH.encode("text", id=i, sent_at=time.time(), text=f"ping {i}"))
            while not reader.feed(tls.recv(65536)):
                pass
            time.sleep(0.002)
        tls.close()

    @staticmethod
    def _read_receipts(tls: ssl.SSLSocket, count: int) -> None:
        reader = BENCH.reader()
        seen = 0
        while seen < count:
            seen += sum(1 for m in reader.feed(tls.recv(262144)) if m.type == "receipt")


def attack_through_step_2(identity: Identity, responder_der: bytes, port: int, count: int,
                          seconds: float) -> tuple[int, float]:
    """A registered peer's cheapest loop against a responder: connect, hello, key, key_ok, hang up — ``count``
    times or for ``seconds``, whichever ends first. Returns (attempts, this process's CPU seconds for them)."""
    binding = LedgerBinding(public_der=responder_der, nickname="responder", ip=SERVER_IP, port=port, relay=None,
                            height=1, confirmations=1)
    attempts, deadline, cpu0 = 0, time.monotonic() + seconds, cpu_seconds()
    while attempts < count and time.monotonic() < deadline:
        conn = connect(SERVER_IP, port, CHAT, source_ip=CLIENT_IP, timeout=10)
        hs = Handshake(initiator=True, identity=identity, nickname="attacker", network="p2pchat",
                       local_address=f"{CLIENT_IP}:8471", peer_address=f"{SERVER_IP}:{port}")

        def act(events: list[Any], hs: Handshake = hs, conn: Any = conn) -> list[Any]:
            out: list[Any] = []
            for ev in events:
                if isinstance(ev, Send):
                    conn.send_frame(ev.frame)
                elif isinstance(ev, NeedLookup):
                    out += act(hs.ledger_answer(binding))
                else:
                    out.append(ev)
            return out

        try:
            for step in (Step.CONNECT, Step.SWAP_KEYS):
                events = act(hs.start(step))
                while not any(isinstance(e, StepDone) and e.step is step for e in events):
                    if any(isinstance(e, Failed) for e in events):
                        raise RuntimeError(f"the attack loop was refused: {events}")
                    events += act(hs.receive(conn.recv(10)))
        finally:
            hs.close()
            conn.close()
        attempts += 1
    return attempts, cpu_seconds() - cpu0


def settled_cpu(pipe: Connection) -> float:
    """The responder's CPU seconds once it stopped working on what it was sent (two reads 0.3 s apart agree)."""
    pipe.send("cpu")
    last = pipe.recv()
    for _ in range(100):
        time.sleep(0.3)
        pipe.send("cpu")
        now = pipe.recv()
        if now - last < 0.003:
            return now
        last = now
    return last


# --- the run -------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--handshake", action="store_true",
                        help="only the handshake against TLS and the attacker loop (no message figures)")
    parser.add_argument("--bulk", type=int, metavar="ROUNDS", default=0,
                        help="only 1 MiB messages: ROUNDS rounds, each a TLS stream then a chat stream, "
                             "interleaved so both see the same load")
    parser.add_argument("--per-stream", type=int, default=BIG, metavar="N",
                        help=f"1 MiB messages per --bulk stream (default {BIG})")
    parser.add_argument("--rotate-every", type=int, default=10, metavar="N",
                        help="the sender's key rotation interval in texts (default 10, the product's; 1000, the "
                             "protocol's maximum, shows what rotation costs a stream)")
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    n_hs, n_small, n_big, n_lat, n_idle = (HANDSHAKES // scale or 3, SMALL // scale, BIG // scale or 2,
                                           LATENCY // scale, IDLE // scale)
    n_attacks = ATTACKS // scale
    only_hs = args.handshake
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        root = Path(tmp)
        print("generating RSA-3072 keys and the TLS certificates …", flush=True)
        certs = make_certs(root)
        entries = []
        for name, ip in (("responder", SERVER_IP), ("initiator", CLIENT_IP)):
            (root / name).mkdir(mode=0o700)
            ident = Identity.generate()
            ident.save(root / name / KEY_FILE)
            entries.append(DirectoryEntry(public_der=ident.public_der, nickname=name, ip=ip, port=None))

        results: dict[str, Any] = {}
        # Both responders run at once, so that the two kinds of handshake alternate and share whatever else
        # the machine is doing at that moment.
        tls_pipe, child = spawn.Pipe()
        tls_proc = spawn.Process(target=tls_server, args=(child, certs))
        tls_proc.start()
        tls = TlsClient(certs, tls_pipe.recv())
        parent, child = spawn.Pipe()
        proc = spawn.Process(target=chat_server, args=(child, str(root / "responder"), entries))
        proc.start()
        port = parent.recv()
        entries[0] = DirectoryEntry(**{**entries[0].__dict__, "port": port})
        client = ChatClient(root / "initiator", entries, port, args.rotate_every)
        try:
            tls.handshake()                                                      # warm-up
            sid, _ = client.handshake()
            client.end(sid)
            tls_times, times = [], []
            for _ in range(n_hs):
                tls_times.append(tls.handshake())
                sid, t = client.handshake()
                times.append(t)
                client.end(sid)
            results["tls_hs"], results["chat_hs"] = p50(tls_times), p50(times)
            if args.bulk:
                chat_ms, tls_ms = results["chat_hs"] * 1000, results["tls_hs"] * 1000
                print(f"handshake p50 {chat_ms:.1f} ms, mutual TLS 1.3 {tls_ms:.1f} ms, ratio {chat_ms / tls_ms:.2f}",
                      flush=True)
                bulk_rounds(tls, client, max(1, args.per_stream), args.bulk, tls_pipe, parent)
                return 0
            if only_hs:
                tls_pipe.send("quit")
                tls_proc.join()
            else:
                tls_messages(results, tls, tls_pipe, tls_proc, n_small, n_big, n_lat, n_idle)
                chat_messages(results, client, parent, n_small, n_big, n_lat, n_idle)
            before = settled_cpu(parent)
            parent.send("signatures")
            signed_before = parent.recv()
            attempts, attacker_cpu = attack_through_step_2(client.node.identity, entries[0].public_der, port,
                                                           n_attacks, ATTACK_SECONDS)
            results["attack"] = (attempts, settled_cpu(parent) - before, attacker_cpu)
            parent.send("signatures")
            results["attack_signatures"] = parent.recv() - signed_before
        finally:
            client.close()
            parent.send("quit")
            proc.join()
            if tls_proc.is_alive():
                tls_pipe.send("quit")
                tls_proc.join()

    report(results, n_hs, n_small, n_big, n_lat, n_idle)
    return 0


def bulk_rounds(tls: TlsClient, client: ChatClient, n_big: int, rounds: int, tls_pipe: Connection,
                chat_pipe: Connection) -> None:
    """1 MiB messages only: TLS and chat streams alternate, one of each per round; prints every round's ratio and
    the CPU per MiB of each side (``getrusage``: this process, the sender, and the responder process, the
    receiver, read through its pipe once it is idle again), and at the end each side's CPU per MiB by thread
    (``/proc/PID/task/*/stat``; a thread that did nothing in a stream is left out)."""
    sid, _ = client.handshake()
    text = "x" * (1 << 20)
    ratios: list[float] = []
    cpu: dict[str, list[tuple[float, float]]] = {"chat": [], "TLS": []}
    by_thread: dict[tuple[str, str], dict[str, list[float]]] = {}

    def per_thread(kind: str, side: str, before: dict[str, float], after: dict[str, float]) -> None:
        into = by_thread.setdefault((kind, side), {})
        for name, seconds in after.items():
            used = seconds - before.get(name, 0.0)
            if used > 0:
                into.setdefault(name, []).append(used / n_big * 1e3)

    def measured(kind: str, pipe: Connection, run: Callable[[], float]) -> float:
        receiver = settled_cpu(pipe)
        pipe.send("threads")
        receiver_threads = pipe.recv()
        sender, sender_threads = cpu_seconds(), thread_cpu()
        seconds = run()
        sent, sent_threads = cpu_seconds() - sender, thread_cpu()
        cpu[kind].append((sent / n_big * 1e3, (settled_cpu(pipe) - receiver) / n_big * 1e3))
        pipe.send("threads")
        per_thread(kind, "receiver", receiver_threads, pipe.recv())
        per_thread(kind, "sender", sender_threads, sent_threads)
        return n_big * 1.048576 / seconds

    for i in range(rounds):
        tls_rate = measured("TLS", tls_pipe, lambda: tls.stream(text, n_big))
        chat_rate = measured("chat", chat_pipe, lambda: client.stream(sid, text, n_big))
        ratios.append(chat_rate / tls_rate)
        (cs, cr), (ts, tr) = cpu["chat"][-1], cpu["TLS"][-1]
        print(f"round {i + 1}: chat {chat_rate:.1f} MB/s, TLS 1.3 {tls_rate:.1f} MB/s, ratio {ratios[-1]:.2f} "
              f"(load {os.getloadavg()[0]:.1f}); CPU ms per MiB, sender / receiver: chat {cs:.2f} / {cr:.2f}, "
              f"TLS {ts:.2f} / {tr:.2f}", flush=True)
    print(f"1 MiB messages ({n_big} per stream, {rounds} rounds): ratio median {statistics.median(ratios):.2f}, "
          f"range {min(ratios):.2f}–{max(ratios):.2f}")
    for kind, pairs in cpu.items():
        print(f"{kind} CPU ms per MiB, median: sender {statistics.median(p[0] for p in pairs):.2f}, "
              f"receiver {statistics.median(p[1] for p in pairs):.2f}")
    for (kind, side), threads in by_thread.items():
        shown = sorted(((statistics.median(v), name) for name, v in threads.items()), reverse=True)
        print(f"{kind} {side} CPU ms per MiB by thread, median: "
              + ", ".join(f"{name} {ms:.2f}" for ms, name in shown if ms >= 0.005))
    client.end(sid)


def tls_messages(results: dict[str, Any], tls: TlsClient, parent: Connection, proc: Any, n_small: int, n_big: int,
                 n_lat: int, n_idle: int) -> None:
    """The TLS baseline's message figures; stops the TLS responder."""
    results["tls_small"] = n_small / tls.stream("x" * 100, n_small)
    results["tls_big"] = n_big * 1.048576 / tls.stream("x" * (1 << 20), n_big)
    parent.send("reset")
    parent.recv()
    tls.paced(n_lat)
    parent.send("stats")
    results["tls_lat"] = p50(parent.recv())
    parent.send("rss")
    base = parent.recv()
    idle = [tls.connect() for _ in range(n_idle)]
    time.sleep(0.5)
    parent.send("rss")
    results["tls_idle"] = (parent.recv() - base) / n_idle
    for s in idle:
        s.close()
    parent.send("quit")
    proc.join()


def chat_messages(results: dict[str, Any], client: ChatClient, parent: Connection, n_small: int, n_big: int,
                  n_lat: int, n_idle: int) -> None:
    """The chat's message figures against the running chat responder."""
    sid, _ = client.handshake()
    results["chat_small"] = n_small / client.stream(sid, "x" * 100, n_small)
    results["chat_big"] = n_big * 1.048576 / client.stream(sid, "x" * (1 << 20), n_big)
    parent.send("reset")
    parent.recv()
    client.paced(sid, n_lat)
    parent.send("stats")
    results["chat_lat"] = p50(parent.recv())
    client.end(sid)
    parent.send("rss")
    base = parent.recv()
    sids: list[str] = []
    while len(sids) < n_idle:
        # a few at a time: the responder admits at most a few unauthenticated connections from one address at once
        batch = [client.node.open_session(client.peer) for _ in range(min(IDLE_BATCH, n_idle - len(sids)))]
        for s in batch:
            client.node.run_all(s)
        for s in batch:
            client.wait(lambda e, s=s: isinstance(e, StepResult) and e.session == s and e.step == Step.AGREE_KEY
                        and e.ok)
        sids += batch
    time.sleep(0.5)
    parent.send("rss")
    results["chat_idle"] = (parent.recv() - base) / n_idle
    for s in sids:          # the attacker loop that follows measures a responder with no chats running
        client.end(s)


def report(r: dict[str, Any], n_hs: int, n_small: int, n_big: int, n_lat: int, n_idle: int) -> None:
    rows = [
        (f"Handshake p50 ({n_hs} sequential, fresh sessions)", f"{r['chat_hs'] * 1000:.1f} ms",
         f"mutual TLS 1.3, RSA-3072 certs {r['tls_hs'] * 1000:.1f} ms", f"{r['chat_hs'] / r['tls_hs']:.2f}",
         "≤ 1.5"),
    ]
    if "chat_small" in r:
        rows += [
            (f"100-byte messages one way ({n_small:,}, each with its receipt)", f"{r['chat_small']:,.0f} msg/s",
             f"TLS 1.3, same frames {r['tls_small']:,.0f} msg/s", f"{r['chat_small'] / r['tls_small']:.2f}",
             "≥ 0.5"),
            (f"1 MiB messages ({n_big})", f"{r['chat_big']:.1f} MB/s", f"TLS 1.3 {r['tls_big']:.1f} MB/s",
             f"{r['chat_big'] / r['tls_big']:.2f}", "≥ 0.8"),
            (f"One-way latency p50 ({n_lat} paced messages)", f"{r['chat_lat'] * 1000:.2f} ms",
             f"TLS 1.3 {r['tls_lat'] * 1000:.2f} ms", "—", "≤ 1 ms"),
            (f"Memory per idle session ({n_idle} sessions, responder RSS)", f"{r['chat_idle']:.0f} KiB",
             f"TLS 1.3, thread per connection {r['tls_idle']:.0f} KiB", "—", "≤ 200 KiB"),
        ]
    attempts, victim_cpu, attacker_cpu = r["attack"]
    rows.append((f"Responder CPU per attacker attempt (hello, key, key_ok, hang up; {attempts} attempts)",
                 f"{victim_cpu / attempts * 1000:.2f} ms",
                 f"the attacker's own CPU {attacker_cpu / attempts * 1000:.2f} ms",
                 f"{victim_cpu / attacker_cpu:.2f}", "≤ 1"))
    rows.append((f"Responder RSA signatures during those {attempts} attempts", f"{r['attack_signatures']}",
                 "—", "—", "0"))
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, {datetime.date.today()}")
    print("| Measure | p2pchat | Baseline (same run) | Ratio | Goal |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
