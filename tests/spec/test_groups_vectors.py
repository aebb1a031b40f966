"""docs/groups.md's wire vectors, recomputed from their descriptions by the spec implementation, and the merge of
a membership log by the documented rules, compared with the project's on the same changes."""

from __future__ import annotations

import hashlib
import itertools
import time

from p2pchat.groups import GROUP_WIRE, MembershipLog
from p2pchat.groups import Change as ProjectChange
from tests.spec.docvectors import vector, x
from tests.spec.harness import spec_key
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import groups as gs

GID = bytes(range(16))
V = vector("groups.md", "group-wire")


def test_the_groups_wire_vectors_match_an_implementation_of_their_text():
    add = gs.Change(GID, "add", b"\x11" * 32, b"KEY-DER", "bob", (b"\x22" * 32,), 2, b"\x33" * 32, 1700000000.0)
    assert add.signed_body() == x(V["change_signed_body"])
    remove = gs.Change(GID, "remove", b"\x11" * 32, None, "", (b"\x22" * 32,), 3, b"\x33" * 32, 1700000000.0)
    assert remove.signed_body() == x(V["remove_signed_body"])
    assert hashlib.sha256(cc.signed_message("group-change", remove.signed_body())).digest() == \
        x(V["remove_signed_message_sha256"])
    assert gs.packed("changes", ref=9, group=GID, changes=[b"\x01\x02\x03"]) == x(V["changes_frame"])
    text = gs.packed("text", ref=2, group=GID, sender=b"\x44" * 32, counter=4, version=2, lamport=8,
                     sent_at=1700000000.0, text="hi ✓")
    assert text == x(V["text_frame"])
    assert GROUP_WIRE.decode(text)["text"] == "hi ✓"                       # the project reads it as written
    assert gs.packed("file", ref=1, group=GID, sender=b"\x44" * 32, counter=3, version=2, lamport=7,
                     sent_at=1700000000.0, name="notes.pdf", size=300000, sha256=b"\x55" * 32) == x(V["file_frame"])
    assert gs.packed("ack", refs=[5]) == x(V["ack_frame"])
    assert gs.group_inner(x(V["ack_frame"])) == x(V["group_inner"])


def test_the_documented_merge_gives_the_projects_members_in_every_arrival_order():
    """Creator a adds b and c; concurrently b adds d (a member may add) and c leaves; a removes b. Built and
    signed by the spec implementation; the spec merge and the project's agree, whatever the order of arrival."""
    keys = {name: spec_key(i) for name, i in (("a", 23), ("b", 22), ("c", 21), ("d", 20))}
    der = {name: k.public_key().export_key(format="DER") for name, k in keys.items()}
    fp = {name: gs.fingerprint(d) for name, d in der.items()}
    a, b, c, d = "a", "b", "c", "d"
    now = time.time()

    def change(author, op, target, parents, name=""):
        version = 1 + max((p.version for p in parents), default=0)
        key = der[target] if op in ("create", "add") else None
        return gs.sign_change(keys[author], gs.Change(GID, op, fp[target], key, name, tuple(p.hash for p in parents),
                                                version, fp[author], now))

    create = change(a, "create", a, [], "lab")
    add_b = change(a, "add", b, [create], "bob")
    add_c = change(a, "add", c, [add_b], "carol")
    add_d = change(b, "add", d, [add_c], "dave")
    leave_c = change(c, "remove", c, [add_c])
    remove_b = change(a, "remove", b, [add_c])
    log = [create, add_b, add_c, add_d, leave_c, remove_b]
    expected = None
    for order in itertools.islice(itertools.permutations(log[3:]), 6):
        state = gs.GroupState(GID)
        project = MembershipLog(GID)
        for ch in log[:3] + list(order):
            state.add(ch)
            project.add(ProjectChange.decode(ch.encoded()))
        members = set(state.members())
        assert members == set(project.members)
        assert expected in (None, members)
        expected = members
    # three changes of version 4: ordered by (version, author, hash), whichever comes first decides b's add of d
    assert fp[c] not in expected and fp[a] in expected
