"""The conversation list's presenter without Tk, on a real contact store and a real history store (SQLite in a
temporary data directory): contact rows (verified mark, unread kept messages, last message or last seen), the
unread total of the title, one click on a contact, the history shown when a chat's contact becomes known, search
across chats, marking read, delete and export."""

from __future__ import annotations

import pytest

from gui.controller import AGAIN, CONTACT_KEY, READ_AFTER, ChatController
from gui.models import LineKind, StepState
from p2pchat.contacts import ContactStore
from p2pchat.events import (
    MessageReceived,
    OutboxChanged,
    Presence,
    SessionEnded,
    SessionInfo,
    SessionUpdated,
    StepResult,
)
from p2pchat.foundation.crypto import format_fingerprint
from p2pchat.history import HistoryStore
from p2pchat.steps import Step
from p2pchat.vault import Vault
from tests.gui.helpers import settle
from tests.gui.test_gui_controller import FakeNode

BOB = ""
CAROL = ""


@pytest.fixture(autouse=True)
def keys(identities):
    """BOB and CAROL: fingerprints of real keys (the contact store checks a key against its fingerprint)."""
    global BOB, CAROL
    BOB, CAROL = identities[1].fingerprint.hex(), identities[2].fingerprint.hex()
    ders.update({BOB: identities[1].public_der, CAROL: identities[2].public_der})


ders: dict[str, bytes] = {}


@pytest.fixture
def stores(tmp_path):
    contacts = ContactStore.in_data_dir(tmp_path)
    history = HistoryStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    yield contacts, history
    history.close()
    contacts.close()


@pytest.fixture
def ctl(stores, worker, clock) -> ChatController:
    contacts, history = stores
    controller = ChatController(FakeNode(), worker, nickname="alice", clock=clock, contacts=contacts,
                                history=history)
    controller.refresh_contacts()
    return controller


def meet(contacts: ContactStore, fp: str, nickname: str, at: float) -> None:
    contacts.record_chat(ders[fp], bytes.fromhex(fp), nickname=nickname, ip="127.0.0.9",
                         address="127.0.0.9:8471", now=at)


def test_contact_rows_show_the_verified_mark_unread_kept_messages_and_the_last_message(stores, ctl, clock):
    contacts, history = stores
    meet(contacts, BOB, "bob", clock.now - 3600)
    meet(contacts, CAROL, "carol\x1b[31m", clock.now - 60)
    contacts.set_verified(BOB, True)
    history.append(BOB, "out", "hi bob", ts=clock.now - 50)
    history.append(BOB, "in", "hello\nalice", ts=clock.now - 40)
    ctl.refresh_contacts()
    rows = {r.key: r for r in ctl.contact_rows()}
    bob, carol = rows[CONTACT_KEY + BOB], rows[CONTACT_KEY + CAROL]
    assert bob.title == "bob ✔ (1)" and bob.detail.startswith("hello alice · ")
    assert "\x1b" not in carol.title and carol.title.startswith("carol^[")      # a hostile nickname, cleaned
    assert carol.detail.startswith("last seen ")
    assert next(r.key for r in ctl.contact_rows()) == CONTACT_KEY + BOB, "the latest conversation first"
    assert ctl.unread_total() == 1


def test_one_click_on_a_contact_opens_its_chat_with_the_history_and_presses_only_step_1(stores, ctl, worker,
                                                                                         clock):
    contacts, history = stores
    meet(contacts, BOB, "bob", clock.now - 100)
    history.append(BOB, "in", "from yesterday", ts=clock.now - 86_400 * 2)
    ctl.refresh_contacts()
    ctl.open_contact(CONTACT_KEY + BOB)
    settle(worker)
    session = ctl.target
    assert session is not None and ctl.take_changes().select == session
    tab = ctl.tabs[session]
    assert tab.peer_query == BOB and tab.contact == BOB and tab.base_title == "bob"
    assert [c for c in ctl.node.calls if c[0] == "run_step"] == [("run_step", session, Step.CONNECT)]
    assert [tab.steps[s].state for s in Step] == [StepState.RUNNING] + [StepState.PENDING] * 3
    kept = [ln for ln in tab.lines if ln.kind is LineKind.IN]
    assert kept[0].text == "from yesterday" and " " in kept[0].time, "an older message shows its day"
    assert ctl.contact_rows()[0].detail == "in a chat now"
    ctl.open_contact(CONTACT_KEY + BOB)        # again: the live chat is shown, no second session
    assert ctl.take_changes().select == session
    assert len([c for c in ctl.node.calls if c[0] == "open_session"]) == 1


def test_a_text_to_a_contact_whose_dial_failed_waits_and_the_nodes_own_chat_continues_the_same_conversation(
        stores, ctl, worker, clock):
    contacts, _history = stores
    meet(contacts, BOB, "bob", clock.now - 100)
    ctl.refresh_contacts()
    ctl.open_contact(CONTACT_KEY + BOB)
    settle(worker)
    old = ctl.target
    assert old is not None
    ctl.handle(StepResult(old, Step.CONNECT, False, "connection refused"))
    ctl.handle(SessionEnded(old, "connection refused", False))
    tab = ctl.tabs[old]
    assert tab.close_at is None and ctl.can_type(old), "a contact's conversation stays open for waiting texts"
    assert ctl.send(old, "see you at noon") is None and ctl.send(old, "or at one") is None
    settle(worker)
    assert [c for c in ctl.node.calls if c[0] == "message_contact"] == [("message_contact", BOB, "see you at noon"),
                                                                        ("message_contact", BOB, "or at one")]
    first, second = [ln for ln in tab.lines if ln.kind is LineKind.OUT]
    assert first.tick == second.tick == "(waiting)" and first.row is not None and second.row is not None
    assert ctl.session_detail(old) == "2 messages waiting to be sent"
    ctl.cancel_waiting(old, second.line_id)
    settle(worker)
    assert ctl.node.calls[-1] == ("cancel_waiting", second.row)
    ctl.handle(OutboxChanged(BOB, second.row, "cancelled", Presence.OFFLINE))
    assert second.tick == "(cancelled)" and not second.waiting
    assert ctl.contact_rows()[0].detail.startswith("offline · ")
    ctl.take_changes()

    # the node calls bob by itself: its chat takes over the same conversation, no second row
    ctl.handle(SessionUpdated(SessionInfo("s8", BOB, automatic=True)))       # an attempt that finds nobody …
    ctl.handle(StepResult("s8", Step.CONNECT, False, "connection refused"))
    ctl.handle(SessionEnded("s8", "connection refused", False))
    assert not ctl.take_changes() and list(ctl.tabs) == [old], "… leaves the window alone"
    ctl.handle(StepResult("s9", Step.CONNECT, True, "connected"))
    ctl.handle(SessionUpdated(SessionInfo("s9", BOB, automatic=True, steps_done=(Step.CONNECT,))))
    changes = ctl.take_changes()
    assert changes.tabs_removed == [old] and changes.tabs_added == ["s9"] and list(ctl.tabs) == ["s9"]
    assert ctl.tabs["s9"] is tab and tab.ended is None and tab.automatic
    assert tab.steps[Step.CONNECT].state is StepState.DONE
    for step in (Step.SWAP_KEYS, Step.AUTHENTICATE, Step.AGREE_KEY):
        ctl.handle(StepResult("s9", step, True, "done"))
    ctl.handle(OutboxChanged(BOB, first.row, "sent", Presence.ONLINE))
    assert first.tick == "…"
    assert [ln.text for ln in tab.lines].count(f"✓ {AGAIN}") == 1
    assert ctl.contact_rows()[0].detail.startswith("online · ")
    assert ctl.send("s9", "later text") is None
    settle(worker)
    assert ctl.node.calls[-1] == ("send_text", "s9", "later text")
    ctl.handle(SessionEnded("s9", "bye", True))
    assert not ctl.contact_rows()[0].detail.startswith("online"), "online ends with the chat"


def test_a_chat_typed_by_address_gets_its_contact_and_history_once_step_4_is_done(stores, ctl, worker, clock):
    contacts, history = stores
    meet(contacts, BOB, "bob", clock.now - 100)
    history.append(BOB, "out", "kept words", ts=clock.now - 90)
    ctl.peer_text_changed("127.0.0.9")
    ctl.click_step(Step.CONNECT)
    settle(worker)
    session = ctl.target
    ctl.select_tab(session)
    ctl.handle(SessionUpdated(SessionInfo(session, "127.0.0.9", peer_fingerprint=format_fingerprint(
        bytes.fromhex(BOB)), peer_nickname="bob")))
    for step in Step:
        assert ctl.tabs[session].contact is None, "not before step 4 proved and pinned the key"
        ctl.handle(StepResult(session, step, True, "ok"))
    assert ctl.tabs[session].contact == BOB
    assert any(ln.text == "kept words" for ln in ctl.tabs[session].lines)


def test_received_messages_are_marked_read_in_the_store_once_seen(stores, ctl, worker, clock):
    contacts, history = stores
    meet(contacts, BOB, "bob", clock.now - 100)
    ctl.refresh_contacts()
    ctl.open_contact(CONTACT_KEY + BOB, connect=False)
    session = ctl.target
    ctl.select_tab(session)
    history.append(BOB, "in", "new one", ts=clock.now)     # what the node writes on its recorder thread
    ctl.handle(MessageReceived(session, 1, "new one", "bob", clock.now, clock.now))
    ctl.tick()
    assert history.conversations()[0].unread == 1, "not marked before the node may have written it"
    clock.now += READ_AFTER
    ctl.tick()
    assert history.conversations()[0].unread == 0


def test_search_across_chats_delete_and_export(stores, ctl, worker, clock):
    contacts, history = stores
    meet(contacts, BOB, "bob", clock.now - 100)
    meet(contacts, CAROL, "carol", clock.now - 100)
    history.append(BOB, "in", "the pineapple plan", ts=clock.now - 10)
    history.append(CAROL, "in", "nothing here", ts=clock.now - 5)
    ctl.refresh_contacts()
    hits = ctl.search("PINEAPPLE")
    assert [h.key for h in hits] == [CONTACT_KEY + BOB] and "pineapple plan" in hits[0].text
    assert hits[0].label.startswith("bob · ")
    session = ctl.show_found(hits[0])
    assert session is not None and not [c for c in ctl.node.calls if c[0] == "run_step"], "a hit does not dial"
    assert "pineapple plan" in (ctl.export_history(session) or "")
    assert ctl.history_count(session) == 1
    assert ctl.delete_history(session) == 1
    assert history.messages(BOB) == [] and ctl.tabs[session].lines[-1].text.startswith("ℹ Deleted 1 kept message")
    assert ctl.search("pineapple") == []
    assert history.messages(CAROL), "the other chat's history stays"
