"""The terminal's commands of the shared-secret check (issue 17): ``/ask QUESTION`` (then your answer on the next
line, which is not sent as a message) or ``/ask QUESTION | ANSWER``, ``/answer TEXT``, ``/ask-stop``; and how its
events are printed. Used by both ``p2pchat chat`` and ``p2pchat listen`` (:mod:`p2pchat.terminal`)."""

from __future__ import annotations

from collections.abc import Callable

from p2pchat.display import Printer, quoted
from p2pchat.events import Event, SecretQuestion, SecretResult
from p2pchat.foundation.errors import UserError
from p2pchat.node import ChatNode

SECRET_HELP = ("/ask QUESTION (then type your answer), or /ask QUESTION | ANSWER: check it is really them with a "
               "question only they can answer; /answer TEXT answers their question; /ask-stop stops a check.")
COMMANDS = ("/ask", "/answer", "/ask-stop")


class SecretCommands:
    """The commands for one terminal; ``pending`` is the chat whose question still needs this user's answer."""

    def __init__(self, node: ChatNode, p: Printer) -> None:
        self.node = node
        self.p = p
        self.pending: tuple[str, str] | None = None     # (session, question) of an /ask waiting for the answer

    def on_line(self, sid: str | None, line: str) -> bool:
        """Handle ``line`` if it belongs to the check (a command, or the answer an /ask prompted for)."""
        command = line.strip()
        word, _, arg = command.partition(" ")
        if self.pending is not None and not command.startswith("/"):
            session, question = self.pending
            self.pending = None
            self._run(lambda: self.node.ask_secret(session, question, command))
            return True
        if word not in COMMANDS:
            return False
        if sid is None:
            self.p.line("Choose a chat first (/to N), then ask or answer there.")
            return True
        arg = arg.strip()
        if word == "/ask-stop":
            self.pending = None
            self._run(lambda: self.node.abort_secret(sid))
        elif word == "/answer":
            if not arg:
                self.p.line("Type your answer after it: /answer TEXT")
            else:
                self._run(lambda: self.node.answer_secret(sid, arg))
        elif not arg:
            self.p.line(SECRET_HELP)
        else:
            question, bar, answer = arg.partition("|")
            if bar and answer.strip():
                self._run(lambda: self.node.ask_secret(sid, question.strip(), answer))
            else:
                self.pending = (sid, question.strip())
                self.p.line("Now type your own answer to that question (it is not sent; only whether the two "
                            "answers match is learnt):")
        return True

    def _run(self, action: Callable[[], None]) -> None:
        try:
            action()
        except UserError as exc:
            self.p.line(f"! {exc}")


def secret_line(ev: Event) -> str | None:
    """The line for a check's event (``None`` for other events); the peer's question is shown as data."""
    if isinstance(ev, SecretQuestion):
        # in guillemets the question cannot close, so it cannot go on as this program's words
        question = quoted(ev.question) if ev.question else "(no question: agree on one another way)"
        return (f"? your peer asks you a question to check it is really you: {question} — reply with /answer TEXT "
                "(answers match whatever the case and surrounding spaces), or /ask-stop")
    if isinstance(ev, SecretResult):
        return ("✓ " if ev.matched else "✗ ") + ev.reason
    return None


__all__ = ["COMMANDS", "SECRET_HELP", "SecretCommands", "secret_line"]
