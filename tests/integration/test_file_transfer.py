"""Issue 16's files with real processes: `p2pchat send` to a `p2pchat listen --accept-files`, direct and through
a relay, checked by SHA-256; a sender killed (-9) at about 40 % resumes after a restart without sending the
verified part again (the receiver's byte counters say so)."""

from __future__ import annotations

import hashlib
import os
import re
import signal

import pytest

from p2pchat.foundation.addresses import RELAY_PORT
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import Cluster, wait_until
from tests.integration.test_chat_relay import relay_registered

pytestmark = pytest.mark.slow
SIZE = 50 * 1024 * 1024     # the size: one send window (tens of ms of the rate) is a small part of it


def _file(path, size: int, seed: int) -> str:
    path.write_bytes(hashlib.shake_256(seed.to_bytes(4, "big")).digest(size))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _partial_size(downloads) -> int:
    parts = list((downloads / ".p2pchat-partial").glob("*.part")) if (downloads / ".p2pchat-partial").exists() else []
    return parts[0].stat().st_size if parts else -1


def test_send_delivers_a_file_directly_and_a_killed_sender_resumes_without_resending(tmp_path):
    a, b = free_loopback_ip(), free_loopback_ip()
    downloads = tmp_path / "downloads"
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [a, b])
        listen = ChatProcess("listen", "--host", a, "--accept-all", "--accept-files", "--downloads", str(downloads),
                             "--data-dir", str(cluster.data_dir(a)))
        procs = [listen]
        try:
            listen.wait_for("Waiting for chats")
            first = tmp_path / "report.pdf"
            digest = _file(first, SIZE, 1)
            send = ChatProcess("send", a, str(first), "--host", b, "--data-dir", str(cluster.data_dir(b)))
            procs.append(send)
            assert send.wait_exit(60) == 0, send.output()
            # a one-shot sender knows from step 1 (features: file-root) that the listener checks roots: even its one
            # file goes with the root, hashed on every core (protocol.md §5.7), and so does the resumed one below
            assert "delivered: the receiver checked the whole file against its root" in send.output()
            listen.wait_for("✓ F1 report.pdf: saved as")
            assert hashlib.sha256((downloads / "report.pdf").read_bytes()).hexdigest() == digest

            # kill -9 of the sender at about 40 %: the receiver is paused and let go in small steps, so the
            # transfer crawls (its window stops the sender while the receiver is stopped)
            big = tmp_path / "big.bin"
            digest = _file(big, SIZE, 2)
            send = ChatProcess("send", a, str(big), "--host", b, "--data-dir", str(cluster.data_dir(b)))
            procs.append(send)
            wait_until(lambda: _partial_size(downloads) >= 0, 60, what=f"the partial file\n{listen.output()}")
            while True:
                os.kill(listen.proc.pid, signal.SIGSTOP)
                before = _partial_size(downloads)
                if before >= 0.4 * SIZE:
                    break
                os.kill(listen.proc.pid, signal.SIGCONT)
                wait_until(lambda n=before: _partial_size(downloads) > n or _partial_size(downloads) < 0, 30,
                           what="the transfer going on")
                assert _partial_size(downloads) >= 0, "the transfer ended before 40 % (a step moved too much)"
            send.proc.kill()
            send.wait_exit(10)
            os.kill(listen.proc.pid, signal.SIGCONT)
            listen.wait_for("✗ F2 big.bin: interrupted")
            kept = int(re.search(r"F2 big\.bin: interrupted .*the ([\d,]+) bytes received are kept",
                                 listen.output()).group(1).replace(",", ""))
            assert 0.4 * SIZE <= kept < SIZE
            again = ChatProcess("send", a, str(big), "--host", b, "--data-dir", str(cluster.data_dir(b)))
            procs.append(again)
            assert again.wait_exit(60) == 0, again.output()
            listen.wait_for("✓ F3 big.bin: saved as")
            line = next(x for x in listen.output().splitlines() if "✓ F3 big.bin" in x)
            assert f"resumed at byte {kept:,}; {SIZE - kept:,} bytes moved now" in line
            assert "delivered: the receiver checked the whole file against its root" in again.output()
            assert hashlib.sha256((downloads / "big.bin").read_bytes()).hexdigest() == digest
            assert not list((downloads / ".p2pchat-partial").iterdir())
        finally:
            for proc in procs:
                if proc.proc.poll() is None:
                    os.kill(proc.proc.pid, signal.SIGCONT)
                proc.stop()


def test_send_delivers_a_file_through_the_relay_to_a_no_inbound_host(tmp_path):
    r, a, b = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    relay_addr = f"{r}:{RELAY_PORT}"
    downloads = tmp_path / "downloads"
    relay = ChatProcess("relay", "--host", r, "--heartbeat", "1", "--ledger", a, "--rate", "50000000")
    procs = [relay]
    with Cluster(tmp_path, make_identities(2)) as cluster:
        try:
            relay.wait_for("relay listening on")
            cluster.serve(a).wait_ready()
            cluster.join(b, a, extra=("--no-inbound", "--relay", relay_addr, "--nickname", "bob")).wait_ready()
            cluster.procs[0].wait_lookup("bob", 60, what=f"bob's record\n{cluster.logs()}")
            listen = ChatProcess("listen", "--host", b, "--no-inbound", "--relay", relay_addr, "--accept-all",
                                 "--accept-files", "--downloads", str(downloads), "--ledger", a,
                                 "--data-dir", str(cluster.data_dir(b)))
            procs.append(listen)
            listen.wait_for("Waiting for chats")
            wait_until(lambda: relay_registered(r) == 1, 30, what="the listener's registration at the relay")
            src = tmp_path / "notes.txt"
            digest = _file(src, SIZE, 3)
            send = ChatProcess("send", "bob", str(src), "--host", a, "--data-dir", str(cluster.data_dir(a)))
            procs.append(send)
            assert send.wait_exit(60) == 0, send.output()
            assert f"relay {relay_addr}" in send.output()
            listen.wait_for("✓ F1 notes.txt: saved as")
            assert hashlib.sha256((downloads / "notes.txt").read_bytes()).hexdigest() == digest
        finally:
            for proc in procs:
                proc.stop()
