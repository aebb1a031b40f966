"""What one member may make this node do with group frames (issue 18; docs/groups.md "Bounds"), sans IO.

Each peer key has a token bucket per kind of work, drawn before the work is done:

- ``frame``: any group frame handed over by its chat (decoding, an acknowledgement, a store write);
- ``text``: a message or shared file shown and kept;
- ``change``: a membership change whose signature must be checked (one new to this node);
- ``invite``: a group this node did not know, offered by that peer.

A frame over a budget is refused before any of that work: it is not acknowledged (an honest sender sends it
again in its next chat), and the user is told once until the peer is under its budget again — so a flood costs
this node a decode and a dictionary lookup per frame, less than the sender's sealing and sending it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.groups import MAX_INVITES_PER_CONTACT, MAX_LOG
from p2pchat.relay.ratelimit import TokenBucket

MAX_PENDING_PER_MEMBER = 2000       # frames that may wait for one member at its sender (so: a catch-up's size)


@dataclass(frozen=True)
class Budget:
    rate: float                      # units per second on average
    burst: float                     # units saved up
    what: str                        # the refusal, for a person ("{peer}" is the peer)


BUDGETS = {
    # a member coming back gets up to MAX_PENDING_PER_MEMBER texts and their acknowledgements at once
    "frame": Budget(100.0, 2.0 * MAX_PENDING_PER_MEMBER + 100,
                    "{peer} sends group frames faster than 100 a second; the rest were refused"),
    "text": Budget(20.0, float(MAX_PENDING_PER_MEMBER),
                   "{peer} sends group messages faster than 20 a second; the rest were refused"),
    # a new member checks a whole log once (at most MAX_LOG changes), then a few changes at a time
    "change": Budget(16.0, 2.0 * MAX_LOG,
                     "{peer} sends more membership changes than 16 a second; the rest were refused"),
    # a class's groups may come at once; beyond, one a minute (each costs checking a whole log)
    "invite": Budget(1 / 60, 2.0 * MAX_INVITES_PER_CONTACT,
                     "{peer} invites this node to groups faster than one a minute; refused"),
    # refusals of bad frames shown to the user (the others are only logged)
    "notice": Budget(1.0, 10.0, ""),
}
MAX_PEERS = 4096                    # peer keys with buckets; beyond, the least recently seen is forgotten


class GroupLimits:
    """The buckets of every peer key (used by the group service's thread only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, budgets: dict[str, Budget] | None = None) -> None:
        self._clock = clock
        self._budgets = {**BUDGETS, **(budgets or {})}
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._refusing: set[tuple[str, str]] = set()

    def admit(self, fp: str, kind: str, cost: float = 1.0) -> tuple[bool, str | None]:
        """Draw ``cost`` units of ``kind`` for peer ``fp``: (admitted, the sentence to show — only for the first
        refusal of a run of refusals)."""
        budget = self._budgets[kind]
        key = (fp, kind)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(budget.rate, budget.burst, now)
            while len(self._buckets) > MAX_PEERS * len(self._budgets):
                old, _ = self._buckets.popitem(last=False)
                self._refusing.discard(old)
        self._buckets.move_to_end(key)
        if bucket.reserve(cost, now) == 0.0:
            self._refusing.discard(key)
            return True, None
        bucket.reserve(-cost, now)          # a refused frame is not done: only what was done is charged
        if key in self._refusing:
            return False, None
        self._refusing.add(key)
        return False, budget.what.format(peer=fp[:16])


__all__ = ["BUDGETS", "MAX_PENDING_PER_MEMBER", "Budget", "GroupLimits"]
