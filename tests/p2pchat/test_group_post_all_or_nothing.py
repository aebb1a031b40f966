"""A group message is sent to every member or to none: when frames waiting for one unreachable member are at
their bound (group_limits.MAX_PENDING_PER_MEMBER), the post is refused before anything is kept or queued. Before,
it was refused halfway: kept in the sender's transcript and queued for the members that came first."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat import group_service
from p2pchat.events import GroupMessage
from p2pchat.foundation.identity import Identity
from p2pchat.groups import GroupError
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _member, _service


def test_a_post_that_one_member_has_no_room_for_reaches_nobody_and_is_not_kept(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_service, "MAX_PENDING_PER_MEMBER", 4)
    a, b, away = identities[:3]               # away has no node on the wire: its frames wait at alice
    bfp = b.fingerprint.hex()
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    try:
        gid = sa.create("club", [_member(b, "bob"), _member(away, "away")])
        said: list[str] = []
        refusal = None
        for n in range(10):                   # bounded: away's room runs out after a few
            try:
                sa.say(gid, f"text {n}")
            except GroupError as exc:
                refusal = str(exc)
                break
            said.append(f"text {n}")
            # bob's copy delivered before the next post: only away's frames accumulate (on a loaded machine bob's
            # could otherwise reach the bound first, and the refusal would name bob)
            wait_until(lambda: [e.text for e in wire.events[bfp] if isinstance(e, GroupMessage)] == said, 10,
                       what=f"bob has {said[-1]!r}")
        assert refusal is not None
        assert [t.text for t in sa.conversation(gid)] == said          # the refused one is not kept …
        wait_until(lambda: [e.text for e in wire.events[bfp] if isinstance(e, GroupMessage)] == said, 10,
                   what="bob has every text said before the refusal")
        assert "already wait for key " in refusal and "«away»" in refusal and "nothing was sent" in refusal
        assert [e.text for e in wire.events[bfp] if isinstance(e, GroupMessage)] == said      # … nor sent
        sa.remove(gid, away.fingerprint.hex())     # the way out the refusal names
        assert sa.say(gid, "after") == len(said) + 1      # its number was not used up by the refusal
        wait_until(lambda: [e.text for e in wire.events[bfp] if isinstance(e, GroupMessage)][-1:] == ["after"],
                   10, what="bob gets the next one")
    finally:
        sa.close()
        sb.close()


def test_a_group_message_with_its_frames_and_file_offers_is_kept_in_one_transaction(
        tmp_path: Path, identities: list[Identity]) -> None:
    """So a kill or a full disk between its writes cannot leave it in the transcript and queued for some members
    only (nothing re-queues it after a restart)."""
    a, b, c = identities[:3]
    wire = Wire()
    sa = _service(wire, a, tmp_path / "a")
    shared = tmp_path / "notes.txt"
    shared.write_text("the notes")
    try:
        gid = sa.create("club", [_member(b, "bob"), _member(c, "carol")])     # both away: everything waits
        writes: list[str] = []
        real = sa._store._write

        def counted(fn, **kw):  # type: ignore[no-untyped-def]
            writes.append(fn.__qualname__)
            return real(fn, **kw)
        sa._store._write = counted  # type: ignore[method-assign]
        sa.say(gid, "hello")
        assert len(writes) == 1, writes
        writes.clear()
        sa.send_file(gid, str(shared))
        assert len(writes) == 1, writes
        sa._store._write = real  # type: ignore[method-assign]
        kinds = [r.record["counter"] for r in sa._store.rows("pending") if r.record.get("counter")]
        assert sorted(kinds) == [1, 1, 2, 2]                  # both texts for both members, nothing less
    finally:
        sa.close()
