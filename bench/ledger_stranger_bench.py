"""Work per stranger on a running ``ledger serve`` (red team 2026-12-07): what one address's frames cost the node
(CPU, RSS, threads) against what they cost the attacker (CPU of this process), and whether an honest light client
is still answered during the attack.

    python3 bench/ledger_stranger_bench.py [--baseline-code /work/main] [--seconds 5]

Attacks, each from one address over 16 connections (the per-address connection limit), bounded in time:

- ``prove``: reachability proofs asked as fast as answered (each costs the node an RSA-3072 signature);
- ``unread``: ``get_headers`` for 2,000 headers sent without ever reading an answer (chain of 2,100 blocks);
- ``status``: ``status`` asked in lock step (the per-frame cost of a request);
- ``headers``: ``get_headers`` for 2,000 headers asked in lock step, every answer read;
- ``churn``: connect, ``hello``, read the ``hello_ack``, hang up, again (16 at once);
- ``slots``: 16 connections from each of 5 addresses kept open (every connection the node serves), then an
  honest ``status`` from a sixth;
- ``lookup``: ``lookup`` of a 64-character look-alike nickname in lock step (red team 2026-12-07 night);
- ``checkpoint``: ``get_checkpoint`` for a height in lock step (the finality survey's question);
- ``evidence``: ``checkpoint_evidence`` naming an unknown chat peer, in lock step;
- ``reblock``: 2 peer connections (an address's share of peer slots) whose hello claims a clock years ahead,
  each sending the same 470 KB block (500 records, dated in the future) over and over without reading;
- ``submit``: relay-only registrations (no reachability check), each signed by the attacker just before it is
  sent: 16 keys, each chaining updates (a fresh RSA-3072 signature per record); the node checks, pools, mines
  them (difficulty 8 here: the network default of 20 bits makes every block cost the miner ~4,000× more).

``--baseline-code DIR`` runs the same attacks, in the same run, against a node started from another checkout
(e.g. the code before the fixes) and prints the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.blocks import Block, BlockHeader  # noqa: E402
from ledger.client import LedgerClient  # noqa: E402
from ledger.merkle import merkle_root  # noqa: E402
from ledger.params import NetworkParams  # noqa: E402
from ledger.protocol import LEDGER_PROTOCOL, ROLE_CLIENT, ROLE_PEER, hello_fields  # noqa: E402
from ledger.records import ZERO_HASH, make_register  # noqa: E402
from p2pchat.foundation import crypto  # noqa: E402
from p2pchat.foundation.errors import UserError  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402
from p2pchat.foundation.transport import FramedSocket, connect  # noqa: E402
from tests.conftest import free_loopback_ip, make_identities  # noqa: E402
from tests.integration.procs import premine  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SUBMITTERS: list[Identity] = []   # the submit attack's keys, made before any measurement
SUBMITTED: list[int] = []         # records each submitter had accepted
REFUSALS: list[str] = []          # the first reason a submit was refused
FUTURE_BLOCK: list[bytes] = []    # the reblock attack's frame, made before any measurement
PARAMS = NetworkParams(name="p2pchat", difficulty_bits=8)
CONNECTIONS = 16


def usage(pid: int) -> tuple[float, float, int]:
    """(CPU seconds, RSS MB, threads) of the node process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return (int(fields[11]) + int(fields[12])) / TICK, rss_kb / 1024, int(fields[17])


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def client_conn(host: str, source: str) -> FramedSocket:
    conn = connect(host, 8470, LEDGER_PROTOCOL, source_ip=source, timeout=5)
    conn.send("hello", **hello_fields(role=ROLE_CLIENT, nonce=crypto.random_bytes(8), network=PARAMS.name))
    conn.recv(5)
    return conn


def honest_status(host: str) -> str:
    try:
        LedgerClient(host, source_ip=free_loopback_ip(), timeout=5).status()
        return "answered"
    except UserError as exc:
        return f"REFUSED ({str(exc)[:60]})"


def lockstep(frame: bytes, seconds: float) -> Callable[[FramedSocket], None]:
    def run(conn: FramedSocket) -> None:
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                conn.send_frame(frame)
                conn.recv(10)
        except UserError:
            pass   # refused or dropped by the node
    return run


def submitter(conn: FramedSocket, identity: Identity, seconds: float) -> None:
    """Chained relay-only updates of one key, each signed here (the attacker's cost) and read back."""
    end = time.monotonic() + seconds
    seq, prev, accepted = 0, ZERO_HASH, 0
    try:
        while time.monotonic() < end:
            nickname = f"s{identity.fingerprint.hex()[:8]}-{seq}"
            record = make_register(identity, network=PARAMS.name, seq=seq, prev=prev, nickname=nickname,
                                   relay="127.0.0.1:9000", issued=int(time.time()), lifetime=86400)
            conn.send("submit", record=record.to_wire())
            answer = conn.recv(20)
            if answer.type == "submit_result" and answer["accepted"]:
                seq, prev, accepted = seq + 1, record.id, accepted + 1
            elif not REFUSALS:
                REFUSALS.append(str(answer.get("reason")))
    except UserError as exc:
        REFUSALS.append(str(exc))
    SUBMITTED.append(accepted)


def peer_conn(host: str, source: str) -> FramedSocket:
    """A gossip peer's connection whose hello claims a clock years ahead (its future blocks are then excused)."""
    conn = connect(host, 8470, LEDGER_PROTOCOL, source_ip=source, timeout=5)
    genesis = PARAMS.genesis().header
    conn.send("hello", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=PARAMS.name,
                                      genesis=PARAMS.genesis_hash, params=PARAMS.to_wire(), height=0,
                                      tip=genesis.hash, work=0, listen_port=None, time=int(time.time()) + 10**8))
    ack = conn.recv(5)
    if ack.type != "hello_ack":
        print(f"reblock: the node answered {ack.type} {ack.get('reason') or ack.fields}", file=sys.stderr)
    return conn


def future_block_frame() -> bytes:
    """A ``block`` frame of 500 relay-only records, dated ~3 years ahead (not mined: it is refused before that)."""
    identity = SUBMITTERS[0]
    records = [make_register(identity, network=PARAMS.name, seq=1, prev=bytes([i % 250 + 1]) * 32,
                             nickname=f"x{i}", relay="127.0.0.1:9000", issued=int(time.time()), lifetime=86400)
               for i in range(500)]
    genesis = PARAMS.genesis().header
    header = BlockHeader(version=PARAMS.version, network_id=PARAMS.network_id, height=1, prev_hash=genesis.hash,
                         merkle_root=merkle_root([r.id for r in records]), timestamp=int(time.time()) + 10**8,
                         target_bits=PARAMS.difficulty_bits, nonce=0)
    return bytes(LEDGER_PROTOCOL.encode("block", block=Block(header, tuple(records)).to_wire()))


def send_whole(frame: bytes, seconds: float) -> Callable[[FramedSocket], None]:
    """Send ``frame`` again and again, each whole (a large frame cut short would break the stream), until time."""
    def run(conn: FramedSocket) -> None:
        end = time.monotonic() + seconds
        try:
            while (left := end - time.monotonic()) > 0:
                conn.sock.settimeout(left)
                conn.sock.sendall(frame)
        except OSError:
            return
    return run


def never_read(frame: bytes, seconds: float) -> Callable[[FramedSocket], None]:
    def run(conn: FramedSocket) -> None:
        end = time.monotonic() + seconds
        conn.sock.settimeout(0.2)
        while time.monotonic() < end:
            try:
                conn.sock.sendall(frame)
            except TimeoutError:
                continue
            except OSError:
                return
    return run


def attack(name: str, host: str, seconds: float) -> tuple[list[FramedSocket], Callable[[FramedSocket], None] | None]:
    if name == "slots":
        conns = []
        for _ in range(5):
            source = free_loopback_ip()
            conns += [client_conn(host, source) for _ in range(CONNECTIONS)]
        return conns, None
    source = free_loopback_ip()
    if name == "churn":
        def churn(_: object) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    client_conn(host, source).close()
                except UserError:
                    time.sleep(0.01)
        return [None] * CONNECTIONS, churn   # type: ignore[list-item]
    if name == "reblock":   # an address gets 2 inbound peer slots
        return [peer_conn(host, source) for _ in range(2)], send_whole(FUTURE_BLOCK[0], seconds)
    conns = [client_conn(host, source) for _ in range(CONNECTIONS)]
    if name == "prove":
        return conns, lockstep(LEDGER_PROTOCOL.encode("prove", nonce=bytes(32)), seconds)
    if name == "status":
        return conns, lockstep(LEDGER_PROTOCOL.encode("status"), seconds)
    if name == "lookup":
        return conns, lockstep(LEDGER_PROTOCOL.encode("lookup", by="nick", value="аео" * 21 + "x"),
                               seconds)
    if name == "checkpoint":
        return conns, lockstep(LEDGER_PROTOCOL.encode("get_checkpoint", height=1000), seconds)
    if name == "evidence":
        return conns, lockstep(LEDGER_PROTOCOL.encode("checkpoint_evidence", peer=bytes(32), final_height=5,
                                                      final_hash=bytes(32), tip_height=9, tip_hash=bytes(32)),
                               seconds)
    if name == "submit":
        keys = iter(SUBMITTERS)
        return conns, lambda conn: submitter(conn, next(keys), seconds)
    if name == "headers":
        return conns, lockstep(LEDGER_PROTOCOL.encode("get_headers", locator=[PARAMS.genesis_hash], limit=2000),
                               seconds)
    return conns, never_read(LEDGER_PROTOCOL.encode("get_headers", locator=[PARAMS.genesis_hash], limit=2000),
                             seconds)


def run_one(code: Path, store: Path, name: str, seconds: float, work: Path) -> dict[str, object]:
    data = work / f"{name}-{code.name}-{time.monotonic_ns()}"
    shutil.copytree(store, data)
    host = free_loopback_ip()
    env = dict(os.environ, PYTHONPATH=str(code), P2PCHAT_HOME=str(work / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--difficulty", "8", "--host", host,
                             "--data-dir", str(data)], cwd=code, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while honest_status(host) != "answered":
            if time.monotonic() > deadline:
                raise SystemExit(f"the node from {code} did not start")
            time.sleep(0.1)
        time.sleep(1.0)
        cpu0, rss0, threads0 = usage(proc.pid)
        mine0 = own_cpu()
        conns, body = attack(name, host, seconds)
        threads = [threading.Thread(target=body, args=(c,)) for c in conns] if body else []
        for t in threads:
            t.start()
        peak_rss, peak_threads = rss0, threads0
        end = time.monotonic() + seconds
        while any(t.is_alive() for t in threads) or (not threads and time.monotonic() < end):
            _, rss, n = usage(proc.pid)
            peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, n)
            time.sleep(0.1)
        honest = honest_status(host)
        cpu1, _, _ = usage(proc.pid)
        mine = own_cpu() - mine0
        for c in conns:
            if c is not None:
                c.close()
        for t in threads:
            t.join()
        return {"node_cpu": cpu1 - cpu0, "attacker_cpu": mine, "rss": f"{rss0:.0f}->{peak_rss:.0f}",
                "threads": f"{threads0}->{peak_threads}", "honest": honest}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-code", type=Path, help="another checkout to run the same attacks against")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--attacks", default="prove,unread,status,headers,churn,slots,lookup,checkpoint,evidence,"
                                              "reblock,submit", help="comma-separated")
    args = parser.parse_args()
    codes = [ROOT] + ([args.baseline_code.resolve()] if args.baseline_code else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "store"
        store.mkdir(mode=0o700)
        keys = make_identities(1 + CONNECTIONS)
        keys[0].save(store / "identity.pem")
        SUBMITTERS[:] = keys[1:]
        FUTURE_BLOCK[:] = [future_block_frame()]
        premine(store, 2100)
        print(f"{'attack':10} {'code':>10} {'node CPU s':>10} {'attacker CPU s':>14} {'ratio':>6} "
              f"{'RSS MB':>10} {'threads':>9}  honest status")
        for name in args.attacks.split(","):
            for code in codes:
                r = run_one(code, store, name, args.seconds, work)
                ratio = r["node_cpu"] / max(r["attacker_cpu"], 0.01)   # type: ignore[operator]
                label = "this" if code == ROOT else "baseline"
                refusal = REFUSALS[0][:80] if REFUSALS else "-"
                extra = f"  ({sum(SUBMITTED)} records accepted; first refusal: {refusal})" if name == "submit" else ""
                SUBMITTED.clear()
                REFUSALS.clear()
                print(f"{name:10} {label:>10} {r['node_cpu']:10.2f} {r['attacker_cpu']:14.2f} {ratio:6.1f} "
                      f"{r['rss']:>10} {r['threads']:>9}  {r['honest']}{extra}", flush=True)


if __name__ == "__main__":
    main()
