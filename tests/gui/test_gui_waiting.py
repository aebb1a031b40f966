"""Messages that wait (issue 16) in a real window under Xvfb, with real chat nodes on loopback sockets: a text
typed to a contact whose node is down shows "waiting", one is cancelled with its "✕ cancel" link, and once the
contact's node is up the other arrives by itself, the node's chat shows as one line in the same conversation, the
line turns ✓ and the contact's row says online."""

from __future__ import annotations

import socket
import tkinter

import customtkinter as ctk
import pytest

from gui.app import App
from gui.controller import AGAIN, CONTACT_KEY
from gui.models import ChatLine, LineKind, StepState
from gui.waiting import RECHECK_AFTER, WaitingTexts
from gui.window import ChatWindow, Me
from p2pchat import outbox
from p2pchat.contacts import ContactStore
from p2pchat.events import MessageReceived, OutboxChanged, Presence
from p2pchat.history import HistoryMessage
from p2pchat.node import ChatNode
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, inner, need_xdotool
from tests.p2pchat.node_kit import entry, make_peer

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def test_the_history_turns_a_sent_line_to_delivered_or_back_to_waiting_after_a_receipt_or_a_drop():
    redrawn: list[int] = []
    texts = WaitingTexts(lambda session, line: redrawn.append(line.line_id))
    fp = "ab" * 32
    a, b = (ChatLine(i, LineKind.OUT, "09:00", "alice", t, len(t), stored="waiting") for i, t in ((1, "a"), (2, "b")))
    texts.handle(OutboxChanged(fp, 11, "sent", Presence.ONLINE))      # before the row is known: kept for it
    texts.track("s1", a, 11)
    texts.track("s1", b, 12)
    texts.handle(OutboxChanged(fp, 12, "sent", Presence.ONLINE))
    assert a.tick == b.tick == "…"
    texts.recheck(fp, 100.0)
    assert texts.due(100.0) == [] and texts.due(100.0 + RECHECK_AFTER) == [fp]

    def kept(row: int, status: str) -> HistoryMessage:
        return HistoryMessage(row, fp, "out", "x", 0.0, status, None, False)
    texts.apply([kept(11, "delivered"), kept(12, "waiting")])        # b's chat dropped before its receipt
    assert a.tick == "✓" and b.waiting and redrawn == [1, 2, 1, 2]
    assert texts.due(200.0) == [], "nothing awaits a receipt any more: no more reads"


def click_cancel(d: Driver, window: ChatWindow, session: str, nth: int) -> None:
    text = inner(window.panes[session].transcript, tkinter.Text)
    start = text.tag_ranges("cancel")[2 * nth]
    text.see(start)
    d.pump()
    x, y, width, height = text.bbox(f"{start}+4c")
    d.click_at(text.winfo_rootx() + x + width // 2, text.winfo_rooty() + y + height // 2)


def test_a_text_to_a_contact_that_is_down_waits_can_be_cancelled_and_turns_delivered_once_it_is_up(
        xvfb, tmp_path, identities, monkeypatch):
    need_xdotool()
    # the outbox retries every half second or so here (its real schedule backs off to once a minute)
    monkeypatch.setattr(outbox, "FIRST_RETRY", 0.5)
    monkeypatch.setattr(outbox, "MAX_RETRY", 1.0)
    monkeypatch.setattr(outbox, "QUICK_RETRIES", 1000)
    alice_id, bob_id = identities[0], identities[1]
    directory = FixedDirectory()
    bob_ip = free_loopback_ip()
    bob_port = _free_port(bob_ip)
    directory.add(entry(bob_id, "bob", bob_ip, bob_port))          # listed, but bob's node is not running
    bob_fp = bob_id.fingerprint.hex()
    data_dir = tmp_path / "alice"
    data_dir.mkdir(mode=0o700)
    contacts = ContactStore.in_data_dir(data_dir)                    # alice chatted with bob before
    contacts.record_chat(bob_id.public_der, bob_id.fingerprint, nickname="bob", ip=bob_ip,
                         address=f"{bob_ip}:{bob_port}")
    contacts.close()
    alice_ip = free_loopback_ip()
    node = ChatNode(alice_id, host=alice_ip, port=0, nickname="alice", directory=directory,
                    data_dir=data_dir, outbox=True, step_timeout=5.0, direct_timeout=1.0)
    node.start()
    directory.add(entry(alice_id, "alice", alice_ip, node.port))
    application = App(appearance="Light")
    window = application.open_window(node, Me("alice", node.address, alice_id.short_fingerprint),
                                     data_dir=data_dir, geometry="980x760+0+0")
    d = Driver(application.root)
    bob = None
    try:
        key = CONTACT_KEY + bob_fp
        d.wait(lambda: key in window.tabs.buttons, what="bob's row")
        d.click(window.tabs.buttons[key])                  # the chat with bob; 1 Connect pressed, and it fails
        session = window.controller.target
        assert session is not None
        tab = window.controller.tabs[session]
        d.wait(lambda: tab.steps[Step.CONNECT].state is StepState.FAILED, 20, what="1 Connect to fail")
        pane = window.panes[session]
        d.wait(lambda: pane.entry.cget("state") == "normal", what="the entry, open for a text that waits")
        d.type(pane.entry_text, "the keys are under the mat")
        d.key("Return")
        d.type(pane.entry_text, "never mind, call me")
        d.key("Return")
        d.wait(lambda: pane.transcript.plain_text().count("(waiting)") == 2, what="two waiting texts")
        d.wait(lambda: len(window.controller.waiting.lines) == 2, what="both kept in the outbox")
        d.screenshot("waiting-texts.png", window.top)
        click_cancel(d, window, session, 1)
        d.wait(lambda: "(cancelled)" in pane.transcript.plain_text(), what="the second text cancelled")
        assert node.history is not None
        assert [m.status for m in node.history.messages(bob_fp)] == ["waiting", "cancelled"]
        assert window.controller.tabs.get(session) is tab, "a contact's tab stays after a failed dial"

        # bob's node comes up: the outbox calls by itself; the same conversation shows it in one line
        bob = make_peer(bob_id, "bob", directory, ip=bob_ip, port=bob_port, auto_accept=True, register=False)
        got = bob.log.wait(MessageReceived, 20, text="the keys are under the mat")
        assert got.text == "the keys are under the mat"

        def delivered() -> bool:
            bob.log.pump()            # bob's UI reads its events: that is when the receipt goes back
            text = pane.transcript.plain_text() if pane.winfo_exists() else ""
            return "✓" in text
        d.wait(lambda: window.controller.tabs.get(window.controller.selected or "") is tab, what="the same tab")
        pane = window.panes[tab.session]
        d.wait(delivered, 20, what="the ✓")
        shown = pane.transcript.plain_text()
        assert shown.count(AGAIN) == 1 and "(waiting)" not in shown
        assert [t.contact for t in window.controller.tabs.values()] == [bob_fp], "one conversation, not two"
        d.wait(lambda: window.tabs.details.get(key, "").startswith("online"), what="bob's row: online")
        d.type(pane.entry_text, "thanks")                # later texts go through the node's chat
        d.key("Return")
        bob.log.wait(MessageReceived, 15, text="thanks")
        assert not any(e.text == "never mind, call me" for e in bob.log.all(MessageReceived))
    finally:
        application.close()
        ctk.set_widget_scaling(1.0)
        node.close()
        if bob is not None:
            bob.node.close()
