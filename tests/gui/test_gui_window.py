"""One real window under Xvfb (alice) with real nodes: bob's ChatNode has no window and is driven by the test.
Thirty chats stay reachable, the step bar folds once a chat is ready, the minimum size and 150 % scaling keep
the entry, Send and the transcript on screen, the keyboard reaches everything, nothing live is dropped without a
question, and fingerprints and safety numbers can be copied."""

from __future__ import annotations

import tkinter

import customtkinter as ctk
import pytest

from gui.app import App
from gui.window import MIN_SIZE, ChatWindow, Me
from p2pchat.demo_world import DemoUser, DemoWorld
from p2pchat.events import IncomingChat
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, need_xdotool

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]


@pytest.fixture
def world(tmp_path, identities):
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip()), nicknames=("alice", "bob"),
                   identities=identities[:2], difficulty=8) as w:
        yield w


@pytest.fixture
def app(xvfb, world):
    need_xdotool()
    application = App(appearance="Light")
    try:
        user = world.users[0]
        application.open_window(user.chat, me(user), geometry="900x760+0+0")
        yield application
    finally:
        application.close()
        ctk.set_widget_scaling(1.0)


def me(user: DemoUser) -> Me:
    return Me(user.nickname, user.chat.address, user.identity.short_fingerprint)


def bob_accepts(world: DemoWorld) -> None:
    """Bob answers every call waiting in his node's events with yes (his side has no window)."""
    bob = world.users[1].chat
    while not bob.events.empty():
        event = bob.events.get_nowait()
        if isinstance(event, IncomingChat):
            bob.accept(event.session, True)


def ready_chat(app: App, world: DemoWorld, d: Driver) -> str:
    window = app.windows[0]
    window.prefill_peer(world.users[1].host)
    window._connect_all()
    session = window.controller.target
    assert session is not None
    d.wait(lambda: (bob_accepts(world), window.controller.tabs[session].ready)[1], 60, what="a ready chat")
    return session


def inside_window(window: ChatWindow, widget: tkinter.Misc) -> bool:
    """``widget`` is mapped and drawn wholly inside its window (not clipped at the bottom or the right)."""
    top = window.top
    top.update_idletasks()
    return (widget.winfo_viewable() and widget.winfo_height() > 1
            and widget.winfo_rooty() + widget.winfo_height() <= top.winfo_rooty() + top.winfo_height()
            and widget.winfo_rootx() + widget.winfo_width() <= top.winfo_rootx() + top.winfo_width())


def test_thirty_chats_every_row_of_the_side_list_stays_reachable(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    bob = world.users[1].host
    sessions = []
    for _ in range(30):       # bob never answers: thirty chats waiting at step 1
        window._new_chat()
        window.prefill_peer(bob)
        window._step_clicked(Step.CONNECT)
        sessions.append(window.controller.target)
    d.wait(lambda: len(window.tabs.pages) == 31, what="thirty-one pages")
    for session in (sessions[0], sessions[14], sessions[-1]):
        window.tabs.scroll_to(session)
        d.click(window.tabs.buttons[session])     # a real click on the row, scrolled into sight
        d.wait(lambda s=session: window.tabs.current == s and window.controller.selected == s, what="the chat")
        assert window.tabs.row_in_sight(session), "the selected row is drawn inside the list"
        assert inside_window(window, window.panes[session].transcript)
        assert inside_window(window, window.panes[session].entry)
    assert not window.tabs.row_in_sight(sessions[0]), "the list scrolls: not all thirty rows fit at once"
    d.screenshot("thirty-chats.png", window.top)
    app.root.focus_force()
    d.wait(lambda: window.has_focus(), what="the focus")
    d.key("ctrl+Tab")
    assert window.tabs.current == next(iter(window.tabs.pages)), "Ctrl+Tab goes round to the first row"
    assert window.tabs.row_in_sight(window.tabs.current)
    window.tabs.buttons[sessions[0]]._canvas.focus_set()      # a row reached with Tab scrolls into sight
    d.wait(lambda: window.tabs.row_in_sight(sessions[0]), what="the focused row in sight")


def test_the_step_bar_folds_once_ready_and_unfolds_on_a_click(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    assert not window.step_bar.collapsed
    ready_chat(app, world, d)
    d.wait(lambda: window.step_bar.collapsed, what="the folded step bar")
    assert not window.step_bar.buttons[Step.CONNECT].winfo_viewable()
    d.screenshot("steps-folded.png", window.top)
    d.click(window.step_bar.summary)
    d.wait(lambda: not window.step_bar.collapsed, what="the unfolded step bar")
    assert all(b.winfo_viewable() for b in window.step_bar.buttons.values()), "all four steps clickable again"


def test_the_minimum_size_and_150_percent_keep_entry_send_and_transcript_visible(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    session = ready_chat(app, world, d)
    pane = window.panes[session]
    app.root.geometry(f"{MIN_SIZE[0]}x{MIN_SIZE[1]}")
    d.wait(lambda: app.root.winfo_height() <= MIN_SIZE[1] + 2, what="the minimum size")
    for _ in range(5):
        d.pump()
    for widget in (pane.entry, pane.send_button, pane.end_button):
        assert inside_window(window, widget), f"{widget} is cut off at the minimum size"
    assert pane.transcript.winfo_height() >= 60, "the transcript keeps some height"
    before = app.root.winfo_width(), app.root.winfo_height()
    window.scaling_menu.set("150%")
    window._scaling_chosen("150%")
    d.wait(lambda: app.root.winfo_width() >= before[0] * 1.4, what="the window to grow with the scaling")
    for _ in range(5):
        d.pump()
    for widget in (pane.entry, pane.send_button):
        assert inside_window(window, widget), f"{widget} is cut off at 150 %"
    d.screenshot("scaled-150.png", window.top)
    assert pane.transcript.winfo_height() >= 60


def test_keyboard_new_chat_find_new_line_and_confirmed_close(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    session = ready_chat(app, world, d)
    pane = window.panes[session]
    d.type(pane.entry_text, "first line")
    d.key("shift+Return")
    d.key("s")
    assert pane.text() == "first line\ns", "Shift+Enter inserts a new line"
    d.key("Return")
    d.wait(lambda: "first line" in pane.transcript.plain_text(), what="the sent message")
    assert pane.text() == ""
    d.key("ctrl+f")
    d.wait(lambda: pane.find_entry.winfo_viewable(), what="the find row")
    d._xdotool("type", "first")
    d.wait(lambda: pane.find_result.cget("text") == "found", what="a match")
    d.screenshot("find-in-chat.png", window.top)
    d.key("Escape")
    d.key("ctrl+n")
    d.wait(lambda: str(window.top.focus_get()).startswith(str(window.step_bar.peer_entry)), what="the peer field")
    # Ctrl+W on a live chat asks first; Escape keeps it, Enter ends it.
    d.key("ctrl+w")
    d.wait(lambda: window._confirm is not None and window._confirm.winfo_viewable(), what="the question")
    d.wait(lambda: window.has_focus() and str(window.top.focus_get() or "").startswith(str(window._confirm)),
           what="the question to take focus")
    d.key("Escape")
    d.wait(lambda: window._confirm is None, what="the question to close")
    assert session in window.controller.tabs
    d.key("ctrl+q")
    d.wait(lambda: window._confirm is not None, what="the quit question")
    d.wait(lambda: str(window.top.focus_get() or "").startswith(str(window._confirm)), what="its focus")
    d.key("Escape")
    d.wait(lambda: window._confirm is None, what="the quit question to close")
    assert not window.closed and not window.close_requested
    window.tabs.select(session)
    window._tab_chosen(session)
    d.key("ctrl+w")
    d.wait(lambda: window._confirm is not None, what="the question")
    d.wait(lambda: str(window.top.focus_get() or "").startswith(str(window._confirm)), what="its focus")
    d.key("Return")
    d.wait(lambda: session not in window.controller.tabs, what="the chat to end")


def test_the_safety_number_and_fingerprint_can_be_copied(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    session = ready_chat(app, world, d)
    panel = window.panes[session].peer_panel
    safety = panel.value_text("Safety number")
    assert safety and not safety.startswith("after")
    d.click(panel.copy_buttons["Safety number"])
    assert app.root.clipboard_get() == safety
    d.click(window.identity.copy_button)
    assert app.root.clipboard_get() == world.users[0].identity.short_fingerprint


def test_a_keyboard_only_run_of_the_four_steps_and_a_message(app, world):
    """Tab reaches every step button, Space presses it; then Tab reaches the message entry and Enter sends."""
    window = app.windows[0]
    d = Driver(app.root)
    d.type(window.step_bar.peer_entry, world.users[1].host)

    def tab_to(widget: tkinter.Misc) -> None:
        for _ in range(40):
            if str(window.top.focus_get() or "").startswith(str(widget)):
                return
            d.key("Tab")
        raise AssertionError(f"Tab never reached {widget}")

    for step in Step:
        tab_to(window.step_bar.buttons[step])
        d.key("space")
        session = window.controller.target
        assert session is not None
        d.wait(lambda s=step, sid=session: (bob_accepts(world),
                                             window.controller.tabs[sid].steps[s].state.name == "DONE")[1],
               30, what=f"step {step.label}")
    session = window.controller.target
    pane = window.panes[session]
    tab_to(pane.entry_text)
    d._xdotool("type", "typed without a mouse")
    d.key("Return")
    d.wait(lambda: "typed without a mouse" in pane.transcript.plain_text(), what="the message")


def test_an_ended_chat_unfolds_the_steps_so_that_1_connect_can_start_again(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    session = ready_chat(app, world, d)
    d.wait(lambda: window.step_bar.collapsed, what="the folded step bar")
    bob = world.users[1].chat
    bob.end_session(bob.sessions()[0].session)     # bob says goodbye
    d.wait(lambda: window.controller.tabs[session].ended is not None, what="the chat to end")
    d.wait(lambda: not window.step_bar.collapsed, what="the unfolded step bar")
    assert window.step_bar.buttons[Step.CONNECT].winfo_viewable()


def test_the_peer_field_selects_all_with_ctrl_a_and_takes_a_pasted_block_as_one_line(app, world):
    window = app.windows[0]
    d = Driver(app.root)
    entry = window.step_bar.peer_entry
    d.type(entry, "127.0.0.9")
    d.key("ctrl+a")
    assert entry._entry.selection_present() and entry._entry.selection_get() == "127.0.0.9"
    d.key("BackSpace")
    assert entry.get() == ""
    app.root.clipboard_clear()
    app.root.clipboard_append("127.0.0.7\n\tbob\n")
    d.key("ctrl+v")
    d.wait(lambda: window.controller.peer_text == "127.0.0.7 bob", what=f"one line, not {entry.get()!r}")
    assert entry.get() == "127.0.0.7 bob"


def test_alerts_menu_turns_notifications_off_and_it_is_remembered(app, world, tmp_path):
    import customtkinter as ctk

    from gui.settings import load_alerts
    user = world.users[1]
    window = ChatWindow(ctk.CTkToplevel(app.root), user.chat, me(user), data_dir=tmp_path)
    d = Driver(app.root)
    try:
        d.pump()
        assert window.alerts.notify and not window.alerts.sound
        window._alerts_menu()
        labels = [window.alerts_menu.entrycget(i, "label") for i in range(4)]
        assert labels == ["Desktop notifications", "Flash the taskbar entry", "Raise the window for a caller", "Sound"]
        window.alerts_menu.invoke(0)
        window.alerts_menu.invoke(3)
        window.alerts_menu.unpost()
        d.pump()
        assert not window.alerts.notify and window.alerts.sound
        assert load_alerts(tmp_path) == window.alerts
        again = ChatWindow(ctk.CTkToplevel(app.root), user.chat, me(user), data_dir=tmp_path)
        assert again.alerts == window.alerts
        again.close()
    finally:
        window.close()
