"""The window's own ledger node runs in a child process the app owns: the ledger tab shows that process's status
(over its ledger port) and its recent blocks (over its pipe); closing the window stops it; a dead or failed child
is reported in plain words; and killing the app outright leaves no orphan node behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gui.ledger_process import ChildSource, ChildState, LedgerProcess
from gui.ledger_runtime import attach_ledger, probe
from p2pchat.foundation.addresses import LEDGER_PORT
from p2pchat.foundation.identity import KEY_FILE
from tests.conftest import free_loopback_ip
from tests.gui.helpers import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ledger_children(parent: int) -> list[int]:
    """Live ``gui.ledger_child`` processes whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if ppid == parent and b"gui.ledger_child" in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def test_the_ledger_tab_shows_the_child_process_and_closing_the_window_stops_it(xvfb, tmp_path, identities):
    from gui.app import App
    from gui.ledger_monitor import LedgerMonitor
    from gui.window import LEDGER_KEY, Me
    from p2pchat.node import ChatNode
    from tests.gui.driver import Driver

    host = free_loopback_ip()
    identity = identities[5]
    identity.save(tmp_path / KEY_FILE)
    runtime = attach_ledger(data_dir=tmp_path, identity=identity, host=host, ledger=None, network="childnet",
                            nickname="carol", difficulty_bits=8)
    assert runtime.started_here and isinstance(runtime.source, ChildSource)
    process = runtime.source.process
    assert process.state is ChildState.RUNNING and ledger_children(os.getpid()) == [process.pid]
    app = App(appearance="Light")
    node = ChatNode(identity, host=host, network="childnet", nickname="carol", ledger=runtime.address)
    node.start()
    monitor = LedgerMonitor(runtime.source, interval=0.3).start()
    try:
        window = app.open_window(node, Me("carol", node.address, identity.short_fingerprint), ledger=monitor,
                                 geometry="720x790+0+0")
        panel = window.ledger_panel
        window.tabs.select(LEDGER_KEY)
        d = Driver(app.root)
        d.wait(lambda: f"pid {process.pid}" in panel.values["Node"].cget("text"), 30, what="the child's status")
        assert panel.values["Node"].cget("text").startswith("running")
        assert "childnet" in panel.values["Network"].cget("text")
        # The own record gets mined by the child; the tab shows its block and the recent blocks from the pipe.
        # (a network of one: "in block N, on this computer only", never "confirmed": nobody else holds it)
        d.wait(lambda: "in block 1" in panel.values["Your record"].cget("text"), 90,
               what="the own record mined by the child")
        d.wait(lambda: "#1 " in panel.blocks.get("1.0", "end"), 30, what="the recent blocks")
        assert probe(host, LEDGER_PORT, source_ip=host, network="childnet")["nickname"] == "carol"
    finally:
        app.close()
        monitor.close()
        node.close()
        runtime.close()
    assert not alive(process.pid)
    assert process.state is ChildState.STOPPED
    assert ledger_children(os.getpid()) == []
    assert probe(host, LEDGER_PORT, source_ip=host, network="childnet", timeout=0.5) is None


def test_a_child_that_dies_or_cannot_start_is_reported_in_plain_words(tmp_path, identities):
    host = free_loopback_ip()
    request = {"host": host, "port": LEDGER_PORT, "network": "deadnet", "data_dir": str(tmp_path),
               "key_pem": identities[5].to_pem().decode(), "passphrase": None, "nickname": None, "chat_port": 8471,
               "seeds": [], "difficulty_bits": 8, "relay": None, "no_inbound": False}
    process = LedgerProcess(request)
    source = ChildSource(process, source_ip=host, network="deadnet")
    try:
        process.wait_ready(60)
        assert source.snapshot().running
        os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: process.state is ChildState.FAILED, 30, what="the death to be noticed")
        snap = source.snapshot()
        assert not snap.running
        assert snap.error.startswith("the ledger node stopped unexpectedly (exit status -9)")
    finally:
        process.close()

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("not a directory")
    failing = LedgerProcess({**request, "host": free_loopback_ip(), "data_dir": str(not_a_dir)})
    try:
        with pytest.raises(Exception, match="the ledger node could not start"):
            failing.wait_ready(60)
        assert failing.state is ChildState.FAILED
        assert failing.error.startswith("the ledger node could not start: ")
        assert failing.error.count("could not start") == 1 and "Traceback" not in failing.error
    finally:
        failing.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_app_process_leaves_no_ledger_process_behind(xvfb, tmp_path, how):
    host = free_loopback_ip()
    proc = subprocess.Popen([sys.executable, "-m", "p2pchat", "gui", "--data-dir", str(tmp_path), "--host", host,
                             "--nickname", "dora", "--difficulty", "8"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ledger_children(proc.pid) or proc.poll() is not None, 90, interval=0.1,
                   what="the app's ledger process")
        assert proc.poll() is None, proc.communicate()[1]
        (child,) = ledger_children(proc.pid)
        wait_until(lambda: probe(host, LEDGER_PORT, source_ip=host, network="p2pchat") is not None, 60,
                   interval=0.2, what="the child to answer on its ledger port")
        proc.send_signal(how)
        proc.wait(60)
        wait_until(lambda: not alive(child), 30, interval=0.1, what="the ledger process to end")
        if how == signal.SIGTERM:
            # Closed like the window's close button (0), or, when the signal lands while the window is still
            # starting, unwound as an interrupted start (130): either way cleanly, with no ledger process left.
            assert proc.returncode in (0, 130)
            assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_store_damaged_while_stopped_stops_the_child_with_a_plain_message(tmp_path, identities):
    from ledger.chain import Chain
    from ledger.local_ledger import LocalLedger, store_path
    from tests.ledger.checkpoint_kit import damage_oldest_body
    from tests.ledger.ledger_kit import PARAMS, T0, branch, reg

    blocks = branch(Chain(PARAMS), PARAMS.genesis().header, 200, T0, records=[[reg(identities[4])]])
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 1000) as ledger:   # closed cleanly: the mark is set
        ledger.receive_blocks(blocks, T0 + 1000)
    damage_oldest_body(store_path(tmp_path, PARAMS.name))   # old history: the start's cheap checks do not read it
    host = free_loopback_ip()
    process = LedgerProcess({"host": host, "port": LEDGER_PORT, "network": PARAMS.name, "data_dir": str(tmp_path),
                             "key_pem": identities[5].to_pem().decode(), "passphrase": None, "nickname": None,
                             "chat_port": 8471, "seeds": [], "difficulty_bits": None, "relay": None,
                             "no_inbound": False})
    try:
        process.wait_ready(60)   # it starts and listens first
        wait_until(lambda: process.state is ChildState.FAILED, 60, what="the background check to stop the child")
        assert process.error.startswith("the ledger node stopped unexpectedly (exit status 1)")
        assert "is damaged" in process.error and "ledger verify" in process.error
    finally:
        process.close()
