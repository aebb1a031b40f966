"""The shared-secret check in the real window under Xvfb (issue 17): alice clicks "Ask a question…", types the
question and her answer; bob's node (no window) answers the same and both learn that they match. Then bob asks,
the answer dialog opens in alice's window by itself, and a different answer is reported plainly."""

from __future__ import annotations

import pytest

from p2pchat.events import SecretQuestion, SecretResult
from tests.gui.driver import Driver
from tests.gui.test_gui_peer_trouble import transcript
from tests.gui.test_gui_window import app, ready_chat, world  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def bob_waits_for(d: Driver, w, kind: type) -> object:
    """The next ``kind`` event in bob's queue (the others are dropped: his side has no window)."""
    bob = w.users[1].chat
    found: list[object] = []

    def seen() -> bool:
        while not found and not bob.events.empty():
            event = bob.events.get_nowait()
            if isinstance(event, kind):
                found.append(event)
        return bool(found)
    d.wait(seen, 30, what=f"bob's {kind.__name__}")
    return found[0]


def test_ask_a_question_from_the_window_and_answer_one_in_it(app, world):  # noqa: F811
    window = app.windows[0]
    d = Driver(app.root)
    session = ready_chat(app, world, d)
    bob = world.users[1].chat
    d.click(window.secret_dialogs.buttons[session])
    d.wait(lambda: window.secret_dialogs.dialog is not None, what="the ask dialog")
    dialog = window.secret_dialogs.dialog
    assert dialog is not None
    d.type(dialog.question, "Where did we meet?")
    d.type(dialog.answer, "The Old Mill")
    d.click(dialog.ok_button)
    question = bob_waits_for(d, world, SecretQuestion)
    assert isinstance(question, SecretQuestion) and question.question == "Where did we meet?"
    bob.answer_secret(question.session, "the old mill ")
    d.wait(lambda: "bob answered your question with the same secret" in transcript(window, session), 30,
           what="the match in alice's chat")
    first = bob_waits_for(d, world, SecretResult)
    assert isinstance(first, SecretResult) and first.matched

    bob.ask_secret(question.session, "Favourite tea?", "earl grey")
    d.wait(lambda: window.secret_dialogs.dialog is not None and window.secret_dialogs.dialog.winfo_exists(), 30,
           what="the answer dialog")
    dialog = window.secret_dialogs.dialog
    d.type(dialog.answer, "green")
    d.click(dialog.ok_button)
    d.wait(lambda: "the answers differ — this may not be bob" in transcript(window, session), 30,
           what="the mismatch in alice's chat")
    second = bob_waits_for(d, world, SecretResult)
    assert isinstance(second, SecretResult) and not second.matched


def chat_from_alices_window(app, world):  # noqa: F811
    """A ready chat from alice's window to bob's node: (window, driver, alice's session, bob's node, his session)."""
    window = app.windows[0]
    d = Driver(app.root)
    session = ready_chat(app, world, d)
    bob = world.users[1].chat
    theirs = bob.live_session_with(world.users[0].identity.fingerprint.hex())
    assert theirs is not None
    return window, d, session, bob, theirs


def test_a_hostile_question_shows_cleaned_in_a_dialog_whose_buttons_stay_on_screen(app, world):  # noqa: F811
    """The longest question the protocol lets through, made of characters that the window writes out visibly
    (each right-to-left override becomes ``<U+202E>``, eight times as long): the dialog shows it cleaned, cut,
    and its Answer and Don't answer buttons stay on the screen."""
    window, d, session, bob, theirs = chat_from_alices_window(app, world)
    bob.ask_secret(theirs, "\u202e" * 199 + "?", "x")
    d.wait(lambda: window.secret_dialogs.dialog is not None and window.secret_dialogs.dialog.winfo_exists(), 30,
           what="the answer dialog")
    dialog = window.secret_dialogs.dialog
    d.wait(lambda: dialog.winfo_viewable(), what="the dialog on screen")
    shown = str(dialog.question_label.cget("text"))
    assert shown.startswith("«") and shown.endswith("…»") and len(shown) <= 302, shown    # quoted, cut
    assert "\u202e" not in shown and "<U+202E>" in shown
    screen = dialog.winfo_screenheight()
    assert dialog.winfo_height() <= screen // 2, "the question alone must not fill the screen"
    for button in (dialog.ok_button, dialog.other_button):
        assert button.winfo_rooty() + button.winfo_height() <= screen, "the button is below the screen's edge"
    assert "<U+202E>" in transcript(window, session)
    dialog.decline()


def test_a_question_arriving_while_the_user_types_does_not_take_the_keyboard(app, world):  # noqa: F811
    """The peer chooses when its question arrives: while alice types a message, the answer dialog opens without
    taking the keyboard, so the rest of her message and its Enter go to the chat, not into the answer field."""
    window, d, session, bob, theirs = chat_from_alices_window(app, world)
    entry = window.panes[session].entry_text
    d.type(entry, "see you at no")
    bob.ask_secret(theirs, "Favourite tea?", "earl grey")
    d.wait(lambda: window.secret_dialogs.dialog is not None and window.secret_dialogs.dialog.winfo_viewable(), 30,
           what="the answer dialog")
    dialog = window.secret_dialogs.dialog
    d.type_on("on")
    d.key("Return")
    d.wait(lambda: "alice: see you at noon" in transcript(window, session), what="the whole message in the chat")
    assert dialog.winfo_exists() and dialog.answer.get() == "", "nothing typed went into the answer"
    d.click(dialog.answer)                          # the dialog is there to answer when she chooses to
    d.type_on("green")
    d.click(dialog.ok_button)
    d.wait(lambda: "the answers differ" in transcript(window, session), 30, what="the result")
