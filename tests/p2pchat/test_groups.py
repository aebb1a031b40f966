"""The sans-IO group core: signed membership changes, their deterministic merge, and the receiver's checks."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from p2pchat.foundation.identity import Identity
from p2pchat.groups import MAX_HELD_TEXTS, Change, GroupError, GroupText, Inbox, MembershipLog


def _add(log: MembershipLog, author: Identity, who: Identity) -> Change:
    return log.propose(author, "add", who.fingerprint, target_key=who.public_der, name="x")


def _copy(log: MembershipLog) -> MembershipLog:
    other = MembershipLog(log.group)
    for c in log.ordered():
        other.add(c)
    return other


def test_create_and_add_make_members(identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    log, _ = MembershipLog.create(a, "class 4b")
    _add(log, a, b)
    _add(log, b, c)                       # any member may add
    assert set(log.members) == {a.fingerprint, b.fingerprint, c.fingerprint}
    assert log.name == "class 4b" and log.version == 3
    assert set(_copy(log).members) == set(log.members)


def test_only_the_creator_removes_others_but_anyone_leaves(identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    _add(log, a, c)
    with pytest.raises(GroupError, match="only the group's creator"):
        log.propose(b, "remove", c.fingerprint)
    with pytest.raises(GroupError, match="creator cannot be removed"):
        log.propose(b, "remove", a.fingerprint)
    log.propose(c, "remove", c.fingerprint)
    log.propose(a, "remove", b.fingerprint)
    assert set(log.members) == {a.fingerprint}
    assert log.removal_version(b.fingerprint) == log.version


def test_a_remove_by_a_non_creator_signed_by_hand_has_no_effect(identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    _add(log, a, c)
    rogue = Change.make(b, log.group, "remove", c.fingerprint, parents=log.heads())
    log.add(rogue)                        # kept (descendants stay checkable) but without effect
    assert c.fingerprint in log.members and rogue.hash not in log.effective


def test_forged_and_replayed_changes_are_refused(identities: list[Identity]) -> None:
    a, b, c, d = identities[:4]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    other = _copy(log)
    honest = _add(log, b, c)
    forged = replace(honest, target=d.fingerprint, target_key=d.public_der)    # b's signature, another member
    with pytest.raises(GroupError, match="forged signature"):
        other.add(forged)
    impostor = Change.make(d, log.group, "add", d.fingerprint, target_key=d.public_der, parents=other.heads())
    with pytest.raises(GroupError, match="never had"):
        other.add(impostor)
    claimed = replace(impostor, author=a.fingerprint)       # claims a's name, signed by d
    with pytest.raises(GroupError, match="forged signature"):
        other.add(claimed)
    assert other.add(honest) == [honest]
    assert other.add(honest) == []                          # a replay changes nothing
    assert set(other.members) == set(log.members)


def test_a_second_create_for_the_same_id_is_a_collision(identities: list[Identity]) -> None:
    a, b = identities[:2]
    log, _ = MembershipLog.create(a, "g")
    clash = Change.make(b, log.group, "create", b.fingerprint, target_key=b.public_der, name="mine")
    with pytest.raises(GroupError, match="already uses this id"):
        log.add(clash)


def test_concurrent_edits_converge_in_every_arrival_order(identities: list[Identity]) -> None:
    a, b, c, d, e = identities[:5]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    _add(log, a, c)
    base = log.ordered()
    # three members edit at once from the same version: b adds d, c adds e, a removes c (c's add is concurrent)
    at_b, at_c, at_a = _copy(log), _copy(log), _copy(log)
    edits = [_add(at_b, b, d), _add(at_c, c, e), at_a.propose(a, "remove", c.fingerprint)]
    results = set()
    for order in itertools.permutations(edits):
        view = MembershipLog(log.group)
        for ch in base:
            view.add(ch)
        for ch in order:
            view.add(ch)
        results.add(frozenset(view.members))
    assert len(results) == 1
    members = next(iter(results))
    assert b.fingerprint in members and d.fingerprint in members and c.fingerprint not in members


def test_changes_whose_parents_are_missing_wait(identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    log, create = MembershipLog.create(a, "g")
    add_b = _add(log, a, b)
    add_c = _add(log, b, c)
    late = MembershipLog(log.group)
    late.add(create)
    assert late.add(add_c) == []          # b's key is known only from add_b, which is not here yet
    assert c.fingerprint not in late.members
    late.add(add_b)
    assert set(late.members) == set(log.members)


@pytest.mark.parametrize("version", [1, 3, 600])
def test_a_wrong_version_is_refused(identities: list[Identity], version: int) -> None:
    """Exactly one more than the parents': a higher one would lift every member's membership version (past
    MAX_LOG, where texts are refused)."""
    a, b = identities[:2]
    log, create = MembershipLog.create(a, "g")
    unsigned = Change(log.group, "add", b.fingerprint, b.public_der, "b", (create.hash,), version, a.fingerprint,
                      1.0)
    bad = replace(unsigned, sig=a.sign("group-change", unsigned.signed_body()))
    with pytest.raises(GroupError, match="version"):
        log.add(bad)
    assert log.version == 1


def _text(log: MembershipLog, sender: Identity, counter: int, *, version: int | None = None,
          lamport: int | None = None) -> GroupText:
    return GroupText(log.group, sender.fingerprint, counter, version or log.version, lamport or counter, 1.0, "hi")


def test_inbox_refuses_a_member_sending_as_another(identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    _add(log, a, c)
    inbox = Inbox(log)
    with pytest.raises(GroupError, match="claiming another member"):
        inbox.receive(b.fingerprint, _text(log, c, 1))       # b's channel, c's name


def test_inbox_drops_replays_and_reports_gaps(identities: list[Identity]) -> None:
    a, b = identities[:2]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    inbox = Inbox(log)
    assert [x.gap for x in inbox.receive(b.fingerprint, _text(log, b, 1))] == [0]
    assert inbox.receive(b.fingerprint, _text(log, b, 1)) == []
    assert [x.gap for x in inbox.receive(b.fingerprint, _text(log, b, 4))] == [2]


def test_inbox_holds_a_message_until_its_membership_version_arrives(identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    log, create = MembershipLog.create(a, "g")
    add_b = _add(log, a, b)
    add_c = _add(log, b, c)
    mine = MembershipLog(log.group)
    mine.add(create)
    mine.add(add_b)
    inbox = Inbox(mine)
    assert inbox.receive(c.fingerprint, _text(log, c, 1, version=3)) == []     # held: c joined at version 3
    mine.add(add_c)
    assert [x.text.counter for x in inbox.release()] == [1]
    for i in range(MAX_HELD_TEXTS):
        inbox.receive(c.fingerprint, _text(log, c, 2 + i, version=99))
    with pytest.raises(GroupError, match="too many"):
        inbox.receive(c.fingerprint, _text(log, c, 9999, version=99))


def test_inbox_refuses_a_removed_member(identities: list[Identity]) -> None:
    a, b = identities[:2]
    log, _ = MembershipLog.create(a, "g")
    _add(log, a, b)
    log.propose(a, "remove", b.fingerprint)
    with pytest.raises(GroupError, match="not a member"):
        Inbox(log).receive(b.fingerprint, _text(log, b, 1, version=2))


def test_wire_vectors() -> None:
    """The byte layouts docs/groups.md gives as vectors."""
    from p2pchat.chat_protocol import SEALED_CONTENT
    from p2pchat.groups import GROUP_WIRE
    c = Change(bytes(range(16)), "add", b"\x11" * 32, b"KEY-DER", "bob", (b"\x22" * 32,), 2, b"\x33" * 32,
               1700000000.0)
    assert c.signed_body().hex() == (
        "8aa174a66368616e6765a567726f7570c410000102030405060708090a0b0c0d0e0fa26f70a3616464a6746172676574c42011111111"
        "11111111111111111111111111111111111111111111111111111111aa7461726765745f6b6579c4074b45592d444552a46e616d65a3"
        "626f62a7706172656e747391c4202222222222222222222222222222222222222222222222222222222222222222a776657273696f6e"
        "02a6617574686f72c4203333333333333333333333333333333333333333333333333333333333333333a27473cb41d954fc40000000")
    assert GROUP_WIRE.encode_body("changes", ref=9, group=bytes(range(16)), changes=[b"\x01\x02\x03"]).hex() == (
        "84a174a76368616e676573a372656609a567726f7570c410000102030405060708090a0b0c0d0e0fa76368616e67657391c403010203")
    ack = GROUP_WIRE.encode_body("ack", refs=[5])
    assert ack.hex() == "82a174a361636ba4726566739105"
    assert SEALED_CONTENT.encode_body("group", body=ack).hex() == \
        "82a174a567726f7570a4626f6479c40e82a174a361636ba4726566739105"


def test_file_frame_vector_and_round_trip() -> None:
    """The ``file`` frame of docs/groups.md: a shared file's entry, decoded back to the same entry."""
    from p2pchat.groups import GROUP_WIRE, SharedFile
    t = GroupText(bytes(range(16)), b"\x44" * 32, 3, 2, 7, 1700000000.0, "notes.pdf",
                  SharedFile("notes.pdf", 300000, b"\x55" * 32))
    body = t.encode(1)
    assert body.hex() == (
        "8ba174a466696c65a372656601a567726f7570c410000102030405060708090a0b0c0d0e0fa673656e646572c4204444444444444444"
        "444444444444444444444444444444444444444444444444a7636f756e74657203a776657273696f6e02a76c616d706f727407a77365"
        "6e745f6174cb41d954fc40000000a46e616d65a96e6f7465732e706466a473697a65ce000493e0a6736861323536c420555555555555"
        "5555555555555555555555555555555555555555555555555555")
    msg = GROUP_WIRE.decode(body)
    assert msg.type == "file" and GroupText.from_frame(msg.fields) == t
    plain = GroupText(t.group, t.sender, 4, 2, 8, 1.0, "hi")
    assert GroupText.from_frame(GROUP_WIRE.decode(plain.encode(2)).fields) == plain
