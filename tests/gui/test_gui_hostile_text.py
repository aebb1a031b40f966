"""Every string the network can influence reaches a widget of the real window (under Xvfb) only through the
window's cleaning (gui/text.py ``clean``, p2pchat/display.py): no control, bidi or zero-width character is ever
handed to Tk raw. The ledger panel is fed what a hostile ledger peer can put in its answers (a join refusal, a
registration refusal, a sync phase, a peer address, an action's error) and every label and text box of it is
read back."""

from __future__ import annotations

import tkinter

import pytest

from gui.ledger_actions import Report
from gui.ledger_monitor import snapshot_from_status
from gui.text import LONGEST

pytestmark = pytest.mark.gui

# ESC sequence (title / clipboard), right-to-left override, zero-width space, a newline that starts a line
HOSTILE = "evil\x1b]0;pwned\x07 \u202egnp.exe\u200b\nsecond line"
RAW = ("\x1b", "\x07", "\u202e", "\u200b")


def texts_of(widget: tkinter.Misc) -> list[str]:
    """The text every label, button and text box under ``widget`` shows."""
    found: list[str] = []
    for child in widget.winfo_children():
        if isinstance(child, tkinter.Text):
            found.append(child.get("1.0", "end"))
        else:
            try:
                found.append(str(child.cget("text")))
            except (tkinter.TclError, ValueError):       # customtkinter refuses options a widget lacks
                pass
        found += texts_of(child)
    return found


def test_what_a_hostile_ledger_peer_says_reaches_the_ledger_panel_cleaned(xvfb):
    import customtkinter as ctk

    from gui.widgets.ledger_panel import LedgerPanel
    from gui.widgets.style import Fonts
    from tests.gui.test_gui_ledger_view import STATUS

    root = ctk.CTk()
    try:
        panel = LedgerPanel(root, Fonts(), on_join=lambda _text: None)
        panel.pack(fill="both", expand=True)
        status = {**STATUS, "peers": [{"address": HOSTILE}], "own_record": None, "registration_error": HOSTILE,
                  "sync": {**STATUS["sync"], "phase": HOSTILE + "x" * 100_000, "peer": HOSTILE}}
        panel.show(snapshot_from_status(status, "x"))
        panel.show_join_result(f"✗ {HOSTILE}" + "y" * 100_000, False)
        panel._show_report(Report(f"✗ {HOSTILE}" + "z" * 100_000, final=True, ok=False))
        root.update()
        shown = texts_of(panel)
        assert sum("evil" in t for t in shown) >= 4, shown          # the words are shown …
        for text in shown:
            assert not any(ch in text for ch in RAW), repr(text)     # … their controls written out (^[, <U+202E>)
        labels = [panel.join_result, panel.action_result, *panel.values.values()]
        assert max(len(str(label.cget("text"))) for label in labels) <= LONGEST   # … and a very long one cut
    finally:
        root.destroy()


@pytest.fixture
def world(tmp_path, identities):
    """Alice (a window, a contact store that knows a "bob" on another key) and a peer registered as "BOB"."""
    from p2pchat.contacts import ContactStore
    from p2pchat.demo_world import DemoWorld
    from p2pchat.node import ChatNode
    from tests.conftest import free_loopback_ip

    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), nicknames=("alice", "BOB"),
                   identities=identities[:2], difficulty=8) as w:
        alice = w.user("alice")
        assert alice.chat is not None
        alice.chat.close()
        (tmp_path / "alice-contacts").mkdir()
        store = ContactStore.in_data_dir(tmp_path / "alice-contacts")
        bob = identities[2]          # the real bob: a contact alice chatted with before
        store.record_chat(bob.public_der, bob.fingerprint, nickname="bob", ip="127.0.0.1", address=None)
        alice.chat = ChatNode(alice.identity, host=alice.host, port=w.chat_port, network=w.network,
                              nickname="alice", ledger=alice.ledger_address, contacts=store)
        alice.chat.start()
        yield w


def chat_with_the_peer(world, window, d) -> tuple[str, str]:
    """Alice's window runs Connect all to the peer registered as "BOB", which accepts: (alice's session, its)."""
    from p2pchat.events import IncomingChat
    from tests.gui.test_gui_peer_trouble import connect_all

    peer = world.user("BOB").chat

    def peer_accepts() -> None:
        while not peer.events.empty():
            event = peer.events.get_nowait()
            if isinstance(event, IncomingChat):
                peer.accept(event.session, True)

    session = connect_all(d, window, world.user("BOB").host)
    d.wait(lambda: (peer_accepts(), window.controller.tabs[session].ready)[1], 60, what="a ready chat")
    theirs = peer.live_session_with(world.user("alice").identity.fingerprint.hex())
    assert theirs is not None
    return session, theirs


def test_a_look_alike_sending_hostile_texts_and_file_names_is_marked_and_cleaned_in_the_real_window(
        xvfb, world, tmp_path):
    from tests.gui.driver import Driver
    from tests.gui.test_gui_peer_trouble import alice_window, transcript

    impostor = world.user("BOB").chat
    with alice_window(world) as window:
        d = Driver(window.top)
        session, theirs = chat_with_the_peer(world, window, d)
        tab = window.controller.tabs[session]
        assert tab.title.startswith("⚠ ") and tab.peer_name == "BOB (not your contact bob)"
        impostor.send_text(theirs, HOSTILE)
        hostile_file = tmp_path / "report\u202efdp.exe\x1b[2J"
        hostile_file.write_bytes(b"x" * 100)
        impostor.send_file(theirs, str(hostile_file))
        d.wait(lambda: "second line" in transcript(window, session) and "report" in transcript(window, session),
               what="the text and the file offer")
        assert "BOB (not your contact bob): evil" in transcript(window, session)
        shown = [*texts_of(window.top), transcript(window, session)]
        for text in shown:
            assert not any(ch in text for ch in RAW), repr(text)


def test_a_flood_of_file_offers_and_texts_keeps_what_the_window_holds_bounded(xvfb, world, tmp_path):
    """A peer offers and cancels 150 files and sends 1,200 texts: the window keeps a bounded number of file rows
    and transcript lines (not one per event), keeps no offer to answer, and its event loop keeps turning."""
    from gui.models import MAX_LINES
    from gui.transfers import FINISHED_KEPT
    from tests.gui.driver import Driver
    from tests.gui.test_gui_peer_trouble import alice_window, transcript

    peer = world.user("BOB").chat
    src = tmp_path / "offer.bin"
    src.write_bytes(b"y" * 1000)
    with alice_window(world) as window:
        d = Driver(window.top)
        session, theirs = chat_with_the_peer(world, window, d)
        presenter = window.transfers.presenter
        most_rows = 0
        for n in range(150):
            peer.cancel_file(theirs, peer.send_file(theirs, str(src)))
            if n % 10 == 0:
                d.pump()
                most_rows = max(most_rows, len(presenter.rows))
        for n in range(1200):
            peer.send_text(theirs, f"flood {n}")
        ticks = window.ticks
        d.wait(lambda: "flood 1199" in transcript(window, session), 60, what="the end of the flood")
        d.wait(lambda: sum(r.finished for r in presenter.rows.values()) == len(presenter.rows)
               and not presenter.offers, 30, what="every offer to end")
        assert window.ticks > ticks                               # the loop turned while the flood came in
        assert max(most_rows, len(presenter.rows)) <= FINISHED_KEPT + 8, len(presenter.rows)
        assert len(window.controller.tabs[session].lines) <= MAX_LINES


TCL = "[exec touch {marker}] $env(HOME) $tcl_version {{ }} \\\\ \\[ ; set x 1; %D %W"
"""Tcl's substitutions (command, variable, backslash), list braces and bind's % codes: shown as they are, never
run — every string reaches Tk as a Tcl object through tkinter's calls, no script is built from a peer's text."""


def test_tcl_sequences_emoji_and_stacked_marks_from_a_peer_are_shown_as_they_are_and_never_run(
        xvfb, world, tmp_path):
    from p2pchat.steps import Step
    from tests.gui.driver import Driver
    from tests.gui.test_gui_peer_trouble import alice_window, transcript

    marker = tmp_path / "tcl-ran"
    tcl = TCL.format(marker=marker)
    texts = [tcl, "😀🔑 e\u0301" + "\u0301" * 300 + " end", "W" * 10_000]
    impostor = world.user("BOB").chat
    with alice_window(world) as window:
        d = Driver(window.top)
        session, theirs = chat_with_the_peer(world, window, d)
        for text in texts:
            impostor.send_text(theirs, text)
        offered = tmp_path / "notes {} [exec bell] $HOME %D.txt"
        offered.write_bytes(b"z" * 10)
        impostor.send_file(theirs, str(offered))
        impostor.ask_secret(theirs, tcl[:200], "x")
        d.wait(lambda: "end" in transcript(window, session) and "[exec touch" in transcript(window, session)
               and window.secret_dialogs.dialog is not None, what="the texts, the offer and the question")
        shown = transcript(window, session)
        assert tcl in shown and "😀🔑" in shown                    # literally, emoji too
        d.wait(lambda: "notes {} [exec bell] $HOME %D.txt" in transcript(window, session), what="the offer's name")
        assert str(window.secret_dialogs.dialog.question_label.cget("text")).startswith("«[exec touch")
        for _ in range(5):
            d.pump()
        assert not marker.exists(), "a peer's text ran as Tcl"
        # nothing pushed the four steps out of reach: each is on screen and inside the window
        top = window.top
        window.secret_dialogs.dialog.decline()
        if window.step_bar.collapsed:                           # folded once ready: one click unfolds them
            d.click(window.step_bar.summary)
        for step in Step:
            button = window.step_bar.buttons[step]
            d.wait(button.winfo_viewable, 5, what=f"step {step.value} on screen")
            assert top.winfo_rootx() <= button.winfo_rootx() < top.winfo_rootx() + top.winfo_width()
            assert button.winfo_rooty() + button.winfo_height() <= top.winfo_rooty() + top.winfo_height()


def test_a_long_line_without_spaces_reaches_tk_in_short_lines_and_loses_nothing(xvfb):
    """A peer's 1 MiB text without a space or a newline, 400,000 characters of it revealed by "show more": Tk gets
    no line longer than LONG_LINE (it lays a line out whole at every redraw: one of 200,000 characters took 21 s
    to scroll), a line with spaces is broken after a word, and the pieces put together are the text."""
    import customtkinter as ctk

    from gui.models import ChatLine, LineKind
    from gui.text import CONTINUATION, LONG_LINE
    from gui.widgets.style import Fonts
    from gui.widgets.transcript import Transcript

    root = ctk.CTk()
    try:
        transcript = Transcript(root, Fonts(), on_more=lambda _line_id: None)
        transcript.pack(fill="both", expand=True)
        unbroken = "".join(chr(0x41 + i % 26) for i in range(1024 * 1024))
        words = " ".join(["word"] * 10_000)
        transcript.add([ChatLine(1, LineKind.IN, "12:00", "bob", unbroken, 400_000),
                        ChatLine(2, LineKind.IN, "12:01", "bob", words, len(words))])
        root.update()
        shown = transcript.plain_text().split("\n")
        assert max(map(len, shown)) <= LONG_LINE + len(CONTINUATION) + 60      # (+ a header or the show-more link)
        first = next(i for i, line in enumerate(shown) if line.startswith("12:01"))
        joined = "".join(line.removeprefix(CONTINUATION) for line in shown[:first])
        assert joined.endswith(unbroken[:400_000] + " … show more (648,576 more characters)")
        pieces = [line.removeprefix(CONTINUATION) for line in shown[first:] if line]
        assert all(p.endswith("word ") or p.endswith("word") for p in pieces)    # broken after a word
        assert "".join(pieces) == "12:01  bob: " + words
        transcript._text.yview_moveto(0.5)          # a scroll through it finishes (it took 21 s before)
        root.update()
    finally:
        root.destroy()
