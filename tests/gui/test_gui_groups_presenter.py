"""The window's group presenter (gui/groups.py) without Tk, over the node's real group service and store (its
frames wait, as with no network): receipts counting up, a gap, a held message and a replayed message shown
plainly, the membership changes as sentences, names of members who are not contacts, who may remove and leave,
the kept messages shown again (and found by search) after a restart, their unread count kept until they are read,
and a deleted history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gui.groups import GROUP_KEY, GroupChats, GroupState
from gui.models import LineKind
from gui.worker import CommandWorker
from p2pchat.contacts import Contact
from p2pchat.events import GroupMessage, GroupNotice, GroupReceipt
from p2pchat.foundation.identity import Identity
from p2pchat.group_cli import OfflineHost
from p2pchat.group_service import ChangeView, GroupService, GroupView
from p2pchat.group_store import GroupStore
from p2pchat.groups import GroupText
from p2pchat.vault import Vault
from tests.gui.helpers import settle
from tests.helpers import wait_until


class Members:
    """Turns a contact's fingerprint into a group member, like the chat node does from its contact store."""

    def __init__(self, *people: tuple[Identity, str]) -> None:
        self.people = {i.fingerprint.hex(): (i, name) for i, name in people}

    def group_member(self, query: str) -> tuple[str, bytes, str]:
        identity, name = self.people[query]
        return query, identity.public_der, name


def contact(identity: Identity, nickname: str, *, verified: bool = False) -> Contact:
    return Contact(identity.fingerprint.hex(), identity.public_der, None, 0.0, 0.0, None, 1.0 if verified else None,
                   None, (nickname,), ())


def service(data_dir: Path, me: Identity) -> GroupService:
    return GroupService(OfflineHost(), GroupStore.in_data_dir(data_dir, Vault.open(data_dir, None)), me,
                        lambda _ev: None)


@pytest.fixture
def alice_dir(tmp_path: Path) -> Path:
    d = tmp_path / "alice"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def people(identities: list[Identity]) -> tuple[Identity, Identity, Identity]:
    return identities[0], identities[1], identities[2]


def presenter(groups: GroupService, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> GroupChats:
    alice, bob, carol = people
    contacts = {bob.fingerprint.hex(): contact(bob, "bob", verified=True),
                carol.fingerprint.hex(): contact(carol, "carol")}
    return GroupChats(groups, Members((bob, "bob"), (carol, "carol")), worker, me=alice.fingerprint.hex(),
                      nickname="alice", contact=contacts.get, channel=lambda fp: "not connected")


@pytest.fixture
def chats(alice_dir: Path, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> Iterator[GroupChats]:
    groups = service(alice_dir, people[0])
    try:
        yield presenter(groups, worker, people)
    finally:
        groups.close()


def texts(chats: GroupChats, key: str) -> list[str]:
    return [(f"{ln.sender}: " if ln.sender else "") + ln.text + (f"  {ln.tick}" if ln.tick else "")
            for ln in chats.groups[key].lines]


def make(chats: GroupChats, worker: CommandWorker, name: str, *fps: str) -> str:
    assert chats.create(name, list(fps)) is None
    settle(worker)
    changes = chats.take_changes()
    assert changes.select is not None and changes.select.startswith(GROUP_KEY)
    return changes.select


def test_a_message_counts_its_receipts_up_and_a_gap_a_held_and_a_replayed_message_show_plainly(
        chats: GroupChats, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> None:
    _alice, bob, carol = people
    bob_fp, carol_fp = bob.fingerprint.hex(), carol.fingerprint.hex()
    key = make(chats, worker, "lab", bob_fp, carol_fp)
    gid = key.removeprefix(GROUP_KEY)
    assert texts(chats, key) == ["ℹ you created the group «lab»", "ℹ you added bob", "ℹ you added carol"]
    assert chats.send(key, "hello all") is None
    assert texts(chats, key)[-1] == "alice: hello all  …"
    settle(worker)
    assert texts(chats, key)[-1] == "alice: hello all  delivered to 0 of 2"
    chats.handle(GroupReceipt(gid, "lab", 1, 1, 2))
    assert texts(chats, key)[-1] == "alice: hello all  delivered to 1 of 2"
    chats.handle(GroupReceipt(gid, "lab", 1, 2, 2))
    mine = chats.groups[key].lines[-1]
    assert mine.tick == "✓ delivered to 2 of 2" and mine.delivered and mine.kind is LineKind.OUT
    assert chats.take_changes().lines_changed[key][-1] is mine

    chats.handle(GroupMessage(gid, "lab", bob_fp, "bob", 3, "third", time.time(), gap=2))
    chats.handle(GroupMessage(gid, "lab", bob_fp, "bob", 3, "third", time.time()))        # again: shown once
    chats.handle(GroupNotice(gid, "lab", f"a message from {carol_fp[:16]} waits for a membership change this "
                                         "computer does not have yet; it shows once that arrives", warning=True))
    assert texts(chats, key)[-3:] == [
        "⚠ 2 messages from bob never arrived (lost before they reached this computer)", "bob: third",
        f"⚠ a message from {carol_fp[:16]} waits for a membership change this computer does not have yet; it shows "
        "once that arrives"]
    bob_line = chats.groups[key].lines[-2]
    assert bob_line.colour == 0 and chats.colour(chats.groups[key], carol_fp) == 1, "colours in joining order"
    assert chats.unread_total() == 1 and chats.title(key) == "lab (1)"
    chats.select(key)
    assert chats.title(key) == "lab"


def test_membership_changes_read_as_sentences_and_only_the_creator_removes(
        chats: GroupChats, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> None:
    _alice, bob, carol = people
    key = make(chats, worker, "lab", bob.fingerprint.hex())
    assert chats.remove_refusal(key) is None
    assert "creator cannot leave" in (chats.leave_refusal(key) or "")
    assert chats.add_members(key, [carol.fingerprint.hex()]) is None
    settle(worker)
    chats.remove_member(key, bob.fingerprint.hex())
    settle(worker)
    assert texts(chats, key)[-2:] == ["ℹ you added carol", "ℹ you removed bob"]
    rows = chats.member_rows(key)
    assert [(r.name, r.verified, r.creator) for r in rows] == [("you", False, True), ("carol", False, False)]

    # seen from a member who did not create the group
    g = chats.groups[key]
    other = GroupState(GroupView(g.view.gid, "lab", bob.fingerprint.hex(), g.view.members, g.view.changes, (), {}))
    chats.groups["group:other"] = other
    assert chats.remove_refusal("group:other") == "Only the group's creator, bob, removes members."
    assert chats.leave_refusal("group:other") is None


def test_a_member_who_is_not_a_contact_is_named_as_its_adder_named_it_and_marked(
        chats: GroupChats, people: tuple[Identity, Identity, Identity], identities: list[Identity]) -> None:
    alice, bob, _carol = people
    dave = identities[3].fingerprint.hex()
    view = GroupView("00" * 16, "lab", bob.fingerprint.hex(),
                     ((bob.fingerprint.hex(), "bob"), (alice.fingerprint.hex(), "alice"), (dave, "carol")),
                     (ChangeView("create", bob.fingerprint.hex(), bob.fingerprint.hex(), "lab", 1.0),
                      ChangeView("add", bob.fingerprint.hex(), dave, "carol", 2.0)), (), {})
    g = GroupState(view)
    assert chats.name_of(g, dave) == f"carol (not a contact · {dave[:8]})", "no one passes for a contact"
    assert chats.change_words(g, view.changes[1]) == f"bob added carol (not a contact · {dave[:8]})"
    assert chats.name_of(g, bob.fingerprint.hex()) == "bob"


def test_the_kept_messages_come_back_after_a_restart_and_search_finds_them(
        alice_dir: Path, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> None:
    groups = service(alice_dir, people[0])
    try:
        chats = presenter(groups, worker, people)
        key = make(chats, worker, "lab", people[1].fingerprint.hex())
        assert chats.send(key, "the answer is 42") is None
        settle(worker)
    finally:
        groups.close()
    groups = service(alice_dir, people[0])
    try:
        again = presenter(groups, worker, people)
        again.load()
        settle(worker)
        assert texts(again, key)[:4] == [
            "ℹ Earlier messages of this group (1 message shown), kept on this computer:",
            "ℹ you created the group «lab»", "ℹ you added bob", "alice: the answer is 42  delivered to 0 of 1"]
        hits = again.search("ANSWER")
        assert [(h.key, h.text) for h in hits] == [(key, "the answer is 42")]
        assert "lab" in hits[0].label and "you" in hits[0].label
        exported = again.export_text(key) or ""
        assert exported.startswith("Group “lab”") and "alice: the answer is 42" in exported
    finally:
        groups.close()


def test_unread_kept_messages_count_after_a_restart_until_read_and_delete_empties_the_conversation(
        alice_dir: Path, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> None:
    alice, bob, _carol = people
    groups = service(alice_dir, alice)
    try:
        chats = presenter(groups, worker, people)
        key = make(chats, worker, "lab", bob.fingerprint.hex())
        gid = bytes.fromhex(key.removeprefix(GROUP_KEY))
        for n, words in enumerate(("from bob", "again from bob"), start=1):      # as bob's channel brings them
            body = GroupText(gid, bob.fingerprint, n, 2, n, time.time(), words).encode(n)
            groups.frame_from("s1", bob.fingerprint.hex(), body)
        wait_until(lambda: len(groups.views(gid)[0].texts) == 2, 5, what="bob's messages kept")
    finally:
        groups.close()
    for expected in (2, 0):                   # read once on screen: not unread after the next restart
        groups = service(alice_dir, alice)
        try:
            chats = presenter(groups, worker, people)
            chats.load()
            settle(worker)
            assert chats.unread_total() == expected and chats.title(key) == ("lab (2)" if expected else "lab")
            chats.select(key)
            chats.tick()
            settle(worker)
        finally:
            groups.close()
    groups = service(alice_dir, alice)
    try:
        chats = presenter(groups, worker, people)
        chats.load()
        settle(worker)
        assert "bob: again from bob" in texts(chats, key)
        chats.take_changes()
        chats.delete_history(key)
        settle(worker)
        changes = chats.take_changes()
        assert changes.lines_dropped[key] > 0 and texts(chats, key) == [
            "ℹ Deleted 2 kept messages of this group from this computer; the members keep their own copies."]
        assert groups.views(gid)[0].texts == () and chats.search("bob") == []
    finally:
        groups.close()


def test_a_group_is_refused_without_a_name_members_or_with_control_characters(chats: GroupChats) -> None:
    assert chats.create("  ", ["ab"]) == "give the group a name"
    assert chats.create("lab", []) == "choose at least one contact"
    assert chats.create("lab\x1b[2J", ["ab"]) == "the name contains control characters"
    assert chats.create("x" * 65, ["ab"]) == "a group name is at most 64 characters"


def test_a_creator_who_is_not_a_contact_is_never_named_after_its_group(
        chats: GroupChats, tmp_path: Path, people: tuple[Identity, Identity, Identity],
        identities: list[Identity]) -> None:
    alice = people[0]
    mallory = identities[3]
    d = tmp_path / "mallory"
    d.mkdir(mode=0o700)
    theirs = service(d, mallory)
    try:
        # a stranger names its group like one of alice's contacts: the group is "bob", its creator is not
        gid = theirs.create("bob", [(alice.fingerprint.hex(), alice.public_der, "alice")])
        g = GroupState(theirs.views(gid)[0])
    finally:
        theirs.close()
    fp = mallory.fingerprint.hex()
    assert chats.name_of(g, fp) == f"the group's creator (not a contact · {fp[:8]})"


def test_the_text_a_group_conversation_keeps_is_bounded_in_bytes(
        chats: GroupChats, worker: CommandWorker, people: tuple[Identity, Identity, Identity]) -> None:
    """Members' 64 Ki-character texts of four-byte characters (256 KiB each in memory) as fast as the budget lets
    them through: the conversation keeps the newest up to MAX_KEPT_BYTES (1,000 of them were kept: 256 MiB)."""
    import sys

    from gui.models import MAX_KEPT_BYTES

    _alice, bob, carol = people
    key = make(chats, worker, "lab", bob.fingerprint.hex(), carol.fingerprint.hex())
    gid = key.removeprefix(GROUP_KEY)
    chats.take_changes()
    for n in range(1, 101):
        chats.handle(GroupMessage(gid, "lab", bob.fingerprint.hex(), "bob", n, f"{n:03d}" + "😀" * 65_533,
                                  time.time()))
    lines = chats.groups[key].lines
    assert sum(sys.getsizeof(ln.text) for ln in lines) <= MAX_KEPT_BYTES
    assert lines[-1].text.startswith("100") and len(lines) >= 10
    changes = chats.take_changes()
    assert 3 + len(changes.lines_added[key]) - changes.lines_dropped[key] == len(lines)
