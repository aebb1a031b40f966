"""What one member can make a node hold in memory with group messages that claim a membership version the node
does not have (red team, 2026-12-07 night): texts held for a version wait in memory until the changes arrive, and a
hostile member could send 256 of 64 K characters in each of its groups (64 MiB a group) and take every slot of a
group's holding. Now at most 64 texts and 4 MiB of UTF-8 per member over all groups; a version no group can
reach is refused at once."""

from __future__ import annotations

from pathlib import Path

from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.identity import Identity
from p2pchat.group_service import MAX_HELD_BYTES_PER_PEER, MAX_HELD_PER_PEER
from p2pchat.groups import GROUP_WIRE, MAX_LOG
from tests.helpers import wait_until
from tests.p2pchat.test_group_bounds import _service
from tests.p2pchat.test_group_service import Wire, _member

WIDE = "𝄞" * 65536          # 64 K characters, 256 KiB of UTF-8: the most one group message may carry


def _text(gid: bytes, sender: Identity, counter: int, version: int, text: str) -> bytes:
    return GROUP_WIRE.encode_body("text", ref=counter, group=gid, sender=sender.fingerprint, counter=counter,
                                  version=version, lamport=counter, sent_at=1.0, text=text)


def test_a_member_holds_at_most_its_share_of_texts_waiting_for_a_version_and_the_others_still_can(
        tmp_path: Path, identities: list[Identity]) -> None:
    a, b, c = identities[:3]
    wire = Wire()
    sa = _service(wire, a, tmp_path / "a")
    sb, sc = _service(wire, b, tmp_path / "b"), _service(wire, c, tmp_path / "c")
    try:
        gid = sa.create("lab", [_member(b, "bob"), _member(c, "carol")])
        wait_until(lambda: len(sb.snapshot()) == 1 and len(sc.snapshot()) == 1, 10, what="both invited")
        version = sa.groups[gid].log.version
        b_fp, c_fp = b.fingerprint.hex(), c.fingerprint.hex()
        for counter in range(1, 41):          # bob claims changes nobody has, in 40 wide texts
            sa.frame_from(f"{a.fingerprint.hex()}>{b_fp}", b_fp, _text(gid, b, counter, version + 5, WIDE))
        sa.frame_from(f"{a.fingerprint.hex()}>{c_fp}", c_fp, _text(gid, c, 1, version + 1, "carol, a change ahead"))
        held = lambda: sa.groups[gid].inbox.held          # noqa: E731

        def carol_held() -> bool:
            return any(t.sender == c.fingerprint for _, t in held())
        wait_until(carol_held, 10, what="carol's text held like any text ahead of this node")
        from_bob = [t for peer, t in held() if peer == b.fingerprint]
        assert len(from_bob) <= MAX_HELD_PER_PEER
        assert sum(len(t.text.encode()) for t in from_bob) <= MAX_HELD_BYTES_PER_PEER
        assert len(from_bob) == MAX_HELD_BYTES_PER_PEER // len(WIDE.encode())      # 16, not 40
        notices = [e.text for e in wire.events[a.fingerprint.hex()] if isinstance(e, GroupNotice)]
        assert any("already wait for membership changes" in n for n in notices)
        # a version no group reaches is refused at once, not held
        sa.frame_from(f"{a.fingerprint.hex()}>{c_fp}", c_fp, _text(gid, c, 2, MAX_LOG + 1, "never"))
        wait_until(lambda: any("which no group reaches" in e.text for e in wire.events[a.fingerprint.hex()]
                               if isinstance(e, GroupNotice)), 10, what="the impossible version refused")
        assert not any(t.text == "never" for _, t in held())
        assert not any(e.text == "never" for e in wire.events[a.fingerprint.hex()] if isinstance(e, GroupMessage))
    finally:
        for s in (sa, sb, sc):
            s.close()
