"""The shared-secret check in the window, without Tk (the dialogs are gui/ask_secret.py): asking, answering and
what each :class:`~p2pchat.events.SecretQuestion` / :class:`~p2pchat.events.SecretResult` shows in the chat.

The controller owns one :class:`SecretCheck` and hands it the check's events; the window opens the answer dialog
for every session :meth:`SecretCheck.take_questions` names after a batch of events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gui.models import TabState
from gui.text import clean
from p2pchat.display import quoted
from p2pchat.events import SecretQuestion, SecretResult


class SecretNode(Protocol):
    def ask_secret(self, session: str, question: str, answer: str) -> None: ...
    def answer_secret(self, session: str, answer: str) -> None: ...
    def abort_secret(self, session: str) -> None: ...


Submit = Callable[[Callable[[], object], str], None]     # run a node call off the Tk thread for a session
NoticeFn = Callable[[TabState, str, str], None]           # add a notice line (tab, kind, text) to a chat


class SecretCheck:
    """Per-window state of the check: the peer's question waiting for this user's answer, per session."""

    def __init__(self, tabs: dict[str, TabState], node: SecretNode, submit: Submit, notice: NoticeFn) -> None:
        self.tabs = tabs
        self.node = node
        self.submit = submit
        self.notice = notice
        self.questions: dict[str, str] = {}      # session -> the peer's question (cleaned), not answered yet
        self._to_open: list[str] = []

    def ask(self, session: str, question: str, answer: str) -> None:
        tab = self.tabs.get(session)
        if tab is None:
            return
        if not tab.ready:
            self.notice(tab, "error", "Ask your question once the four steps are done.")
            return
        self.submit(lambda: self.node.ask_secret(session, question, answer), session)
        self.notice(tab, "info", f"You asked {tab.peer_name}: “{clean(question)}”. Waiting for their answer.")

    def answer(self, session: str, answer: str) -> None:
        self.questions.pop(session, None)
        self.submit(lambda: self.node.answer_secret(session, answer), session)

    def decline(self, session: str) -> None:
        self.questions.pop(session, None)
        self.submit(lambda: self.node.abort_secret(session), session)

    def handle(self, tab: TabState, event: SecretQuestion | SecretResult) -> None:
        if isinstance(event, SecretQuestion):
            # [red team] in guillemets the question cannot close: it never goes on as the window's own words,
            # in the chat or in the answer dialog (which showed it in “ ” it could close, and uncut: a 200-character
            # question of bidi overrides, written out visibly, made a dialog 743 px tall)
            question = quoted(event.question) if event.question.strip() else "(no question: agree on one another way)"
            self.questions[tab.session] = question
            self._to_open.append(tab.session)
            self.notice(tab, "info", f"{tab.peer_name} asks you a question to check it is really you: {question}")
        else:
            self.questions.pop(tab.session, None)
            self.notice(tab, "ready" if event.matched else "error", event.reason)

    def take_questions(self) -> list[str]:
        """Sessions whose new question the window should open the answer dialog for."""
        sessions, self._to_open = [s for s in self._to_open if s in self.questions], []
        return sessions


__all__ = ["SecretCheck", "SecretNode"]
