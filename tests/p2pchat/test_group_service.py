"""The group service with its real SQLite store, between hosts that hand frames straight to each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.errors import UsageError
from p2pchat.foundation.identity import Identity
from p2pchat.group_service import GroupService
from p2pchat.group_store import GroupStore
from p2pchat.groups import GROUP_WIRE, MAX_INVITES_PER_CONTACT, Change, MembershipLog
from p2pchat.vault import Vault
from tests.helpers import wait_until


class Wire:
    """Every member's service, and chats that are always open: a frame goes straight to its receiver."""

    def __init__(self) -> None:
        self.services: dict[str, GroupService] = {}
        self.events: dict[str, list[object]] = {}
        self.delivered = 0
        self.stopped: list[tuple[str, str, bytes]] = []     # membership frames held back on the way
        self.stop_changes = False
        self.offers: list[tuple[str, str]] = []             # (session, path) of files offered


class Host:
    def __init__(self, wire: Wire, me: str) -> None:
        self.wire, self.me = wire, me

    def live_session_with(self, fp: str) -> str | None:
        return f"{self.me}>{fp}" if fp in self.wire.services else None

    def send_group_frame(self, session: str, body: bytes) -> None:
        to = session.split(">")[1]
        if self.wire.stop_changes and GROUP_WIRE.decode(body).type == "changes":
            self.wire.stopped.append((to, self.me, body))
            return
        self.wire.delivered += 1
        self.wire.services[to].frame_from(f"{to}>{self.me}", self.me, body)

    def want_contact(self, fp: str) -> None:
        pass

    def offer_file(self, session: str, path: str, size: int, sha256: bytes) -> str:
        self.wire.offers.append((session, path))
        return f"{len(self.wire.offers):032x}"

    def cancel_file(self, session: str, transfer: str) -> None:
        pass


def _service(wire: Wire, ident: Identity, d: Path) -> GroupService:
    d.mkdir(exist_ok=True)
    fp = ident.fingerprint.hex()
    events = wire.events.setdefault(fp, [])
    svc = GroupService(Host(wire, fp), GroupStore.in_data_dir(d, Vault.open(d, "pw", scrypt_n=2**10)), ident,
                       events.append)
    wire.services[fp] = svc
    return svc


def _member(ident: Identity, name: str) -> tuple[str, bytes, str]:
    return ident.fingerprint.hex(), ident.public_der, name


def test_groups_and_messages_survive_a_restart_encrypted(tmp_path: Path, identities: list[Identity]) -> None:
    a, b = identities[:2]
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    try:
        gid = sa.create("club", [_member(b, "bob")])
        sa.say(gid, "secret plans")
        wait_until(lambda: any(isinstance(e, GroupMessage) for e in wire.events[b.fingerprint.hex()]), 10,
                   what="bob gets the message")
    finally:
        sb.close()
    assert b"secret plans" not in (tmp_path / "b" / "groups.sqlite3").read_bytes()
    sb = _service(wire, b, tmp_path / "b")
    try:
        assert [t.text for t in sb.conversation(gid)] == ["secret plans"]
        assert sb.snapshot() == sa.snapshot()
        sa.say(gid, "again")       # counters go on after the restart: not taken for a replay
        wait_until(lambda: [t.text for t in sb.conversation(gid)] == ["secret plans", "again"], 10,
                   what="the next message after the restart")
        assert sa.delivered(gid, 2) == (1, 1)
    finally:
        sa.close()
        sb.close()


def test_invitation_floods_are_bounded_and_a_colliding_id_is_refused(tmp_path: Path,
                                                                      identities: list[Identity]) -> None:
    a, b = identities[:2]
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    try:
        for i in range(MAX_INVITES_PER_CONTACT + 2):
            sa.create(f"spam {i}", [_member(b, "bob")])
        notices = wire.events[b.fingerprint.hex()]
        wait_until(lambda: sum(isinstance(e, GroupNotice) and "refused" in e.text for e in notices) == 2, 10,
                   what="the invitations over the limit refused")
        assert len(sb.snapshot()) == MAX_INVITES_PER_CONTACT
        assert "invited this node to 16 groups already" in " ".join(
            e.text for e in notices if isinstance(e, GroupNotice))
        # a's own group id, re-created by b under b's key: b's invitation to a is refused as a collision
        gid = sa.snapshot()[0][0]
        clash = Change.make(b, gid, "create", b.fingerprint, target_key=b.public_der, name="mine")
        add_a = MembershipLog(gid)
        add_a.add(clash)
        add = add_a.propose(b, "add", a.fingerprint, target_key=a.public_der, name="alice")
        body = GROUP_WIRE.encode_body("changes", ref=1, group=gid, changes=[clash.encode(), add.encode()])
        sa.frame_from(f"{a.fingerprint.hex()}>{b.fingerprint.hex()}", b.fingerprint.hex(), body)
        wait_until(lambda: any(isinstance(e, GroupNotice) and "already uses this id" in e.text
                               for e in wire.events[a.fingerprint.hex()]), 10, what="the collision refused")
        assert sa.snapshot()[0][1] == "spam 0"
    finally:
        sa.close()
        sb.close()


def test_a_malformed_group_frame_is_refused_plainly(tmp_path: Path, identities: list[Identity]) -> None:
    a, b = identities[:2]
    wire = Wire()
    sa = _service(wire, a, tmp_path / "a")
    try:
        sa.frame_from("x", b.fingerprint.hex(), b"\x81\xa1t\xa4text")
        wait_until(lambda: any(isinstance(e, GroupNotice) and "malformed group frame" in e.text
                               for e in wire.events[a.fingerprint.hex()]), 10, what="the refusal")
        with pytest.raises(UsageError, match="no group named"):
            sa.find("nothing")
    finally:
        sa.close()


def test_a_message_ahead_of_the_membership_is_held_and_acknowledged_once_shown(
        tmp_path: Path, identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    try:
        gid = sa.create("club", [_member(b, "bob")])
        wait_until(lambda: sb.snapshot(), 10, what="bob has the group")
        wire.stop_changes = True
        sa.add(gid, _member(c, "carol"))          # bob does not get this change yet
        sa.say(gid, "hi all three")               # claims membership version 3
        wait_until(lambda: sb._call(lambda: bool(sb.groups[gid].inbox.held)), 10, what="bob holds it")
        assert sb.conversation(gid) == []
        assert sa.delivered(gid, 1) == (0, 2)     # held: not acknowledged (bob's ack would be queued before)
        wire.stop_changes = False
        for to, frm, body in wire.stopped:
            wire.services[to].frame_from(f"{to}>{frm}", frm, body)
        wait_until(lambda: [t.text for t in sb.conversation(gid)] == ["hi all three"], 10, what="released")
        wait_until(lambda: sa.delivered(gid, 1) == (1, 2), 10, what="bob's acknowledgement after the release")
    finally:
        sa.close()
        sb.close()


@pytest.mark.parametrize("with_carol", [True, False])
def test_a_member_added_during_a_concurrent_removal_learns_it_whatever_the_arrival_order(
        tmp_path: Path, identities: list[Identity], with_carol: bool) -> None:
    # bob adds erin while alice removes dave. Alice's removal never reached erin (alice did not know her yet), so
    # whoever sees both edits must forward it; those frames can reach erin before bob's invitation does, and each
    # must still bring her to the same membership. Without carol only alice and bob can tell her.
    a, b, c, d, e = identities[:5]
    wire = Wire()
    services = [_service(wire, x, tmp_path / n) for x, n in zip((a, b, c, d, e), "abcde", strict=True)]
    sa, sb, sc, _sd, se = services
    if not with_carol:
        services.remove(sc)
        sc.close()
        del wire.services[c.fingerprint.hex()]

    def settle() -> None:
        for _ in range(3):
            for s in services:
                s._call(lambda: None)   # every frame queued before has been handled

    def members(s: GroupService) -> set[bytes]:
        return {m for g, _, ms in s.snapshot() if g == gid for m in ms}

    try:
        gid = sa.create("lab", [_member(b, "bob"), _member(d, "dave")] + ([_member(c, "carol")] if with_carol else []))
        wait_until(lambda: all(s.snapshot() for s in services if s is not se), 10, what="everyone has the group")
        settle()
        wire.stop_changes = True
        sb.add(gid, _member(e, "erin"))
        sa.remove(gid, d.fingerprint.hex())
        invitation = (e.fingerprint.hex(), b.fingerprint.hex())
        while True:                     # every held membership frame, bob's to erin last
            settle()
            early = [f for f in wire.stopped if f[:2] != invitation]
            if not early:
                break
            wire.stopped.remove(early[0])
            to, frm, body = early[0]
            wire.services[to].frame_from(f"{to}>{frm}", frm, body)
        wire.stop_changes = False
        for to, frm, body in wire.stopped:
            wire.services[to].frame_from(f"{to}>{frm}", frm, body)
        settle()
        want = {x.fingerprint for x in ((a, b, c, e) if with_carol else (a, b, e))}
        for s in (sa, sb, se) + ((sc,) if with_carol else ()):
            wait_until(lambda s=s: members(s) == want, 10, what="the four members agree")
    finally:
        for s in services:
            s.close()
