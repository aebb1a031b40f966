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
                  "sync": {**STATUS["sync"], "phase": HOSTILE, "peer": HOSTILE}}
        panel.show(snapshot_from_status(status, "x"))
        panel.show_join_result(f"✗ {HOSTILE}", False)
        panel._show_report(Report(f"✗ {HOSTILE}", final=True, ok=False))
        root.update()
        shown = texts_of(panel)
        assert sum("evil" in t for t in shown) >= 4, shown          # the words are shown …
        for text in shown:
            assert not any(ch in text for ch in RAW), repr(text)     # … their controls written out (^[, <U+202E>)
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


def test_a_look_alike_sending_hostile_texts_and_file_names_is_marked_and_cleaned_in_the_real_window(
        xvfb, world, tmp_path):
    from p2pchat.events import IncomingChat
    from tests.gui.driver import Driver
    from tests.gui.test_gui_peer_trouble import alice_window, connect_all, transcript

    impostor = world.user("BOB").chat
    assert impostor is not None
    with alice_window(world) as window:
        d = Driver(window.top)

        def impostor_accepts() -> None:
            while not impostor.events.empty():
                event = impostor.events.get_nowait()
                if isinstance(event, IncomingChat):
                    impostor.accept(event.session, True)

        session = connect_all(d, window, world.user("BOB").host)
        d.wait(lambda: (impostor_accepts(), window.controller.tabs[session].ready)[1], 60, what="a ready chat")
        tab = window.controller.tabs[session]
        assert tab.title.startswith("⚠ ") and tab.peer_name == "BOB (not your contact bob)"
        theirs = impostor.live_session_with(world.user("alice").identity.fingerprint.hex())
        assert theirs is not None
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
