"""The pre-authentication floods of issue 11 against a node, over real sockets: a stranger's connections, frames
and chat requests are bounded per address, refused before any work, and their memory is released at once; the
real peer from another address still gets through. Figures (RSS, threads, CPU against the attacker's) are
printed (run with ``-s``) and bounded by the assertions, never timed."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
import pytest

from p2pchat.admission import HANDSHAKES_PER_MINUTE, PRE_AUTH_PER_ADDRESS, PROMPTS_PER_ADDRESS
from p2pchat.chat_protocol import CHAT, PROTOCOL_VERSION
from p2pchat.events import IncomingChat, SessionEnded, StepResult
from p2pchat.foundation.addresses import CHAT_PORT, format_address
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.handshake import StepDone
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster
from tests.p2pchat.node_kit import entry, make_peer
from tests.security.attack_kit import RawPeer, Victim

pytestmark = pytest.mark.slow

BIG_FRAME = 2 * 1024 * 1024 - 1


def proc_status(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and CPU (clock ticks, user + system) of process ``pid``."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    out["cpu_ticks"] = int(fields[11]) + int(fields[12])
    return out


def hello(nickname: str, address: str) -> bytes:
    return CHAT.encode("hello", version=PROTOCOL_VERSION, network="p2pchat", nickname=nickname, address=address)


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """What the victim sends before it closes (bounded)."""
    got = b""
    try:
        while len(got) < limit:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
    return got


@contextmanager
def listening_victim(tmp_path) -> Iterator[tuple[ChatProcess, str, Identity, str, Identity]]:
    """A `p2pchat listen --accept-all` process at ``v`` on a two-node ledger; ``h`` is a registered peer."""
    v, h = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [v, h])
        victim = ChatProcess("listen", "--host", v, "--accept-all", "--step-timeout", "5",
                             "--data-dir", str(cluster.data_dir(v)))
        try:
            victim.wait_for("Waiting for chats")
            yield (victim, v, Identity.load(cluster.data_dir(v) / KEY_FILE), h,
                   Identity.load(cluster.data_dir(h) / KEY_FILE))
        finally:
            victim.stop()


def test_200_strangers_each_sending_a_hello_and_a_2_mib_frame_are_refused_and_leave_nothing_behind(tmp_path):
    with listening_victim(tmp_path) as (victim, v, _, _, _):
        pid = victim.proc.pid
        attacker = free_loopback_ip()
        idle = proc_status(pid)
        body = b"\x00" * 65536
        peak = dict(idle)
        cpu0 = time.thread_time()
        socks: list[socket.socket] = []
        refused_early = 0
        try:
            for _ in range(200):
                sock = socket.create_connection((v, CHAT_PORT), timeout=10, source_address=(attacker, 0))
                socks.append(sock)
                sock.sendall(hello("bob", format_address(attacker, CHAT_PORT)) + struct.pack(">I", BIG_FRAME))
                sent = 0
                try:
                    while sent < BIG_FRAME:
                        sock.settimeout(0.2)
                        sent += sock.send(body[:min(len(body), BIG_FRAME - sent)])
                except OSError:      # the victim closed it (reset) or stopped reading (timeout): go on
                    refused_early += sent < BIG_FRAME
                status = proc_status(pid)
                peak = {k: max(peak[k], status[k]) for k in ("rss_kib", "threads")} | {"cpu_ticks": 0}
            closed = sum(1 for s in socks if _closed_by_victim(s))
        finally:
            for sock in socks:
                sock.close()
        attacker_cpu = time.thread_time() - cpu0
        during = proc_status(pid)
        wait_until(lambda: proc_status(pid)["threads"] <= idle["threads"] + 2, 30, interval=0.2,
                   what="the victim's threads to return")
        after = proc_status(pid)
        victim_cpu = (after["cpu_ticks"] - idle["cpu_ticks"]) / os.sysconf("SC_CLK_TCK")
        print(f"\nflood 1: RSS idle {idle['rss_kib'] / 1024:.1f} MiB, peak {peak['rss_kib'] / 1024:.1f}, after "
              f"{after['rss_kib'] / 1024:.1f}; threads idle {idle['threads']}, peak {peak['threads']}, after "
              f"{after['threads']}; victim CPU {victim_cpu:.2f} s vs attacker {attacker_cpu:.2f} s "
              f"(ratio {victim_cpu / max(attacker_cpu, 1e-3):.2f}); {refused_early}/200 cut off before their frame "
              f"was sent, {closed}/200 closed by the victim; during {during}")
        assert closed == 200                                           # every one refused, none held
        assert peak["threads"] <= idle["threads"] + PRE_AUTH_PER_ADDRESS + 4
        assert peak["rss_kib"] - idle["rss_kib"] < 24 * 1024           # was +438 MB
        assert after["rss_kib"] - idle["rss_kib"] < 16 * 1024
        assert victim.proc.poll() is None
        assert "\x1b" not in victim.output()


def _closed_by_victim(sock: socket.socket) -> bool:
    """True once the victim closed (or reset) the connection; False if it still holds it after 10 s."""
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_520_hello_only_strangers_claiming_bob_get_two_prompts_and_the_real_bob_still_gets_through():
    ids = make_identities(3)
    directory = FixedDirectory()
    victim = make_peer(ids[0], "alice", directory, step_timeout=5.0, accept_timeout=60.0)
    bob = make_peer(ids[1], "bob", directory)
    attacker = free_loopback_ip()
    directory.add(entry(ids[2], "mallory", attacker))
    threads_idle = threading.active_count()
    socks: list[socket.socket] = []
    refused = 0
    try:
        def attack_one() -> None:
            nonlocal refused
            sock = socket.create_connection((victim.ip, victim.node.port), timeout=10,
                                            source_address=(attacker, 0))
            socks.append(sock)
            try:
                sock.sendall(hello("bob", format_address(attacker, CHAT_PORT)))
            except OSError:
                refused += 1

        for _ in range(520):
            attack_one()
        threads_during = threading.active_count()
        prompts = wait_until(lambda: victim.log.all(IncomingChat) or None, 10, what="the first prompt")
        # Every attacking connection is either holding one of its address's few places or was refused.
        held, asked = victim.node.admission.counts(attacker)
        assert held <= PRE_AUTH_PER_ADDRESS and asked <= PROMPTS_PER_ADDRESS
        # The real bob, from his own address, is asked about and accepted by his own prompt's id.
        sid = bob.node.open_session(f"{victim.ip}:{victim.node.port}")
        bob.node.run_all(sid)
        real = wait_until(lambda: next((e for e in victim.log.all(IncomingChat)
                                        if e.peer_address.startswith(bob.ip)), None), 15, what="bob's prompt")
        victim.node.accept(real.session, True)
        bob.log.wait(StepResult, 20, session=sid, step=Step.AGREE_KEY, ok=True)
        prompts = victim.log.all(IncomingChat)
        from_attacker = [p for p in prompts if p.peer_address.startswith(attacker + ":")]
        assert len(from_attacker) <= PROMPTS_PER_ADDRESS
        print(f"\nflood 2: {len(from_attacker)} prompts from the attacker's 520 connections, threads "
              f"{threads_idle} idle / {threads_during} during; the attacker's sessions ended: "
              f"{len(victim.log.all(SessionEnded))}")
        assert threads_during <= threads_idle + PRE_AUTH_PER_ADDRESS + 4
    finally:
        for sock in socks:
            sock.close()
        victim.node.close()
        bob.node.close()


def test_a_stranger_that_only_knocks_is_limited_per_minute_but_a_peer_that_authenticates_is_not(identities):
    directory = FixedDirectory()
    victim = make_peer(identities[0], "alice", directory, auto_accept=True)
    attacker = free_loopback_ip()
    answers: list[bytes] = []
    try:
        for _ in range(30):
            with socket.create_connection((victim.ip, victim.node.port), timeout=10,
                                          source_address=(attacker, 0)) as sock:
                try:
                    sock.sendall(hello("knock", format_address(attacker, CHAT_PORT)))
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                answers.append(read_until_closed(sock))
        refusals = [a for a in answers if b"in the last minute" in a]
        assert len(refusals) >= 30 - 20
        reasons = [msgpack.unpackb(a[4:], raw=False).get("reason", "") for a in refusals if len(a) > 4]
        assert all("try again later" in r for r in reasons)
    finally:
        victim.node.close()


def test_a_bound_frame_before_authentication_is_refused_at_its_header(identities):
    directory = FixedDirectory()
    victim = make_peer(identities[0], "alice", directory, auto_accept=True)
    attacker = free_loopback_ip()
    try:
        with socket.create_connection((victim.ip, victim.node.port), timeout=10,
                                      source_address=(attacker, 0)) as sock:
            sock.sendall(struct.pack(">I", 64 * 1024))          # a 64 KiB frame before anyone authenticated
            answer = read_until_closed(sock)
        assert b"over the 8192-byte limit" in answer
    finally:
        victim.node.close()


def test_a_registered_peer_looping_on_step_two_and_hanging_up_is_rationed_per_minute(tmp_path):
    """Issue 11's "RSA on demand": a peer with a ledger record sends hello, key and key_ok and hangs up, again and
    again. Only 20 such unproven handshakes a minute get any work from the victim; the rest are refused first."""
    with listening_victim(tmp_path) as (victim, v, victim_id, h, attacker_id):
        pid = victim.proc.pid
        target = Victim(victim, v, victim_id)
        idle = proc_status(pid)
        cpu0 = time.thread_time()
        served = refused = 0
        for _ in range(60):
            peer = RawPeer(attacker_id, h, target)
            try:
                events = peer.run_step(Step.CONNECT, timeout=10)
                if any(isinstance(e, StepDone) for e in events):
                    peer.run_step(Step.SWAP_KEYS, timeout=10)
                    served += 1
                else:
                    refused += 1
            except UserError:
                refused += 1
            finally:
                peer.close()
        attacker_cpu = time.thread_time() - cpu0
        after = proc_status(pid)
        victim_cpu = (after["cpu_ticks"] - idle["cpu_ticks"]) / os.sysconf("SC_CLK_TCK")
        print(f"\nstep-2 loop: {served} of 60 served, {refused} refused; victim CPU {victim_cpu:.2f} s vs attacker "
              f"{attacker_cpu:.2f} s (ratio {victim_cpu / max(attacker_cpu, 1e-3):.2f}); threads {after['threads']}")
        assert served <= HANDSHAKES_PER_MINUTE and refused >= 60 - HANDSHAKES_PER_MINUTE
        assert victim.proc.poll() is None
