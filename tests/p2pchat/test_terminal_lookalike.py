"""The terminal marks a look-alike of a contact the way the window does: the user has chatted with "bob" (a contact
on his key); "bоb" (Cyrillic о, registered on another key) calls or is called. Driven in-process like
tests/p2pchat/test_terminal.py: standard input a pipe, output a string buffer, the peers real nodes on loopback
addresses."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

from p2pchat.contacts import ContactStore
from p2pchat.events import StepResult
from p2pchat.foundation.identity import Identity
from p2pchat.node import ChatNode
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from p2pchat.terminal import run_chat, run_listen
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, entry, make_peer, reading_ui

LOOKALIKE = "b\u043eb"      # "bоb": Cyrillic small o
MARKED = "b\u043eb (not your contact bob; non-ASCII: \u043e=U+043E) \u26a0"


def contacts_knowing_bob(tmp_path: Path, bob: Identity) -> ContactStore:
    store = ContactStore.in_data_dir(tmp_path)
    store.record_chat(bob.public_der, bob.fingerprint, nickname="bob", ip="127.0.0.3", address="127.0.0.3:8471")
    return store


def driven(drive: Callable[[], None], on_failure: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """``drive`` on a thread of its own; a failure is kept (and ``on_failure`` lets the terminal loop return)."""
    failed: list[BaseException] = []

    def guarded() -> None:
        try:
            drive()
        except BaseException as exc:
            failed.append(exc)
            on_failure()
    thread = threading.Thread(target=guarded)
    thread.start()
    return thread, failed


def test_listen_marks_a_look_alike_of_a_contact_and_never_the_contact_itself(identities, tmp_path):
    directory = FixedDirectory()
    bob = make_peer(identities[1], "bob", directory)
    mallory = make_peer(identities[2], LOOKALIKE, directory)
    ip = free_loopback_ip()
    listener = ChatNode(identities[0], host=ip, port=0, nickname="alice", directory=directory,
                        contacts=contacts_knowing_bob(tmp_path, identities[1]))
    listener.start()
    directory.add(entry(identities[0], "alice", ip, listener.port))
    (tmp_path / "notes.txt").write_text("from bоb\n")
    r, w = os.pipe()
    out = io.StringIO()

    def seen(text: str) -> None:
        wait_until(lambda: text in out.getvalue(), 20, what=f"{text!r} in listen's output")

    def call(peer: Peer, number: int, message: str) -> str:
        sid = peer.node.open_session(f"{ip}:{listener.port}")
        peer.node.run_all(sid)
        seen(f"Chat {number}: incoming chat from ")
        os.write(w, f"/accept {number}\n".encode())
        peer.log.wait(StepResult, 20, step=Step.AGREE_KEY, ok=True)
        seen(f"Chat {number} with ")
        peer.node.send_text(sid, message)
        seen(message)
        return sid

    def drive() -> None:
        call(bob, 1, "hello from bob")
        msid = call(mallory, 2, "it is bob, new laptop")
        mallory.node.send_file(msid, str(tmp_path / "notes.txt"))
        seen("F1: ")
        os.write(w, b"/list\n/status 2\n")
        seen("peer:   ")
        os.write(w, b"/quit\n")

    thread, failed = driven(drive, lambda: os.write(w, b"/quit\n"))
    try:
        code = run_listen(listener, stdin_fd=r, out=out, accept_all=False)
    finally:
        thread.join()
        for node in (listener, bob.node, mallory.node):
            node.close()
        os.close(w)
        os.close(r)
    text = out.getvalue()
    assert not failed, f"{failed[0]}\n{text}"
    assert code == 0, text
    lines = text.splitlines()
    # bob on his own key: the prompt says the name reads like a contact's, step 2 says the key is his, no mark
    assert "Chat 1: incoming chat from bob at " in text
    assert "[1] ✓ the key is your contact bob's." in lines
    assert "[1] Chat 1 with bob is ready" in text
    assert any(line.startswith("[1] [") and line.endswith("] bob: hello from bob") for line in lines), text
    # bоb on another key: warned before it is accepted, at step 2, and marked wherever it is named
    prompt = next(line for line in lines if line.startswith("Chat 2: incoming chat from "))
    assert prompt.startswith("Chat 2: incoming chat from b\u043eb (non-ASCII: \u043e=U+043E) at ")
    assert "\u26a0 The name reads like your contact bob: step 2 shows whether it is their key. Accept? [y/n]" in prompt
    assert any(line.startswith("[2] \u26a0 b\u043eb (non-ASCII: \u043e=U+043E) is not your contact bob: the name "
                               "reads like theirs, the key (") for line in lines), text
    assert f"[2] Chat 2 with {MARKED} is ready" in text
    assert any(line.startswith("[2] [") and line.endswith(f"] {MARKED}: it is bob, new laptop") for line in lines), text
    assert f"[2] F1: {MARKED} offers the file 'notes.txt'" in text
    assert any(line.startswith(f"  2  {MARKED} at ") for line in lines), text
    assert any(line.startswith("  1  bob at ") for line in lines), text
    assert any(line.startswith(f"peer:   {MARKED}  ") for line in lines), text
    assert "not your contact" not in "".join(line for line in lines if line.startswith("[1]"))


def test_chat_with_a_look_alike_warns_after_step_2_and_marks_its_messages(identities, tmp_path):
    directory = FixedDirectory()
    mallory = make_peer(identities[2], LOOKALIKE, directory, auto_accept=True)
    ip = free_loopback_ip()
    directory.add(entry(identities[0], "alice", ip, 8471))
    alice = ChatNode(identities[0], host=ip, nickname="alice", directory=directory, listen=False,
                     contacts=contacts_knowing_bob(tmp_path, identities[1]))
    alice.start()
    r, w = os.pipe()
    out = io.StringIO()

    def drive() -> None:
        step4 = mallory.log.wait(StepResult, 20, step=Step.AGREE_KEY, ok=True)
        wait_until(lambda: "Chat ready with " in out.getvalue(), 20, what="the chat ready in chat's output")
        mallory.node.send_text(step4.session, "it is bob, new laptop")
        wait_until(lambda: "new laptop" in out.getvalue(), 20, what="the message in chat's output")
        os.close(w)                           # end of input: chat says goodbye and returns

    thread, failed = driven(drive, lambda: os.close(w))
    try:
        with reading_ui(mallory.log):
            code = run_chat(alice, f"{mallory.ip}:{mallory.node.port}", stdin_fd=r, out=out)
    finally:
        thread.join()
        alice.close()
        mallory.node.close()
        os.close(r)
    text = out.getvalue()
    assert not failed, f"{failed[0]}\n{text}"
    assert code == 0, text
    lines = text.splitlines()
    step2 = lines.index(next(line for line in lines if line.startswith("✓ 2 Swap public keys")))
    assert lines[step2 + 1].startswith("\u26a0 b\u043eb (non-ASCII: \u043e=U+043E) is not your contact bob: ")
    assert f"Chat ready with {MARKED} (path: direct)" in text
    assert any(line.startswith("[") and line.endswith(f"] {MARKED}: it is bob, new laptop") for line in lines), text
