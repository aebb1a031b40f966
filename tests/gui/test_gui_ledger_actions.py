"""The ledger tab's "Your identity" buttons in a real window under Xvfb, clicked with a real pointer: each asks
for confirmation first (Cancel publishes nothing), then publishes through the window's ledger node and shows the
record and when it is mined; a refused action is shown as one plain line."""

from __future__ import annotations

import tkinter

import pytest

from gui.app import App
from gui.ledger_actions import LedgerActions
from gui.ledger_monitor import LedgerMonitor, NodeSource
from gui.window import LEDGER_KEY, Me
from ledger.client import LedgerClient
from p2pchat.demo_world import DemoWorld
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, inner, need_xdotool

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]


@pytest.fixture
def world(tmp_path, identities):
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), nicknames=("alice", "bob"),
                   identities=identities[:2], difficulty=8) as w:
        yield w


def test_nickname_revoke_and_a_refused_rotation_from_the_ledger_tab(xvfb, world):
    need_xdotool()
    alice, bob = world.users[0], world.users[1]
    app = App(appearance="Light")
    monitor = LedgerMonitor(NodeSource(alice.ledger_node), interval=0.5).start()
    actions = LedgerActions(alice.ledger_address, alice.data_dir, passphrase=None, source_ip=alice.host,
                            network=world.network, wait=60)
    try:
        window = app.open_window(alice.chat, Me("alice", alice.chat.address, alice.identity.short_fingerprint),
                                 ledger=monitor, geometry="720x790+0+0")
        panel = window.ledger_panel
        panel.set_actions(actions)
        d = Driver(app.root)
        window.tabs.select(LEDGER_KEY)
        d.wait(lambda: panel.nickname_button.winfo_viewable(), what="the ledger tab")
        bob_client = LedgerClient(bob.host, bob.ledger_node.port, timeout=5.0)

        d.type(inner(panel.nickname_entry, tkinter.Entry), "alicia")
        d.click(panel.nickname_button)
        d.wait(lambda: panel.dialog is not None and panel.dialog.winfo_viewable(), what="the confirmation")
        assert "alicia" in panel.dialog.question.cget("text")
        d.click(panel.dialog.cancel_button)
        d.wait(lambda: panel.dialog is None, what="the dialog to close")
        assert panel.action_result.cget("text") == "" and not actions.busy

        d.click(panel.nickname_button)
        d.wait(lambda: panel.dialog is not None and panel.dialog.winfo_viewable(), what="the confirmation")
        d.click(panel.dialog.confirm_button)
        d.wait(lambda: panel.action_result.cget("text").startswith("✓ mined in block"), 60, what="the update")
        assert bob_client.lookup("alicia").ip == alice.host

        d.click(panel.revoke_button)
        d.wait(lambda: panel.dialog is not None and panel.dialog.winfo_viewable(), what="the confirmation")
        assert "for good" in panel.dialog.question.cget("text")
        d.click(panel.dialog.confirm_button)
        d.wait(lambda: panel.action_result.cget("text").startswith("✓ mined in block"), 60, what="the revocation")
        d.wait(lambda: bob_client.find(alice.host) is None, 30, what="the binding to go")

        d.click(panel.rotate_button)
        d.wait(lambda: panel.dialog is not None and panel.dialog.winfo_viewable(), what="the confirmation")
        d.click(panel.dialog.confirm_button)
        d.wait(lambda: panel.action_result.cget("text").startswith("✗"), 30, what="the refusal")
        assert "revoked" in panel.action_result.cget("text")
        assert str(panel.nickname_button.cget("state")) == "normal"
    finally:
        app.close()
        actions.close()
        monitor.close()


def test_a_rotation_from_the_app_switches_the_key_files_and_the_in_process_node(tmp_path, identities):
    from gui.ledger_actions import Action
    from gui.ledger_runtime import attach_ledger, probe
    from ledger.own_record import NEXT_KEY_FILE, retired_key_file
    from p2pchat.foundation.addresses import LEDGER_PORT
    from p2pchat.foundation.identity import KEY_FILE, Identity
    from tests.gui.helpers import wait_until

    host = free_loopback_ip()
    old = identities[4]
    old.save(tmp_path / KEY_FILE)
    runtime = attach_ledger(data_dir=tmp_path, identity=old, host=host, ledger=None, network="rotnet",
                            nickname=None, difficulty_bits=8)
    actions = LedgerActions(runtime.address, tmp_path, passphrase=None, source_ip=host, network="rotnet", wait=60)
    try:
        def status():
            return probe(host, LEDGER_PORT, source_ip=host, network="rotnet") or {}
        wait_until(lambda: (status().get("own_record") or {}).get("state") == "mined", 60, what="registration")
        assert actions.start(Action.ROTATE)
        reports = []
        wait_until(lambda: reports.extend(actions.drain()) or (reports and reports[-1].final), 90,
                   what="the rotation to finish")
        assert reports[-1].ok and "restart p2pchat" in reports[-1].text, reports
        assert any(r.text.startswith("publishing: kind        rotate") or "kind rotate" in r.text for r in reports)
        new = Identity.load(tmp_path / KEY_FILE)
        assert new.fingerprint != old.fingerprint and not (tmp_path / NEXT_KEY_FILE).exists()
        assert (tmp_path / retired_key_file(old.fingerprint)).exists()
        wait_until(lambda: status().get("fingerprint") == new.fingerprint.hex(), 30, what="the node's new key")
        assert status()["nickname"] == f"user-{old.fingerprint.hex()[:8]}"
    finally:
        actions.close()
        runtime.close()
