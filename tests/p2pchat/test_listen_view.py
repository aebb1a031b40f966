"""``listen``'s explicit targets and prompts, driven without a network (the process tests are in
tests/security/test_display_attacks.py): typed lines go only to the chat chosen with /to N, never to one that
arrived later; prompts are answered by number, never first in, first out."""

from __future__ import annotations

import io

from p2pchat.display import Printer
from p2pchat.events import IncomingChat, SessionEnded, SessionInfo, StepResult
from p2pchat.steps import Step
from p2pchat.terminal import ListenView
from tests.p2pchat.test_terminal_rendering import FakeNode


class SendingNode(FakeNode):
    """Records what ``send_waiting`` sends, per session."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def session_info(self, sid: str) -> SessionInfo:
        name = {"s1": "bob", "s2": "b\u043eb"}.get(sid, "carol")
        return SessionInfo(sid, "?", peer_nickname=name, peer_address="127.0.0.9:1", until_rotation=5,
                           key_epoch=0)

    def send_text(self, sid: str, text: str) -> int:
        self.sent.append((sid, text))
        return len(self.sent)


def ready(sid: str) -> StepResult:
    return StepResult(sid, Step.AGREE_KEY, True, "agreed")


def make() -> tuple[ListenView, SendingNode, io.StringIO]:
    node = SendingNode()
    out = io.StringIO()
    return ListenView(node, Printer(out)), node, out   # type: ignore[arg-type]


def test_a_chat_that_becomes_ready_later_never_takes_the_typed_lines():
    view, node, out = make()
    view.on_event(ready("s1"))
    view.on_line("no target yet")
    assert node.sent == [] and "! not sent: no chat is chosen" in out.getvalue()
    view.on_line("/to 1")
    view.on_line("hello bob")
    view.on_event(ready("s2"))                      # the look-alike arrives
    view.on_line("still for bob")
    assert node.sent == [("s1", "hello bob"), ("s1", "still for bob")]
    assert "Lines you type still go to chat 1 (bob); /to 2 writes to b\u043eb (non-ASCII: \u043e=U+043E)" \
        in out.getvalue()


def test_when_the_chosen_chat_ends_lines_go_nowhere_until_the_user_chooses_again():
    view, node, out = make()
    view.on_event(ready("s1"))
    view.on_event(ready("s2"))
    view.on_line("/to 1")
    view.on_event(SessionEnded("s1", "bob left the chat", True))
    view.on_line("for whom?")
    assert node.sent == [] and "Lines you type now go nowhere" in out.getvalue()
    view.on_line("/to 1")
    assert "Chat 1 has ended" in out.getvalue()
    view.on_line("/to 2")
    view.on_line("for chat 2, chosen")
    assert node.sent == [("s2", "for chat 2, chosen")]


def test_lines_for_a_chosen_chat_wait_until_it_is_ready():
    view, node, _ = make()
    view.on_event(IncomingChat("s1", "127.0.0.9:1", "bob"))
    view.on_line("y")
    view.on_line("/to 1")
    view.on_line("early")
    assert node.sent == []
    view.on_event(ready("s1"))
    assert node.sent == [("s1", "early")]


def test_prompts_are_answered_by_number_and_y_is_refused_when_several_ask():
    view, node, out = make()
    view.on_event(IncomingChat("s1", "127.0.0.9:1", "bob"))
    view.on_event(IncomingChat("s2", "127.0.0.9:2", "mallory"))
    view.on_line("y")
    assert node.accepted == [] and "2 chats are asking (1, 2): answer one with /accept N" in out.getvalue()
    view.on_line("/accept 1")
    view.on_line("/reject 2")
    assert node.accepted == [("s1", True), ("s2", False)]
    view.on_line("/accept 2")
    assert "Chat 2 is not asking for an answer." in out.getvalue()


def test_a_y_typed_ahead_answers_the_next_single_question():
    view, node, _ = make()
    view.on_line("y")
    view.on_event(IncomingChat("s1", "127.0.0.9:1", "bob"))
    assert node.accepted == [("s1", True)]
