"""Files dropped onto a conversation (issue 16) in a real window under Xvfb, with real chat nodes on loopback:
the drop goes through tkdnd's own XDND handlers (the procedures its X11 code calls on XdndEnter, XdndPosition and
XdndDrop, the data read from the XdndSelection a drag source in this display owns). bob's node is down: the
dropped file waits in his conversation as one line "(waiting)" with a cancel link; a second one is cancelled; a
folder is refused in plain words; once bob's node is up the first file reaches his downloads byte for byte and its
line turns ✓."""

from __future__ import annotations

import hashlib
import socket
import tkinter
from pathlib import Path
from urllib.parse import quote

import customtkinter as ctk
import pytest

from gui.app import App
from gui.controller import CONTACT_KEY
from gui.models import ChatLine, LineKind, StepState
from gui.transfers import FileTransfers
from gui.window import ChatWindow, Me
from p2pchat import outbox
from p2pchat.contacts import ContactStore
from p2pchat.events import FileFinished, FileOffer, FileWaiting
from p2pchat.file_resume import PendingFile
from p2pchat.node import ChatNode
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, inner, need_xdotool
from tests.gui.test_gui_waiting import click_cancel
from tests.p2pchat.node_kit import entry, make_peer

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def drop_files(d: Driver, window: ChatWindow, target: tkinter.Misc, paths: list[Path]) -> str:
    """Drop ``paths`` onto ``target`` the way tkdnd sees a drop from a file manager: a drag source owns the
    XdndSelection with a text/uri-list, and tkdnd's XDND handlers run enter, position and drop over ``target``."""
    source = tkinter.Toplevel(window.top)
    source.geometry("40x40+900+700")
    d.pump()
    uris = "".join(f"file://{quote(str(p))}\r\n" for p in paths)
    handler = source.register(lambda offset, length: uris[int(offset):int(offset) + int(length)])
    tk = source.tk
    try:
        tk.call("selection", "handle", "-selection", "XdndSelection", "-type", "text/uri-list", source, handler)
        tk.call("selection", "own", "-selection", "XdndSelection", source)
        x, y = target.winfo_rootx() + 20, target.winfo_rooty() + 20
        tk.call("tkdnd::xdnd::HandleXdndEnter", target, source.winfo_id(), ("text/uri-list",), 0)
        tk.call("tkdnd::xdnd::HandleXdndPosition", target, x, y, 0, source.winfo_id())
        return str(tk.call("tkdnd::xdnd::HandleXdndDrop", 0))
    finally:
        source.destroy()
        d.pump()


def test_files_dropped_onto_a_conversation_wait_for_an_offline_contact_and_arrive_when_it_comes_up(
        xvfb, tmp_path, identities, monkeypatch):
    need_xdotool()
    monkeypatch.setattr(outbox, "FIRST_RETRY", 0.5)      # the outbox's real schedule backs off to once a minute
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
    report, notes = tmp_path / "report 1.pdf", tmp_path / "notes.txt"
    data = hashlib.shake_256(b"drop").digest(700_000)
    report.write_bytes(data)
    notes.write_bytes(b"never mind")
    application = App(appearance="Light")
    window = application.open_window(node, Me("alice", node.address, alice_id.short_fingerprint),
                                     data_dir=data_dir, geometry="980x760+0+0")
    d = Driver(application.root)
    bob = None
    try:
        assert window.transfers.drop.available, "tkdnd did not load (tkinterdnd2 is in the test extra)"
        key = CONTACT_KEY + bob_fp
        d.wait(lambda: key in window.tabs.buttons, what="bob's row")
        d.click(window.tabs.buttons[key])
        session = window.controller.target
        assert session is not None
        tab = window.controller.tabs[session]
        d.wait(lambda: tab.steps[Step.CONNECT].state is StepState.FAILED, 20, what="1 Connect to fail")
        pane = window.panes[session]
        bar = window.transfers.bars[session]
        d.wait(lambda: bar.send_button.cget("state") == "normal", what="Send file…, open for a file that waits")
        text = inner(pane.transcript, tkinter.Text)

        assert drop_files(d, window, text, [report, notes]) == "copy"
        d.wait(lambda: pane.transcript.plain_text().count("(waiting)") == 2, what="two waiting files")
        shown = pane.transcript.plain_text()
        assert "📎 report 1.pdf (683.6 KiB)" in shown and "📎 notes.txt (10 bytes)" in shown
        d.wait(lambda: len(window.transfers.presenter.waiting) == 2, what="both kept by the node")
        assert sorted(f.name for f in node.waiting_files(bob_fp)) == ["notes.txt", "report 1.pdf"]
        click_cancel(d, window, session, 1)
        d.wait(lambda: "(cancelled)" in pane.transcript.plain_text(), what="the second file cancelled")
        assert [f.name for f in node.waiting_files()] == ["report 1.pdf"]

        drop_files(d, window, text, [tmp_path])
        d.wait(lambda: "only files can be sent, not folders" in pane.transcript.plain_text(), what="the refusal")

        # bob's node comes up: the outbox calls by itself and the kept file is offered and delivered
        (tmp_path / "bob").mkdir(mode=0o700)
        bob = make_peer(bob_id, "bob", directory, ip=bob_ip, port=bob_port, auto_accept=True, register=False,
                        data_dir=tmp_path / "bob", accept_files=True)
        got = bob.log.wait(FileFinished, 30)
        assert got.ok, got.text
        assert (tmp_path / "bob" / "downloads" / "report 1.pdf").read_bytes() == data
        assert not (tmp_path / "bob" / "downloads" / "notes.txt").exists()
        d.wait(lambda: window.panes[tab.session].winfo_exists() and
               "📎 report 1.pdf (683.6 KiB)  ✓" in window.panes[tab.session].transcript.plain_text(), 20,
               what="the file's line turned ✓")
        assert node.waiting_files() == []
    finally:
        application.close()
        ctk.set_widget_scaling(1.0)
        node.close()
        if bob is not None:
            bob.node.close()


def test_without_tkdnd_the_window_keeps_the_send_button_and_registers_nothing(xvfb):
    from gui.file_drop import DropTarget

    root = ctk.CTk()
    try:
        root.tk.call("set", "auto_path", "")               # tkdnd cannot be found by this interpreter
        import sys
        saved = sys.modules.get("tkinterdnd2")
        sys.modules["tkinterdnd2"] = None                  # type: ignore[assignment]  # as if not installed
        try:
            drop = DropTarget(root)
        finally:
            if saved is not None:
                sys.modules["tkinterdnd2"] = saved
            else:
                del sys.modules["tkinterdnd2"]
        assert not drop.available
        frame = ctk.CTkFrame(root)
        assert drop.register(frame, lambda paths: None) is False
        assert not root.tk.call("bind", frame, "<<Drop:DND_Files>>")
    finally:
        root.destroy()


class _Node:
    def __init__(self, kept: list[PendingFile]) -> None:
        self.kept = kept

    def waiting_files(self, fp: str | None = None) -> list[PendingFile]:
        return [f for f in self.kept if fp is None or f.fp == fp]

    def send_file_to_contact(self, fp: str, path: str) -> int:
        return 9


class _Lines:
    def __init__(self) -> None:
        self.lines: list[ChatLine] = []
        self.changed: list[int] = []
        self.notices: list[str] = []

    def waiting_contact(self, session: str) -> str | None:
        return "ab" * 32

    def file_line(self, session: str, text: str) -> ChatLine:
        line = ChatLine(len(self.lines) + 1, LineKind.OUT, "09:00", "alice", text, len(text), stored="waiting")
        self.lines.append(line)
        return line

    def file_line_changed(self, line: ChatLine) -> None:
        self.changed.append(line.line_id)

    def contact_file_notice(self, fp: str, text: str) -> None:
        self.notices.append(text)


class _Now:
    def submit(self, call, done=None, failed=None) -> None:      # type: ignore[no-untyped-def]
        result = call()
        if done is not None:
            done(result)


def test_files_kept_by_an_earlier_run_show_as_waiting_lines_and_follow_the_node_to_delivered(tmp_path):
    fp = "ab" * 32
    kept = PendingFile(4, fp, str(tmp_path / "a.bin"), "a.bin", 2048, b"\0" * 32, 0, 0.0)
    lines = _Lines()
    files = FileTransfers(_Node([kept]), _Now(), lambda s, t: None, lines=lines)  # type: ignore[arg-type]
    files.show_kept("s1", fp)
    files.show_kept("s1", fp)                                   # shown once
    assert [ln.text for ln in lines.lines] == ["📎 a.bin (2.0 KiB)"] and lines.lines[0].waiting
    files.handle(FileWaiting(fp, 4, "a.bin", 2048, "offered", "offered"))
    assert lines.lines[0].tick == "…" and not lines.lines[0].waiting
    files.handle(FileWaiting(fp, 4, "a.bin", 2048, "done", "done"))
    assert lines.lines[0].tick == "✓" and files.waiting == {}
    files.handle(FileWaiting(fp, 5, "c.bin", 1, "dropped", "c.bin changed on disk since you sent it; it was not "
                                                            "sent. Send it again if you still want to."))
    assert lines.notices == ["⚠ c.bin changed on disk since you sent it; it was not sent. Send it again if you "
                             "still want to."]

    (tmp_path / "b.bin").write_bytes(b"x")
    files.handle(FileWaiting(fp, 9, "b.bin", 1, "dropped", "b.bin changed on disk since you sent it"))   # early
    files.send("s1", str(tmp_path / "b.bin"))
    assert lines.lines[1].text == "📎 b.bin (1 bytes)"
    assert lines.lines[1].tick == "✗ not sent: b.bin changed on disk since you sent it"


def test_an_offer_of_a_file_accepted_before_asks_nothing_and_says_where_it_resumes():
    notices: list[tuple[str, str]] = []
    files = FileTransfers(_Node([]), _Now(), lambda s, t: notices.append((s, t)))  # type: ignore[arg-type]
    files.handle(FileOffer("s1", "ab" * 16, "big.bin", "big.bin", 3 * 1024 * 1024, "alice", resumes_at=1_048_576))
    assert files.offers == []                                   # no dialog
    assert notices == [("s1", "alice sends «big.bin» (3.0 MiB) again: it resumes at byte 1,048,576")]
    assert files.current("s1") is not None and files.current("s1").done == 1_048_576
    files.handle(FileOffer("s1", "cd" * 16, "new.bin", "new.bin", 10, "alice"))
    assert [o.transfer for o in files.offers] == ["cd" * 16]    # a new file is asked about
