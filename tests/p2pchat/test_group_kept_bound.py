"""What one group member can make this computer keep is bounded (group_service.MAX_KEPT_PER_SENDER): past it its
texts are shown, not kept, the user is told once, a restart takes the next one for neither new nor a gap, and
deleting the group's history makes room again. Real SQLite stores; frames handed straight between services."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat import group_service
from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.identity import Identity
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _member, _service


def test_a_member_past_what_may_be_kept_is_shown_not_kept_told_once_and_deleting_makes_room(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_service, "MAX_KEPT_PER_SENDER", 50)
    a, b = identities[:2]
    bfp = b.fingerprint.hex()
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    try:
        gid = sa.create("club", [_member(b, "bob")])
        for n in range(5):
            sa.say(gid, f"message {n:02d} of 20b")        # 20 bytes each: two fit in 50
        shown = lambda: [(e.text, e.gap) for e in wire.events[bfp] if isinstance(e, GroupMessage)]  # noqa: E731
        wait_until(lambda: len(shown()) == 5, 10, what="bob shown all five")
        assert [gap for _, gap in shown()] == [0] * 5
        assert [t.text for t in sb.conversation(gid)] == ["message 00 of 20b", "message 01 of 20b"]
        told = [e.text for e in wire.events[bfp] if isinstance(e, GroupNotice) and "not saved" in e.text]
        assert len(told) == 1 and "newer ones from them are shown but not saved" in told[0]
        assert sa.delivered(gid, 5) == (1, 1)           # acknowledged: shown is delivered
        sb.close()
        sb = _service(wire, b, tmp_path / "b")           # a restart: the number reached was kept
        sa.say(gid, "message 05 of 20b")
        wait_until(lambda: len(shown()) == 6, 10, what="the next one after bob's restart")
        assert shown()[-1] == ("message 05 of 20b", 0)
        assert [t.text for t in sb.conversation(gid)] == ["message 00 of 20b", "message 01 of 20b"]
        sb.delete_history(gid)
        sa.say(gid, "message 06 of 20b")
        wait_until(lambda: [t.text for t in sb.conversation(gid)] == ["message 06 of 20b"], 10,
                   what="kept again once there is room")
    finally:
        sa.close()
        sb.close()
