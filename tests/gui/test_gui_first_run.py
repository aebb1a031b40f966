"""The first run (issue 15): a form asks for a nickname (checked as the ledger checks it) and offers a passphrase
before anything is made or published; the real app publishes the chosen nickname only after Continue."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from gui.first_run import FirstRunView, check_nickname, check_passphrase, reach_text
from gui.ledger_view import LedgerSnapshot
from p2pchat.foundation.addresses import LEDGER_PORT
from p2pchat.foundation.errors import UserError
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, need_xdotool
from tests.gui.helpers import wait_until
from tests.gui.test_gui_app_process import ROOT, stop, window_ids

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


@pytest.mark.parametrize("bad, why", [
    ("", "choose a nickname"), ("x" * 33, "at most 32"), ("pаypal", "several scripts"),   # Cyrillic а
    ("127.0.0.9", "looks like an address"), ("a" * 64, "at most 32")])
def test_a_nickname_is_checked_as_the_ledger_checks_it(bad, why):
    with pytest.raises(UserError, match=why):
        check_nickname(bad)


def test_a_free_nickname_passes_and_the_passphrase_is_optional_but_typed_twice():
    assert check_nickname("  Zoë ") == "Zoë"
    assert check_passphrase("", "") is None
    assert check_passphrase("correct horse", "correct horse") == "correct horse"
    with pytest.raises(UserError, match="differ"):
        check_passphrase("correct horse", "correct hor")
    with pytest.raises(UserError, match="at least 8"):
        check_passphrase("short", "short")


def test_the_note_says_when_the_user_can_be_reached():
    mining = LedgerSnapshot(where="here", running=True, difficulty_bits=10, hashrate=256.0, own_pending=True)
    assert reach_text(mining, "dana", "127.0.0.5:8471") == (
        "Your record is being mined: you can be reached in about 4 seconds (an estimate: mining is a lottery).",
        False)
    mined = LedgerSnapshot(where="here", running=True, own_height=3, own_confirmations=1)
    text, reachable = reach_text(mined, "dana", "127.0.0.5:8471")
    assert reachable and text.startswith("You can be reached now: others can chat with you as dana")


def test_the_form_refuses_in_words_and_returns_the_choice(xvfb):
    need_xdotool()
    from gui.app import App

    app = App(appearance="Light")
    try:
        view = FirstRunView(app.root)
        view.show()
        d = Driver(app.root)
        d.type(view.nickname_entry, "dana")
        d.type(view.passphrase_entry, "correct horse")
        d.type(view.again_entry, "correct hors")
        d.key("Return")
        d.wait(lambda: "differ" in view.problem.cget("text"), what="the mismatch said in words")
        assert view.choice is None
        d.screenshot("first-run.png", app.root)
        d.type(view.again_entry, "e")
        d.click(view.continue_button)
        d.wait(lambda: view.choice is not None, what="the choice")
        assert view.choice is not None
        assert (view.choice.nickname, view.choice.passphrase) == ("dana", "correct horse")
        view.close()
    finally:
        app.close()


def focused_window() -> str:
    """The X window that has the keyboard focus (empty when none has)."""
    return subprocess.run(["xdotool", "getwindowfocus"], capture_output=True, text=True, timeout=10).stdout.strip()


def test_the_app_publishes_the_chosen_nickname_only_after_continue(xvfb, tmp_path):
    need_xdotool()
    from ledger.client import LedgerClient

    host = free_loopback_ip()
    data = tmp_path / "dana"
    proc = subprocess.Popen([sys.executable, "-m", "p2pchat", "gui", "--data-dir", str(data), "--host", host,
                             "--difficulty", "8"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: window_ids("p2pchat.*welcome") or proc.poll() is not None, 60, interval=0.2,
                   what="the first-run form")
        assert proc.poll() is None, proc.communicate()[1]
        # Nothing made, nothing published: no key file, no ledger node for this address.
        assert not (data / "identity.pem").exists()
        with pytest.raises(UserError):
            LedgerClient(host, LEDGER_PORT, source_ip=host, timeout=2).status()
        # The form takes the keyboard focus once it is mapped (a moment after it appears, longer under load): keys
        # typed before that go to no window and are lost. Wait for it (there is no window manager to ask).
        wait_until(lambda: focused_window() in window_ids("p2pchat.*welcome") or proc.poll() is not None, 60,
                   interval=0.1, what="the form to take the keyboard focus")
        subprocess.run(["xdotool", "type", "--delay", "5", "dana"], check=True, timeout=10)
        subprocess.run(["xdotool", "key", "Return"], check=True, timeout=10)
        wait_until(lambda: window_ids("p2pchat.*dana") or proc.poll() is not None, 60, interval=0.2,
                   what="the chat window")
        assert proc.poll() is None, proc.communicate()[1]
        status = LedgerClient(host, LEDGER_PORT, source_ip=host, timeout=5).status()
        assert status["nickname"] == "dana"
        wait_until(lambda: window_ids("p2pchat.*almost ready"), 20, interval=0.2, what="the reachability note")
        code, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert code == 0, err
    assert (data / "identity.pem").exists() and "Traceback" not in err


def test_sigterm_while_the_form_waits_ends_the_app_without_making_anything(xvfb, tmp_path):
    need_xdotool()
    host = free_loopback_ip()
    data = tmp_path / "erin"
    proc = subprocess.Popen([sys.executable, "-m", "p2pchat", "gui", "--data-dir", str(data), "--host", host],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: window_ids("p2pchat.*welcome") or proc.poll() is not None, 60, interval=0.2,
                   what="the first-run form")
        code, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert code == 130 and "interrupted while starting" in err, err
    assert not (data / "identity.pem").exists()
