"""One verified key opening many chats at once with one node: what it holds and costs there, with the per-key cap
(p2pchat.admission.CHATS_PER_PEER, the default) against the same node without it (the baseline), same run.

    python3 bench/peer_cap_bench.py [--chats N]

Both nodes run in this process on loopback; the attacker is an honest ChatNode with a registered key that opens
``--chats`` chats in waves of PRE_AUTH_PER_ADDRESS (what one address may hold unauthenticated) and keeps every one
it gets. Measured on the victim: chats it holds at the end, the RSA signatures it made (its one private-key
operation per chat) and the threads of the process.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tests/ helpers: identities, loopback nodes

from p2pchat.admission import CHATS_PER_PEER, PRE_AUTH_PER_ADDRESS, Admission
from p2pchat.events import SessionEnded, StepResult
from p2pchat.foundation.identity import Identity
from p2pchat.steps import Step
from tests.conftest import make_identities
from tests.p2pchat.node_kit import Peer, pair, wait_until


class Counting:
    """Counts the victim identity's signatures (``sign`` is its only private-key operation)."""

    def __init__(self, identity: Identity) -> None:
        self.count = 0
        self._sign = identity.sign

        def sign(context: str, data: bytes) -> bytes:
            self.count += 1
            return self._sign(context, data)
        identity.sign = sign      # type: ignore[method-assign]


def attack(per_peer: int, chats: int) -> dict[str, float]:
    ids = make_identities(2)
    counting = Counting(ids[1])
    with pair(ids, bob={"admission": Admission(per_peer=per_peer, per_minute=10 * chats)}) as (alice, bob, _):
        threads0 = threading.active_count()
        started = time.monotonic()
        held = refused = 0
        for start in range(0, chats, PRE_AUTH_PER_ADDRESS):
            wave = [open_one(alice, bob) for _ in range(min(PRE_AUTH_PER_ADDRESS, chats - start))]
            for sid in wave:
                wait_until(lambda s=sid: alice.log.all(StepResult, session=s, step=Step.AGREE_KEY, ok=True)
                           or alice.log.all(SessionEnded, session=s), 30)
                if alice.log.all(SessionEnded, session=sid):
                    refused += 1
                else:
                    held += 1
        elapsed = time.monotonic() - started
        live = sum(1 for s in bob.node._rt.all_sessions() if not s.ended)
        out = {"held": held, "refused": refused, "victim_live": live, "signatures": counting.count,
               "threads": threading.active_count() - threads0, "seconds": elapsed}
    return out


def open_one(alice: Peer, bob: Peer) -> str:
    sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
    alice.node.run_all(sid)
    return sid


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chats", type=int, default=64)
    args = p.parse_args()
    capped = attack(CHATS_PER_PEER, args.chats)
    baseline = attack(10 * args.chats, args.chats)
    print(f"{args.chats} chats opened at once by one verified key (threads: both nodes, this process)")
    print(f"{'':24}{'capped (' + str(CHATS_PER_PEER) + ')':>16}{'no cap (baseline)':>20}{'ratio':>8}")
    for key in ("held", "refused", "victim_live", "signatures", "threads", "seconds"):
        a, b = capped[key], baseline[key]
        ratio = f"{a / b:.2f}" if b else "—"
        print(f"{key:24}{a:>16.4g}{b:>20.4g}{ratio:>8}")


if __name__ == "__main__":
    main()
