"""The shared-secret check between two real chat nodes over loopback sockets, inside the encrypted channel: the
same answer marks the contact verified on both sides; different answers mark nothing."""

from __future__ import annotations

from pathlib import Path

from p2pchat.contacts import ContactStore
from p2pchat.events import SecretQuestion, SecretResult
from p2pchat.peer_directory import FixedDirectory
from tests.p2pchat.node_kit import connect_all, make_peer


def verified(data_dir: Path, fp: bytes) -> bool:
    store = ContactStore.in_data_dir(data_dir)
    try:
        contact = store.get(fp)
        return contact is not None and contact.verified
    finally:
        store.close()


def test_the_same_answer_marks_the_contact_verified_on_both_sides(tmp_path, identities):
    alice_id, bob_id = identities[:2]
    directory = FixedDirectory()
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    alice = make_peer(alice_id, "alice", directory, data_dir=tmp_path / "alice")
    bob = make_peer(bob_id, "bob", directory, data_dir=tmp_path / "bob", auto_accept=True)
    try:
        sid, bob_sid = connect_all(alice, bob)
        alice.node.ask_secret(sid, "Where did we first meet?", "The Old Mill")
        question = bob.log.wait(SecretQuestion, session=bob_sid)
        assert question.question == "Where did we first meet?"
        bob.node.answer_secret(bob_sid, "  the old mill")
        mine = alice.log.wait(SecretResult, session=sid)
        theirs = bob.log.wait(SecretResult, session=bob_sid)
        assert mine.matched and theirs.matched
        assert mine.reason == "bob answered your question with the same secret: marked verified"
        assert theirs.reason == "you answered alice's question with the same secret: marked verified"
        assert alice.node.session_info(sid).peer_verified is True

        # a second run with different answers: nothing more is marked, both are told plainly
        bob.node.ask_secret(bob_sid, "Your cat's name?", "Tom")
        second = alice.log.wait(SecretQuestion, session=sid, question="Your cat's name?")
        assert second.session == sid
        alice.node.answer_secret(sid, "Felix")
        results = [r for r in (alice.log.wait(SecretResult, session=sid, matched=False),
                               bob.log.wait(SecretResult, session=bob_sid, matched=False))]
        assert all("the answers differ" in r.reason for r in results)
    finally:
        alice.node.close()
        bob.node.close()
    assert verified(tmp_path / "alice", bob_id.fingerprint)
    assert verified(tmp_path / "bob", alice_id.fingerprint)


def test_both_asking_at_once_and_a_stopped_check_end_plainly_and_the_chat_goes_on(identities):
    from p2pchat.events import MessageReceived
    from tests.helpers import wait_until
    from tests.p2pchat.node_kit import pair

    with pair(identities[:2]) as (alice, bob, _):
        sid, bob_sid = connect_all(alice, bob)
        alice.node.ask_secret(sid, "First?", "one")
        bob.node.ask_secret(bob_sid, "Second?", "two")
        mine = alice.log.wait(SecretResult, session=sid)
        theirs = bob.log.wait(SecretResult, session=bob_sid)
        assert not mine.matched and not theirs.matched
        assert {"you both asked a question at once" in r.reason or "stopped the check" in r.reason
                for r in (mine, theirs)} == {True}

        # bob is asked and declines: alice is told; then the chat still carries texts
        alice.node.ask_secret(sid, "Third?", "three")
        bob.log.wait(SecretQuestion, session=bob_sid, question="Third?")
        bob.node.abort_secret(bob_sid)
        results = wait_until(lambda: (lambda rs: rs if len(rs) >= 2 else None)(alice.log.all(SecretResult,
                                                                                           session=sid)),
                             10.0, what="alice's second result")
        assert len(results) == 2 and results[-1] == SecretResult(sid, False, "bob stopped the check")
        alice.node.send_text(sid, "still here")
        bob.log.wait(MessageReceived, text="still here")
