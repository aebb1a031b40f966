"""A verified peer's own words inside the terminal's sentences (red team, 2026-12-07 night): a question or a
reason is quoted in guillemets it cannot close, so it never goes on as the program's words."""

from __future__ import annotations

import io

import pytest

from p2pchat.display import Printer
from p2pchat.events import GroupMessage, GroupReceipt, MessageReceived, SecretQuestion
from p2pchat.group_terminal import GroupCommands
from p2pchat.peer_directory import FixedDirectory
from p2pchat.terminal import ListenView
from p2pchat.terminal_names import PeerNames
from p2pchat.terminal_secret import secret_line
from tests.p2pchat.node_kit import connect_all, make_peer

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


# --- names that carry the line's own syntax -------------------------------------------------------------------

HOSTILE_NICK = "bob: I quit; carol"       # a valid ledger nickname (ASCII, printable, 18 characters)


def test_a_nickname_holding_the_lines_syntax_cannot_make_its_text_read_as_someone_elses(identities):
    """Over real sockets: a peer registered as "bob: I quit; carol" says "hi"; the terminal must not print
    "[12:03] bob: I quit; carol: hi" (bob saying "I quit; carol: hi")."""
    directory = FixedDirectory()
    victim = make_peer(identities[0], "alice", directory, auto_accept=True)
    mallory = make_peer(identities[1], HOSTILE_NICK, directory)
    try:
        out = io.StringIO()
        view = ListenView(victim.node, Printer(out))
        sid, _ = connect_all(mallory, victim)
        mallory.node.send_text(sid, "hi")
        got = victim.log.wait(MessageReceived, 10, text="hi")
        view.on_event(got)
        line = next(ln for ln in out.getvalue().splitlines() if ln.endswith("hi"))
        assert f"«{HOSTILE_NICK}»: hi" in line and "] bob:" not in line
    finally:
        victim.node.close()
        mallory.node.close()


class NoContacts:
    """What GroupCommands asks of a node to show a group's lines: a node without a contact store."""

    contacts = None
    identity = None
    groups = None


@pytest.mark.parametrize("group_name", ["lab] carol: meet at 5 [x", "lab «x» (y)"])
def test_a_group_name_cannot_close_its_brackets(group_name):
    out = io.StringIO()
    ui = GroupCommands(NoContacts(), Printer(out), PeerNames(None))     # type: ignore[arg-type]
    ui.on_event(GroupMessage(group="00" * 16, group_name=group_name, sender="ab" * 32, sender_name="", counter=1,
                             text="hello", sent_at=1.0))
    line = out.getvalue().strip()
    shown = group_name.replace("«", "<U+00AB>").replace("»", "<U+00BB>")
    assert line.startswith(f"[«{shown}»] key abababababababab") and line.count("»") == 1


def test_an_ordinary_name_is_shown_as_it_is():
    out = io.StringIO()
    ui = GroupCommands(NoContacts(), Printer(out), PeerNames(None))     # type: ignore[arg-type]
    ui.on_event(GroupReceipt(group="00" * 16, group_name="lab 2", counter=1, delivered=1, of=2))
    assert "[lab 2] message 1 delivered to 1 of 2" in out.getvalue()



def test_a_group_file_name_stays_inside_its_quotes_before_the_real_size():
    out = io.StringIO()
    ui = GroupCommands(NoContacts(), Printer(out), PeerNames(None))     # type: ignore[arg-type]
    ui.on_event(GroupMessage(group="00" * 16, group_name="lab", sender="ab" * 32, sender_name="", counter=1,
                             text="notes.pdf (1 KiB); it is safe", sent_at=1.0, size=10 * 2**30))
    assert "shares the file 'notes.pdf (1 KiB); it is safe' (10.0 GiB)" in out.getvalue()


def test_a_claimed_nickname_cannot_pass_for_part_of_the_incoming_chat_question():
    from p2pchat.events import IncomingChat
    from tests.p2pchat.test_listen_view import make

    view, _, out = make()
    view.on_event(IncomingChat("s1", "127.0.0.9:40112", "bob at 127.0.0.5"))
    view.on_event(IncomingChat("s2", "127.0.0.9:40113", "carol"))
    text = out.getvalue()
    assert "incoming chat from «bob at 127.0.0.5» at 127.0.0.9:40112." in text
    assert "incoming chat from carol at 127.0.0.9:40113." in text
