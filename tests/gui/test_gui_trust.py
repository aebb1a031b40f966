"""Key continuity and verification in the real window (issue 13), clicked with a real pointer under Xvfb.

Alice's window has a contact store that pinned another key for carol's address than the one the ledger names
now — what alice's data directory holds after carol reinstalled (new data directory, registered again; the
terminal side of that, with the real revoke and re-registration, is tests/integration/test_key_continuity.py).
Carol's chat node is a real process (tests/gui/headless_peer.py). Step 2 stops with the key-change dialog;
"Accept the new key" and 1 Connect again lead to a ready chat, and the contact store records the decision. For a
contact alice had verified the stop is hard: a red banner line in the chat and Accept off until she confirms. On
a ready chat, "Verify…" shows the safety number as text and as a QR code (the widget draws exactly segno's
modules) and marks the contact verified.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import segno

from gui.models import StepState
from gui.window import ChatWindow
from p2pchat.contacts import ContactStore
from p2pchat.demo_world import DemoWorld
from p2pchat.foundation.addresses import format_address
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver
from tests.gui.test_gui_peer_trouble import PeerProcess, alice_window, connect_all, transcript

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]


@pytest.fixture
def world(tmp_path, identities) -> Iterator[tuple[DemoWorld, PeerProcess, ContactStore]]:
    """Alice's chat node (with a contact store) in this process, carol's in her own; carol's old key pinned."""
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), nicknames=("alice", "carol"),
                   identities=identities[:2], difficulty=8, rotate_every=10) as w:
        alice, carol = w.user("alice"), w.user("carol")
        assert alice.chat is not None and carol.chat is not None
        alice.chat.close()
        carol.chat.close()
        carol.chat = None
        (tmp_path / "alice-contacts").mkdir()
        store = ContactStore.in_data_dir(tmp_path / "alice-contacts")
        old = identities[4]        # carol's key before she reinstalled
        store.record_chat(old.public_der, old.fingerprint, nickname="carol", ip=carol.host,
                          address=format_address(carol.host, w.chat_port))
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


def wait_ready_peer(d: Driver, peer: PeerProcess) -> None:
    d.wait(lambda: any(e.get("event") == "ready" for e in peer.events()), what="carol's chat process")


def test_a_changed_key_stops_step_2_with_a_dialog_and_accepting_lets_the_retry_through(window, world):
    w, peer, store = world
    d = Driver(window.top)
    carol = w.user("carol")
    wait_ready_peer(d, peer)
    session = connect_all(d, window, carol.host)
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
    assert decisions[0].new_fp == carol.identity.fingerprint.hex()
    pinned = store.pinned_for("ip", carol.host)
    assert pinned is not None and pinned.fingerprint == carol.identity.fingerprint
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
    d.wait(lambda: (store.get(carol.identity.fingerprint) or store.all()[0]).verified, what="the store's mark")
    assert store.get(carol.identity.fingerprint) is not None

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


def test_a_verified_contacts_changed_key_is_a_hard_stop_with_a_red_banner(window, world):
    w, peer, store = world
    d = Driver(window.top)
    carol = w.user("carol")
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
