"""The window's kept history, on a real window under Xvfb with real nodes and a real data directory: chats with
bob and carol are kept, End chat keeps them, a search finds bob's words while carol's chat is on screen, and after
a restart of the app on the same data directory the contacts are listed (unread count in the row and the title)
and one click on bob's row opens the chat with its history and presses 1 Connect, the other steps still to be
pressed one by one. Export writes the text; Delete, after its question, erases it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import customtkinter as ctk
import pytest

from gui.app import App
from gui.controller import CONTACT_KEY
from gui.models import StepState
from gui.window import ChatWindow, Me
from p2pchat.demo_world import DemoUser, DemoWorld
from p2pchat.events import IncomingChat
from p2pchat.node import ChatNode
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, need_xdotool

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]


@pytest.fixture
def world(tmp_path, identities):
    with DemoWorld(root=tmp_path / "world", hosts=(free_loopback_ip(), free_loopback_ip(), free_loopback_ip()),
                   nicknames=("alice", "bob", "carol"), identities=identities[:3], difficulty=8) as w:
        yield w


def alice_node(world: DemoWorld, data_dir: Path) -> ChatNode:
    """Alice's chat node on a data directory of her own (contacts and history kept there), in place of the
    demo's, which keeps nothing."""
    user = world.users[0]
    user.chat.close()
    node = ChatNode(user.identity, host=user.host, port=world.chat_port, network=world.network, nickname="alice",
                    ledger=user.ledger_address, data_dir=data_dir)
    node.start()
    return node


def open_app(node: ChatNode, user: DemoUser, data_dir: Path) -> tuple[App, ChatWindow]:
    application = App(appearance="Light")
    window = application.open_window(node, Me("alice", node.address, user.identity.short_fingerprint),
                                     data_dir=data_dir, geometry="980x760+0+0")
    return application, window


def answer_calls(world: DemoWorld) -> None:
    """Bob and carol (no windows) say yes to every call waiting in their nodes' events."""
    for user in world.users[1:]:
        while not user.chat.events.empty():
            event = user.chat.events.get_nowait()
            if isinstance(event, IncomingChat):
                user.chat.accept(event.session, True)


def chat_with(window: ChatWindow, world: DemoWorld, d: Driver, who: DemoUser) -> str:
    window._new_chat()
    window.prefill_peer(who.host)
    window._connect_all()
    session = window.controller.target
    assert session is not None
    d.wait(lambda: (answer_calls(world), window.controller.tabs[session].ready)[1], 60, what=f"a chat with {who}")
    d.wait(lambda: window.controller.tabs[session].contact is not None, what="the contact named")
    return session


def their_session(user: DemoUser) -> str:
    return next(s.session for s in user.chat.sessions() if s.steps_done == tuple(Step))


def kept(node: ChatNode, text: str) -> bool:
    assert node.history is not None
    return any(text in m.text for m in node.history.search(text))


def test_history_is_kept_found_across_chats_and_shown_again_after_a_restart(xvfb, world, tmp_path):
    need_xdotool()
    data_dir = tmp_path / "alice"
    data_dir.mkdir(mode=0o700)
    alice, bob, carol = world.users
    node = alice_node(world, data_dir)
    application, window = open_app(node, alice, data_dir)
    d = Driver(application.root)
    try:
        to_bob = chat_with(window, world, d, bob)
        pane = window.panes[to_bob]
        d.type(pane.entry_text, "hello bob, the meeting is at noon")
        d.key("Return")
        # alice's text kept before bob answers, so bob's is the last kept message (the row below shows it); without
        # this wait, on a loaded machine alice's own text could be recorded after bob's answer
        d.wait(lambda: kept(node, "meeting is at noon"), what="alice's text kept")
        bob.chat.send_text(their_session(bob), "see you at the pineapple stand")
        d.wait(lambda: "pineapple stand" in pane.transcript.plain_text(), what="bob's message")
        d.wait(lambda: kept(node, "pineapple stand") and kept(node, "meeting is at noon"), what="both kept")

        # End chat asks first, then closes the chat; the messages stay kept
        d.click(pane.end_button)
        d.wait(lambda: window._confirm is not None and window._confirm.winfo_viewable(), what="the question")
        assert "stay in your history" in window._confirm.question.cget("text")
        d.wait(lambda: str(window.top.focus_get() or "").startswith(str(window._confirm)), what="its focus")
        d.key("Return")
        d.wait(lambda: to_bob not in window.controller.tabs, what="the chat to end")
        assert kept(node, "pineapple stand")
        bob_key = CONTACT_KEY + next(c.fp for c in node.contacts.all() if c.nickname == "bob")  # type: ignore[union-attr]
        d.wait(lambda: "pineapple" in window.tabs.details.get(bob_key, ""), what="bob's row: the last message")

        # carol's chat on screen; a message from carol arrives while bob's history is searched
        to_carol = chat_with(window, world, d, carol)
        carol.chat.send_text(their_session(carol), "carol here")
        d.wait(lambda: "carol here" in window.panes[to_carol].transcript.plain_text(), what="carol's message")
        application.root.focus_force()
        d.wait(lambda: window.has_focus(), what="the focus")
        d.key("ctrl+f")                                        # find in carol's chat: not there …
        carol_pane = window.panes[to_carol]
        d.wait(lambda: str(window.top.focus_get() or "").startswith(str(carol_pane.find_entry)), what="the find row")
        d._xdotool("type", "pineapple")
        d.wait(lambda: carol_pane.find_result.cget("text") == "not found", what="no match in carol's chat")
        d.click(carol_pane.find_all_button)                    # … but in all chats
        d.wait(lambda: getattr(window, "found", None), what="a search hit")
        assert window.found[0].key == bob_key and "pineapple stand" in window.found[0].text
        d.screenshot("search-all-chats.png", window.top)
        window.found_menu.unpost()
        window.found_menu.invoke(0)
        d.pump()
        shown = window.controller.selected
        assert shown is not None and window.controller.tabs[shown].contact == bob_key.removeprefix(CONTACT_KEY)
        assert "pineapple stand" in window.panes[shown].transcript.plain_text()
        assert window.panes[shown].find_result.cget("text") == "found"
        assert window.controller.tabs[shown].steps[Step.CONNECT].state is StepState.PENDING, "a hit does not dial"
        d.wait(lambda: kept(node, "carol here"), what="carol's message kept")
    finally:
        application.close()
        ctk.set_widget_scaling(1.0)
        node.close()

    # the files: mode 0600, the texts not in them as plain words? (no passphrase: only the mode protects them)
    for name in ("history.sqlite3", "contacts.sqlite3"):
        assert stat.S_IMODE(os.stat(data_dir / name).st_mode) == 0o600

    # a restart on the same data directory: the contacts are listed, bob's chat shows what was said
    node = alice_node(world, data_dir)
    application, window = open_app(node, alice, data_dir)
    d = Driver(application.root)
    try:
        d.wait(lambda: bob_key in window.tabs.buttons, what="bob's row")
        assert window.tabs.contact_keys and len(window.tabs.contact_keys) == 2
        unread = window.controller.unread_total()      # kept messages not read yet, counted in rows and title
        assert unread == sum(int(t.rsplit("(", 1)[1].rstrip(")")) for k, t in window.tabs.titles.items()
                             if k.startswith(CONTACT_KEY) and t.endswith(")"))
        assert window.top.title() == "p2pchat — alice" + (f" ({unread} unread)" if unread else "")
        d.screenshot("contacts-list.png", window.top)
        window.tabs.scroll_to(bob_key)
        d.click(window.tabs.buttons[bob_key])                  # one click: the chat with bob, 1 Connect pressed
        session = window.controller.target
        assert session is not None and window.controller.selected == session
        pane = window.panes[session]
        d.wait(lambda: "pineapple stand" in pane.transcript.plain_text(), what="bob's kept message")
        assert "meeting is at noon" in pane.transcript.plain_text()
        tab = window.controller.tabs[session]
        assert tab.steps[Step.CONNECT].state in (StepState.RUNNING, StepState.DONE)
        d.wait(lambda: (answer_calls(world), tab.steps[Step.CONNECT].state is StepState.DONE)[1], 30,
               what="1 Connect")
        for step in (Step.SWAP_KEYS, Step.AUTHENTICATE, Step.AGREE_KEY):     # the steps, pressed one by one
            assert tab.steps[step].state is StepState.PENDING
            button = window.step_bar.buttons[step]
            assert button.winfo_viewable() and button.cget("state") == "normal"
            d.click(button)
            d.wait(lambda s=step: tab.steps[s].state is StepState.DONE, 30, what=f"step {step.label}")
        d.type(pane.entry_text, "back again")
        d.key("Return")
        d.wait(lambda: "back again" in pane.transcript.plain_text(), what="the new message")
        d.screenshot("conversation-list.png", window.top)

        # export, then delete after the question
        out = tmp_path / "bob.txt"
        assert window.export_to(session, out)
        assert "pineapple stand" in out.read_text(encoding="utf-8")
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        window._ask_delete(session)
        d.wait(lambda: window._confirm is not None and window._confirm.winfo_viewable(), what="the question")
        d.wait(lambda: str(window.top.focus_get() or "").startswith(str(window._confirm)), what="its focus")
        d.key("Escape")
        d.wait(lambda: window._confirm is None, what="the question to close")
        assert kept(node, "pineapple stand"), "Escape deletes nothing"
        window._ask_delete(session)
        d.wait(lambda: window._confirm is not None and window._confirm.winfo_viewable(), what="the question")
        d.wait(lambda: str(window.top.focus_get() or "").startswith(str(window._confirm)), what="its focus")
        d.key("Return")
        d.wait(lambda: window._confirm is None, what="the question to close")
        assert not kept(node, "pineapple stand")
        assert "pineapple stand" not in pane.transcript.plain_text()
    finally:
        application.close()
        ctk.set_widget_scaling(1.0)
        node.close()
