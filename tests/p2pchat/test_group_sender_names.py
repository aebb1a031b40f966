"""Who a group message or notice is from is never ambiguous: the creator is not labelled with the group's name, and
a name an adder gave (hostile text) always comes with the key it was given to."""

from __future__ import annotations

from pathlib import Path

from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.identity import Identity
from p2pchat.groups import MembershipLog
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _member, _service


def test_a_creator_is_a_member_without_a_given_name(identities: list[Identity]) -> None:
    log, _ = MembershipLog.create(identities[0], "bob")
    assert log.name == "bob"
    assert log.members[identities[0].fingerprint].name == ""


def test_group_messages_and_notices_name_their_sender_unambiguously(tmp_path: Path,
                                                                    identities: list[Identity]) -> None:
    a, b, c, d = identities[:4]
    wire = Wire()
    sa, sb, sc = (_service(wire, i, tmp_path / n) for i, n in ((a, "a"), (b, "b"), (c, "c")))
    try:
        # The creator names the group like one of b's contacts, and gives c that name too.
        gid = sa.create("carol", [_member(b, "bob"), _member(c, "carol")])
        sa.say(gid, "from the creator")
        sc.say(gid, "from the member")
        sa.add(gid, _member(d, "carol"))          # a later member, given the same name
        got = wire.events[b.fingerprint.hex()]
        wait_until(lambda: len([e for e in got if isinstance(e, GroupMessage)]) == 2, 10, what="both messages")
        by_sender = {e.sender: e for e in got if isinstance(e, GroupMessage)}
        assert by_sender[a.fingerprint.hex()].sender_name == ""       # not "carol", the group's name
        assert by_sender[c.fingerprint.hex()].sender_name == "carol"  # the adder's words, shown with the key
        wait_until(lambda: any(isinstance(e, GroupNotice) and "joined" in e.text for e in got), 10,
                   what="the notice that d joined")
        joined = [e.text for e in got if isinstance(e, GroupNotice) and "joined" in e.text]
        assert joined == [f"key {d.fingerprint.hex()[:16]} «carol» joined 'carol'"]
    finally:
        for s in (sa, sb, sc):
            s.close()
