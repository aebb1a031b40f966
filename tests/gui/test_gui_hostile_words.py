"""The peer's question of the shared-secret check in the window's notice (red team, 2026-12-07 night): quoted in
guillemets it cannot close, so it never goes on as the window's own words (no window needed: SecretCheck is
Tk-free)."""

from __future__ import annotations

import pytest

from gui.models import TabState
from gui.secret_check import SecretCheck
from p2pchat.events import SecretQuestion
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
