"""Fuzzing group frames: schema-shaped and mutated bodies from a member reach a running group service. Whatever
arrives, the service refuses it with a plain notice or takes it, its thread keeps running, nothing it keeps is
damaged, and the member's next honest message is still shown. A membership change decodes or is refused with a
``GroupError``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.identity import Identity
from p2pchat.groups import CHANGE, GROUP_WIRE, Change, GroupError, GroupText, SharedFile
from tests.fuzz.fuzz_kit import bodies_for, fuzz_settings, mutated
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _member, _service

GID = bytes(range(16))


def _samples(sender: bytes, gid: bytes, change: bytes) -> list[bytes]:
    t = GroupText(gid, sender, 7, 2, 9, 1.7e9, "hello ✓")
    f = GroupText(gid, sender, 8, 2, 10, 1.7e9, "a.pdf", SharedFile("a.pdf", 10, bytes(32)))
    return [t.encode(3), f.encode(4), GROUP_WIRE.encode_body("ack", refs=[1, 2]),
            GROUP_WIRE.encode_body("changes", ref=5, group=gid, changes=[change])]


@pytest.fixture
def pair(tmp_path: Path, identities: list[Identity]):  # type: ignore[no-untyped-def]
    a, b = identities[:2]
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    gid = sa.create("lab", [_member(b, "bob")])
    wait_until(lambda: len(sb.snapshot()) == 1, 10, what="bob invited")
    try:
        yield wire, sa, sb, gid, a, b
    finally:
        sa.close()
        sb.close()


@given(data=st.data())
@fuzz_settings(150)
def test_any_group_frame_from_a_member_is_refused_plainly_or_taken_and_the_service_keeps_serving(pair, data) -> None:  # type: ignore[no-untyped-def]
    wire, sa, sb, gid, a, b = pair
    change = sa._call(lambda: sa.groups[gid].log.ordered()[-1].encode())
    body = data.draw(st.one_of(bodies_for(GROUP_WIRE),
                               st.sampled_from(_samples(b.fingerprint, gid, change)).flatmap(mutated)))
    before = sa.snapshot()
    sa.frame_from(f"{a.fingerprint.hex()}>{b.fingerprint.hex()}", b.fingerprint.hex(), body)
    after = sa.snapshot()                          # the frame was handled (one queue, in order)
    assert sa._thread.is_alive()
    assert [(gid_, name) for gid_, name, _ in after] == [(gid_, name) for gid_, name, _ in before]
    for e in wire.events[a.fingerprint.hex()]:
        if isinstance(e, GroupNotice):
            assert e.text and "Traceback" not in e.text
    # bob's next real message is still taken
    counter = sb.say(gid, "still here")
    wait_until(lambda: any(isinstance(e, GroupMessage) and e.counter == counter
                           for e in wire.events[a.fingerprint.hex()]), 10, what="bob's honest message")


@given(body=st.one_of(bodies_for(CHANGE), st.binary(max_size=300)))
@fuzz_settings(300)
def test_a_membership_change_decodes_or_is_refused_with_a_group_error(body: bytes) -> None:
    try:
        c = Change.decode(body)
    except GroupError as exc:
        assert str(exc).startswith("a ")
        return
    assert Change.decode(c.encode()) == c
