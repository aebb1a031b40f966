"""One-time-pad mode in the real window (issue 17): alice's window and bob's chat node share a pad; the switch in
the peer panel asks, bob agrees, the "pad left" label counts down as a text goes out, and bob's decline of the
fall-back keeps the switch on. Clicked with a real pointer under Xvfb."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gui.app import App
from gui.pad_mode import pad_view
from gui.window import ChatWindow, Me
from p2pchat.events import MessageReceived, PadModeChanged
from p2pchat.foundation.identity import Identity
from tests.gui.driver import Driver, need_xdotool
from tests.gui.test_gui_peer_trouble import connect_all
from tests.p2pchat.node_kit import Peer
from tests.p2pchat.test_pad_node import pad_pair

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def test_pad_view_words() -> None:
    v = pad_view(PadModeChanged("s", "offered", 4096, 2048, "the peer asks"))
    assert (v.switch_on, v.label, v.can_decline) == (False, "pad left: 4 KiB ↑ / 2 KiB ↓", True)
    assert pad_view(PadModeChanged("s", "on", None, None, ""), "kept").note == "kept"
    assert pad_view(PadModeChanged("s", "asked_off", 0, 0, "x")).switch_on


@pytest.fixture
def peers(identities: list[Identity], tmp_path: Path, xvfb: str) -> Iterator[tuple[Peer, Peer]]:
    need_xdotool()
    with pad_pair(identities, tmp_path, 16384) as (alice, bob):
        alice.log.reading = False          # the window reads alice's events
        yield alice, bob


@pytest.fixture
def window(peers: tuple[Peer, Peer]) -> Iterator[ChatWindow]:
    alice, _ = peers
    app = App(appearance="Light")
    try:
        yield app.open_window(alice.node, Me("alice", alice.node.address, alice.identity.short_fingerprint),
                              geometry="700x790+0+0")
    finally:
        app.close()


def test_switch_asks_peer_agrees_label_counts_down(window: ChatWindow, peers: tuple[Peer, Peer]) -> None:
    _, bob = peers
    d = Driver(window.top)
    session = connect_all(d, window, f"{bob.ip}:{bob.node.port}")
    d.wait(lambda: window.controller.tabs[session].ready, what="the chat to be ready")
    row = window.pad_rows[session]
    d.click(row.switch)
    offered = bob.log.wait(PadModeChanged, state="offered")
    assert not row.switch.get()                      # not on before bob agrees
    bob.node.pad_mode(offered.session, "accept")
    d.wait(lambda: row.state == "on", what="pad mode on in the window")
    assert row.switch.get() and row.left.cget("text") == "pad left: 7 KiB ↑ / 8 KiB ↓"
    window.controller.send(session, "x" * 1200)
    bob.log.wait(MessageReceived, text="x" * 1200)
    d.wait(lambda: row.left.cget("text") == "pad left: 6 KiB ↑ / 8 KiB ↓", what="the label to count down")
    d.click(row.switch)                               # ask to fall back; bob declines
    bob.log.wait(PadModeChanged, state="offered_off")
    bob.node.pad_mode(offered.session, "decline")
    d.wait(lambda: row.state == "on" and "declined" in row.note.cget("text"), what="the decline")
    assert row.switch.get()
