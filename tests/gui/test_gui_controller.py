"""The window's presenter without Tk: state, which step buttons are live, what each node event shows, input checks.

The chat node is replaced by a small recording fake that the tests make emit events; everything else is real
(the command worker thread included).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from gui.controller import LEDGER_TAB, ChatController, check_peer_query
from gui.models import MAX_LINES, LineKind, StepState, peer_label, peer_rows
from gui.text import MORE_CHARS, PREVIEW_CHARS, PREVIEW_LINES, clock_time
from gui.worker import CommandWorker
from p2pchat.events import (
    DeliveryReceipt,
    IncomingChat,
    KeyChangeStopped,
    MessageReceived,
    NodeError,
    Notice,
    PeerTyping,
    SessionEnded,
    SessionInfo,
    SessionUpdated,
    StepRefused,
    StepResult,
)
from p2pchat.foundation.errors import AddressError, PeerUnreachable, UserError
from p2pchat.steps import Step
from tests.gui.helpers import settle


class FakeNode:
    """Records the calls the controller makes; ``fail`` maps a method name to a UserError to raise."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail: dict[str, Exception] = {}
        self._lock = threading.Lock()
        self._sessions = 0
        self._msg_ids = 0

    def _record(self, *call: object) -> None:
        with self._lock:
            self.calls.append(call)
        if call[0] in self.fail:
            raise self.fail[call[0]]

    def open_session(self, peer_query: str) -> str:
        self._record("open_session", peer_query)
        self._sessions += 1
        return f"s{self._sessions}"

    def run_step(self, session: str, step: Step) -> None:
        self._record("run_step", session, step)

    def run_all(self, session: str) -> None:
        self._record("run_all", session)

    def accept(self, session: str, accept: bool) -> None:
        self._record("accept", session, accept)

    def send_text(self, session: str, text: str) -> int:
        self._record("send_text", session, text)
        self._msg_ids += 1
        return self._msg_ids

    def set_typing(self, session: str, typing: bool) -> None:
        self._record("set_typing", session, typing)

    def message_contact(self, fp: str, text: str) -> int:
        self._record("message_contact", fp, text)
        self._msg_ids += 1
        return 1000 + self._msg_ids

    def cancel_waiting(self, row: int) -> None:
        self._record("cancel_waiting", row)

    def end_session(self, session: str) -> None:
        self._record("end_session", session)

    def accept_new_key(self, fingerprint: str, *, override_verified: bool = False) -> None:
        self._record("accept_new_key", fingerprint, override_verified)

    def verify_contact(self, session: str, verified: bool = True) -> str:
        self._record("verify_contact", session, verified)
        return "ab" * 32

    def named(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def ctl(node, worker, clock) -> ChatController:
    return ChatController(node, worker, nickname="alice", clock=clock)


def connect_to(ctl: ChatController, worker: CommandWorker, query: str = "127.0.0.3") -> str:
    ctl.peer_text_changed(query)
    ctl.click_step(Step.CONNECT)
    settle(worker)
    assert ctl.target is not None
    return ctl.target


def finish_handshake(ctl: ChatController, worker: CommandWorker, session: str) -> None:
    for step in Step:
        if ctl.tabs[session].steps[step].state is not StepState.DONE:
            ctl.click_step(step)
            settle(worker)
            ctl.handle(StepResult(session, step, True, f"{step.title} done"))


def ready_chat(ctl: ChatController, worker: CommandWorker) -> str:
    session = connect_to(ctl, worker)
    ctl.select_tab(session)
    finish_handshake(ctl, worker, session)
    assert ctl.tabs[session].ready
    ctl.take_changes()
    return session


def bar_steps(ctl: ChatController) -> dict[Step, tuple[bool, bool, str]]:
    """step → (turn, clickable, result)"""
    return {v.step: (v.turn, v.clickable, v.result) for v in ctl.bar().steps}


# ---- the step bar -----------------------------------------------------------------------------------------

def test_empty_peer_field_offers_no_step_and_no_connect_all(ctl):
    bar = ctl.bar()
    assert bar.session is None
    assert not any(v.turn for v in bar.steps)
    assert not bar.connect_all
    assert "IP address, nickname or fingerprint" in bar.hint


def test_typing_a_peer_makes_step_1_the_next_step(ctl):
    ctl.peer_text_changed("bob")
    bar = ctl.bar()
    assert [v.step for v in bar.steps if v.turn] == [Step.CONNECT]
    assert bar.connect_all
    assert [v.label for v in bar.steps] == ["1 Connect", "2 Swap public keys", "3 Authenticate", "4 Agree AES key"]


def test_step_3_before_connecting_is_refused_naming_step_1_without_calling_the_node(ctl, node, worker):
    ctl.peer_text_changed("bob")
    ctl.click_step(Step.AUTHENTICATE)
    settle(worker)
    assert bar_steps(ctl)[Step.AUTHENTICATE][2] == "✗ 1 Connect must come first"
    assert node.calls == []


def test_a_malformed_address_is_refused_with_the_reason_beside_step_1(ctl, node):
    ctl.peer_text_changed("300.1.2.3")
    ctl.click_step(Step.CONNECT)
    result = bar_steps(ctl)[Step.CONNECT][2]
    assert result.startswith("✗ '300.1.2.3' is not an IP address")
    assert node.calls == []
    assert ctl.tabs == {}


def test_the_node_refusing_a_peer_query_shows_its_message(ctl, node):
    node.fail["open_session"] = UserError("nobody called 'zed' is in the ledger")
    ctl.peer_text_changed("zed")
    ctl.click_step(Step.CONNECT)
    assert bar_steps(ctl)[Step.CONNECT][2] == "✗ nobody called 'zed' is in the ledger"
    assert ctl.tabs == {}


def test_step_1_opens_a_tab_and_runs_connect_off_the_tk_thread(ctl, node, worker):
    session = connect_to(ctl, worker, "127.0.0.3:9000")
    assert node.calls == [("open_session", "127.0.0.3:9000"), ("run_step", session, Step.CONNECT)]
    changes = ctl.take_changes()
    assert changes.tabs_added == [session] and changes.select == session
    steps = bar_steps(ctl)
    assert steps[Step.CONNECT] == (False, False, "… working")
    assert steps[Step.SWAP_KEYS][:2] == (False, True)       # not its turn, but pressable to learn why


def test_each_step_result_shows_beside_its_button_and_passes_the_turn(ctl, worker):
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected to 127.0.0.3:8471 (direct)"))
    steps = bar_steps(ctl)
    assert steps[Step.CONNECT] == (False, False, "✓ connected to 127.0.0.3:8471 (direct)")
    assert steps[Step.SWAP_KEYS][:2] == (True, True)
    assert ctl.bar().hint == "Next: 2 Swap public keys"


def test_step_3_before_step_2_goes_to_the_node_and_its_refusal_shows(ctl, node, worker):
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    ctl.click_step(Step.AUTHENTICATE)
    settle(worker)
    assert node.calls[-1] == ("run_step", session, Step.AUTHENTICATE)
    assert ctl.tabs[session].steps[Step.AUTHENTICATE].state is StepState.PENDING
    ctl.handle(StepRefused(session, Step.AUTHENTICATE, "2 Swap public keys must come first"))
    steps = bar_steps(ctl)
    assert steps[Step.AUTHENTICATE] == (False, True, "✗ 2 Swap public keys must come first")
    assert steps[Step.SWAP_KEYS][0] is True


def test_a_refusal_raised_by_the_node_shows_like_the_event(ctl, node, worker):
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    node.fail["run_step"] = UserError("2 Swap public keys must come first")
    ctl.click_step(Step.AGREE_KEY)
    settle(worker)
    assert bar_steps(ctl)[Step.AGREE_KEY][2] == "✗ 2 Swap public keys must come first"


def test_a_failed_step_shows_the_reason_and_a_notice(ctl, worker):
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    ctl.click_step(Step.SWAP_KEYS)
    ctl.handle(StepResult(session, Step.SWAP_KEYS, False, "the ledger has no record for 127.0.0.3"))
    tab = ctl.tabs[session]
    assert tab.steps[Step.SWAP_KEYS].state is StepState.FAILED
    assert bar_steps(ctl)[Step.SWAP_KEYS] == (True, True, "✗ The ledger has no record for 127.0.0.3")
    assert tab.lines[-1].text == "⚠ 2 Swap public keys failed: The ledger has no record for 127.0.0.3"


def test_all_four_steps_enable_the_chat_and_say_it_is_encrypted(ctl, worker):
    session = connect_to(ctl, worker)
    assert ctl.input_hint(session) == "Finish the four steps first (next: 1 Connect)"
    finish_handshake(ctl, worker, session)
    bar = ctl.bar()
    assert all(v.state is StepState.DONE and not v.clickable for v in bar.steps)
    assert not bar.connect_all
    assert ctl.input_hint(session) == "Type a message and press Enter"
    assert "end-to-end encrypted" in ctl.tabs[session].lines[-1].text
    assert session in ctl.take_changes().chat_input


def test_connect_all_runs_the_sequence_and_marks_each_next_step_running(ctl, node, worker):
    ctl.peer_text_changed("bob")
    ctl.connect_all()
    settle(worker)
    session = ctl.target
    assert node.calls == [("open_session", "bob"), ("run_all", session)]
    tab = ctl.tabs[session]
    assert tab.running is Step.CONNECT
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    assert tab.running is Step.SWAP_KEYS
    ctl.handle(StepResult(session, Step.SWAP_KEYS, False, "key mismatch"))
    assert tab.running is None and not tab.auto


def test_editing_the_peer_field_of_a_chat_starts_a_new_chat_in_the_bar(ctl, worker):
    session = connect_to(ctl, worker, "bob")
    ctl.peer_text_changed("carol")
    assert ctl.target is None and ctl.bar().session is None
    ctl.select_tab(session)
    assert ctl.bar().session == session and ctl.bar().peer_text == "bob"


# ---- chatting ---------------------------------------------------------------------------------------------

def test_sending_shows_the_message_at_once_and_ticks_it_when_the_receipt_arrives(ctl, node, worker, clock):
    session = ready_chat(ctl, worker)
    assert ctl.send(session, "hello bob") is None
    line = ctl.tabs[session].lines[-1]
    assert (line.kind, line.sender, line.text, line.time, line.tick) == (
        LineKind.OUT, "alice", "hello bob", clock_time(clock.now), "…")
    settle(worker)
    assert node.named("send_text") == [("send_text", session, "hello bob")]
    ctl.handle(DeliveryReceipt(session, line.msg_id))
    assert line.tick == "✓"
    assert line in ctl.take_changes().lines_changed[session]


def test_a_receipt_that_beats_the_message_id_still_ticks_the_message(ctl, worker):
    session = ready_chat(ctl, worker)
    ctl.handle(DeliveryReceipt(session, 1))      # FakeNode hands out id 1 to the first message
    ctl.send(session, "quick")
    settle(worker)
    assert ctl.tabs[session].lines[-1].tick == "✓"


def test_a_message_the_node_cannot_send_is_marked_with_the_reason(ctl, node, worker):
    session = ready_chat(ctl, worker)
    node.fail["send_text"] = PeerUnreachable("bob stopped answering")
    ctl.send(session, "are you there?")
    settle(worker)
    assert ctl.tabs[session].lines[-1].tick == "✗ not sent: bob stopped answering"


@pytest.mark.parametrize(("text", "reason"), [
    ("", "the message is empty"),
    ("   \n ", "the message is empty"),
    ("é" * 600_000, "the message is 1,200,000 bytes long; the limit is 1,048,576 bytes"),
])
def test_empty_and_oversized_messages_are_refused(ctl, node, worker, text, reason):
    session = ready_chat(ctl, worker)
    assert ctl.send(session, text) == reason
    settle(worker)
    assert node.named("send_text") == []


def test_messages_before_the_handshake_is_done_are_refused_naming_the_next_step(ctl, node, worker):
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    assert ctl.send(session, "hi") == "Finish the four steps first (next: 2 Swap public keys)"


def test_a_received_message_shows_time_and_sender_and_counts_as_unread_in_other_tabs(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    ctl.select_tab(None)                           # the user looks at the ledger tab
    ctl.handle(MessageReceived(session, 7, "hi alice", "bob", clock.now - 5, clock.now))
    ctl.handle(MessageReceived(session, 8, "still there?", "bob", clock.now - 5, clock.now))
    tab = ctl.tabs[session]
    assert [(ln.kind, ln.sender, ln.text) for ln in tab.lines[-2:]] == [
        (LineKind.IN, "bob", "hi alice"), (LineKind.IN, "bob", "still there?")]
    assert tab.lines[-1].time == clock_time(clock.now)
    assert tab.title.endswith("(2)")
    ctl.select_tab(session)
    assert tab.unread == 0 and "(" not in tab.title
    assert session in ctl.take_changes().titles


def test_control_characters_from_a_peer_are_neutralised(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    ctl.handle(MessageReceived(session, 1, "a\x00b\x1b[31mc\u202ed\u200e\u200f\u061c\n", "b\x07ob", clock.now,
                               clock.now))
    line = ctl.tabs[session].lines[-1]
    assert line.text == "a^@b^[[31mc<U+202E>d<U+200E><U+200F><U+061C>\n"
    assert line.sender == "b^Gob"


def test_a_peers_newline_cannot_start_a_transcript_line_of_its_own():
    from gui.text import CONTINUATION, indent_continuations

    assert indent_continuations("hi\n14:02  alice: fake") == "hi\n" + CONTINUATION + "14:02  alice: fake"


def test_every_notice_and_the_status_line_are_cleaned_whoever_calls_them(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    ctl.handle(NodeError("relay said \x1b]0;title\x07\nsecond", session))
    assert "\x1b" not in ctl.status and "\n" not in ctl.status and "^[]0;title^G" in ctl.status
    assert ctl.tabs[session].lines[-1].text.endswith("relay said ^[]0;title^G\nsecond")


def test_a_one_mebibyte_message_shows_a_preview_and_reveals_more_in_steps(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    text = "x" * (1024 * 1024)
    ctl.handle(MessageReceived(session, 1, text, "bob", clock.now, clock.now))
    line = ctl.tabs[session].lines[-1]
    assert line.shown == PREVIEW_CHARS and line.hidden == len(text) - PREVIEW_CHARS
    ctl.show_more(session, line.line_id)
    assert line.shown == PREVIEW_CHARS + MORE_CHARS
    assert line in ctl.take_changes().lines_changed[session]


def test_a_message_of_many_short_lines_is_previewed_by_lines(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    ctl.handle(MessageReceived(session, 1, "line\n" * 1000, "bob", clock.now, clock.now))
    line = ctl.tabs[session].lines[-1]
    assert line.text[:line.shown].count("\n") == PREVIEW_LINES and line.hidden > 0


def test_the_typing_indicator_shows_clears_on_a_message_and_expires(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    ctl.handle(PeerTyping(session, True))
    assert ctl.typing_text(session) == "127.0.0.3 is typing…"
    ctl.handle(MessageReceived(session, 1, "done typing", "bob", clock.now, clock.now))
    assert ctl.typing_text(session) == ""
    ctl.handle(PeerTyping(session, True))
    clock.now += 7.9
    ctl.tick()
    assert ctl.typing_text(session) != ""
    clock.now += 0.2
    ctl.tick()
    assert ctl.typing_text(session) == ""


def test_our_typing_state_is_sent_on_changes_only_and_stops_after_idling(ctl, node, worker, clock):
    session = ready_chat(ctl, worker)
    for text in ("h", "he", "hel"):
        ctl.input_changed(session, text)
    ctl.input_changed(session, "")
    ctl.input_changed(session, "x")
    clock.now += 5.0
    ctl.tick()
    ctl.tick()
    settle(worker)
    assert [c[2] for c in node.named("set_typing")] == [True, False, True, False]


def test_typing_after_sending_is_announced_again(ctl, node, worker):
    # The text itself ends the typing state on both sides, so the next keystroke says "typing" anew.
    session = ready_chat(ctl, worker)
    ctl.input_changed(session, "hi")
    ctl.send(session, "hi")
    ctl.input_changed(session, "a")
    settle(worker)
    assert [c for c in node.calls if c[0] in ("set_typing", "send_text")] == [
        ("set_typing", session, True), ("send_text", session, "hi"), ("set_typing", session, True)]


# ---- incoming chats ---------------------------------------------------------------------------------------

def test_an_incoming_chat_opens_a_tab_and_asks_to_accept(ctl, node, worker):
    ctl.handle(IncomingChat("in1", "127.0.0.5:8471", "carol"))
    changes = ctl.take_changes()
    assert changes.tabs_added == ["in1"]
    assert [p.question for p in changes.prompts] == [
        "Someone at 127.0.0.5:8471, calling itself «carol» (not checked yet), wants to chat with you."]
    assert ctl.input_hint("in1") == "Accept the chat first"
    ctl.select_tab("in1")
    assert not any(v.clickable for v in ctl.bar().steps)
    assert ctl.bar().hint == "carol wants to chat: accept or reject"
    ctl.answer("in1", True)
    settle(worker)
    assert node.calls == [("accept", "in1", True)]
    assert ctl.prompts() == []
    assert ctl.take_changes().select == "in1"


def test_an_incoming_chat_calls_back_to_the_callers_ip_not_its_source_port(ctl):
    ctl.handle(SessionUpdated(SessionInfo("in1", "127.0.0.5", peer_address="127.0.0.5:40022", path="direct",
                                          incoming=True)))
    ctl.handle(IncomingChat("in1", "127.0.0.5:40022", "carol"))
    tab = ctl.tabs["in1"]
    assert tab.peer_query == "127.0.0.5" and ctl.bar().peer_text == "127.0.0.5"
    assert tab.info.path == "direct"          # what the node said before asking is kept


def test_what_an_incoming_session_said_before_asking_shows_in_its_tab(ctl):
    ctl.handle(Notice("in2", "path", "incoming chat through relay 127.0.0.9:8472"))
    ctl.handle(IncomingChat("in2", "127.0.0.9:8472", "dave"))
    assert [ln.text for ln in ctl.tabs["in2"].lines] == [
        "⇄ incoming chat through relay 127.0.0.9:8472",
        "ℹ Someone at 127.0.0.9:8472, calling itself «dave» (not checked yet), wants to chat with you."]


def test_rejecting_an_incoming_chat_closes_its_tab(ctl, node, worker):
    ctl.handle(IncomingChat("in1", "127.0.0.5:8471", "carol"))
    ctl.answer("in1", False)
    settle(worker)
    assert node.calls == [("accept", "in1", False)]
    assert ctl.tabs == {}
    assert "in1" in ctl.take_changes().tabs_removed


def test_an_incoming_chat_that_hangs_up_before_the_answer_closes_the_dialog(ctl):
    ctl.handle(IncomingChat("in1", "127.0.0.5:8471", "carol"))
    ctl.handle(SessionEnded("in1", "carol hung up", clean=True))
    assert ctl.prompts() == []
    assert "in1" in ctl.take_changes().prompts_closed


def test_the_callee_sees_the_steps_the_caller_drives(ctl, worker):
    ctl.handle(IncomingChat("in1", "127.0.0.5:8471", "carol"))
    ctl.answer("in1", True)
    ctl.select_tab("in1")
    bar = ctl.bar()
    assert not any(v.turn for v in bar.steps) and not bar.connect_all
    assert bar.hint == "Waiting for carol to run the next step; each result shows here"
    assert ctl.input_hint("in1") == "Waiting for carol to finish the four steps"
    for step in Step:
        ctl.handle(StepResult("in1", step, True, f"{step.title} ok"))
    assert ctl.tabs["in1"].ready
    assert bar_steps(ctl)[Step.AGREE_KEY][2] == "✓ Agree AES key ok"


# ---- ends, notices, peer panel ----------------------------------------------------------------------------

def test_a_vanished_peer_shows_connection_lost_and_disables_the_chat(ctl, worker):
    session = ready_chat(ctl, worker)
    ctl.handle(PeerTyping(session, True))
    ctl.handle(SessionEnded(session, "127.0.0.3 stopped answering (no data for 10 s)"))
    tab = ctl.tabs[session]
    assert tab.lines[-1].text == "■ Connection lost: 127.0.0.3 stopped answering (no data for 10 s)"
    assert tab.title.startswith("✗ ")
    assert ctl.typing_text(session) == ""
    assert ctl.input_hint(session) == "This chat has ended"
    assert ctl.send(session, "hello?") == "This chat has ended"
    assert [v.step for v in ctl.bar().steps if v.clickable] == [Step.CONNECT]


def test_step_1_on_an_ended_chat_starts_a_new_one_with_the_same_peer(ctl, node, worker):
    session = ready_chat(ctl, worker)
    ctl.handle(SessionEnded(session, "bob left", clean=True))
    ctl.click_step(Step.CONNECT)
    settle(worker)
    assert ctl.target != session and ctl.target in ctl.tabs
    assert node.calls[-2:] == [("open_session", "127.0.0.3"), ("run_step", ctl.target, Step.CONNECT)]
    assert ctl.tabs[ctl.target].base_title == "127.0.0.3 2"


def test_rotation_and_refused_frame_notices_appear_in_the_transcript(ctl, worker):
    session = ready_chat(ctl, worker)
    ctl.handle(Notice(session, "rotation", "keys rotated: epoch 2"))
    ctl.handle(Notice(session, "refused", "a replayed message (counter 3) was dropped"))
    assert [(ln.level, ln.text) for ln in ctl.tabs[session].lines[-2:]] == [
        ("rotation", "↻ keys rotated: epoch 2"), ("refused", "⚠ a replayed message (counter 3) was dropped")]


def test_session_updates_fill_the_peer_panel_and_the_tab_name(ctl, worker):
    session = connect_to(ctl, worker)
    info = SessionInfo(session, "127.0.0.3", peer_address="127.0.0.3:8471", peer_nickname="bob",
                       peer_fingerprint="3f2a 9c01 7b7b 0000", ledger_block=4, confirmations=3, path="direct",
                       key_epoch=2, until_rotation=7, safety_number="12345 67890",
                       steps_done=(Step.CONNECT, Step.SWAP_KEYS))
    ctl.handle(SessionUpdated(info))
    assert dict(peer_rows(ctl.tabs[session].info)) == {
        "Peer": "bob", "Address": "127.0.0.3:8471", "Fingerprint": "3f2a 9c01 7b7b 0000",
        "Ledger": "block 4 · 3 confirmations", "Path": "direct", "Key epoch": "2",
        "Next rotation": "in 7 messages", "Safety number": "12345 67890"}
    assert session in ctl.take_changes().peer
    assert ctl.tabs[session].next_step is Step.AUTHENTICATE
    assert ctl.tabs[session].peer_name == "bob"


def test_a_tab_named_after_an_address_takes_the_peers_nickname_once_step_2_confirmed_it(ctl, worker):
    session = connect_to(ctl, worker, "127.0.0.3")
    ctl.take_changes()
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="bob", steps_done=(Step.CONNECT,))))
    assert ctl.tabs[session].title == "127.0.0.3"       # only claimed in the hello so far
    done = (Step.CONNECT, Step.SWAP_KEYS)
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="bob", steps_done=done)))
    assert ctl.tabs[session].title == "bob"
    assert session in ctl.take_changes().titles
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="mallory", steps_done=done)))
    assert ctl.tabs[session].title == "bob"     # renamed once, not by every update


def test_the_peer_panel_says_which_step_learns_what_is_still_unknown():
    rows = dict(peer_rows(SessionInfo("s", "bob")))
    assert rows["Fingerprint"] == "after step 2" and rows["Key epoch"] == "after step 4"


def test_node_errors_show_in_the_status_line(ctl):
    ctl.handle(NodeError("port 8471 on 127.0.0.2 is already in use"))
    assert ctl.take_changes().status == "⚠ port 8471 on 127.0.0.2 is already in use"


def test_tab_names_stay_unique_and_never_clash_with_the_ledger_tab(ctl, worker):
    first = connect_to(ctl, worker, "bob")
    ctl.new_chat()
    second = connect_to(ctl, worker, "bob")
    ctl.new_chat()
    third = connect_to(ctl, worker, LEDGER_TAB)
    assert [ctl.tabs[s].base_title for s in (first, second, third)] == ["bob", "bob 2", "Ledger 2"]


def test_the_transcript_keeps_the_newest_lines_only(ctl, worker, clock):
    session = ready_chat(ctl, worker)
    on_screen = len(ctl.tabs[session].lines)
    for i in range(MAX_LINES + 150):
        ctl.handle(MessageReceived(session, i, f"m{i}", "bob", clock.now, clock.now))
    tab = ctl.tabs[session]
    assert len(tab.lines) <= MAX_LINES
    assert tab.lines[-1].text == f"m{MAX_LINES + 149}"
    changes = ctl.take_changes()
    # What the window shows after applying the changes equals what the controller keeps.
    assert on_screen + len(changes.lines_added[session]) - changes.lines_dropped[session] == len(tab.lines)


def test_the_text_a_chat_keeps_is_bounded_in_bytes_not_only_in_lines(ctl, worker, clock):
    """A verified peer sends 1 MiB texts (the protocol's largest) as fast as it can: the chat keeps the newest of
    them up to MAX_KEPT_BYTES of text (1,000 lines of 1 MiB, up to 3 MiB each once control characters are
    written out visibly, were kept before: gigabytes), the newest one whole for "show more"."""
    import sys

    from gui.models import MAX_KEPT_BYTES

    session = ready_chat(ctl, worker)
    on_screen = len(ctl.tabs[session].lines)
    mib = 1024 * 1024
    for i in range(40):
        ctl.handle(MessageReceived(session, i, f"{i:03d}" + "x" * (mib - 3), "bob", clock.now, clock.now))
    ctl.handle(MessageReceived(session, 40, "\x01" * mib, "bob", clock.now, clock.now))      # written out: ^A
    tab = ctl.tabs[session]
    assert sum(sys.getsizeof(line.text) for line in tab.lines) <= MAX_KEPT_BYTES
    assert tab.lines[-1].text == "^A" * mib and tab.lines[-2].text.startswith("039")
    changes = ctl.take_changes()
    assert on_screen + len(changes.lines_added[session]) - changes.lines_dropped[session] == len(tab.lines)


def test_closing_a_tab_says_goodbye_and_ignores_late_events(ctl, node, worker):
    session = ready_chat(ctl, worker)
    ctl.close_tab(session)
    settle(worker)
    assert node.calls[-1] == ("end_session", session)
    ctl.handle(SessionEnded(session, "bye", clean=True))
    ctl.handle(MessageReceived(session, 1, "late", "bob", 0.0, 0.0))
    assert ctl.tabs == {}


def test_event_types_added_to_the_node_later_are_ignored(ctl, worker):
    @dataclasses.dataclass(frozen=True)
    class PeerWaved:
        session: str

    @dataclasses.dataclass(frozen=True)
    class NodeRestarted:
        reason: str

    session = ready_chat(ctl, worker)
    lines = len(ctl.tabs[session].lines)
    ctl.handle(PeerWaved(session))
    ctl.handle(NodeRestarted("update"))
    assert len(ctl.tabs[session].lines) == lines and not ctl.take_changes()


@pytest.mark.parametrize("query", ["127.0.0.3", "127.0.0.3:9000", "[::1]:8471", "bob", "3f2a 9c01 7b7b"])
def test_peer_queries_that_are_accepted(query):
    assert check_peer_query(f"  {query} ") == query


@pytest.mark.parametrize(("query", "error"), [
    ("", UserError), ("   ", UserError), ("1.2.3.4:99999", AddressError), ("1.2.3", AddressError),
    ("b" * 201, UserError), ("bob\x00", UserError),
])
def test_peer_queries_that_are_refused(query, error):
    with pytest.raises(error):
        check_peer_query(query)


# ---- the command worker -----------------------------------------------------------------------------------

def test_a_bug_in_a_node_call_is_raised_on_the_tk_thread_not_swallowed(worker):
    def broken() -> None:
        raise KeyError("oops")
    worker.submit(broken)
    with pytest.raises(RuntimeError, match="KeyError"):
        settle(worker)


def test_user_errors_from_node_calls_reach_their_callback(worker):
    seen: list[str] = []
    worker.submit(lambda: (_ for _ in ()).throw(PeerUnreachable("gone")), failed=lambda e: seen.append(str(e)))
    settle(worker)
    assert seen == ["gone"]


# ---- issue 15: timeouts blamed on the right side, failures said once in plain words, failed dials closed ----

def test_a_callee_who_accepted_is_not_told_it_did_not_answer(ctl, worker):
    from p2pchat.events import IncomingChat
    ctl.handle(IncomingChat("in1", "127.0.0.9:50000", "carol"))
    ctl.answer("in1", True)
    settle(worker)
    ctl.handle(SessionEnded("in1", "you did not accept or reject the chat within 120 s"))
    text = ctl.tabs["in1"].lines[-1].text
    assert "you did not accept" not in text.split("\n")[0]
    assert text.startswith("■ You accepted, but carol did not go on with the next step within 2:00")


def test_a_caller_idle_between_steps_is_told_it_was_its_turn(ctl, worker):
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    ctl.handle(SessionEnded(session, "127.0.0.3 left the handshake unfinished for 120 s"))
    assert "it was your turn" in ctl.tabs[session].lines[-1].text


def test_the_step_bar_counts_down_to_the_handshake_timeout(node, worker):
    now = [1000.0]
    c = ChatController(node, worker, nickname="alice", clock=lambda: now[0])
    c.peer_text_changed("127.0.0.3")
    c.click_step(Step.CONNECT)
    session = c.target
    c.handle(StepResult(session, Step.CONNECT, True, "connected"))
    assert "left" not in c.bar().hint
    now[0] += 75
    assert c.bar().hint.endswith("(45 s left to finish the steps)")


def test_a_failed_dial_is_said_once_and_its_tab_closes_itself(node, worker):
    now = [1000.0]
    c = ChatController(node, worker, nickname="alice", clock=lambda: now[0])
    c.peer_text_changed("127.0.0.3")
    c.click_step(Step.CONNECT)
    session = c.target
    reason = ("cannot reach 127.0.0.3: no relay is known for this peer (its ledger record names none and "
              "--relay is not set)")
    c.handle(StepResult(session, Step.CONNECT, False, reason))
    c.handle(SessionEnded(session, reason))
    lines = [ln.text for ln in c.tabs[session].lines]
    assert sum("relay" in ln for ln in lines) == 1, lines
    shown = [ln.text[:ln.shown] for ln in c.tabs[session].lines]
    assert not any("--relay" in ln for ln in shown), "the flag is only in the details"
    assert not any("Connection lost" in ln for ln in shown)
    now[0] += 10
    c.tick()
    assert session not in c.tabs
    assert c.bar().steps[0].result.startswith("✗ ") and "--relay" not in c.bar().steps[0].result


def test_a_message_in_the_selected_tab_is_unread_while_the_window_is_unfocused(ctl, worker):
    session = ready_chat(ctl, worker)
    ctl.select_tab(session)
    ctl.set_focused(False)
    ctl.handle(MessageReceived(session, 1, "hi", "bob", 0.0, 0.0))
    assert ctl.unread_total() == 1
    ctl.set_focused(True)
    assert ctl.unread_total() == 0


@pytest.mark.parametrize(("reason", "shown"), [
    ("cannot reach bob: no relay is known for this peer (its ledger record names none and --relay is not set)",
     "bob could not be reached directly, and there is no relay server to try instead."),
    ("no ledger record for '127.0.0.14' at 127.0.0.12:8470 (no live binding for ip 127.0.0.14)",
     "bob is not in the ledger yet"),
    ("'hello' message: field 'role' is missing", "bob's program sent something this version does not understand"),
    ("127.0.0.3:5 did not accept or reject the chat within 4 s", "bob did not answer your chat request within 4 s."),
    ("127.0.0.3 declined the chat: bob declined the chat", "bob said no to the chat."),
    ("127.0.0.3:8471 closed the connection", "The connection to bob was closed: their program stopped"),
])
def test_known_node_reasons_become_plain_sentences_with_the_detail_kept(reason, shown):
    from gui.wording import plain
    words = plain(reason, "bob")
    assert words.plain.startswith(shown)
    assert "--" not in words.plain and "'" not in words.plain.replace("bob's", "")
    assert words.detail == reason


def test_a_refusal_is_not_called_a_lost_connection(ctl, worker):
    session = connect_to(ctl, worker)
    ctl.handle(SessionEnded(session, "127.0.0.3 declined the chat: bob declined the chat"))
    assert not any("Connection lost" in ln.text for ln in ctl.tabs[session].lines)


# ---- key continuity, verification and self-claimed nicknames (issues 13 and 15) ------------------------------

NEW_FP, OLD_FP = "cd" * 32, "ab" * 32


def stop_step_2(ctl, worker, verified: bool) -> str:
    session = connect_to(ctl, worker)
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="carol")))
    ctl.take_changes()
    ctl.click_step(Step.SWAP_KEYS)
    settle(worker)
    ctl.handle(KeyChangeStopped(session, "WARNING: THE KEY FOR the address 127.0.0.3 HAS CHANGED", NEW_FP, OLD_FP,
                                verified))
    ctl.handle(StepResult(session, Step.SWAP_KEYS, False, "WARNING: THE KEY FOR the address 127.0.0.3 HAS CHANGED"))
    return session


def test_a_changed_key_asks_for_the_dialog_and_keeping_the_old_key_sends_nothing(ctl, node, worker):
    session = stop_step_2(ctl, worker, verified=False)
    changes = ctl.take_changes()
    assert changes.key_changes == [session]
    tab = ctl.tabs[session]
    assert tab.key_change is not None and tab.steps[Step.SWAP_KEYS].state is StepState.FAILED
    assert not any(ln.level == "key-stop" for ln in tab.lines)       # unverified: a warning, no banner
    assert peer_label(tab).startswith("not confirmed")                # never the identity after a refused key
    ctl.keep_old_key(session)
    settle(worker)
    assert node.named("accept_new_key") == [] and tab.key_change is None


def test_accepting_a_verified_contacts_new_key_overrides_the_mark_and_shows_the_red_banner(ctl, node, worker):
    session = stop_step_2(ctl, worker, verified=True)
    tab = ctl.tabs[session]
    assert [ln.level for ln in tab.lines if ln.level == "key-stop"] == ["key-stop"]
    ctl.accept_key(session)
    settle(worker)
    assert node.named("accept_new_key") == [("accept_new_key", NEW_FP, True)]
    assert "Press 1 Connect to try again" in tab.lines[-1].text
    ctl.accept_key(session)     # answered once: a second press does nothing
    settle(worker)
    assert len(node.named("accept_new_key")) == 1


def test_a_nickname_is_only_claimed_until_step_2_confirms_it(ctl, worker):
    session = connect_to(ctl, worker)
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="carol")))
    tab = ctl.tabs[session]
    assert peer_label(tab) == "calls itself carol, not checked yet"
    ctl.handle(StepResult(session, Step.CONNECT, True, "connected"))
    ctl.click_step(Step.SWAP_KEYS)
    settle(worker)
    ctl.handle(StepResult(session, Step.SWAP_KEYS, True, "key checked"))
    assert peer_label(tab) == "carol"


def test_marking_a_ready_chat_verified_goes_to_the_node_and_shows_in_the_peer_panel(ctl, node, worker):
    session = ready_chat(ctl, worker)
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="bob", steps_done=tuple(Step))))
    ctl.set_verified(session, True)
    settle(worker)
    ctl.take_changes()
    assert node.named("verify_contact") == [("verify_contact", session, True)]
    assert peer_label(ctl.tabs[session]) == "bob · ✓ verified"


def test_verifying_before_the_four_steps_are_done_is_refused_in_words(ctl, node, worker):
    session = connect_to(ctl, worker)
    ctl.set_verified(session, True)
    settle(worker)
    assert node.named("verify_contact") == []
    assert "once the four steps are done" in ctl.tabs[session].lines[-1].text


def test_a_contact_verified_earlier_shows_its_mark_once_step_4_pinned_it(ctl, worker):
    session = ready_chat(ctl, worker)
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="bob", steps_done=tuple(Step),
                                          peer_verified=True)))
    assert peer_label(ctl.tabs[session]) == "bob · ✓ verified"


def test_a_signed_rotation_is_a_visible_notice_without_a_dialog(ctl, worker):
    session = connect_to(ctl, worker)
    ctl.take_changes()
    ctl.handle(Notice(session, "key-change", "carol replaced their key: the ledger proves it"))
    changes = ctl.take_changes()
    assert changes.key_changes == []
    line = ctl.tabs[session].lines[-1]
    assert (line.level, line.text) == ("key-change", "⚠ carol replaced their key: the ledger proves it")


def test_after_step_2_refused_the_key_the_claimed_nickname_names_nobody(ctl, worker):
    session = stop_step_2(ctl, worker, verified=False)
    tab = ctl.tabs[session]
    assert tab.peer_name == "127.0.0.3"
    ctl.handle(SessionEnded(session, "the peer left", clean=True))
    assert "carol" not in tab.lines[-1].text and "127.0.0.3 ended the chat" in tab.lines[-1].text
