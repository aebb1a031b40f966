"""Key continuity and verification in the real window (issue 13), clicked with a real pointer under Xvfb.

Carol's chat node is a real process (tests/gui/headless_peer.py). Alice chats with carol once (her key is
pinned), then carol reinstalls for real: her key is revoked in the ledger, her ledger node stops, a new data
directory with a new key registers her address and nickname again, and her chat process comes back with it.
Alice's next chat stops at step 2 with the key-change dialog; "Accept the new key" and 1 Connect again lead to a
ready chat, and the contact store records the decision. "Verify…" then shows the safety number as text and as a
QR code (the widget draws exactly segno's modules) and marks carol verified. For a contact alice had verified
(pinned with another key in her store) the stop is hard: a red banner line in the chat, Accept off until she
confirms, Enter keeping the old key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import segno

from gui.models import StepState
from gui.window import ChatWindow
from ledger.client import LedgerClient
from ledger.local_ledger import LocalLedger
from ledger.node import LedgerNode, NodeConfig
from ledger.own_record import build_revocation, own_record, publish_and_wait
from p2pchat.contacts import ContactStore
from p2pchat.demo_world import DemoWorld
from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver
from tests.gui.test_gui_peer_trouble import PeerProcess, alice_window, connect_all, transcript
from tests.helpers import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]


@pytest.fixture
def world(tmp_path, identities) -> Iterator[tuple[DemoWorld, PeerProcess, ContactStore]]:
    """Alice's chat node (with a contact store) in this process, carol's in her own."""
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), nicknames=("alice", "carol"),
                   identities=identities[:2], difficulty=8, rotate_every=10) as w:
        alice, carol = w.user("alice"), w.user("carol")
        assert alice.chat is not None and carol.chat is not None
        alice.chat.close()
        carol.chat.close()
        carol.chat = None
        (tmp_path / "alice-contacts").mkdir()
        store = ContactStore.in_data_dir(tmp_path / "alice-contacts")
        alice.chat = ChatNode(alice.identity, host=alice.host, port=w.chat_port, network=w.network,
                              nickname="alice", ledger=alice.ledger_address, contacts=store)
        alice.chat.start()
        peer = PeerProcess(["--host", carol.host, "--data-dir", str(carol.data_dir), "--nickname", "carol",
                            "--network", w.network, "--ledger", carol.ledger_address])
        try:
            yield w, peer, store
        finally:
            peer.close()


@pytest.fixture
def window(xvfb, world) -> Iterator[ChatWindow]:
    with alice_window(world[0]) as window:
        yield window


def reinstall_carol(w: DemoWorld, peer: PeerProcess, new: Identity, root: Path) -> tuple[PeerProcess, LedgerNode]:
    """What carol's reinstall does: her key is revoked, her ledger node stops, a new data directory with a new
    key registers her address and nickname again, and her chat node comes back with that key."""
    carol, alice = w.user("carol"), w.user("alice")
    peer.close()
    client = LedgerClient(carol.host, w.ledger_port, source_ip=carol.host, timeout=5)
    own = own_record(client.status(), carol.identity)
    published = publish_and_wait(client, build_revocation(carol.identity, own, w.params, time.time()), 60)
    assert published.mined
    alice_client = LedgerClient(alice.host, w.ledger_port, source_ip=alice.host, timeout=5)
    wait_until(lambda: alice_client.find(carol.host, by="ip") is None, 60, interval=0.1,
               what="the revocation at alice's ledger node")
    carol.ledger_node.close()
    data_dir = root / "carol-reinstalled"
    data_dir.mkdir()
    new.save(data_dir / KEY_FILE)
    node = LedgerNode(new, LocalLedger(data_dir, w.params), host=carol.host, port=w.ledger_port,
                      chat_port=w.chat_port, seeds=[alice.ledger_address], nickname="carol",
                      config=NodeConfig(register_grace=2.0, backoff_base=0.2, backoff_cap=2.0)).start()
    try:
        wait_until(lambda: (b := alice_client.find(carol.host, by="ip")) is not None
                   and b.fingerprint == new.fingerprint, 60, interval=0.1, what="carol's new record at alice's")
    except BaseException:
        node.close()
        raise
    fresh = PeerProcess(["--host", carol.host, "--data-dir", str(data_dir), "--nickname", "carol",
                         "--network", w.network, "--ledger", node.address])
    return fresh, node


def wait_ready_peer(d: Driver, peer: PeerProcess) -> None:
    d.wait(lambda: any(e.get("event") == "ready" for e in peer.events()), what="carol's chat process")


def test_a_changed_key_stops_step_2_with_a_dialog_and_accepting_lets_the_retry_through(window, world, identities,
                                                                                      tmp_path):
    w, peer, store = world
    d = Driver(window.top)
    carol = w.user("carol")
    wait_ready_peer(d, peer)
    first = connect_all(d, window, carol.host)          # the first chat pins carol's key
    d.wait(lambda: window.controller.tabs[first].ready, what="the first chat with carol")
    pinned = store.pinned_for("ip", carol.host)
    assert pinned is not None and pinned.fingerprint == carol.identity.fingerprint
    window.controller.close_tab(first)
    window._render(window.controller.take_changes())

    new_key = identities[3]
    peer, node = reinstall_carol(w, peer, new_key, tmp_path)
    try:
        changed_key_dialog(d, window, w, peer, store, new_key)
    finally:
        peer.close()
        node.close()


def changed_key_dialog(d: Driver, window: ChatWindow, w: DemoWorld, peer: PeerProcess, store: ContactStore,
                       new_key: Identity) -> None:
    carol = w.user("carol")
    wait_ready_peer(d, peer)
    d.wait(lambda: window.controller.peer_text == carol.host, what="the peer field still naming carol")
    d.click(window.step_bar.connect_all_button)
    d.wait(lambda: window.controller.target is not None, what="the new chat's tab")
    session = window.controller.target
    assert session is not None
    d.wait(lambda: window.key_dialog is not None, what="the key-change dialog")
    dialog = window.key_dialog
    assert dialog is not None
    tab = window.controller.tabs[session]
    assert tab.steps[Step.SWAP_KEYS].state is StepState.FAILED
    assert tab.steps[Step.AUTHENTICATE].state is not StepState.DONE      # nothing was signed
    text = dialog.message.get("1.0", "end")
    assert "HAS CHANGED" in text and "Expected: key" in text and "What may be happening" in text
    assert dialog.accept_button.cget("state") == "normal" and dialog.confirm_box is None
    shown = window.panes[session].peer_panel.value_text("Peer")
    assert shown in ("not known yet", "not confirmed — step 2 refused the key (it calls itself carol)"), shown
    d.screenshot("key-change-dialog.png", dialog)
    d.click(dialog.accept_button)
    d.wait(lambda: window.key_dialog is None, what="the dialog to close")
    assert "You accepted the new key" in transcript(window, session)

    d.click(window.step_bar.buttons[Step.CONNECT])       # a new chat with the same peer
    d.wait(lambda: window.controller.target not in (None, session), what="the retry's tab")
    retry = window.controller.target
    assert retry is not None
    d.click(window.step_bar.connect_all_button)
    d.wait(lambda: window.controller.tabs[retry].ready, what="the retried chat to be ready")
    decisions = store.decisions()
    assert [x.decision for x in decisions] == ["accepted"]
    assert decisions[0].new_fp == new_key.fingerprint.hex()
    assert decisions[0].old_fp == carol.identity.fingerprint.hex()
    pinned = store.pinned_for("ip", carol.host)
    assert pinned is not None and pinned.fingerprint == new_key.fingerprint
    assert window.panes[retry].peer_panel.value_text("Peer") == "carol"

    # Compare the safety number: text and QR code, then mark carol verified.
    d.click(window.verify_buttons[retry])
    d.wait(lambda: window.verify_dialog is not None, what="the verify dialog")
    verify = window.verify_dialog
    assert verify is not None
    number = window.controller.tabs[retry].info.safety_number
    assert number and verify.number.get("1.0", "end").strip() == number
    symbol = segno.make(number, error="m", micro=False, boost_error=False)
    dark = {(x, y) for y, row in enumerate(symbol.matrix) for x, m in enumerate(row) if m}
    assert verify.qr.drawn_modules() == dark
    d.screenshot("verify-dialog.png", verify)
    d.click(verify.verify_button)
    d.wait(lambda: "✓ verified" in window.panes[retry].peer_panel.value_text("Peer"), what="the verified mark")
    d.wait(lambda: (store.get(new_key.fingerprint) or store.all()[0]).verified, what="the store's mark")
    assert store.get(new_key.fingerprint) is not None

    # The next chat with carol shows the mark from the contact store as soon as step 4 pinned her key.
    window.controller.close_tab(retry)
    window._render(window.controller.take_changes())
    assert window.controller.peer_text == carol.host        # the peer field still names her
    d.click(window.step_bar.connect_all_button)
    d.wait(lambda: window.controller.target not in (None, retry), what="the next chat's tab")
    again = window.controller.target
    assert again is not None
    d.wait(lambda: window.controller.tabs[again].ready, what="the next chat to be ready")
    d.wait(lambda: window.panes[again].peer_panel.value_text("Peer") == "carol · ✓ verified",
           what="the stored verified mark")


def test_a_verified_contacts_changed_key_is_a_hard_stop_with_a_red_banner(window, world, identities):
    w, peer, store = world
    d = Driver(window.top)
    carol = w.user("carol")
    earlier = identities[4]        # the key alice verified for carol's address before (a reinstall since)
    store.record_chat(earlier.public_der, earlier.fingerprint, nickname="carol", ip=carol.host,
                      address=format_address(carol.host, w.chat_port))
    old = store.pinned_for("ip", carol.host)
    assert old is not None
    store.set_verified(old.fp, True)
    wait_ready_peer(d, peer)
    session = connect_all(d, window, carol.host)
    d.wait(lambda: window.key_dialog is not None, what="the key-change dialog")
    dialog = window.key_dialog
    assert dialog is not None and dialog.confirm_box is not None
    assert [ln.level for ln in window.controller.tabs[session].lines if ln.level == "key-stop"] == ["key-stop"]
    assert "STOP" in transcript(window, session) and "VERIFIED" in dialog.message.get("1.0", "end")
    assert dialog.accept_button.cget("state") == "disabled"
    d.screenshot("key-change-hard-stop.png", window.top)
    d.key("Return")            # Enter keeps the old key (the default)
    d.wait(lambda: window.key_dialog is None, what="the dialog to close")
    assert "You kept the old key" in transcript(window, session)
    assert [x.decision for x in store.decisions()] == ["verified"]     # no key change was recorded
    assert store.pinned_for("ip", carol.host).fp == old.fp
