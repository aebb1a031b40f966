"""Bounds on what one member can make a node do with group frames (docs/groups.md "Bounds"), and membership frames
that carry only what the receiver lacks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.identity import Identity
from p2pchat.group_limits import Budget, GroupLimits
from p2pchat.group_service import GroupService
from p2pchat.group_store import GroupStore
from p2pchat.groups import GROUP_WIRE, Change
from p2pchat.vault import Vault
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Host, Wire, _member

FP = "ab" * 32


def test_a_budget_admits_its_burst_refuses_the_rest_telling_once_and_refills() -> None:
    now = [0.0]
    limits = GroupLimits(lambda: now[0], {"text": Budget(2.0, 3.0, "{peer} writes too fast")})
    first = [limits.admit(FP, "text") for _ in range(6)]
    assert [ok for ok, _ in first] == [True, True, True, False, False, False]
    assert [notice for _, notice in first] == [None, None, None, "abababababababab writes too fast", None, None]
    assert limits.admit("cd" * 32, "text") == (True, None)          # another member has its own budget
    now[0] = 1.0                                                     # two more a second later, then told again
    assert [limits.admit(FP, "text") for _ in range(4)] == [(True, None), (True, None),
                                                            (False, "abababababababab writes too fast"), (False, None)]
    now[0] = 10.0
    ok, _ = limits.admit(FP, "text", 3.0)
    assert ok and limits.admit(FP, "text") == (False, "abababababababab writes too fast")


class Recording(Host):
    """A host that also keeps every frame it sends: (to, decoded frame)."""

    sent: ClassVar[list[tuple[str, object]]] = []

    def send_group_frame(self, session: str, body: bytes) -> None:
        self.sent.append((session.split(">")[1], GROUP_WIRE.decode(body)))
        super().send_group_frame(session, body)


def _service(wire: Wire, ident: Identity, d: Path, limits: GroupLimits | None = None,
             host: type[Host] = Host) -> GroupService:
    d.mkdir(exist_ok=True)
    fp = ident.fingerprint.hex()
    events = wire.events.setdefault(fp, [])
    svc = GroupService(host(wire, fp), GroupStore.in_data_dir(d, Vault.open(d, "pw", scrypt_n=2**10)), ident,
                       events.append, limits=limits)
    wire.services[fp] = svc
    return svc


def _notices(wire: Wire, ident: Identity) -> list[str]:
    return [e.text for e in wire.events[ident.fingerprint.hex()] if isinstance(e, GroupNotice)]


def test_a_member_flooding_texts_is_refused_plainly_once_and_the_others_still_get_through(
        tmp_path: Path, identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    wire = Wire()
    tight = GroupLimits(budgets={"text": Budget(0.001, 5.0, "{peer} sends group messages too fast; refused")})
    sa = _service(wire, a, tmp_path / "a", tight)
    sb, sc = _service(wire, b, tmp_path / "b"), _service(wire, c, tmp_path / "c")
    try:
        gid = sa.create("lab", [_member(b, "bob"), _member(c, "carol")])
        wait_until(lambda: len(sb.snapshot()) == 1 and len(sc.snapshot()) == 1, 10, what="both invited")
        for i in range(12):
            sb.say(gid, f"flood {i}")
        sc.say(gid, "carol is heard")
        texts = lambda: [e.text for e in wire.events[a.fingerprint.hex()] if isinstance(e, GroupMessage)]  # noqa: E731
        wait_until(lambda: "carol is heard" in texts(), 10, what="carol's message shown")
        assert [t for t in texts() if t.startswith("flood")] == [f"flood {i}" for i in range(5)]
        refusals = [n for n in _notices(wire, a) if "too fast" in n]
        assert refusals == [f"{b.fingerprint.hex()[:16]} sends group messages too fast; refused"]
        # refused frames were not acknowledged: they wait at bob for his next chat with alice
        assert sb._call(lambda: len(sb._pending[a.fingerprint.hex()])) == 7
    finally:
        for s in (sa, sb, sc):
            s.close()


def test_a_flood_of_forged_changes_is_refused_before_any_signature_is_checked(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pchat import groups as groups_module

    a, b, intruder = identities[0], identities[1], identities[5]
    wire = Wire()
    sa = _service(wire, a, tmp_path / "a", GroupLimits(budgets={"change": Budget(0.001, 10.0, "{peer} too many")}))
    sb = _service(wire, b, tmp_path / "b")
    checks = []
    real = groups_module.crypto.is_valid_signature

    def counting(*args: object) -> bool:
        checks.append(1)
        return real(*args)  # type: ignore[arg-type]

    try:
        gid = sa.create("lab", [_member(b, "bob")])
        wait_until(lambda: len(sb.snapshot()) == 1, 10, what="bob invited")
        heads = sa._call(lambda: sa.groups[gid].log.heads())
        forged = Change.make(intruder, gid, "add", intruder.fingerprint, target_key=intruder.public_der,
                             name="me", parents=heads)
        many = [replace(forged, ts=forged.ts + i).encode() for i in range(40)]
        monkeypatch.setattr(groups_module.crypto, "is_valid_signature", counting)
        session = f"{a.fingerprint.hex()}>{b.fingerprint.hex()}"
        sa.frame_from(session, b.fingerprint.hex(), GROUP_WIRE.encode_body("changes", ref=1, group=gid, changes=many))
        sa.frame_from(session, b.fingerprint.hex(), GROUP_WIRE.encode_body("changes", ref=2, group=gid,
                                                                           changes=many[:3]))
        sa.snapshot()                                     # both frames handled
        assert f"{b.fingerprint.hex()[:16]} too many" in _notices(wire, a)
        assert len(checks) == 0                           # refused changes were never checked, only counted
        told = [n for n in _notices(wire, a) if n.startswith("from ")]
        assert told == [f"from {b.fingerprint.hex()[:16]}: a membership change by someone this group never had was "
                        "refused (and 2 more refused changes)"]
        assert intruder.fingerprint not in sa.snapshot()[0][2]
    finally:
        sa.close()
        sb.close()


def test_membership_frames_carry_only_the_changes_a_member_lacks(tmp_path: Path, identities: list[Identity]) -> None:
    a, b, c, d = identities[:4]
    wire = Wire()
    Recording.sent = []
    sa = _service(wire, a, tmp_path / "a", host=Recording)
    others = [_service(wire, x, tmp_path / n) for x, n in ((b, "b"), (c, "c"), (d, "d"))]
    try:
        gid = sa.create("lab", [_member(b, "bob"), _member(c, "carol")])
        sa.say(gid, "hello")                                 # no membership frame again before a message
        sa.add(gid, _member(d, "dave"))
        wait_until(lambda: all(len(s.snapshot()) == 1 for s in others), 10, what="all invited")
        sizes = {(to, len(m["changes"])) for to, m in Recording.sent if m.type == "changes"}  # type: ignore[attr-defined]
        bob, carol, dave = (x.fingerprint.hex() for x in (b, c, d))
        assert sizes == {(bob, 3), (carol, 3), (bob, 1), (carol, 1), (dave, 4)}
        sa.say(gid, "dave too")
        wait_until(lambda: any(isinstance(e, GroupMessage) and e.text == "dave too" for e in wire.events[dave]), 10,
                   what="dave gets the message")
        assert len([1 for _, m in Recording.sent if m.type == "changes"]) == 5  # type: ignore[attr-defined]
    finally:
        for s in (sa, *others):
            s.close()
