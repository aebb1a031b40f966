"""Two real chat windows under Xvfb, clicked with a real pointer: the four steps on one side, accept on the other,
messages both ways, a step pressed out of order, several chats at once in tabs, replayed and altered frames.

Both windows live in this test process on one Tk root (the second is a ``CTkToplevel``), exactly as in
``p2pchat demo``: Tk allows one interpreter per thread, and driving both from here lets the test click the accept
dialog on the other side. Each window has its own real ChatNode, ledger node (difficulty 8) and command worker.
A third user, carol, has no window: the test drives her real ChatNode directly to open a second chat with alice.
"""

from __future__ import annotations

import tkinter

import pytest

from gui.app import App
from gui.ledger_monitor import LedgerMonitor, NodeSource
from gui.models import StepState
from gui.window import LEDGER_KEY, ChatWindow, Me
from p2pchat.demo_world import DemoUser, DemoWorld
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.gui.driver import Driver, inner, need_xdotool

pytestmark = [pytest.mark.gui, pytest.mark.timeout(240)]


@pytest.fixture
def world(tmp_path, identities):
    """The demo's world (p2pchat.demo_world) on fresh loopback addresses, with difficulty 8."""
    with DemoWorld(root=tmp_path, hosts=(free_loopback_ip(), free_loopback_ip(), free_loopback_ip()),
                   nicknames=("alice", "bob", "carol"), identities=identities[:3], difficulty=8) as w:
        yield w


@pytest.fixture
def app(xvfb, world):
    need_xdotool()
    application = App(appearance="Light")
    monitors = []
    try:
        for user, place in zip(world.users[:2], ("+0+0", "+640+0"), strict=True):
            monitor = LedgerMonitor(NodeSource(user.ledger_node), interval=0.5).start()
            monitors.append(monitor)
            application.open_window(user.chat, me(user), ledger=monitor, geometry=f"636x790{place}")
        yield application
    finally:
        application.close()
        for monitor in monitors:
            monitor.close()


def me(user: DemoUser) -> Me:
    return Me(user.nickname, user.chat.address, user.identity.short_fingerprint)


def transcript(window: ChatWindow, session: str) -> str:
    return window.panes[session].transcript.plain_text()


def visible_texts(widget: tkinter.Misc) -> list[str]:
    """Every text a widget tree shows: labels, buttons, entries and text boxes."""
    texts = []
    for child in widget.winfo_children():
        if isinstance(child, tkinter.Text):
            texts.append(child.get("1.0", "end"))
        elif isinstance(child, tkinter.Entry):
            texts.append(child.get())
        elif isinstance(child, (tkinter.Label, tkinter.Button)) or child.winfo_class() == "Canvas":
            try:
                texts.append(str(child.cget("text")))
            except tkinter.TclError:
                pass
        texts += visible_texts(child)
    return texts


def step_state(window: ChatWindow, session: str, step: Step) -> StepState:
    return window.controller.tabs[session].steps[step].state


def test_four_buttons_accept_and_chat_both_ways(app, world):
    d = Driver(app.root)
    alice, bob = app.windows
    bob_ip = world.user("bob").host
    d.wait(lambda: alice.snapshot is not None and bob.snapshot is not None, what="the ledger panels")

    d.type(alice.step_bar.peer_entry, bob_ip)
    d.wait(lambda: alice.controller.peer_text == bob_ip, what="the peer field")
    d.click(alice.step_bar.buttons[Step.CONNECT])
    d.wait(lambda: bob._dialog is not None, what="the accept dialog on bob's side")
    assert "alice" in bob._dialog.prompt.question
    d.screenshot("accept-dialog.png")
    d.click(bob._dialog.accept_button)

    sa = alice.controller.target
    d.wait(lambda: step_state(alice, sa, Step.CONNECT) is StepState.DONE, what="step 1 on alice's side")
    sb = bob.controller.selected
    assert sb is not None and bob.controller.tabs[sb].incoming
    assert alice.step_bar.results[Step.CONNECT].cget("text").startswith("✓")

    # Step 3 before step 2: the button is pressable, the node refuses, the reason names step 2.
    d.click(alice.step_bar.buttons[Step.AUTHENTICATE])
    d.wait(lambda: alice.step_bar.results[Step.AUTHENTICATE].cget("text").startswith("✗"), what="the refusal")
    refusal = alice.step_bar.results[Step.AUTHENTICATE].cget("text")
    assert "2" in refusal and "Swap public keys" in refusal
    assert step_state(alice, sa, Step.AUTHENTICATE) is StepState.PENDING
    d.screenshot("step-refused.png", alice.top)

    for step in (Step.SWAP_KEYS, Step.AUTHENTICATE, Step.AGREE_KEY):
        d.click(alice.step_bar.buttons[step])
        d.wait(lambda s=step: step_state(alice, sa, s) is StepState.DONE, what=f"{step.label} on alice's side")
        assert alice.step_bar.results[step].cget("text").startswith("✓")
    d.wait(lambda: alice.controller.tabs[sa].ready and bob.controller.tabs[sb].ready, what="both chats ready")
    assert alice.step_bar.buttons[Step.AGREE_KEY].cget("state") == "disabled"

    # Both peer panels show the other's fingerprint and the same safety number.
    d.wait(lambda: bob.panes[sb].peer_panel.values["Safety number"].cget("text")[0].isdigit(), what="safety number")
    safety = alice.panes[sa].peer_panel.values["Safety number"].cget("text")
    assert safety == bob.panes[sb].peer_panel.values["Safety number"].cget("text")
    assert alice.panes[sa].peer_panel.values["Fingerprint"].cget("text") == \
        world.user("bob").identity.short_fingerprint
    assert alice.panes[sa].peer_panel.values["Ledger"].cget("text").startswith("block ")

    d.type(alice.panes[sa].entry_text, "hello bob, this is alice")
    d.key("Return")
    d.wait(lambda: "alice: hello bob, this is alice" in transcript(bob, sb), what="alice's message at bob")
    d.wait(lambda: "hello bob, this is alice  ✓" in transcript(alice, sa), what="the delivery tick at alice")

    d.type(bob.panes[sb].entry_text, "hi alice")
    d.wait(lambda: alice.controller.typing_text(sa) == "bob is typing…", what="bob's typing indicator")
    d.wait(lambda: alice.panes[sa].typing_label.cget("text") == "bob is typing…", what="the typing label")
    d.key("Return")
    d.wait(lambda: "bob: hi alice" in transcript(alice, sa), what="bob's reply at alice")
    d.wait(lambda: alice.panes[sa].typing_label.cget("text") == "", what="the typing label to clear")

    # A few more lines: alice's third message rotates her sending key (the demo world rotates every 3).
    for sender, receiver, ss, sr, text in (
            (alice, bob, sa, sb, "our safety numbers match"),
            (bob, alice, sb, sa, "same here, all four steps are green"),
            (alice, bob, sa, sb, "great, the ledger vouches for you")):
        d.type(sender.panes[ss].entry_text, text)
        d.key("Return")
        d.wait(lambda t=text, r=receiver, s=sr: f": {t}" in transcript(r, s), what=f"{text!r} to arrive")
    d.wait(lambda: "↻ key rotated" in transcript(alice, sa), what="the key rotation notice")
    d.wait(lambda: transcript(alice, sa).count("  ✓\n") == 3, what="three delivery ticks")
    d.type(bob.panes[sb].entry_text, "see you")
    d.wait(lambda: alice.panes[sa].typing_label.cget("text") == "bob is typing…", what="bob typing again")
    d.screenshot("two-windows-mid-chat.png")
    d.screenshot("chat-window.png", alice.top)
    d.key("Return")
    d.wait(lambda: "bob: see you" in transcript(alice, sa), what="bob's last line")

    # Bob looks at his ledger tab: alice's next message counts as unread in his chat tab's title.
    d.click(bob.tabs.buttons[LEDGER_KEY])
    d.type(alice.panes[sa].entry_text, "are you there?")
    d.key("Return")
    d.wait(lambda: bob.tabs.titles[sb].endswith("(1)"), what="the unread count")
    assert "1 unread" in bob.top.title()
    d.screenshot("ledger-tab.png", bob.top)
    d.click(bob.tabs.buttons[sb])
    d.wait(lambda: not bob.tabs.titles[sb].endswith(")"), what="the unread count to clear")
    assert "are you there?" in transcript(bob, sb)
    assert bob.lag.samples, "the event pump should have been running"

    # Nothing on screen comes near the private key.
    for window, user in ((alice, world.user("alice")), (bob, world.user("bob"))):
        shown = "\n".join(visible_texts(window.top))
        assert user.identity.short_fingerprint in shown
        assert "PRIVATE" not in shown
        pem_body = [line for line in user.identity.to_pem().decode().splitlines() if "-----" not in line]
        assert not any(line[:24] in shown for line in pem_body)


def test_several_chats_at_once_in_tabs_with_unread_counts(app, world):
    d = Driver(app.root)
    alice, _bob = app.windows
    carol = world.user("carol").chat
    assert carol is not None

    # Alice calls bob with "Connect all" (Enter in the peer field)…
    d.type(alice.step_bar.peer_entry, world.user("bob").host)
    d.key("Return")
    d.wait(lambda: app.windows[1]._dialog is not None, what="bob's accept dialog")
    d.click(app.windows[1]._dialog.accept_button)
    to_bob = alice.controller.target
    d.wait(lambda: alice.controller.tabs[to_bob].ready, what="alice's chat with bob")

    # …while carol calls alice: a dialog in alice's window, a second tab once accepted.
    from_carol = carol.open_session(world.user("alice").host)
    carol.run_all(from_carol)
    d.wait(lambda: alice._dialog is not None, what="alice's accept dialog")
    assert alice._dialog.prompt.nickname == "carol"
    d.click(alice._dialog.accept_button)
    d.wait(lambda: any(t.incoming and t.ready for t in alice.controller.tabs.values()), what="carol's chat ready")
    carol_tab = next(s for s, t in alice.controller.tabs.items() if t.incoming)
    assert alice.tabs.titles[carol_tab] == "carol"

    # Alice reads bob's tab; carol writes twice: carol's tab counts 2 unread, the window title says so.
    d.click(alice.tabs.buttons[to_bob])
    for text in ("hi alice, carol here", "are you free?"):
        carol.send_text(from_carol, text)
    d.wait(lambda: alice.tabs.titles[carol_tab] == "carol (2)", what="carol's unread count")
    assert alice.top.title() == "p2pchat — alice (2 unread)"
    assert alice.tabs.titles[to_bob] == "bob"
    d.screenshot("two-chats-unread.png", alice.top)
    d.click(alice.tabs.buttons[carol_tab])
    d.wait(lambda: alice.tabs.titles[carol_tab] == "carol", what="the unread count to clear")
    assert "carol: are you free?" in transcript(alice, carol_tab)
    assert alice.controller.bar().session == carol_tab     # the step bar follows the tab on screen

    # "Join network" checks the address before anything goes to the ledger node.
    d.click(alice.tabs.buttons[LEDGER_KEY])
    d.type(inner(alice.ledger_panel.join_entry, tkinter.Entry), "not-an-address")
    d.click(alice.ledger_panel.join_button)
    assert alice.ledger_panel.join_result.cget("text").startswith("✗ 'not-an-address' is not an IP address")

    # The appearance and scaling menus apply at once; the transcript's tag colours follow the mode.
    text = inner(alice.panes[carol_tab].transcript, tkinter.Text)
    light_color = text.tag_cget("sender_in", "foreground")
    alice.appearance_menu.set("Dark")
    alice._appearance_chosen("Dark")
    d.click(alice.tabs.buttons[carol_tab])
    d.wait(lambda: text.tag_cget("sender_in", "foreground") != light_color, what="dark tag colours")
    d.screenshot("dark-mode.png", alice.top)
    assert app.windows[1].appearance == "Dark", "the mode is shared: bob's menu says what his window shows"
    alice.scaling_menu.set("110%")
    alice._scaling_chosen("110%")
    d.pump()
    assert app.windows[1].scaling == 1.1
    assert alice.scaling == 1.1 and alice.appearance == "Dark"
    carol.send_text(from_carol, "still here")
    d.wait(lambda: "carol: still here" in transcript(alice, carol_tab), what="a message after rescaling")


def test_a_replayed_and_a_tampered_frame_show_as_warnings_in_the_window_never_as_messages(app, world):
    """An attacker on the wire between alice and bob: bob's window says what was refused, in plain words, and
    shows each real message once."""
    d = Driver(app.root)
    alice, bob = app.windows
    d.type(alice.step_bar.peer_entry, world.user("bob").host)
    d.key("Return")                                            # Connect all
    d.wait(lambda: bob._dialog is not None, what="bob's accept dialog")
    d.click(bob._dialog.accept_button)
    sa = alice.controller.target
    d.wait(lambda: alice.controller.tabs[sa].ready, what="alice's chat with bob")
    sb = bob.controller.selected
    d.wait(lambda: sb is not None and bob.controller.tabs[sb].ready, what="bob's chat with alice")
    node = world.user("alice").chat

    # Capture alice's next frame on the wire, then play it to bob a second time.
    captured: list[bytes] = []
    node.set_wire_hook(sa, lambda frame: captured.append(frame) or frame)
    node.send_text(sa, "the first message")
    d.wait(lambda: "alice: the first message" in transcript(bob, sb), what="the first message at bob")
    node.set_wire_hook(sa, None)
    assert captured
    node.inject_frame(sa, captured[0])
    d.wait(lambda: "replayed" in transcript(bob, sb), what="the replay warning in bob's window")

    # Flip one bit of the next frame on the way: refused as altered, never shown, and not reported a second time
    # (refusals are reported once; the third would end the chat).
    node.set_wire_hook(sa, lambda frame: frame[:-1] + bytes([frame[-1] ^ 1]))
    node.send_text(sa, "a message someone altered")
    node.set_wire_hook(sa, None)
    node.send_text(sa, "the last message")
    d.wait(lambda: "alice: the last message" in transcript(bob, sb), what="a message after the attack")

    shown = transcript(bob, sb)
    assert shown.count("alice: the first message") == 1
    assert "someone altered" not in shown
    warnings = [line.split("⚠ ", 1)[1] for line in shown.splitlines() if "  ⚠ " in line]
    assert len(warnings) == 1 and "replayed" in warnings[0], warnings
    assert "the chat ends if 3 frames are refused" in warnings[0]
    d.screenshot("refused-frames.png", bob.top)


def test_closing_one_demo_window_ends_only_its_chats_and_the_other_keeps_running(app, world):
    d = Driver(app.root)
    alice, bob = app.windows
    bob_ip = world.user("bob").host
    d.type(alice.step_bar.peer_entry, bob_ip)
    d.wait(lambda: alice.controller.peer_text == bob_ip, what="the peer field")
    d.click(alice.step_bar.connect_all_button)
    d.wait(lambda: bob._dialog is not None, what="the accept dialog on bob's side")
    d.click(bob._dialog.accept_button)
    sa = alice.controller.target
    d.wait(lambda: sa is not None and alice.controller.tabs[sa].ready, what="alice's chat ready")
    sb = bob.controller.selected
    d.wait(lambda: bob.controller.tabs[sb].ready, what="bob's chat ready")

    alice.request_close()              # what the window's close button does once the user confirmed
    d.wait(lambda: alice.closed, what="alice's window to close")
    d.wait(lambda: bob.controller.tabs[sb].ended is not None, what="bob to see alice leave")
    assert "alice ended the chat" in transcript(bob, sb)
    assert not bob.closed and not app.close_requested
    assert not alice.top.winfo_viewable()              # alice's window (the Tk root) is hidden, not destroyed
    ticks = bob.ticks
    d.wait(lambda: bob.ticks > ticks + 3, what="bob's window to keep turning")
