"""A peer whose nickname reads like a contact's name (a look-alike: "bоb" with a Cyrillic о, "B0B", or simply the
name the user gave a contact) is marked wherever the window names it, once step 2 showed its key is not that
contact's: the tab title, the sentences that name the peer and the sender of its messages; two contacts whose
names read alike are both marked in the conversation list. The presenter runs over a real contact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from gui.controller import ChatController
from gui.text import looks_alike
from gui.worker import CommandWorker
from p2pchat.contacts import ContactStore
from p2pchat.events import IncomingChat, MessageReceived, SessionInfo, SessionUpdated
from p2pchat.foundation.identity import Identity
from p2pchat.steps import Step
from tests.gui.test_gui_controller import FakeNode, connect_to

DONE = (Step.CONNECT, Step.SWAP_KEYS)


def spaced(fp: str) -> str:
    return " ".join(fp[i:i + 4] for i in range(0, 32, 4))


@pytest.mark.parametrize(("a", "b"), [("bob", "bоb"), ("bob", "BOB"), ("carol", "caro1"), ("Iris", "lris"),
                                      ("bob", "b\u200bob"), ("bob", " bob ")])
def test_names_a_reader_could_take_for_each_other_look_alike(a: str, b: str) -> None:
    assert looks_alike(a, b)


@pytest.mark.parametrize(("a", "b"), [("bob", "rob"), ("bob", ""), ("", ""), ("alice", "alicia")])
def test_different_names_do_not(a: str, b: str) -> None:
    assert not looks_alike(a, b)


@pytest.fixture
def store(tmp_path: Path, identities: list[Identity]) -> ContactStore:
    (tmp_path / "contacts").mkdir()
    s = ContactStore.in_data_dir(tmp_path / "contacts")
    bob = identities[1]
    s.record_chat(bob.public_der, bob.fingerprint, nickname="bob", ip="127.0.0.3", address="127.0.0.3:8471")
    return s


@pytest.fixture
def ctl(store: ContactStore, worker: CommandWorker, clock) -> ChatController:
    c = ChatController(FakeNode(), worker, nickname="alice", clock=clock, contacts=store)
    c.refresh_contacts()
    return c


def test_a_stranger_whose_nickname_reads_like_a_contacts_is_marked_once_its_key_is_known(
        ctl: ChatController, worker: CommandWorker, identities: list[Identity]) -> None:
    mallory = identities[2].fingerprint.hex()
    session = connect_to(ctl, worker, "127.0.0.9")
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.9", peer_nickname="bоb",
                                          peer_fingerprint=spaced(mallory), steps_done=DONE)))
    tab = ctl.tabs[session]
    assert tab.title.startswith("⚠ ") and "bоb" in tab.title
    assert tab.peer_name == "bоb (not your contact bob)"
    ctl.handle(MessageReceived(session, 1, "it's me, new laptop", "bоb", 1.0, 1.0))
    assert tab.lines[-1].sender == "bоb (not your contact bob)"


def test_an_incoming_chat_claiming_a_name_that_reads_like_a_contacts_says_so_before_it_is_accepted(
        ctl: ChatController) -> None:
    ctl.handle(IncomingChat("s9", "127.0.0.9:40000", "B0B"))
    prompt = ctl.take_changes().prompts[0]
    assert prompt.question == ("Someone at 127.0.0.9:40000, calling itself «B0B» (not checked yet), wants to chat "
                               "with you. The name reads like your contact bob: step 2 shows whether it is their key.")
    ctl.handle(IncomingChat("s10", "127.0.0.9:40001", "carol"))
    assert "reads like" not in ctl.take_changes().prompts[0].question


def test_the_contact_itself_is_not_marked(ctl: ChatController, worker: CommandWorker,
                                          identities: list[Identity]) -> None:
    session = connect_to(ctl, worker, "127.0.0.3")
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.3", peer_nickname="bob",
                                          peer_fingerprint=spaced(identities[1].fingerprint.hex()), steps_done=DONE)))
    tab = ctl.tabs[session]
    assert tab.title == "bob" and tab.peer_name == "bob"


def test_two_contacts_whose_names_read_alike_are_both_marked_in_the_list(
        ctl: ChatController, store: ContactStore, identities: list[Identity]) -> None:
    mallory = identities[2]
    store.record_chat(mallory.public_der, mallory.fingerprint, nickname="BOB", ip="127.0.0.9", address=None)
    ctl.refresh_contacts()
    titles = sorted(row.title for row in ctl.contact_rows())
    assert titles == ["BOB ⚠ looks like bob", "bob ⚠ looks like BOB"]
