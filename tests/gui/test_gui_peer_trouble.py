"""One real window against peers that misbehave: a burst of messages, a 1 MiB message, a peer process that is
killed mid-chat, and a peer that accepts the TCP connection and then says nothing. The window must show each
clearly and its event loop must keep turning (counted in pump ticks, never timed).

The peer is a real ChatNode in a separate process (tests/gui/headless_peer.py) so that killing it is a real
vanishing peer: the kernel closes its sockets, the window's node sees the connection drop.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import tkinter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gui.app import App
from gui.ledger_monitor import LedgerMonitor, NodeSource
from gui.models import StepState
from gui.text import PREVIEW_CHARS
from gui.window import ChatWindow, Me
from p2pchat.demo_world import DemoWorld
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, inner, need_xdotool

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]


class PeerProcess:
    """The headless peer: JSON lines in both directions, collected by a reader thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.gui.headless_peer", *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        self.seen: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, name="peer-stdout")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def events(self) -> list[dict[str, object]]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def command(self, **fields: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.kill()
        self._reader.join(10)


@pytest.fixture
def world(tmp_path, identities) -> Iterator[tuple[DemoWorld, PeerProcess]]:
    """Alice's chat node in this process; bob's ledger node here too, but bob's chat node in its own process."""
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), identities=identities[:2],
                   difficulty=8, rotate_every=10, chat_options={"step_timeout": 3.0, "accept_timeout": 4.0}) as w:
        bob = w.user("bob")
        assert bob.chat is not None
        bob.chat.close()
        bob.chat = None
        peer = PeerProcess(["--host", bob.host, "--data-dir", str(bob.data_dir), "--nickname", "bob",
                            "--network", w.network, "--ledger", bob.ledger_address])
        try:
            yield w, peer
        finally:
            peer.close()


@pytest.fixture
def window(xvfb, world) -> Iterator[ChatWindow]:
    w, _peer = world
    with alice_window(w) as window:
        yield window


@contextlib.contextmanager
def alice_window(w: DemoWorld) -> Iterator[ChatWindow]:
    """Alice's window on her chat node, beside a monitor of her ledger node."""
    need_xdotool()
    alice = w.user("alice")
    assert alice.chat is not None
    app = App(appearance="Light")
    monitor = LedgerMonitor(NodeSource(alice.ledger_node), interval=0.5).start()
    try:
        yield app.open_window(alice.chat, Me("alice", alice.chat.address, alice.identity.short_fingerprint),
                              ledger=monitor, geometry="700x790+0+0")
    finally:
        app.close()
        monitor.close()


def transcript(window: ChatWindow, session: str) -> str:
    return window.panes[session].transcript.plain_text()


def connect_all(d: Driver, window: ChatWindow, peer_query: str) -> str:
    d.type(window.step_bar.peer_entry, peer_query)
    d.wait(lambda: window.controller.peer_text == peer_query, what="the peer field")
    d.click(window.step_bar.connect_all_button)
    d.wait(lambda: window.controller.target is not None, what="a new chat tab")
    return window.controller.target


def test_bursts_long_messages_and_a_vanishing_peer(window, world):
    w, peer = world
    d = Driver(window.top)
    d.wait(lambda: any(e.get("event") == "ready" for e in peer.events()), what="the peer process")

    session = connect_all(d, window, w.user("bob").host)
    d.wait(lambda: window.controller.tabs[session].ready, what="Connect all to finish")
    assert all(window.controller.tabs[session].steps[s].state is StepState.DONE for s in Step)

    d.type(window.panes[session].entry_text, "ping")
    d.key("Return")
    d.wait(lambda: "bob: echo: ping" in transcript(window, session), what="the echo")
    d.wait(lambda: "ping  ✓" in transcript(window, session), what="the delivery tick")

    # A burst of 300 messages: all arrive, in order, and the loop keeps turning while they do.
    ticks = window.ticks
    peer.command(burst=300)
    d.wait(lambda: "bob: burst 299" in transcript(window, session), what="the end of the burst")
    text = transcript(window, session)
    assert text.index("bob: burst 0\n") < text.index("bob: burst 150\n") < text.index("bob: burst 299")
    assert window.ticks > ticks

    # A 1 MiB message: a preview with "show more"; a real click on the link reveals the next part.
    peer.command(long=1024 * 1024)
    d.wait(lambda: window.panes[session].transcript.more_link_ids(), what="the show-more link")
    shown = len(transcript(window, session))
    assert "L" * PREVIEW_CHARS in transcript(window, session)
    assert "L" * (PREVIEW_CHARS + 1) not in transcript(window, session)
    window.panes[session].transcript.see("end")
    d.screenshot("long-message.png", window.top)
    click_more_link(d, window, session)
    d.wait(lambda: len(transcript(window, session)) > shown, what="more of the long message")

    # The peer vanishes (its process is killed): a clear notice, the entry goes off, the window keeps working.
    ticks = window.ticks
    peer.kill()
    d.wait(lambda: "Connection lost" in transcript(window, session), what="the connection-lost notice")
    assert window.ticks > ticks
    assert window.panes[session].entry.cget("state") == "disabled"
    assert window.panes[session].hint_label.cget("text") == "This chat has ended"
    assert window.tabs.titles[session].startswith("✗ ")
    window.panes[session].transcript.see("end")
    d.screenshot("peer-vanished.png", window.top)


def test_a_peer_that_never_answers_fails_step_1_while_the_window_keeps_turning(window, world):
    d = Driver(window.top)
    silent_ip = free_loopback_ip()
    with socket.create_server((silent_ip, 0)) as server:
        port = server.getsockname()[1]
        session = connect_all(d, window, f"{silent_ip}:{port}")
        conn, _ = server.accept()      # the TCP connection is up; the "peer" never says a word
        with conn:
            d.wait(lambda: window.controller.tabs[session].steps[Step.CONNECT].state is StepState.RUNNING,
                   what="step 1 running")
            ticks = window.ticks
            d.wait(lambda: window.controller.tabs[session].steps[Step.CONNECT].state is StepState.FAILED,
                   timeout=30, what="step 1 to fail")
            assert window.ticks - ticks > 10, "the event loop stalled while the peer was silent"
    result = window.step_bar.results[Step.CONNECT].cget("text")
    assert result.startswith("✗ ") and "4 s" in result       # "… did not accept or reject the chat within 4 s"
    assert "1 Connect failed" in transcript(window, session)


def click_more_link(d: Driver, window: ChatWindow, session: str) -> None:
    text = inner(window.panes[session].transcript, tkinter.Text)
    start = text.tag_ranges("more")[0]
    text.see(start)
    d.pump()
    x, y, width, height = text.bbox(start)
    d.click_at(text.winfo_rootx() + x + width // 2 + 4, text.winfo_rooty() + y + height // 2)


def test_steps_pressed_out_of_order_twice_at_once_and_a_peer_gone_between_steps_are_said_plainly(window, world):
    """From the window, with real clicks: step 4 before any chat, a double click on 1 Connect and on 2 Swap public
    keys, then the peer's process is killed between step 2 and step 3 and step 3 is pressed. Each press gets one
    plain sentence beside its button, one chat is opened and called once, nothing hangs, and 1 Connect starts a
    new chat afterwards."""
    w, peer = world
    d = Driver(window.top)
    d.wait(lambda: any(e.get("event") == "ready" for e in peer.events()), what="the peer process")
    bar = window.step_bar
    d.type(bar.peer_entry, w.user("bob").host)
    d.wait(lambda: window.controller.peer_text == w.user("bob").host, what="the peer field")

    def result(step: Step) -> str:
        return str(bar.results[step].cget("text"))

    d.click(bar.buttons[Step.AGREE_KEY])
    d.wait(lambda: result(Step.AGREE_KEY) == "✗ 1 Connect must come first", what="step 4's refusal")
    d.click(bar.buttons[Step.CONNECT], times=2)
    d.wait(lambda: window.controller.target is not None, what="a chat")
    session = window.controller.target
    tab = window.controller.tabs[session]
    d.wait(lambda: tab.steps[Step.CONNECT].state is StepState.DONE, what="step 1")
    d.click(bar.buttons[Step.SWAP_KEYS], times=2)
    d.wait(lambda: tab.steps[Step.SWAP_KEYS].state is StepState.DONE, what="step 2")
    assert list(window.controller.tabs) == [session], "a double click opened one chat"
    assert len({e["session"] for e in peer.events() if "session" in e}) == 1, "the peer was called once"
    assert not result(Step.SWAP_KEYS).startswith("✗"), "the second click of a double click is no failure"

    peer.kill()
    d.wait(lambda: tab.ended is not None, what="the chat to end")
    # the step that was next says what happened, in words; the ended chat's later steps are off, 1 Connect is on
    closed = "The connection to bob was closed: their program stopped, or the network between you dropped."
    d.wait(lambda: result(Step.AUTHENTICATE) == f"✗ {closed}", what="step 3's failure")
    assert [str(bar.buttons[st].cget("state")) for st in Step] == ["normal", "disabled", "disabled", "disabled"]
    shown = transcript(window, session)
    assert f"3 Authenticate failed: {closed}  ▸ details" in shown and "Traceback" not in shown
    d.click(bar.buttons[Step.CONNECT])
    d.wait(lambda: window.controller.target not in (None, session), what="a new chat from 1 Connect")
    d.wait(lambda: result(Step.CONNECT) == f"✗ {w.user('bob').host} could not be reached: is p2pchat running on "
           "their computer, and is the address right?", 30, what="step 1 to fail in plain words")
