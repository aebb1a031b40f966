"""Groups in a real window under Xvfb (issue 18), with each other member a real chat node in its own process
(tests/gui/group_peer.py, which answers every group message with ``re: <text>``).

Alice clicks "New group…", names the group and ticks bob and carol; her text reaches both over the pairwise
four-step chats her node opens by itself, their answers show under their names in their member colours, her line
counts the receipts up to "delivered to 2 of 2", Send file… gets the file to both, and once she removes carol
(Remove, confirmed) carol's process gets nothing new. A member whose name and whose group's name are full of markup,
bidi and control characters shows as inert text everywhere; the file that member shares is offered in a dialog
naming the group; Leave group keeps the conversation, read-only. New group… works by the keyboard alone."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import tkinter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import customtkinter as ctk
import pytest

from gui.app import App
from gui.groups import GROUP_KEY, GroupFound
from gui.widgets.style import MEMBER_COLORS
from gui.window import ChatWindow, Me
from p2pchat.events import Event, GroupReceipt
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, inner, need_xdotool
from tests.helpers import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<b>mal\u202elory\x1b[31m</b>\u200b\n"


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class GroupPeer:
    """One tests/gui/group_peer.py process: JSON lines out (gathered by a reader thread), commands in."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.gui.group_peer", *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines: queue.Queue[dict[str, object]] = queue.Queue()
        self.seen: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, name="group-peer-stdout")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))

    def events(self, kind: str | None = None) -> list[dict[str, object]]:
        while True:
            try:
                self.seen.append(self._lines.get_nowait())
            except queue.Empty:
                break
        return [e for e in self.seen if kind is None or e["event"] == kind]

    def texts(self) -> list[str]:
        return [str(e["text"]) for e in self.events("GroupMessage")]

    def command(self, **fields: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)


@dataclass
class World:
    app: App
    window: ChatWindow
    node: ChatNode
    peers: dict[str, GroupPeer]
    fps: dict[str, str]
    d: Driver


def _world(tmp_path: Path, identities: list[Identity], names: tuple[str, ...],
           nicknames: dict[str, str] | None = None, verified: tuple[str, ...] = (), peers_run: bool = True
           ) -> Iterator[World]:
    """Alice's node and window in this process; every other name a group_peer process (with ``peers_run``, else
    listed but down). ``nicknames``: what the directory (the ledger of these tests) calls each user, and so
    everyone's contact list."""
    need_xdotool()
    nick = {n: (nicknames or {}).get(n, n) for n in names}
    ips = {n: free_loopback_ip() for n in names}
    ports = {n: _free_port(ips[n]) for n in names}
    ids = dict(zip(names, identities, strict=False))
    listed = [{"der": ids[n].public_der.hex(), "nickname": nick[n], "ip": ips[n], "port": ports[n]} for n in names]
    directory_file = tmp_path / "directory.json"
    directory_file.write_text(json.dumps(listed), encoding="utf-8")
    peers: dict[str, GroupPeer] = {}
    node: ChatNode | None = None
    application: App | None = None
    try:
        for n in names[1:] if peers_run else ():
            d = tmp_path / n
            d.mkdir(mode=0o700)
            ids[n].save(d / KEY_FILE)
            peers[n] = GroupPeer(["--host", ips[n], "--port", str(ports[n]), "--data-dir", str(d),
                                  "--nickname", n, "--directory", str(directory_file)])
        me = names[0]
        data_dir = tmp_path / me
        data_dir.mkdir(mode=0o700)
        entries = [DirectoryEntry(ids[n].public_der, nick[n], ips[n], ports[n], height=5, confirmations=2)
                   for n in names]
        node = ChatNode(ids[me], host=ips[me], port=ports[me], nickname=me, directory=FixedDirectory(entries),
                        data_dir=data_dir, outbox=True, step_timeout=5.0, direct_timeout=1.0)
        assert node.contacts is not None
        for n in names[1:]:
            node.contacts.record_chat(ids[n].public_der, ids[n].fingerprint, nickname=nick[n], ip=None, address=None)
            if n in verified:
                node.contacts.set_verified(ids[n].fingerprint.hex(), True)
        node.start()
        for n, peer in peers.items():
            wait_until(lambda p=peer: p.events("ready") or p.proc.poll() is not None, 30, what=f"{n}'s process")
            assert peer.proc.poll() is None, f"{n}'s process ended"
        application = App(appearance="Light")
        window = application.open_window(node, Me(me, node.address, ids[me].short_fingerprint), data_dir=data_dir,
                                         geometry="1000x780+0+0")
        yield World(application, window, node, peers, {n: ids[n].fingerprint.hex() for n in names},
                    Driver(application.root))
    finally:
        if application is not None:
            application.close()
            ctk.set_widget_scaling(1.0)
        if node is not None:
            node.close()
        for peer in peers.values():
            peer.close()


@pytest.fixture
def class_of_three(xvfb, tmp_path, identities) -> Iterator[World]:
    yield from _world(tmp_path, identities, ("alice", "bob", "carol"), verified=("bob",))


@pytest.fixture
def contacts_away(xvfb, tmp_path, identities) -> Iterator[World]:
    yield from _world(tmp_path, identities, ("alice", "bob", "carol"), verified=("carol",), peers_run=False)


@pytest.fixture
def with_mallory(xvfb, tmp_path, identities) -> Iterator[World]:
    yield from _world(tmp_path, identities, ("alice", "mallory"), nicknames={"mallory": HOSTILE})


def transcript(w: World, key: str) -> str:
    return w.window.groups.panes[key].transcript.plain_text()


def sender_colour(w: World, key: str, name: str) -> str:
    """The foreground of the tag on ``name:`` where a message of ``name`` starts in the group's transcript."""
    text = inner(w.window.groups.panes[key].transcript, tkinter.Text)
    assert isinstance(text, tkinter.Text)
    at = text.search(f"{name}: ", "1.0", stopindex="end")
    assert at, f"no message from {name}"
    tags = [t for t in text.tag_names(at) if t.startswith("member")]
    assert len(tags) == 1, f"{name}'s name has no member colour: {text.tag_names(at)}"
    return str(text.tag_cget(tags[0], "foreground"))


def _create(w: World, name: str, members: list[str]) -> str:
    """New group… by real clicks: the name typed, the members ticked, Create; returns the group's row key."""
    d, window = w.d, w.window
    d.click(window.tabs.new_group_button)
    d.wait(lambda: window.groups.picker is not None and window.groups.picker.winfo_viewable(), what="the picker")
    picker = window.groups.picker
    assert picker is not None and picker.name_entry is not None
    d.type(inner(picker.name_entry, tkinter.Entry), name)
    for m in members:
        d.click(picker.boxes[w.fps[m]])
    d.click(picker.confirm_button)
    d.wait(lambda: any(k.startswith(GROUP_KEY) for k in window.groups.panes), what="the group's conversation")
    key = next(k for k in window.groups.panes if k.startswith(GROUP_KEY))
    assert window.tabs.current == key
    return key


def test_a_group_made_by_clicks_reaches_both_members_shows_replies_in_colours_counts_receipts_and_removal_stops_fan_out(
        class_of_three: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = class_of_three
    d, window = w.d, w.window
    key = _create(w, "lab 4b", ["bob"])
    assert not window.step_bar.winfo_ismapped(), "a group shows its members, not the four steps"
    panel = window.groups.panels[key]
    d.wait(lambda: len(panel.names) == 2, what="two members listed")
    d.click(panel.add_button)                                  # Add member…: carol, from the contacts
    d.wait(lambda: window.groups.picker is not None and window.groups.picker.winfo_viewable(), what="the picker")
    picker = window.groups.picker
    assert picker is not None and list(picker.boxes) == [w.fps["carol"]], "only contacts not in the group"
    d.click(picker.boxes[w.fps["carol"]])
    d.click(picker.confirm_button)
    d.wait(lambda: len(panel.names) == 3, what="three members listed")
    assert panel.names[w.fps["bob"]].cget("text").startswith("● bob ✔")
    assert "✔" not in panel.names[w.fps["carol"]].cget("text")
    assert panel.remove_buttons[w.fps["carol"]].cget("state") == "normal", "the creator removes members"
    assert panel.leave_button.cget("state") == "disabled"
    assert "you created the group «lab 4b»" in transcript(w, key) and "you added bob" in transcript(w, key)

    pane = window.groups.panes[key]
    receipts: list[tuple[int, int]] = []           # what the window was told, in order (it draws the latest)
    handle = window.group_chats.handle

    def seen(event: Event) -> bool:
        if isinstance(event, GroupReceipt):
            receipts.append((event.delivered, event.of))
        return handle(event)
    window.group_chats.handle = seen  # type: ignore[method-assign]
    d.type(pane.entry_text, "hello group")
    d.key("Return")
    for n in ("bob", "carol"):
        wait_until(lambda n=n: "hello group" in w.peers[n].texts(), 30, step=d.pump, what=f"{n} gets it")
    d.wait(lambda: "bob: re: hello group" in transcript(w, key) and "carol: re: hello group" in transcript(w, key),
           30, what="both answers in alice's conversation")
    d.wait(lambda: "✓ delivered to 2 of 2" in transcript(w, key), 20, what="the receipts")
    assert receipts[:2] == [(1, 2), (2, 2)], f"the receipts count up: {receipts}"
    bob_colour, carol_colour = sender_colour(w, key, "bob"), sender_colour(w, key, "carol")
    assert {bob_colour, carol_colour} <= {c[0] for c in MEMBER_COLORS} and bob_colour != carol_colour
    d.wait(lambda: "online" in panel.states[w.fps["bob"]].cget("text"), what="bob's pairwise chat in the list")
    d.screenshot("group-conversation.png", window.top)

    # Send file…: each member is offered it over its own chat and takes it
    data = os.urandom(200_000)
    (tmp_path / "notes.bin").write_bytes(data)
    monkeypatch.setattr("gui.groups_ui.filedialog.askopenfilename", lambda **_kw: str(tmp_path / "notes.bin"))
    d.click(window.groups.file_buttons[key])
    for n in ("bob", "carol"):
        saved = tmp_path / n / "downloads" / "notes.bin"
        wait_until(lambda s=saved: s.exists() and s.read_bytes() == data, 30, step=d.pump, what=f"{n} saves the file")
    d.wait(lambda: "alice: shared notes.bin — a file (195.3 KiB)" in transcript(w, key), what="the shared file")
    d.wait(lambda: transcript(w, key).count("✓ delivered to 2 of 2") == 2, 20, what="the file's receipts")

    # alice removes carol: she gets the removal, then nothing new
    d.click(panel.remove_buttons[w.fps["carol"]])
    d.wait(lambda: window._confirm is not None, what="the confirmation")
    assert window._confirm is not None
    d.click(window._confirm.confirm_button)
    wait_until(lambda: any("removed" in str(e["text"]) for e in w.peers["carol"].events("GroupNotice")), 20,
               step=d.pump, what="carol told she was removed")
    d.wait(lambda: "you removed carol" in transcript(w, key), what="the removal as a line")
    d.wait(lambda: len(panel.names) == 2, what="two members left")
    d.type(pane.entry_text, "after carol")
    d.key("Return")
    wait_until(lambda: "after carol" in w.peers["bob"].texts(), 20, step=d.pump, what="bob gets it")
    d.wait(lambda: "bob: re: after carol" in transcript(w, key), 20, what="bob's answer")
    d.wait(lambda: "after carol  ✓ delivered to 1 of 1" in transcript(w, key), 20, what="one receipt of one")
    assert not any("after carol" in t for t in w.peers["carol"].texts()), "carol got something after removal"

    # a pairwise chat still has its step bar (folded into one line once ready, as always)
    chat = next(s for s, t in window.controller.tabs.items() if t.contact == w.fps["bob"])
    d.click(window.tabs.buttons[chat])
    d.wait(lambda: window.step_bar.winfo_ismapped(), what="the step bar back for bob's chat")
    assert window.controller.target == chat and window.step_bar.collapsed
    # the group's messages are kept and found like any chat's
    window.search_all("hello group")
    window.found_menu.unpost()
    assert sorted(f.text for f in window.found if isinstance(f, GroupFound) and f.key == key) == [
        "hello group", "re: hello group", "re: hello group"]


def test_a_hostile_member_and_group_name_show_as_inert_text_and_leaving_keeps_the_conversation_read_only(
        with_mallory: World, tmp_path: Path) -> None:
    w = with_mallory
    d, window = w.d, w.window
    mallory = w.peers["mallory"]
    mallory.command(create="<i>study</i>\u202e\x1b]0;pwned\x07", members=["alice"])
    # mallory's node calls alice to bring the invitation: alice accepts the chat like any other
    d.wait(lambda: window._dialog is not None or any(k.startswith(GROUP_KEY) for k in window.tabs.pages), 30,
           what="mallory's call or the group")
    if window._dialog is not None:
        d.click(window._dialog.accept_button)
    d.wait(lambda: any(k.startswith(GROUP_KEY) for k in window.tabs.pages), 30, what="the group in the list")
    key = next(k for k in window.tabs.pages if k.startswith(GROUP_KEY))
    gid = key.removeprefix(GROUP_KEY)
    mallory.command(gsay=gid, text="hi \u202eall\x1b[2J <b>bold</b>")
    d.click(window.tabs.buttons[key])
    d.wait(lambda: "hi <U+202E>all^[[2J <b>bold</b>" in transcript(w, key), 30, what="mallory's message")
    panel = window.groups.panels[key]
    d.wait(lambda: len(panel.names) == 2, what="both members listed")
    shown = [transcript(w, key), window.tabs.titles[key], window.tabs.details[key], window.top.title(),
             *(label.cget("text") for label in panel.names.values()), panel.note.cget("text")]
    for raw in ("\u202e", "\x1b", "\x07", "\u200b"):
        assert not any(raw in text for text in shown), f"{raw!r} reached the screen"
    assert "<i>study</i><U+202E>^[]0;pwned^G" in window.tabs.titles[key]
    name = "<b>mal<U+202E>lory^[[31m</b><U+200B>"
    assert f"{name}: hi" in transcript(w, key)
    assert any(label.cget("text").startswith(f"● {name}") for label in panel.names.values())
    assert f"{name} created the group" in transcript(w, key) and f"{name} added you" in transcript(w, key)
    # alice did not create it: Remove is off with the reason, Leave is on
    assert "Only the group's creator" in panel.note.cget("text")
    assert panel.leave_button.cget("state") == "normal"

    # a file mallory shares in the group: said in the group, and the offer dialog names the group
    data = os.urandom(50_000)
    (tmp_path / "slides.pdf").write_bytes(data)
    mallory.command(gsend=gid, path=str(tmp_path / "slides.pdf"))
    d.wait(lambda: window._confirm is not None, 30, what="the offer dialog")
    assert window._confirm is not None
    assert "shared in the group «<i>study</i><U+202E>^[]0;pwned^G»" in window._confirm.question.cget("text")
    d.click(window._confirm.confirm_button)
    saved = tmp_path / "alice" / "downloads" / "slides.pdf"
    d.wait(lambda: saved.exists() and saved.read_bytes() == data, 30, what="the file saved at alice")
    assert f"{name}: shared slides.pdf — a file (48.8 KiB)" in transcript(w, key)
    assert "offers you «slides.pdf» (48.8 KiB) from this group" in transcript(w, key)

    # Leave group (confirmed): mallory's node learns it, alice's conversation stays, read-only
    d.click(panel.leave_button)
    d.wait(lambda: window._confirm is not None, what="the confirmation")
    assert window._confirm is not None
    d.click(window._confirm.confirm_button)
    wait_until(lambda: any("is no longer in" in str(e["text"]) for e in mallory.events("GroupNotice")), 20,
               step=d.pump, what="mallory told alice left")
    d.wait(lambda: "you left the group" in transcript(w, key), what="the leave as a line")
    d.wait(lambda: window.tabs.titles[key].startswith("✗ "), what="the row marked")
    assert window.groups.panes[key].entry.cget("state") == "disabled"
    assert panel.add_button.cget("state") == "disabled"


def test_new_group_by_keyboard_only_and_members_who_are_away_wait(contacts_away: World) -> None:
    w = contacts_away
    d, window = w.d, w.window
    d.click(inner(window.tabs.search_entry, tkinter.Entry))         # the keyboard in the window, then Tab only
    for _ in range(40):
        if str(window.top.focus_get() or "") == str(window.tabs.new_group_button._canvas):
            break
        d.key("Tab")
    assert str(window.top.focus_get() or "") == str(window.tabs.new_group_button._canvas), "Tab reaches New group…"
    d.key("space")
    d.wait(lambda: window.groups.picker is not None and window.groups.picker.winfo_viewable(), what="the picker")
    picker = window.groups.picker
    assert picker is not None and picker.name_entry is not None
    entry = inner(picker.name_entry, tkinter.Entry)
    d.wait(lambda: str(entry.focus_get() or "") == str(entry), 5, what="the name field to have the focus")
    d._xdotool("type", "--delay", "2", "reading club")
    carol_box = picker.boxes[w.fps["carol"]]
    assert carol_box.cget("text") == "carol ✔", "verified contacts marked in the picker"
    for _ in range(8):                               # Tab until carol's box has the focus
        if str(picker.focus_get() or "") == str(carol_box._canvas):
            break
        d.key("Tab")
    assert str(picker.focus_get() or "") == str(carol_box._canvas), "the members are reachable with Tab"
    d.key("space")
    assert picker.chosen() == [w.fps["carol"]]
    d.key("Return")
    d.wait(lambda: any(k.startswith(GROUP_KEY) for k in window.groups.panes), what="the group")
    key = next(k for k in window.groups.panes if k.startswith(GROUP_KEY))
    assert window.tabs.titles[key] == "reading club"
    # carol's node is down: the text waits for her (her pairwise chat says so), nothing is lost
    pane = window.groups.panes[key]
    pane.entry_text.focus_force()
    d.wait(lambda: str(pane.entry_text.focus_get() or "") == str(pane.entry_text), 5, what="the entry's focus")
    d._xdotool("type", "--delay", "2", "see you at six")
    d.key("Return")
    d.wait(lambda: "see you at six  delivered to 0 of 1" in transcript(w, key), what="the text, waiting")
    panel = window.groups.panels[key]
    d.wait(lambda: panel.states[w.fps["carol"]].cget("text") in ("offline", "connecting · 0 of 4 steps done",
                                                                   "connecting…"), 20,
           what="carol's pairwise chat: the node tried")
