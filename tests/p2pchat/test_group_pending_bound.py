"""A member that never acknowledges is sent the whole membership log again each time a change needs it (a change
whose author lacked part of the log adds it); what waits for it stays one copy of the log, not one per time: a
hostile creator re-adding a silent key with stale parents made bob hold every copy (quadratic in the log)."""

from __future__ import annotations

import time
from pathlib import Path

from p2pchat.foundation.identity import Identity
from p2pchat.groups import GROUP_WIRE, SIGN_CONTEXT, Change
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _member, _service

CYCLES = 30


def crafted(author: Identity, gid: bytes, op: str, target: Identity, parents: list[Change]) -> Change:
    """A change on any parents (a hostile member's, signed with its own key), of the version the rules allow: one
    more than its parents'."""
    version = 1 + max(p.version for p in parents)
    unsigned = Change(gid, op, target.fingerprint, target.public_der if op == "add" else None, "silent",
                      tuple(sorted(p.hash for p in parents)), version, author.fingerprint, time.time())
    return Change(**{**unsigned.__dict__, "sig": author.sign(SIGN_CONTEXT, unsigned.signed_body())})


def test_the_whole_log_waiting_for_a_silent_member_replaces_the_copies_before_it(
        tmp_path: Path, identities: list[Identity]) -> None:
    a, b, silent, ghost = identities[:4]      # silent has no node on the wire: it never acknowledges
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, tmp_path / "b")
    try:
        gid = sa.create("club", [_member(b, "bob")])
        wait_until(lambda: sb.snapshot(), 10, what="bob in the group")
        log = sa._call(lambda: sa.groups[gid].log)
        create = next(c for c in log.changes.values() if c.op == "create")
        last = sorted(log.changes.values(), key=lambda c: c.version)
        private, sent, adds = create, 0, []
        for _ in range(CYCLES):
            # stale parents: the re-add builds on a's private chain of removals of a never-member (kept without
            # effect), long enough for the re-add to come after the last removal but lacking the rest of the log,
            # so bob sends the whole log with it
            chain = []
            while private.version < last[-1].version:
                private = crafted(a, gid, "remove", ghost, [private])
                chain.append(private)
            add = crafted(a, gid, "add", silent, [private])
            adds.append(add.hash)
            rem = crafted(a, gid, "remove", silent, [add, *last[-1:]])
            last = [add, rem]
            for change in (*chain, add, rem):
                sent += 1
                body = GROUP_WIRE.encode_body("changes", ref=1000 + sent, group=gid, changes=[change.encode()])
                sb.frame_from(f"{b.fingerprint.hex()}>{a.fingerprint.hex()}", a.fingerprint.hex(), body)
        want = 2 + sent                         # create, add bob, then every change sent
        wait_until(lambda: sb._call(lambda: len(sb.groups[gid].log.changes)) == want, 20,
                   what="bob has every change")
        # every re-add took effect (it comes after the removal before it), so each one had bob queue the whole log
        assert set(adds) <= sb._call(lambda: set(sb.groups[gid].log.effective))
        waiting = sb._call(lambda: [p for p in sb._pending.get(silent.fingerprint.hex(), []) if p.gid == gid])
        assert len(waiting) == 1, [len(p.body) for p in waiting]
        holds = {Change.decode(bytes(c)).hash for c in GROUP_WIRE.decode(waiting[0].body)["changes"]}
        # the whole log as of the last re-add (its removal is the author's to tell, not bob's)
        assert holds == sb._call(lambda: set(sb.groups[gid].log.changes)) - {last[-1].hash}
        assert len(sb._store.rows("pending")) == 1        # the store holds that one copy too
    finally:
        sa.close()
        sb.close()
