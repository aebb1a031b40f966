"""Issue 16's "resumes by itself" with real processes: a file bob sends with `/file` in `p2pchat listen` is kept
until delivered. Killed (-9) at 40 % or more and started again, bob's node calls carol and offers the file by
itself; carol, who accepted it before, resumes without being asked, and only the missing bytes travel. A file for
a contact that is down waits, arrives when she comes up, and survives her being killed mid-transfer too; through a
relay as well as directly."""

from __future__ import annotations

import hashlib
import os
import re
import signal
from pathlib import Path

import pytest

from p2pchat.downloads import CHECKPOINT_BYTES
from p2pchat.foundation.addresses import RELAY_PORT
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster, wait_until
from tests.integration.test_chat_relay import relay_registered

pytestmark = pytest.mark.slow
SIZE = 24 * 1024 * 1024


def _file(path: Path, seed: int) -> str:
    path.write_bytes(hashlib.shake_256(seed.to_bytes(4, "big")).digest(SIZE))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _partial_size(downloads: Path) -> int:
    folder = downloads / ".p2pchat-partial"
    parts = list(folder.glob("*.part")) if folder.exists() else []
    return parts[0].stat().st_size if parts else -1


def _crawl_to_40_percent(receiver: ChatProcess, downloads: Path) -> None:
    """Let the transfer go on in small steps (the receiver stopped between them holds the sender's window) until
    40 % is on the receiver's disk; returns with the receiver stopped (SIGSTOP)."""
    wait_until(lambda: _partial_size(downloads) >= 0, 60, what=f"the partial file\n{receiver.output()}")
    while True:
        os.kill(receiver.proc.pid, signal.SIGSTOP)
        before = _partial_size(downloads)
        if before >= 0.4 * SIZE:
            return
        os.kill(receiver.proc.pid, signal.SIGCONT)
        wait_until(lambda n=before: _partial_size(downloads) > n or _partial_size(downloads) < 0, 30,
                   what="the transfer going on")
        assert _partial_size(downloads) >= 0, "the transfer ended before 40 % (a step moved too much)"


def _resumed(out: str, number: int) -> tuple[int, int]:
    m = re.search(rf"✓ F{number} big\.bin: saved as .*\(resumed at byte ([\d,]+); ([\d,]+) bytes moved now\)", out)
    assert m is not None, out
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


class _Scene:
    def __init__(self, tmp_path: Path, cluster: Cluster, c: str, b: str) -> None:
        self.tmp, self.cluster, self.c, self.b = tmp_path, cluster, c, b
        self.downloads = tmp_path / "downloads"
        self.carol_fp = Identity.load(cluster.data_dir(c) / KEY_FILE).fingerprint.hex()
        self.procs: list[ChatProcess] = []

    def start(self, *args: str) -> ChatProcess:
        proc = ChatProcess(*args)
        self.procs.append(proc)
        return proc

    def carol(self) -> ChatProcess:
        carol = self.start("listen", "--host", self.c, "--accept-all", "--downloads", str(self.downloads),
                           "--data-dir", str(self.cluster.data_dir(self.c)))
        carol.wait_for("Waiting for chats")
        return carol

    def bob(self) -> ChatProcess:
        bob = self.start("listen", "--host", self.b, "--data-dir", str(self.cluster.data_dir(self.b)))
        bob.wait_for("Waiting for chats")
        return bob

    def meet(self) -> None:
        """bob chats with carol once: she becomes his contact."""
        first = self.start("chat", self.c, "--host", self.b, "--data-dir", str(self.cluster.data_dir(self.b)))
        first.write("hello carol")
        first.close_input()
        assert first.wait_exit() == 0, first.output()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)
            proc.stop()


def test_a_sender_killed_at_40_percent_and_started_again_resumes_by_itself_sending_only_missing_bytes(tmp_path):
    c, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [c, b])
        s = _Scene(tmp_path, cluster, c, b)
        try:
            carol = s.carol()
            s.meet()
            bob = s.bob()
            big = tmp_path / "big.bin"
            digest = _file(big, 7)
            bob.write(f"/file {s.carol_fp[:12]} {big}")
            bob.wait_for("File w1 for")
            carol.wait_for("offers the file 'big.bin'")
            carol.write("/accept F1")                 # carol's user accepts once
            _crawl_to_40_percent(carol, s.downloads)
            bob.proc.kill()                           # kill -9 of the sender
            bob.wait_exit(10)
            os.kill(carol.proc.pid, signal.SIGCONT)
            carol.wait_for("✗ F1 big.bin: interrupted")
            kept = int(re.search(r"F1 big\.bin: interrupted .*the ([\d,]+) bytes received are kept",
                                 carol.output()).group(1).replace(",", ""))
            assert 0.4 * SIZE <= kept < SIZE

            bob = s.bob()                             # started again; nobody types anything
            carol.wait_for("✓ F2 big.bin: saved as", timeout=60)
            assert _resumed(carol.output(), 2) == (kept, SIZE - kept)     # only the missing bytes moved
            assert "again; you accepted it before: it resumes at byte" in carol.output()   # not asked again
            assert "/accept F2" not in carol.output()
            assert hashlib.sha256((s.downloads / "big.bin").read_bytes()).hexdigest() == digest
            bob.wait_for("delivered")
            bob.write("/waiting")
            bob.wait_for("No messages or files are waiting.")
        finally:
            s.stop_all()


def test_a_file_for_an_offline_contact_arrives_when_she_comes_up_and_resumes_after_she_is_killed(tmp_path):
    c, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [c, b])
        s = _Scene(tmp_path, cluster, c, b)
        try:
            carol = s.carol()
            s.meet()
            carol.stop()
            bob = s.bob()
            big = tmp_path / "big.bin"
            digest = _file(big, 8)
            bob.write(f"/file {s.carol_fp[:12]} {big}")
            bob.wait_for("cannot be reached now")
            bob.write("/waiting")
            bob.wait_for("w1: file big.bin (24.0 MiB) to")
            assert "waiting" in bob.output().split("w1: file big.bin")[1].splitlines()[0]

            carol = s.carol()                         # she comes up: bob's node calls her by itself
            carol.wait_for("offers the file 'big.bin'", timeout=60)
            carol.write("/accept F1")
            _crawl_to_40_percent(carol, s.downloads)
            carol.proc.kill()                         # the receiver dies mid-transfer
            carol.wait_exit(10)
            carol = s.carol()                         # and comes back: bob's node calls again, she resumes
            carol.wait_for("✓ F1 big.bin: saved as", timeout=60)
            start, moved = _resumed(carol.output(), 1)
            # killed -9, the receiver's state record may trail what reached its disk by up to CHECKPOINT_BYTES
            # (docs/protocol.md §5.7): those bytes are sent again, nothing before the recorded offset is
            assert 0.4 * SIZE - CHECKPOINT_BYTES <= start < SIZE and moved == SIZE - start
            assert "you accepted it before: it resumes at byte" in carol.output()        # not asked again
            assert hashlib.sha256((s.downloads / "big.bin").read_bytes()).hexdigest() == digest
        finally:
            s.stop_all()


def test_through_the_relay_a_killed_sender_started_again_resumes_by_itself(tmp_path):
    r, b, c = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    relay_addr = f"{r}:{RELAY_PORT}"
    with Cluster(tmp_path, make_identities(2)) as cluster:
        s = _Scene(tmp_path, cluster, c, b)
        relay = s.start("relay", "--host", r, "--heartbeat", "1", "--ledger", b, "--rate", "50000000")
        try:
            relay.wait_for("relay listening on")
            cluster.serve(b).wait_ready()
            cluster.join(c, b, extra=("--no-inbound", "--relay", relay_addr, "--nickname", "carol")).wait_ready()
            cluster.procs[0].wait_lookup("carol", 60, what=f"carol's record\n{cluster.logs()}")
            carol_dir = str(cluster.data_dir(c))
            carol = s.start("listen", "--host", c, "--no-inbound", "--relay", relay_addr, "--accept-all",
                            "--downloads", str(s.downloads), "--ledger", b, "--data-dir", carol_dir)
            carol.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="carol's registration at the relay")
            first = s.start("chat", "carol", "--host", b, "--data-dir", str(cluster.data_dir(b)))
            first.write("hello carol")
            first.close_input()
            assert first.wait_exit(60) == 0, first.output()

            bob = s.bob()
            big = tmp_path / "big.bin"
            digest = _file(big, 9)
            bob.write(f"/file {s.carol_fp[:12]} {big}")
            carol.wait_for("offers the file 'big.bin'", timeout=60)
            carol.write("/accept F1")
            _crawl_to_40_percent(carol, s.downloads)
            bob.proc.kill()
            bob.wait_exit(10)
            os.kill(carol.proc.pid, signal.SIGCONT)
            carol.wait_for("✗ F1 big.bin: interrupted")
            bob = s.bob()
            carol.wait_for("✓ F2 big.bin: saved as", timeout=60)
            start, moved = _resumed(carol.output(), 2)
            assert 0.4 * SIZE <= start < SIZE and moved == SIZE - start
            resumed_in = re.search(r"^\[(\d+)\] ✓ F2 big\.bin", carol.output(), re.M).group(1)
            assert f"[{resumed_in}] Chat {resumed_in} with " in carol.output()
            assert f"[{resumed_in}]   → incoming chat through relay {relay_addr}" in carol.output()
            assert hashlib.sha256((s.downloads / "big.bin").read_bytes()).hexdigest() == digest
        finally:
            s.stop_all()
