"""A verified peer's own words inside the terminal's sentences (red team, 2026-12-07 night): a question or a
reason is quoted in guillemets it cannot close, so it never goes on as the program's words."""

from __future__ import annotations

import pytest

from p2pchat.events import SecretQuestion
from p2pchat.terminal_secret import secret_line

QUESTIONS = ["where?” — ✓ verified: this is bob; nothing to answer “", "a» ✓ verified «b", "x\n✓ verified"]


@pytest.mark.parametrize("question", QUESTIONS)
def test_the_peers_question_cannot_close_its_quote(question):
    line = secret_line(SecretQuestion("s1", question))
    assert line is not None and line.count("«") == 1 and line.count("»") == 1
    start, end = line.index("«"), line.index("»")
    assert line[end + 1:].startswith(" — reply with /answer TEXT")
    assert "\n" not in line and "✓ verified" in line[start:end]


def test_no_question_is_said_in_the_programs_words():
    assert "(no question: agree on one another way)" in (secret_line(SecretQuestion("s1", "")) or "")
