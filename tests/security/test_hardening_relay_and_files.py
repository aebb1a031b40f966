"""Relay impersonation, and the files a node trusts at start-up, attacked through running programs:

- an impostor "relay" that pairs a caller with the attacker's own chat node instead of the peer asked for: the
  end-to-end handshake stops at step 2 (the key is checked against what the user asked for, not the relay);
- unauthenticated use of a running `p2pchat relay` process: calls without a valid login are refused and nobody
  is paired;
- key files with permissions others can use, refused by `ledger serve` and `p2pchat listen` with the fix;
- a damaged ledger database at start-up: `ledger serve` refuses with the command that moves it aside and leaves
  the file alone; `--recover` moves it aside (bytes kept) and starts afresh.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pchat.events import MessageReceived, StepResult
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect
from p2pchat.peer_directory import FixedDirectory
from p2pchat.relay import RelayKey
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import CLIENT_PROTOCOL, VERSION, relay_protocol
from p2pchat.relay.secure import server_handshake
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.helpers import wait_until
from tests.integration.procs import ROOT, premine
from tests.p2pchat.node_kit import entry, make_peer

pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    e.pop("P2PCHAT_HOME", None)
    e.pop("DISPLAY", None)
    return e


# --- relay impersonation --------------------------------------------------------------------------------------

class ImpostorRelay:
    """Speaks the relay protocol to a caller without checking its login, claims to pair it with whatever key it
    asked for, and splices the byte stream to ``target`` (the attacker's own chat node)."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.source = host
        self.server = FrameServer(host, 0, relay_protocol(), self._handle, name="impostor-relay", timeout=10)
        self.port = self.server.port
        self.spliced = threading.Event()
        self.key = RelayKey()     # its own link key: the victim's record names this relay, so no pin stops it

    def _handle(self, plain: FramedSocket) -> None:
        conn = server_handshake(plain, self.key, timeout=10)
        conn.send("challenge", version=VERSION, nonce=crypto.random_bytes(32))
        login: Message = conn.recv()
        pair_key = crypto.random_bytes(32)
        conn.send("paired", peer=login["peer"], max_payload=200_000, keepalive_ms=60_000, pair_key=pair_key)
        to_callee, to_caller = crypto.relay_pair_keys(pair_key)
        conn.set_pair_keys(to_caller, to_callee, 200_000)       # it plays the callee's side of the session
        import socket
        upstream = socket.create_connection(self.target, timeout=10, source_address=(self.source, 0))
        self.spliced.set()

        def down() -> None:
            try:
                while data := upstream.recv(65536):
                    conn.send_pair(data)
            except (OSError, UserError):
                pass
            conn.close()

        pump = threading.Thread(target=down, name="impostor-down")
        pump.start()
        try:
            while True:
                msg = conn.recv(30)
                if msg.type == "pair":
                    upstream.sendall(msg["payload"])
        except (OSError, UserError):
            pass
        finally:
            upstream.close()
            pump.join()

    def start(self) -> ImpostorRelay:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()


def test_an_impostor_relay_pairing_the_caller_with_the_attacker_is_stopped_at_step_2():
    caller_id, victim_id, mallory_id = make_identities(3)
    directory = FixedDirectory()
    mallory = make_peer(mallory_id, "mallory", directory, auto_accept=True)
    relay = ImpostorRelay(free_loopback_ip(), (mallory.ip, mallory.node.port)).start()
    # The victim is reachable through a relay only; the relay its record names is run by the attacker.
    directory.add(entry(victim_id, "victim", None, relay=f"{relay.server.host}:{relay.port}"))
    caller = make_peer(caller_id, "caller", directory, step_timeout=10.0)
    try:
        sid = caller.node.open_session("victim")
        caller.node.run_all(sid)
        failed = caller.log.wait(StepResult, 30, session=sid, ok=False)
        assert relay.spliced.is_set()
        assert failed.step == Step.SWAP_KEYS, failed
        assert "is not the key the ledger binds to" in failed.detail, failed.detail
        assert not caller.log.all(StepResult, session=sid, step=Step.AUTHENTICATE)
        assert not mallory.log.all(MessageReceived)
    finally:
        caller.node.close()
        mallory.node.close()
        relay.close()


# --- unauthenticated use of a relay process ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def relay_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    host, port = free_loopback_ip(), 0
    port = free_port(host)
    key_file = tmp_path_factory.mktemp("relay") / "relay_key"
    proc = subprocess.Popen([sys.executable, "-m", "p2pchat", "relay", "--host", host, "--port", str(port),
                             "--login-timeout", "2", "--key-file", str(key_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env())

    def up() -> bool:
        try:
            connect(host, port, CLIENT_PROTOCOL, timeout=1).close()
        except UserError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return False
        return True
    try:
        wait_until(up, 30, what="the relay process to listen")
        yield host, port
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out


def relay_answer(host: str, port: int, **login: object) -> Message:
    conn = connect_link((host, port), pin=None, known=None, source_ip=free_loopback_ip(), timeout=10)
    try:
        challenge = conn.recv()
        assert challenge.type == "challenge"
        if login.pop("raw", False):
            conn.send("ping")
        else:
            conn.send("login", **login)
        return conn.recv()
    finally:
        conn.close()


def test_a_relay_process_pairs_nobody_without_a_valid_login(relay_process):
    host, port = relay_process
    mallory, victim = make_identities(2)
    answers = {
        "data before any login": relay_answer(host, port, raw=True),
        "a call signed by nobody": relay_answer(host, port, version=VERSION, network="p2pchat", role="call",
                                                key=mallory.public_der, sig=bytes(384), peer=victim.fingerprint),
        "someone else's key": relay_answer(host, port, version=VERSION, network="p2pchat", role="register",
                                           key=victim.public_der, sig=mallory.sign("relay-login", b"x")),
        "an old protocol version": relay_answer(host, port, version=0, network="p2pchat", role="register",
                                                key=mallory.public_der, sig=bytes(384)),
    }
    for what, answer in answers.items():
        assert answer.type == "error", (what, answer)
    assert "login" in answers["data before any login"]["reason"]
    assert "login refused" in answers["a call signed by nobody"]["reason"]
    assert "login refused" in answers["someone else's key"]["reason"]
    assert "version 2" in answers["an old protocol version"]["reason"]


# --- files at start-up ------------------------------------------------------------------------------------------

def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, env=env(),
                          timeout=timeout)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_or_write_stops_both_programs_with_the_fix(tmp_path, mode):
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    make_identities(1)[0].save(data / KEY_FILE)
    os.chmod(data / KEY_FILE, mode)
    host = free_loopback_ip()
    ledger = run("ledger", "serve", "--host", host, "--data-dir", str(data), "--difficulty", "8")
    chat = run("p2pchat", "listen", "--host", host, "--data-dir", str(data), "--accept-all")
    for result in (ledger, chat):
        assert result.returncode != 0
        assert "chmod 600" in result.stderr + result.stdout, result.stderr
        assert "Traceback" not in result.stderr
    assert oct(os.stat(data / KEY_FILE).st_mode & 0o777) == oct(mode)     # never "fixed" behind the user's back


def damage(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    for offset in range(4096, min(len(data), 4096 * 3), 97):   # scribble over the first B-tree pages
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_ledger_database_at_start_up_is_refused_clearly_and_recovered_on_request(tmp_path):
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    make_identities(1)[0].save(data / KEY_FILE)
    premine(data, 30)
    store = data / "ledger-p2pchat.sqlite3"
    damaged = damage(store)
    host = free_loopback_ip()
    refused = run("ledger", "serve", "--host", host, "--data-dir", str(data), "--no-mine")
    assert refused.returncode == 2, refused.stderr
    assert "damaged" in refused.stderr and f"mv '{store}'" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert store.read_bytes() == damaged                         # nothing was changed or deleted
    verify = run("ledger", "verify", "--data-dir", str(data))
    assert verify.returncode != 0 and "Traceback" not in verify.stderr, verify.stderr

    # Found by this test (fixed in 1432e18): the CLI read the stored parameters without recover=True before the
    # ledger was opened, so `ledger serve --recover` exited with the same "damaged" error.
    proc = subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--host", host, "--data-dir", str(data),
                             "--no-mine", "--recover"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=ROOT, env=env())

    def recovered() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ledger serve --recover exited with {proc.returncode}: "
                                 f"{proc.stdout.read().decode(errors='replace') if proc.stdout else ''}")
        return bool(list(data.glob("ledger-p2pchat.sqlite3.corrupt-*"))) and run(
            "ledger", "status", "--json", "--node", host).returncode == 0
    try:
        wait_until(recovered, 30, what="the recovered node")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
    moved = [p for p in data.glob("ledger-p2pchat.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1 and moved[0].read_bytes() == damaged, out     # kept for the user, byte for byte
    assert "moved" in out and "Traceback" not in out, out
    assert run("ledger", "verify", "--data-dir", str(data)).returncode == 0
