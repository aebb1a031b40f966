"""The app as users start it, in a real process under Xvfb: ``p2pchat gui`` starts its own ledger node when none
runs for its data directory, shows the window, and on SIGTERM closes everything and remembers the window size;
the demo opens two windows and shuts down cleanly too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gui.settings import FILE_NAME
from p2pchat.foundation.addresses import LEDGER_PORT
from tests.conftest import free_loopback_ip
from tests.gui.driver import need_xdotool
from tests.gui.helpers import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


def window_ids(name: str) -> list[str]:
    found = subprocess.run(["xdotool", "search", "--name", name], capture_output=True, text=True, timeout=10)
    return found.stdout.split()


def window_geometry(window_id: str) -> str:
    out = subprocess.run(["xdotool", "getwindowgeometry", window_id], capture_output=True, text=True,
                         timeout=10).stdout
    return out.split("Geometry:")[1].strip()


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then the exit status and stderr (killing it if it does not exit: that fails the test)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the app did not exit after SIGTERM; stderr:\n{err}") from None
    return proc.returncode, err


def test_the_app_starts_its_own_ledger_node_and_remembers_its_window(xvfb, tmp_path):
    need_xdotool()
    host = free_loopback_ip()
    data = tmp_path / "carol"
    (data / FILE_NAME).parent.mkdir(parents=True)
    (data / FILE_NAME).write_text(json.dumps({"width": 760, "height": 700, "scaling": 1.25, "appearance": "Dark"}))
    proc = subprocess.Popen([sys.executable, "-m", "p2pchat", "gui", "--data-dir", str(data), "--host", host,
                             "--nickname", "carol", "--difficulty", "8"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: window_ids("p2pchat.*carol") or proc.poll() is not None, 60, interval=0.2,
                   what="the window")
        assert proc.poll() is None, proc.communicate()[1]
        window = window_ids("p2pchat.*carol")[0]
        wait_until(lambda: window_geometry(window) == "760x700", 20, interval=0.2, what="the remembered size")
        # The app's ledger node (its child process) answers on the app's own address.
        from ledger.client import LedgerClient
        status = LedgerClient(host, LEDGER_PORT, source_ip=host, timeout=5).status()
        assert status["nickname"] == "carol"
        code, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, err
    assert "Traceback" not in err
    saved = json.loads((data / FILE_NAME).read_text())
    assert (saved["width"], saved["height"], saved["scaling"], saved["appearance"]) == (760, 700, 1.25, "Dark")
    assert (data / "identity.pem").exists()
    assert (data / "ledger-p2pchat.sqlite3").exists()


def test_the_demo_opens_two_windows_and_closes_everything_on_sigterm(xvfb, tmp_path):
    need_xdotool()
    hosts = (free_loopback_ip(), free_loopback_ip())
    code = f"import sys, gui.demo; sys.exit(gui.demo.main(hosts={hosts!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: (window_ids("p2pchat.*alice") and window_ids("p2pchat.*bob"))
                   or proc.poll() is not None, 90, interval=0.2, what="both demo windows")
        assert proc.poll() is None, proc.communicate()[1]
        code_, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code_ == 0, err
    assert "Traceback" not in err
    assert "press 1 Connect" in err
