"""First-run key generation: raced across processes, the first key wins, every worker is stopped and reaped,
cancelling works, and the command line shows a progress line on a first run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from p2pchat.foundation import crypto, keygen
from p2pchat.foundation.errors import IdentityError
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def keygen_workers() -> list[int]:
    """Live key-generation worker processes started by this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == os.getpid() and b"p2pchat.foundation.keygen" in cmdline and fields[0] != "Z":
            found.append(int(entry))
    return found


def test_the_race_returns_a_working_rsa_3072_key_and_leaves_no_worker_behind():
    ticks: list[float] = []
    key = keygen.generate_identity_key(workers=2, progress=ticks.append)
    assert key.has_private() and key.size_in_bits() == crypto.RSA_BITS and key.e == crypto.RSA_EXPONENT
    signature = crypto.sign(key, "test", b"data")
    crypto.verify(crypto.public_der(key), "test", b"data", signature)
    assert ticks == sorted(ticks)
    assert keygen_workers() == []


def test_a_cancelled_generation_stops_its_workers():
    stop = threading.Event()
    stop.set()
    with pytest.raises(IdentityError, match="cancelled"):
        keygen.generate_identity_key(workers=2, stop=stop)
    assert keygen_workers() == []


def test_too_small_keys_are_refused_before_any_work():
    with pytest.raises(ValueError):
        keygen.generate_identity_key(1024)




def test_load_or_create_reports_progress_only_when_it_makes_a_key(tmp_path):
    seen: list[str] = []

    class Progress:
        def tick(self, elapsed: float) -> None:
            seen.append("tick")

        def done(self, elapsed: float) -> None:
            seen.append("done")

    first = Identity.load_or_create(tmp_path, progress=Progress())
    assert seen[-1] == "done" and seen.count("done") == 1
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o077 == 0
    seen.clear()
    again = Identity.load_or_create(tmp_path, progress=Progress())
    assert again.fingerprint == first.fingerprint and seen == []


def test_the_terminal_progress_line_names_the_step_and_the_time():
    out = io.StringIO()
    progress = keygen.TerminalProgress("ledger", out)
    for t in (0.1, 0.2, 6.0):
        progress.tick(t)
    progress.done(6.3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "ledger: first run: making this machine's identity key (RSA-3072)…"
    assert lines[1] == "ledger: still making the identity key… 6 s"
    assert lines[-1] == "ledger: identity key made in 6.3 s"


def test_ledger_serve_on_a_first_run_shows_the_key_being_made(tmp_path):
    host = free_loopback_ip()
    proc = subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--host", host, "--data-dir", str(tmp_path),
                             "--difficulty", "8", "--no-mine"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    text = "".join(lines)
    assert "ledger: first run: making this machine's identity key (RSA-3072)…" in text, text
    assert "ledger: identity key made in" in text
    assert (tmp_path / KEY_FILE).exists()
    wait_until(lambda: keygen_workers() == [], 5, what="no key worker left")
