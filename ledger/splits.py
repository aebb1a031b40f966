"""Splits older than the finality window, as seen from the side that keeps its chain.

When two halves of a network were apart for longer than the finality window (ledger.chain.FinalityPolicy), each
half's history is final on its own side. On reconnecting, the side whose fork choice would switch parks the other
branch and raises an ALERT (ledger.chain, "parked"); the other side's fork choice simply prefers its own chain, so
without this module its users would learn nothing. A node notes every checked branch a peer offers that forks from
its main chain below its final height and has at least half the work its own chain gained since that fork (a
cheaper branch is no split of the network, and costs a stranger little to make), and reports it to its user in
``ledger status`` (ALERT) and once in its log. Bounded: one report per fork point, at most ``MAX_SPLITS``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_SPLITS = 8


@dataclass(frozen=True)
class SplitReport:
    """A peer's branch that conflicts with this node's final history."""

    peer: str
    fork_height: int
    fork_hash: bytes
    tip_hash: bytes
    tip_height: int
    final_height: int

    def describe(self) -> str:
        return (f"the network is split: {self.peer} follows a branch (tip {self.tip_hash.hex()[:16]}, height "
                f"{self.tip_height}) that forked from this node's chain at block {self.fork_height}, below its final "
                f"history (final block {self.final_height}); neither side merges the other by itself, so records "
                "registered on the other side since the split are missing here. Choose one history deliberately: "
                "nodes that should switch list the other branch with 'ledger reorg --list' and accept it with "
                "'ledger reorg --accept HASH'")


def significant(branch_work_since_fork: int, our_work_since_fork: int) -> bool:
    """A branch worth reporting: at least half the work this node's chain gained since the fork."""
    return 2 * branch_work_since_fork >= our_work_since_fork


class SplitWatch:
    """The splits seen lately, one per fork point (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: OrderedDict[bytes, SplitReport] = OrderedDict()

    def note(self, report: SplitReport) -> bool:
        """Remember ``report`` (replacing the one of the same fork point); True when its fork point is new."""
        with self._lock:
            new = report.fork_hash not in self._reports
            self._reports.pop(report.fork_hash, None)
            self._reports[report.fork_hash] = report
            while len(self._reports) > MAX_SPLITS:
                self._reports.popitem(last=False)
        return new

    def open(self, settled: Callable[[SplitReport], bool]) -> list[SplitReport]:
        """The reports not ``settled`` (e.g. the branch became ours, or is parked here and reported as such);
        settled ones are forgotten."""
        with self._lock:
            reports = list(self._reports.values())
        done = [r for r in reports if settled(r)]
        if done:
            with self._lock:
                for r in done:
                    self._reports.pop(r.fork_hash, None)
        return [r for r in reports if r not in done]
