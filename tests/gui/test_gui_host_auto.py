"""``p2pchat gui --host auto``: the window, its ledger node (a child process) and its chat node follow this
machine's address while the window runs, and the user is told in one plain line.

The machine's address source cannot be changed in a test without network namespaces (tests/lab has the netns
``address-change`` scenario for the CLI), so the window gets a HostWatch reading a dictionary of "interfaces"
(the seam p2pchat.foundation.host_address offers); everything else is real: the app's main(), its ledger child
process, sockets on 127.0.0.x, the window under Xvfb, SIGTERM to close it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any

import pytest

from gui.ledger_runtime import probe
from ledger.client import LedgerClient
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.host_address import HostWatch
from p2pchat.foundation.identity import KEY_FILE
from tests.conftest import free_loopback_ip
from tests.gui.helpers import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]
NETWORK = "autonet"


def record_ip(ledger_ip: str, nickname: str) -> str | None:
    """The address the ledger node at ``ledger_ip`` has mined for ``nickname`` (None: nothing answers or no
    record yet)."""
    try:
        return LedgerClient(ledger_ip, LEDGER_PORT, source_ip=ledger_ip, network=NETWORK, timeout=2).lookup(
            nickname, by="nick").ip
    except UserError:
        return None


def listening(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_the_window_with_host_auto_moves_its_nodes_to_the_new_address_and_says_so(xvfb, tmp_path, identities,
                                                                                    monkeypatch):
    from gui import app as gui_app

    old_ip, new_ip = free_loopback_ip(), free_loopback_ip()
    interfaces = {"eth0": [old_ip]}
    watch = HostWatch(addresses=lambda: dict(interfaces), route_source=lambda: None, interval=0.2)
    identities[4].save(tmp_path / KEY_FILE)
    windows: list[Any] = []
    real_open = gui_app.App.open_window

    def open_window(self: Any, *args: Any, **kwargs: Any) -> Any:
        window = real_open(self, *args, **kwargs)
        windows.append(window)
        return window

    monkeypatch.setattr(gui_app.App, "open_window", open_window)
    failures: list[BaseException] = []

    def user() -> None:
        """Off the Tk thread (main() runs the window's loop on this one): only sockets and plain attributes."""
        try:
            wait_until(lambda: record_ip(old_ip, "dana") == old_ip, 90, interval=0.2,
                       what="the window's ledger node to mine its record at the old address")
            wait_until(lambda: windows, 30, what="the window")
            assert windows[0].me.address == f"{old_ip}:{CHAT_PORT}"
            assert listening(old_ip, CHAT_PORT)
            interfaces["eth0"] = [new_ip]        # a new DHCP lease: the old address is gone
            wait_until(lambda: record_ip(new_ip, "dana") == new_ip, 90, interval=0.2,
                       what="the moved ledger node to publish and mine the record with the new address")
            wait_until(lambda: windows[0].me.address == f"{new_ip}:{CHAT_PORT}", 30,
                       what="the window to show the new address")
            # The ledger panel's snapshot comes from the monitor's next poll after the move, not with the address.
            wait_until(lambda: (snap := windows[0].snapshot) is not None and new_ip in snap.where, 30,
                       what="the window's ledger snapshot to name the moved node")
            assert listening(new_ip, CHAT_PORT)
            assert not listening(old_ip, CHAT_PORT)
            assert probe(old_ip, LEDGER_PORT, source_ip=old_ip, network=NETWORK, timeout=0.5) is None
        except BaseException as exc:   # reported on the main thread after the window closed
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)   # closes the window like its close button (gui.app)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    driver = threading.Thread(target=user, name="test-user")
    driver.start()
    try:
        code = gui_app.main(["--data-dir", str(tmp_path), "--host", "auto", "--nickname", "dana",
                             "--network", NETWORK, "--difficulty", "8"], host_watch=watch)
    finally:
        driver.join()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if failures:
        raise failures[0]
    assert code == 0
    window = windows[0]
    assert window.identity.address.cget("text") == f"{new_ip}:{CHAT_PORT}"
    assert window.status.cget("text") == (f"This computer's address changed to {new_ip}; your ledger record is "
                                          "being updated")
    assert new_ip in window.snapshot.where and old_ip not in window.snapshot.where


def test_a_move_that_fails_is_shown_and_tried_again_until_it_works(tmp_path, identities):
    """The new address's ledger port is taken: the status line says why (⚠), nothing moved, and the host watch
    tries again; once the port is free the move goes through and the window is told. (The window is a recorder
    here: the real one is the first test's.)"""
    from gui.host_move import HostMove
    from gui.ledger_runtime import attach_ledger
    from p2pchat.node import ChatNode

    old_ip, new_ip = free_loopback_ip(), free_loopback_ip()
    interfaces = {"eth0": [old_ip]}
    watch = HostWatch(addresses=lambda: dict(interfaces), route_source=lambda: None, interval=0.2)
    identities[3].save(tmp_path / KEY_FILE)
    shown: list[tuple[str, str]] = []

    class Window:
        def address_changed(self, address: str, line: str) -> None:
            shown.append((address, line))

    runtime = attach_ledger(data_dir=tmp_path, identity=identities[3], host=old_ip, ledger=None, network=NETWORK,
                            nickname="erin", difficulty_bits=8)
    node = ChatNode(identities[3], host=old_ip, network=NETWORK, nickname="erin", ledger=runtime.address)
    squatter = socket.create_server((new_ip, LEDGER_PORT))
    mover = None
    try:
        node.start()
        mover = HostMove(watch, runtime=runtime, node=node, window=Window()).start()
        interfaces["eth0"] = [new_ip]
        wait_until(lambda: shown, 30, what="the failed move to be shown")
        address, line = shown[0]
        assert address == f"{old_ip}:{CHAT_PORT}"
        assert line.startswith(f"⚠ This computer's address changed to {new_ip}, but ")
        assert f"cannot listen on {new_ip}:{LEDGER_PORT}" in line and line.endswith("trying again in a few seconds")
        assert (runtime.host, runtime.address, node.host) == (old_ip, f"{old_ip}:{LEDGER_PORT}", old_ip)
        assert probe(old_ip, LEDGER_PORT, source_ip=old_ip, network=NETWORK) is not None
        squatter.close()
        done = f"This computer's address changed to {new_ip}; your ledger record is being updated"
        wait_until(lambda: shown[-1][1] == done, 30, what="the move to go through at a later look")
        assert shown[-1][0] == f"{new_ip}:{CHAT_PORT}"
        assert (runtime.host, runtime.address, node.host) == (new_ip, f"{new_ip}:{LEDGER_PORT}", new_ip)
        assert probe(new_ip, LEDGER_PORT, source_ip=new_ip, network=NETWORK)["host"] == new_ip
        assert runtime.source.snapshot().where.endswith(f"{new_ip}:{LEDGER_PORT}")
        assert listening(new_ip, CHAT_PORT) and not listening(old_ip, CHAT_PORT)
    finally:
        if mover is not None:
            mover.close()
        squatter.close()
        node.close()
        runtime.close()


def test_a_ledger_node_on_another_computer_stays_where_it_is_and_the_line_says_the_record_is_not_updated():
    from gui.host_move import moved_line
    from gui.ledger_monitor import ClientSource
    from gui.ledger_runtime import LedgerRuntime

    here, there, remote = free_loopback_ip(), free_loopback_ip(), free_loopback_ip()
    source = ClientSource(remote, LEDGER_PORT, source_ip=here, network=NETWORK)
    runtime = LedgerRuntime(f"{remote}:{LEDGER_PORT}", source, started_here=False, host=here)
    runtime.move(there)
    assert (runtime.address, runtime.host, runtime.follows_host) == (f"{remote}:{LEDGER_PORT}", there, False)
    assert (source.ip, source.source_ip) == (remote, there)        # asked there, from the new address
    assert moved_line(there, runtime) == (f"This computer's address changed to {there}; the ledger node you use "
                                          f"({remote}:{LEDGER_PORT}) is on another computer and does not update "
                                          "your record")


def test_a_ledger_node_of_another_program_on_this_machine_is_asked_at_the_new_address():
    """``ledger join --host auto`` beside the window moves by itself; the window asks it there, from there."""
    from gui.host_move import moved_line
    from gui.ledger_monitor import ClientSource
    from gui.ledger_runtime import LedgerRuntime

    old, new = free_loopback_ip(), free_loopback_ip()
    source = ClientSource(old, LEDGER_PORT, source_ip=old, network=NETWORK)
    runtime = LedgerRuntime(f"{old}:{LEDGER_PORT}", source, started_here=False, host=old)
    runtime.move(new)
    assert (runtime.address, runtime.host, runtime.follows_host) == (f"{new}:{LEDGER_PORT}", new, True)
    assert (source.ip, source.source_ip, source.where) == (new, new, f"{new}:{LEDGER_PORT}")
    assert moved_line(new, runtime) == f"This computer's address changed to {new}; your ledger record is being updated"
