"""A child for tests/crash/test_group_kill9.py: alice and bob's group services with their real stores in one
process, frames handed straight across (tests/p2pchat/test_group_service.py's Wire). Each start delivers what
waited (both chats become ready), then alice says texts (and every tenth time adds or removes carol) and prints
``said COUNTER TEXT`` once ``say`` returned, until it is killed or has said ``count``."""

from __future__ import annotations

import sys
from pathlib import Path

from p2pchat.events import GroupMessage
from tests.conftest import make_identities
from tests.p2pchat.test_group_service import Wire, _member, _service


def main(root: Path, tag: str, count: int) -> None:
    alice, bob, carol = make_identities(3)
    wire = Wire()
    sa, sb = _service(wire, alice, root / "alice"), _service(wire, bob, root / "bob")
    try:
        snap = sa.snapshot()
        gid = snap[0][0] if snap else sa.create("lab", [_member(bob, "bob")])
        a, b = alice.fingerprint.hex(), bob.fingerprint.hex()
        sa.chat_ready(b, f"{a}>{b}")       # what waited for the other goes out now
        sb.chat_ready(a, f"{b}>{a}")
        print("ready", gid.hex(), flush=True)
        for i in range(count):
            if i % 10 == 9:
                members = sa.snapshot()[0][2]
                if carol.fingerprint in members:
                    sa.remove(gid, carol.fingerprint.hex())
                else:
                    sa.add(gid, _member(carol, "carol"))
            text = f"{tag}-{i}"
            counter = sa.say(gid, text)
            print("said", counter, text, flush=True)
        got = [e for e in wire.events[b] if isinstance(e, GroupMessage)]
        print("bob shown", len(got), flush=True)
    finally:
        sa.close()
        sb.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
