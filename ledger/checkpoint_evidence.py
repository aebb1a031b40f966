"""Checkpoint evidence from chat nodes: a chat peer whose ledger's final block is not on this node's chain.

In step 2 of every chat both sides exchange their ledger's final block and tip (docs/protocol.md §3.2); when they
disagree, each chat node hands the peer's position to its own ledger node in a ``checkpoint_evidence`` request
(docs/ledger-protocol.md §5.5). This module judges such a report and acts on it, with the machinery that already
exists for conflicting final history: it never raises an alert of its own.

1. A sender over its budget (a token bucket per sender IP) is refused; the same block reported again within
   ``ttl`` is judged again but acted on once.
2. The reported block is looked up here (:meth:`ledger.local_ledger.LocalLedger.block_standing`): on our main chain
   (``on-chain``: nothing to do, the reporter's own view was stale), already in a parked branch (``parked``: the
   node's existing ALERT covers it when that branch is heavier), or another block at that height / above our tip.
3. In the last two cases the report is kept (bounded: ``kept`` newest, for ``ledger status``) and the node dials
   the chat peer's **ledger node, found in this node's own ledger** (the record of the fingerprint the report
   names, at its IP and ledger port — never an address the reporter chooses). That connection is an ordinary
   gossip peer: if its chain has more work, headers-first sync fetches it and, since it forks below our final
   height, local finality parks it and raises the ALERT (ledger/chain.py, "Local finality"). A lighter branch is
   not fetched (fork choice would never follow it); the report stays listed as unconfirmed.

Nothing a reporter sends is trusted: the report costs one lookup in memory and at most one dial per block per
``ttl``, and it only makes this node talk to a ledger node its own ledger names.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.local_ledger import LocalLedger
from ledger.peers import SenderBudgets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvidenceConfig:
    rate: float = 1 / 10          # reports per second accepted from one sender IP…
    burst: float = 4.0            # …with this many saved up
    senders_limit: int = 256      # sender buckets remembered
    kept: int = 16                # reports shown by status (the newest)
    ttl: float = 600.0            # the same reported block is acted on once per this long


@dataclass
class Report:
    peer: bytes                   # the chat peer's key fingerprint
    final_height: int
    final_hash: bytes
    tip_height: int
    tip_hash: bytes
    reporter: str                 # the IP of the chat node that reported it
    at: float
    verdict: str                  # "conflict" (another block here at that height), "beyond" (above our tip) or
                                  # "parked" (in a branch this node parked: the existing ALERT's business)
    asked: str | None             # the peer's ledger node this node dialled, if its ledger names one

    def text(self, confirmed: bool) -> str:
        where = {"conflict": "this node holds another block at that height",
                 "beyond": "this node's chain does not reach that height",
                 "parked": "it is in a branch this node parked, as it conflicts with final history"}[self.verdict]
        ask = ("" if self.verdict == "parked" else
               f"; asked that peer's ledger node at {self.asked} for its chain" if self.asked
               else "; this ledger names no ledger node for that peer")
        state = ("confirmed: the branch holding it is parked (see the ALERT)" if confirmed
                 else "not confirmed: no branch holding it reached this node")
        return (f"a chat peer ({self.peer.hex()[:16]}) of {self.reporter} holds block {self.final_height} "
                f"({self.final_hash.hex()[:16]}) as final, tip {self.tip_height}; {where}{ask}; {state}")


class CheckpointEvidence:
    """Judges ``checkpoint_evidence`` requests (see the module docstring). Thread-safe."""

    def __init__(self, ledger: LocalLedger, *, dial: Callable[[str, int], str | None],
                 clock: Callable[[], float], config: EvidenceConfig | None = None) -> None:
        self.ledger = ledger
        self._dial = dial             # dial(ip, ledger port) → the address dialled, or None (own/banned/…)
        self._clock = clock
        self.config = config or EvidenceConfig()
        self._lock = threading.Lock()
        self._budgets = SenderBudgets(self.config.rate, self.config.burst, self.config.senders_limit)
        self._reports: OrderedDict[bytes, Report] = OrderedDict()     # by reported block hash, oldest first

    def receive(self, fields: dict[str, Any], *, sender_ip: str) -> tuple[str, str]:
        """Judge one report; returns ``(verdict, detail)`` for the ``evidence_result`` answer."""
        now = self._clock()
        if not self._allowed(sender_ip, now):
            return "refused", "too many checkpoint reports from this address; try again later"
        height, block = fields["final_height"], fields["final_hash"]
        standing, branch = self.ledger.block_standing(height, block)
        if standing == "main":
            return "on-chain", f"block {height} ({block.hex()[:16]}) is on this node's main chain"
        if standing == "parked":    # known here already: kept for status, nothing to fetch
            assert branch is not None
            self._keep(Report(fields["peer"], height, block, fields["tip_height"], fields["tip_hash"], sender_ip,
                              now, "parked", None))
            return "parked", f"block {height} is in a branch this node parked: {branch.describe()}"
        with self._lock:
            known = self._reports.get(block)
            fresh = known is None or now - known.at > self.config.ttl
        if not fresh:
            assert known is not None
            return "recorded", known.text(False)
        answer = self.ledger.lookup("fp", fields["peer"], now)
        record = answer.record if answer is not None else None
        asked = None
        if record is not None and record.ip is not None and record.ledger_port:
            asked = self._dial(record.ip, record.ledger_port)
        report = Report(fields["peer"], height, block, fields["tip_height"], fields["tip_hash"], sender_ip, now,
                        standing, asked)
        self._keep(report)
        log.warning("checkpoint evidence: %s", report.text(False))
        return "recorded", report.text(False)

    def _keep(self, report: Report) -> None:
        with self._lock:
            self._reports.pop(report.final_hash, None)
            self._reports[report.final_hash] = report
            while len(self._reports) > self.config.kept:
                self._reports.popitem(last=False)

    def _allowed(self, ip: str, now: float) -> bool:
        return self._budgets.take(ip, now) == 0

    def status(self) -> list[dict[str, Any]]:
        """The kept reports, newest first; ``confirmed`` once the reported block sits in a parked branch."""
        with self._lock:
            reports = list(self._reports.values())
        out = []
        for r in reversed(reports):
            confirmed = self.ledger.block_standing(r.final_height, r.final_hash)[0] == "parked"
            out.append({"peer": r.peer.hex(), "final_height": r.final_height, "final_hash": r.final_hash.hex(),
                        "tip_height": r.tip_height, "tip_hash": r.tip_hash.hex(), "reporter": r.reporter,
                        "verdict": r.verdict, "asked": r.asked, "confirmed": confirmed, "text": r.text(confirmed)})
        return out
