"""The passphrase on a terminal: the first run offers one (typed twice, at least 8 characters), later runs ask
for it, and choosing none is remembered. Real `p2pchat` processes on a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
from pathlib import Path

from p2pchat.foundation.identity import KEY_FILE
from p2pchat.vault import FILE_NAME
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


class OnTerminal:
    """``p2pchat ARGS`` with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in ("P2PCHAT_PASSPHRASE", "DISPLAY", "WAYLAND_DISPLAY")}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen([sys.executable, "-m", "p2pchat", *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=ROOT, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.screen = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="test-pty-reader")
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.screen += chunk

    def text(self) -> str:
        with self._lock:
            return self.screen.decode("utf-8", "replace")

    def expect(self, words: str, count: int = 1) -> None:
        wait_until(lambda: self.text().count(words) >= count or self.proc.poll() is not None, 30,
                   what=f"{words!r} on the terminal:\n{self.text()}")
        assert self.text().count(words) >= count, self.text()

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        os.close(self.master)
        self._reader.join()


def listen(data_dir: Path) -> OnTerminal:
    return OnTerminal("listen", "--host", free_loopback_ip(), "--data-dir", str(data_dir))


def test_the_first_run_offers_a_passphrase_and_later_runs_ask_for_it(tmp_path, identities):
    identities[0].save(tmp_path / KEY_FILE)              # a key made earlier (by the ledger node, say), plain
    term = listen(tmp_path)
    try:
        term.expect("New passphrase (Enter for none): ")
        term.type("short")
        term.expect("at least 8 characters")
        term.expect("New passphrase (Enter for none): ", 2)
        term.type("long enough passphrase")
        term.expect("The same passphrase again: ")
        term.type("long enough passphrase")
        term.expect("Waiting for chats")
        assert "long enough passphrase" not in term.text()          # never echoed
    finally:
        term.stop()
    assert json.loads((tmp_path / FILE_NAME).read_text())["protection"] == "scrypt"
    assert b"ENCRYPTED" in (tmp_path / KEY_FILE).read_bytes()

    again = listen(tmp_path)
    try:
        again.expect(f"Passphrase for {tmp_path}: ")
        again.type("not the passphrase")
        again.expect("wrong passphrase")
        assert again.proc.wait(timeout=20) == 1
    finally:
        again.stop()


def test_choosing_no_passphrase_is_remembered(tmp_path, identities):
    identities[0].save(tmp_path / KEY_FILE)
    term = listen(tmp_path)
    try:
        term.expect("New passphrase (Enter for none): ")
        term.type("")
        term.expect("Waiting for chats")
    finally:
        term.stop()
    assert json.loads((tmp_path / FILE_NAME).read_text())["protection"] == "none"
    again = listen(tmp_path)
    try:
        again.expect("Waiting for chats")
        assert "passphrase" not in again.text().lower()
    finally:
        again.stop()
