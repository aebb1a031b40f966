"""The terminal UI loops driven in-process: standard input is a pipe, output a string buffer, the peer a real
node on another loopback address."""

from __future__ import annotations

import io
import os
import threading

from p2pchat.events import IncomingChat, MessageReceived, SessionEnded, StepResult
from p2pchat.node import ChatNode
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from p2pchat.terminal import LineInput, run_chat, run_listen
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import entry, make_peer, reading_ui


def piped(*lines: str, close: bool = True) -> tuple[int, int]:
    r, w = os.pipe()
    os.write(w, "".join(line + "\n" for line in lines).encode())
    if close:
        os.close(w)
    return r, w


def test_line_input_splits_lines_and_keeps_a_last_partial_line_for_eof():
    r, w = os.pipe()
    os.write(w, b"one\ntwo\r\nthr")
    reader = LineInput(r)
    assert reader.read_lines(1.0) == ["one", "two"]
    os.write(w, "ée".encode())
    os.close(w)
    got = []
    while not reader.eof:
        got += reader.read_lines(1.0)
    assert got == ["thrée"]
    os.close(r)


def test_chat_runs_the_steps_sends_piped_lines_and_exits_zero_at_end_of_input(identities):
    directory = FixedDirectory()
    bob = make_peer(identities[1], "bob", directory, auto_accept=True, rotate_every=2)
    ip = free_loopback_ip()
    directory.add(entry(identities[0], "alice", ip, 8471))
    alice = ChatNode(identities[0], host=ip, nickname="alice", directory=directory, listen=False, rotate_every=2)
    alice.start()
    r, _ = piped("hello", "/status", "", "ünïcode ✓", "/verify", "/bogus", "third")
    out = io.StringIO()
    try:
        with reading_ui(bob.log):       # bob's UI reads: his receipts mean his UI took the messages
            code = run_chat(alice, f"{bob.ip}:{bob.node.port}", stdin_fd=r, out=out)
    finally:
        alice.close()
        bob.node.close()
        os.close(r)
    text = out.getvalue()
    assert code == 0, text
    for step in Step:
        assert f"✓ {step.label} — " in text
    assert "Chat ready with bob (path: direct)" in text
    assert "3 message(s) sent, 3 delivered." in text
    assert "unknown command /bogus" in text
    assert "The safety number is known once step 2" in text        # /status and /verify ran before ready
    assert [m.text for m in bob.log.all(MessageReceived)] == ["hello", "ünïcode ✓", "third"]
    ended = bob.log.wait(SessionEnded)
    assert ended.clean and "alice left the chat" in ended.reason


def test_chat_with_an_unreachable_peer_prints_the_failed_step_and_exits_one(identities):
    ip = free_loopback_ip()
    node = ChatNode(identities[0], host=ip, nickname="alice", directory=FixedDirectory(), listen=False)
    node.start()
    r, _ = piped()
    out = io.StringIO()
    try:
        code = run_chat(node, f"{free_loopback_ip()}:9", stdin_fd=r, out=out)
    finally:
        node.close()
        os.close(r)
    assert code == 1
    assert "✗ 1 Connect — cannot reach" in out.getvalue()


def test_listen_asks_accepts_prints_messages_and_answers_typed_lines(identities):
    directory = FixedDirectory()
    caller = make_peer(identities[0], "carol", directory)
    ip = free_loopback_ip()
    listener = ChatNode(identities[1], host=ip, port=0, nickname="dave", directory=directory)
    listener.start()
    directory.add(entry(identities[1], "dave", ip, listener.port))
    r, w = piped("y", "typed before choosing a chat", close=False)
    out = io.StringIO()
    sid = caller.node.open_session(f"{ip}:{listener.port}")
    caller.node.run_all(sid)

    def drive_caller() -> None:
        caller.log.wait(StepResult, 20, step=Step.AGREE_KEY, ok=True)
        # the listener finishes step 4 on its own side a moment later: type only once it says so
        wait_until(lambda: "✓ 4 Agree AES key" in out.getvalue(), 20, what="step 4 in listen's output")
        os.write(w, b"/to 1\na typed answer\n")           # the user picks chat 1, then writes to it
        caller.node.send_text(sid, "knock knock")
        caller.log.wait(MessageReceived, 20, text="a typed answer")
        caller.node.end_session(sid)

    driver = threading.Thread(target=drive_caller)
    driver.start()
    try:
        code = run_listen(listener, stdin_fd=r, out=out, accept_all=False, once=True)
    finally:
        driver.join()
        listener.close()
        caller.node.close()
        os.close(w)
        os.close(r)
    text = out.getvalue()
    assert code == 0, text
    assert "Chat 1: incoming chat from carol at " in text and "Accept? [y/n]" in text
    assert "Accepted chat 1 (carol)." in text
    assert "! not sent: no chat is chosen. Type /to N" in text
    assert "[1] Chat 1 with carol is ready" in text and "Lines you type now go to chat 1 (carol)" in text
    assert "] carol: knock knock" in text
    assert "Chat 1 with carol ended: carol left the chat" in text
    assert caller.log.all(IncomingChat) == []
    assert [m.text for m in caller.log.all(MessageReceived)] == ["a typed answer"]


def test_listen_offers_a_file_with_send_and_answers_offers_with_accept_and_decline(identities, tmp_path):
    from p2pchat.events import FileFinished, FileOffer

    directory = FixedDirectory()
    caller = make_peer(identities[0], "carol", directory, downloads=tmp_path / "carol")
    ip = free_loopback_ip()
    listener = ChatNode(identities[1], host=ip, port=0, nickname="dave", directory=directory,
                        downloads=tmp_path / "dave")
    listener.start()
    directory.add(entry(identities[1], "dave", ip, listener.port))
    (tmp_path / "notes.txt").write_text("from carol\n")
    (tmp_path / "answer.txt").write_text("from dave\n")
    r, w = piped("y", close=False)
    out = io.StringIO()
    sid = caller.node.open_session(f"{ip}:{listener.port}")
    caller.node.run_all(sid)

    def drive_caller() -> None:
        caller.log.wait(StepResult, 20, step=Step.AGREE_KEY, ok=True)
        first = caller.node.send_file(sid, str(tmp_path / "notes.txt"))
        wait_until(lambda: "F1: carol offers" in out.getvalue(), 20, what="the offer in listen's output")
        os.write(w, b"/accept\n")                          # the latest offer
        caller.log.wait(FileFinished, 20, transfer=first, ok=True)
        second = caller.node.send_file(sid, str(tmp_path / "notes.txt"))
        wait_until(lambda: "F2: carol offers" in out.getvalue(), 20, what="the second offer")
        os.write(w, b"/decline F2\n")
        caller.log.wait(FileFinished, 20, transfer=second, state="declined")
        os.write(w, f"/to 1\n/send {tmp_path / 'answer.txt'}\n".encode())
        offer = caller.log.wait(FileOffer, 20, name="answer.txt")
        caller.node.answer_file(sid, offer.transfer, True)
        caller.log.wait(FileFinished, 20, transfer=offer.transfer, ok=True)
        caller.node.end_session(sid)

    failed: list[BaseException] = []

    def guarded() -> None:
        try:
            drive_caller()
        except BaseException as exc:       # end the chat so that listen returns, then fail the test
            failed.append(exc)
            caller.node.end_session(sid)

    driver = threading.Thread(target=guarded)
    driver.start()
    try:
        code = run_listen(listener, stdin_fd=r, out=out, accept_all=False, once=True)
    finally:
        driver.join()
        listener.close()
        caller.node.close()
        os.close(w)
        os.close(r)
    text = out.getvalue()
    assert not failed, f"{failed[0]}\n{text}"
    assert code == 0, text
    assert "F1: carol offers the file 'notes.txt' (11 bytes); it would be saved as 'notes.txt'." in text
    assert "✓ F1 notes.txt: saved as " in text
    assert "✗ F2 notes.txt: you declined the file" in text
    assert "F3: offered answer.txt; waiting for the peer to accept" in text
    assert "✓ F3 answer.txt: delivered" in text
    assert (tmp_path / "dave" / "notes.txt").read_text() == "from carol\n"
    assert not (tmp_path / "dave" / "notes (1).txt").exists()
    assert (tmp_path / "carol" / "answer.txt").read_text() == "from dave\n"
def test_chat_ask_prompts_for_the_answer_and_prints_the_result(identities):
    """``/ask QUESTION`` then the answer on the next line (not sent as a message); bob answers the same."""
    from p2pchat.events import SecretQuestion, SecretResult
    from tests.helpers import wait_until

    directory = FixedDirectory()
    bob = make_peer(identities[1], "bob", directory, auto_accept=True)
    ip = free_loopback_ip()
    directory.add(entry(identities[0], "alice", ip, 8471))
    alice = ChatNode(identities[0], host=ip, nickname="alice", directory=directory, listen=False)
    alice.start()
    r, w = piped(close=False)
    out = io.StringIO()

    def bob_side() -> None:
        try:
            bob.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
            # alice's own step 4 may end a moment after bob's: type only once her chat says it is ready
            wait_until(lambda: "Chat ready with bob" in out.getvalue(), 20, what="alice's chat to be ready")
            os.write(w, b"/ask Where did we meet?\n  The Old Mill \n")
            question = bob.log.wait(SecretQuestion)
            bob.node.answer_secret(question.session, "the old mill")
            wait_until(lambda: "answered your question" in out.getvalue(), 15.0, what="alice's result")
        finally:
            os.close(w)

    helper = threading.Thread(target=bob_side)
    helper.start()
    try:
        code = run_chat(alice, f"{bob.ip}:{bob.node.port}", stdin_fd=r, out=out)
    finally:
        helper.join()
        alice.close()
        bob.node.close()
        os.close(r)
    text = out.getvalue()
    assert code == 0, text
    assert "Now type your own answer" in text
    assert ("✓ bob answered your question with the same secret (no contact store here: nothing was marked)"
            in text), text
    assert bob.log.all(SecretResult)[0].matched
    assert bob.log.all(MessageReceived) == []          # the answer was never sent as a message
