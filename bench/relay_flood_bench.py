"""Issue 11's relay floods against a running relay process: what each costs the relay (CPU, RSS) against what it
costs the attacker (CPU of this process), and whether an honest call still gets through.

    python3 bench/relay_flood_bench.py [--quick]

Floods (each bounded in count): a stranger's answered calls holding sessions open (the per-address slots of the
callee), throwaway keys' unanswered calls (pending caps), calls that hang up at once, one key ringing one host,
answers with guessed tickets, sessions whose callee never reads while the caller pushes (the relay's memory while
its writers are blocked), and calls from a key without a ledger record to a host that did not consent. Relay CPU
comes from /proc (user + system), attacker CPU from getrusage of this process (it also runs the honest callee,
which is counted against the attacker: a conservative ratio). The baseline is the idle relay in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pchat.foundation.errors import PeerUnreachable, UserError  # noqa: E402
from p2pchat.foundation.identity import Identity  # noqa: E402
from p2pchat.relay import RelayError, RelayLink, RelayRegistration, open_relay_link  # noqa: E402
from p2pchat.relay.cli import query_status  # noqa: E402
from p2pchat.relay.link import connect_link  # noqa: E402
from p2pchat.relay.protocol import LOGIN_CONTEXT, VERSION, expect, login_proof_data  # noqa: E402
from tests.p2pchat.relay.relay_helpers import INNER, Invites  # noqa: E402

HOST = "127.0.94.1"
PORT = 18474
TICK = os.sysconf("SC_CLK_TCK")


def relay_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of the relay process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return cpu, rss_kb / 1024


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Bench:
    def __init__(self, key_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "p2pchat.relay", "--host", HOST, "--port", str(PORT),
                                      "--key-file", str(key_dir / "relay_key"), "--pair-timeout", "60",
                                      "--no-ledger", "--send-timeout", "4", "--rate", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.key = bytes(query_status(HOST, PORT, timeout=2)["relay_key"])
                break
            except UserError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.ip = itertools.cycle([f"127.0.95.{i}" for i in range(1, 250)])
        self.closables: list[Any] = []

    def raw(self, identity: Identity, role: str, source_ip: str, **fields: Any) -> Any:
        conn = connect_link((HOST, PORT), pin=self.key, source_ip=source_ip, timeout=10)
        challenge = expect(conn, "challenge", 10, f"{HOST}:{PORT}")
        proof = login_proof_data(challenge["nonce"], f"{HOST}:{PORT}", identity.fingerprint, "p2pchat")
        conn.send("login", version=VERSION, network="p2pchat", role=role, key=identity.public_der,
                  sig=identity.sign(LOGIN_CONTEXT, proof), **fields)
        return conn

    def call(self, identity: Identity, peer: Identity) -> RelayLink:
        return open_relay_link(identity, HOST, PORT, peer.fingerprint, inner_protocol=INNER,
                               source_ip=next(self.ip), timeout=30, relay_key=self.key)

    def measure(self, name: str, attack: Callable[[], str]) -> dict[str, Any]:
        cpu0, _ = relay_usage(self.proc.pid)
        mine0 = own_cpu()
        outcome = attack()
        cpu1, rss = relay_usage(self.proc.pid)
        return {"flood": name, "relay_cpu": cpu1 - cpu0, "attacker_cpu": own_cpu() - mine0, "relay_rss": rss,
                "outcome": outcome}

    def close(self) -> None:
        for obj in reversed(self.closables):
            obj.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def run(quick: bool) -> list[dict[str, Any]]:
    n = 60 if quick else 300
    ids = [Identity.generate() for _ in range(6)]
    pushers = [Identity.generate() for _ in range(8)]         # made before any measurement
    stranger, bob, carol, silent = ids[0], ids[1], ids[2], ids[5]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="relay-flood-bench-") as tmp:
        b = Bench(Path(tmp))
        try:
            _, rss0 = relay_usage(b.proc.pid)
            rows.append({"flood": "idle relay", "relay_cpu": 0.0, "attacker_cpu": 0.0, "relay_rss": rss0,
                         "outcome": "baseline"})
            invites = Invites()
            b.closables.append(invites)
            reg = RelayRegistration(bob, HOST, PORT, on_invite=invites, inner_protocol=INNER, source_ip="127.0.96.1",
                                    relay_key=b.key, accept_unregistered=True).start()
            b.closables.append(reg)
            assert reg.wait_registered(20), reg.state_text
            quiet = b.raw(silent, "register", "127.0.96.2", accept_unregistered=True)
            b.closables.append(quiet)
            expect(quiet, "registered", 10, "relay")

            def slots() -> str:
                held = 0
                for _ in range(3):          # the ring limit allows 3 calls a minute per key and host
                    link = b.call(stranger, bob)
                    b.closables.append(link)
                    b.closables.append(invites.get(timeout=20))
                    held += 1
                honest = b.call(carol, bob)
                b.closables.append(honest)
                b.closables.append(invites.get(timeout=20))
                return f"{held} stranger sessions held; honest call paired"

            def ring_flood() -> str:
                refused = 0
                for _ in range(n):
                    try:
                        b.call(stranger, bob).close()
                    except RelayError:
                        refused += 1
                return f"{refused}/{n} refused by the ring limit"

            def pending_flood() -> str:
                refused = waiting = 0
                for key in ids[:4]:
                    ip = next(b.ip)
                    for _ in range(4):
                        conn = b.raw(key, "call", ip, peer=silent.fingerprint)
                        b.closables.append(conn)
                        try:
                            expect(conn, "paired", 0.3, "relay")
                        except RelayError:
                            refused += 1
                        except PeerUnreachable:
                            waiting += 1
                pending = query_status(HOST, PORT)["pending"]
                return f"16 calls: {waiting} waiting, {refused} refused; relay pending = {pending}"

            def hangups() -> str:
                for i in range(n // 10):
                    conn = b.raw(ids[3 + i % 2], "call", next(b.ip), peer=bob.fingerprint)
                    conn.close()
                time.sleep(0.5)
                status = query_status(HOST, PORT)
                return f"{n // 10} calls hung up: pending {status['pending']}, hangups {status['counters']['hangups']}"

            def unregistered() -> str:
                reg.close()
                reg2 = RelayRegistration(bob, HOST, PORT, on_invite=invites, inner_protocol=INNER,
                                         source_ip="127.0.96.3", relay_key=b.key).start()   # default: no consent
                b.closables.append(reg2)
                assert reg2.wait_registered(20)
                refused = 0
                for _ in range(n):
                    try:
                        b.call(carol, bob).close()
                    except RelayError:
                        refused += 1
                return f"{refused}/{n} refused (no ledger record); host rung 0 times"

            def guessed_tickets() -> str:
                refused = rationed = 0
                for _ in range(n):          # an answer needs the invitation's 16 random bytes; one address
                    try:
                        conn = b.raw(bob, "answer", "127.0.96.10", ticket=os.urandom(16))
                    except RelayError:      # the address's connection rate, before any link work
                        rationed += 1
                        continue
                    try:
                        expect(conn, "paired", 10, "relay")
                    except RelayError:
                        refused += 1
                    conn.close()
                return (f"{n} answers with guessed tickets from one address: {rationed} refused before the link "
                        f"(connection rate), {refused} refused after the login")

            def stalled() -> str:
                links = []
                for key in pushers:
                    link = b.call(key, bob)
                    b.closables.append(link)
                    b.closables.append(invites.get(timeout=20))       # bob's end: never read
                    links.append(link)
                _, before = relay_usage(b.proc.pid)
                frame = INNER.encode("msg", n=0, body=bytes(200 * 1024))

                def push(link: RelayLink) -> None:
                    try:
                        for _ in range(2000):       # 400 MB at most: the relay stops reading long before
                            link.send_frame(frame)
                    except UserError:
                        pass

                threads = [threading.Thread(target=push, args=(link,)) for link in links]
                for t in threads:
                    t.start()
                peak = before
                while any(t.is_alive() for t in threads):
                    peak = max(peak, relay_usage(b.proc.pid)[1])
                    for t in threads:
                        t.join(timeout=0.05)
                drops = query_status(HOST, PORT)["counters"]["stalled_drops"]
                return (f"{len(links)} sessions whose callee never reads: relay RSS +{peak - before:.1f} MB while "
                        f"blocked (documented bound {len(links)} × 1.2 MB + slack), {drops} ended by the send timeout")

            def link_only() -> str:
                refused = 0
                for _ in range(n):          # from one address, as fast as it goes
                    try:
                        connect_link((HOST, PORT), pin=b.key, source_ip="127.0.96.9", timeout=10).close()
                    except RelayError:
                        refused += 1
                return f"{n} connections from one address without a login: {refused} refused before the link"

            for name, attack in (("connections without a login", link_only),
                                 ("stranger's answered calls (slots)", slots), ("one key rings one host", ring_flood),
                                 ("throwaway keys' unanswered calls", pending_flood),
                                 ("calls that hang up at once", hangups),
                                 ("answers with guessed tickets", guessed_tickets),
                                 ("sessions whose callee never reads", stalled),
                                 ("calls from a key without a record", unregistered)):
                rows.append(b.measure(name, attack))
        finally:
            b.close()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| flood | relay CPU | attacker CPU | relay/attacker CPU | relay RSS after | outcome |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['relay_cpu'] / r['attacker_cpu']:.2f}" if r["attacker_cpu"] else "—"
        out.append(f"| {r['flood']} | {r['relay_cpu']:.2f} s | {r['attacker_cpu']:.2f} s | {ratio} | "
                   f"{r['relay_rss']:.0f} MB | {r['outcome']} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller floods (a smoke test of the script)")
    print(markdown(run(parser.parse_args().quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
