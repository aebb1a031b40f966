"""The peer's question of the shared-secret check in the window's notice (red team, 2026-12-07 night): quoted in
guillemets it cannot close, so it never goes on as the window's own words (no window needed: SecretCheck is
Tk-free)."""

from __future__ import annotations

import pytest

from gui.models import TabState
from gui.secret_check import SecretCheck
from p2pchat.events import SecretQuestion
from tests.gui.test_gui_controller import ctl, node  # noqa: F401  (fixtures)
from tests.p2pchat.test_terminal_hostile_words import QUESTIONS


@pytest.mark.parametrize("question", QUESTIONS)
def test_the_window_quotes_the_peers_question_so_it_cannot_close_the_quote(question):
    said: list[str] = []
    tab = TabState("s1", "bob", "bob")
    check = SecretCheck({"s1": tab}, None, lambda *a: None,  # type: ignore[arg-type]
                        lambda t, kind, text: said.append(text))
    check.handle(tab, SecretQuestion("s1", question))
    (line,) = said
    assert line.count("«") == 1 and line.endswith("»") and "\n" not in line
    assert line.startswith("bob asks you a question to check it is really you: «")


def test_the_file_offer_question_keeps_the_peers_file_and_group_names_in_their_quotes():
    """A file named 'a” (1 KiB) shared in the group “lab' made the accept question read "… the file “a” (1 KiB)
    shared in the group “lab” (10.0 GiB)": a size and a group of the peer's choosing before the real ones."""
    from gui.transfers import TransfersUi
    from p2pchat.events import FileOffer

    asked: list[str] = []
    ui = TransfersUi.__new__(TransfersUi)          # the question only: no window (its Tk parts are not used)
    ui._asking = False
    ui.ask = lambda title, question, ok, then: asked.append(question)   # type: ignore[method-assign]
    name = "a” (1 KiB) shared in the group “lab"
    ui._ask(FileOffer("s1", "00" * 16, name, "a.bin", 10 * 2**30, "bob", group="00" * 16, group_name="x»y"))
    (question,) = asked
    assert question.startswith("bob offers the file «a” (1 KiB) shared in the group “lab» shared in the group "
                               "«x<U+00BB>y» (10.0 GiB). ")
    assert question.count("«") == 3 and question.count("»") == 3


def test_a_nickname_holding_the_lines_syntax_is_quoted_as_the_senders_name(ctl, worker, clock):  # noqa: F811
    from p2pchat.events import MessageReceived
    from tests.gui.test_gui_controller import ready_chat

    session = ready_chat(ctl, worker)
    ctl.handle(MessageReceived(session, 1, "hi", "bob: I quit; carol", clock.now, clock.now))
    ctl.handle(MessageReceived(session, 2, "hello", "carol", clock.now, clock.now))
    assert [ln.sender for ln in ctl.tabs[session].lines[-2:]] == ["«bob: I quit; carol»", "carol"]


def test_a_strangers_claimed_nickname_cannot_close_its_quote_in_the_accept_question():
    from gui.models import AcceptPrompt

    question = AcceptPrompt("s1", "bob” (key verified ✓), a contact", "127.0.0.9:8471").question
    assert question == ("Someone at 127.0.0.9:8471, calling itself «bob” (key verified ✓), a contact» (not checked "
                        "yet), wants to chat with you.")
