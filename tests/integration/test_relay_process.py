"""The relay as a real process (``python -m p2pchat.relay``): pairing, status from another process, a clean
shutdown on SIGTERM, a crash (SIGKILL) and restart mid-session, and a port that is already taken."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pchat.foundation.errors import UserError
from p2pchat.relay import RelayError, RelayRegistration, open_relay_link
from p2pchat.relay.cli import query_status
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.p2pchat.relay.relay_helpers import INNER, Invites, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class RelayProcess:
    def __init__(self, host: str, port: int, log: Path, *extra: str) -> None:
        self.host, self.port, self.log = host, port, log
        # The key file sits beside the log: a relay restarted in the same test keeps its link key.
        self.args = [sys.executable, "-m", "p2pchat.relay", "--host", host, "--port", str(port),
                     "--key-file", str(log.parent / "relay_key"), *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
        return self

    def wait_ready(self) -> dict:
        def ready() -> dict | None:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            try:
                return query_status(self.host, self.port, timeout=2)
            except UserError:        # not listening yet
                return None
        return wait_until(ready, 30, what=f"the relay process on {self.host}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def relay_procs(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs: list[RelayProcess] = []
    yield procs
    for p in procs:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=30)


def relay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pchat.relay", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=_env())


def test_relay_process_pairs_clients_reports_status_and_shuts_down_cleanly(tmp_path, relay_procs):
    a_id, b_id = make_identities(2)
    host = free_loopback_ip()
    relay = RelayProcess(host, free_port(host), tmp_path / "relay.log", "--verbose")
    relay_procs.append(relay.start())
    relay.wait_ready()
    invites = Invites()
    reg = RelayRegistration(b_id, host, relay.port, on_invite=invites, inner_protocol=INNER,
                            source_ip=free_loopback_ip(), accept_unregistered=True).start()
    try:
        assert reg.wait_registered(10), reg.state_text
        a = open_relay_link(a_id, host, relay.port, b_id.fingerprint, inner_protocol=INNER,
                            source_ip=free_loopback_ip())
        invites.taken.append(a)
        b = invites.get()
        for n in range(100):
            a.send("msg", n=n, body=b"SECRET-MARKER %d" % n)
        assert [b.recv(timeout=5)["n"] for _ in range(100)] == list(range(100))
        b.send("msg", n=-1, body=b"SECRET-REPLY")
        assert a.recv(timeout=5)["body"] == b"SECRET-REPLY"

        status = relay_cli("--status", "--json", "--host", host, "--port", str(relay.port))
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["session_count"] == 1 and data["registered"] == 1 and data["counters"]["frames"] == 101
        text = relay_cli("--status", "--host", host, "--port", str(relay.port))
        assert "sessions: 1" in text.stdout and f"{a_id.fingerprint.hex()[:4]} " in text.stdout

        assert relay.stop(signal.SIGTERM) == 0
        for link in (a, b):
            with pytest.raises(RelayError, match="the relay is shutting down"):
                link.recv(timeout=5)
    finally:
        reg.close()
        invites.close()
    log = relay.output()
    assert "relay listening on" in log and "relay stopped" in log
    assert f"relay key: {data['relay_key']}" in log       # what clients pin with --relay IP:PORT#KEY
    # Metadata only: sessions and byte counts are logged, never what was said or a full fingerprint.
    assert "session 1 ended" in log
    assert "SECRET" not in log and b_id.fingerprint.hex() not in log


def test_relay_killed_and_restarted_mid_session(tmp_path, relay_procs):
    a_id, b_id = make_identities(2)
    host = free_loopback_ip()
    port = free_port(host)
    first = RelayProcess(host, port, tmp_path / "relay1.log", "--heartbeat", "0.5")
    relay_procs.append(first.start())
    first.wait_ready()
    invites = Invites()
    reg = RelayRegistration(b_id, host, port, on_invite=invites, inner_protocol=INNER, source_ip=free_loopback_ip(),
                            min_backoff=0.1, max_backoff=0.5, accept_unregistered=True).start()
    try:
        assert reg.wait_registered(10), reg.state_text
        a = open_relay_link(a_id, host, port, b_id.fingerprint, inner_protocol=INNER, source_ip=free_loopback_ip())
        invites.taken.append(a)
        b = invites.get()
        a.send("msg", n=1, body=b"before the crash")
        assert b.recv(timeout=5)["n"] == 1

        first.stop(signal.SIGKILL)
        for link in (a, b):
            with pytest.raises(RelayError, match=f"lost the connection to relay {host}:{port}"):
                link.recv(timeout=5)
        wait_until(lambda: not reg.registered, what="the registration to notice the crash")

        second = RelayProcess(host, port, tmp_path / "relay2.log", "--heartbeat", "0.5")
        relay_procs.append(second.start())
        second.wait_ready()
        wait_until(lambda: reg.registered and reg.connects >= 2, 20, what="the registration to come back")
        a2 = open_relay_link(a_id, host, port, b_id.fingerprint, inner_protocol=INNER, source_ip=free_loopback_ip())
        invites.taken.append(a2)
        b2 = invites.get()
        a2.send("msg", n=2, body=b"after the restart")
        assert b2.recv(timeout=5)["n"] == 2
        assert second.stop() == 0
    finally:
        reg.close()
        invites.close()


def test_a_port_already_in_use_is_reported(tmp_path, relay_procs):
    host = free_loopback_ip()
    first = RelayProcess(host, free_port(host), tmp_path / "relay.log")
    relay_procs.append(first.start())
    first.wait_ready()
    clash = relay_cli("--host", host, "--port", str(first.port), "--key-file", str(tmp_path / "relay_key"))
    assert clash.returncode == 1
    assert f"cannot listen on {host}:{first.port}" in clash.stderr
    assert first.stop() == 0
