"""The owner's watch over its own binding (the self-audit of CONIKS, the gossip of Certificate Transparency).

A node knows what its record should say (its address and nickname). :class:`OwnerWatch` checks, on every
chain change (a :meth:`~ledger.local_ledger.LocalLedger.add_listener` listener; not while ``busy()``, e.g. during
a sync) and whenever the node asks (:meth:`OwnerWatch.check`, from its maintenance loop):

- **address**: the node's IP is bound to another key;
- **nickname**: the node's nickname is bound to another key;
- **vanished**: a record of ours that the main chain held with at least ``watch_depth`` confirmations is no
  longer on the main chain (a rewrite), and no later record of ours replaced it.

Each alert is logged at WARNING when it appears (and at INFO when it clears), listed by ``status()`` for
``ledger status`` and the GUI, and handed to ``on_alert`` with :class:`~ledger.disputes.Evidence`: our signed
record and, when it was mined, the header and Merkle path of its block, so other nodes can check it
(:mod:`ledger.disputes`). Alerts are raised again every ``repeat`` seconds while they last, so nodes that were
offline hear them too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.blocks import Block, BlockHeader
from ledger.chain import AddResult
from ledger.disputes import Evidence
from ledger.local_ledger import LocalLedger
from ledger.records import Record
from p2pchat.foundation import crypto

log = logging.getLogger(__name__)

WATCH_DEPTH = 2          # confirmations a record of ours needs before its disappearance is an alert
REPEAT_SECONDS = 600.0


@dataclass(frozen=True)
class Desired:
    """What this node's binding should be."""

    ip: str | None
    nickname: str


@dataclass(frozen=True)
class _Mined:
    """Where a record of ours was seen on the main chain."""

    record: Record
    header: BlockHeader
    index: int
    path: tuple[bytes, ...]
    deep: bool               # it had ``watch_depth`` confirmations at some point


@dataclass(frozen=True)
class Alert:
    kind: str                # address / nickname / vanished
    text: str                # for a person
    other: bytes | None      # the key holding our address/nickname, if any
    since: float             # unix time

    def to_status(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "other_key": self.other.hex() if self.other else None,
                "since": int(self.since)}


ClaimMaker = Callable[[], Record]
"""Signs a record of what our binding should be (used as evidence when none of ours was ever mined)."""


class OwnerWatch:
    """Checks this node's own binding; see the module docstring."""

    def __init__(self, ledger: LocalLedger, fingerprint: bytes, desired: Callable[[], Desired],
                 make_claim: ClaimMaker, on_alert: Callable[[Evidence], None], *,
                 watch_depth: int = WATCH_DEPTH, repeat: float = REPEAT_SECONDS,
                 busy: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.fingerprint = fingerprint
        self._desired = desired
        self._make_claim = make_claim
        self._on_alert = on_alert
        self.watch_depth = watch_depth
        self.repeat = repeat
        self.clock = clock
        self._busy = busy            # e.g. a sync under way: its intermediate chains are not worth an alert
        self._lock = threading.Lock()
        self._mined: _Mined | None = None
        self._alerts: dict[str, Alert] = {}
        self._claim: Record | None = None
        self._last_sent: dict[bytes, float] = {}
        self._checking = threading.Lock()

    def attach(self) -> None:
        self.ledger.add_listener(on_block=self._on_block)

    def detach(self) -> None:
        self.ledger.remove_listener(on_block=self._on_block)

    def _on_block(self, block: Block, result: AddResult) -> None:
        if (result.connected or result.disconnected) and not self._busy():
            self.check()

    # --- the check -----------------------------------------------------------------------------------------

    def check(self) -> list[Alert]:
        """Compare the ledger with what our binding should be; raise, repeat or clear alerts. Returns them."""
        if not self._checking.acquire(blocking=False):
            return self.alerts()       # a check is running on another thread; it sees the same chain
        try:
            return self._check()
        finally:
            self._checking.release()

    def _check(self) -> list[Alert]:
        now = self.clock()
        desired = self._desired()
        found: dict[str, Alert] = {}
        ledger = self.ledger
        with ledger.lock:
            chain = ledger.chain
            bindings = chain.bindings
            if desired.ip is not None:
                info = bindings.lookup_ip(desired.ip, now)
                if info is not None and info.record.fingerprint != self.fingerprint:
                    found["address"] = self._alert("address", info.record, f"this node's address {desired.ip} is "
                                                   f"bound to another key", now)
            info = bindings.lookup_nickname(desired.nickname, now) if desired.nickname else None
            if info is not None and info.record.fingerprint != self.fingerprint:
                found["nickname"] = self._alert("nickname", info.record, f"this node's nickname "
                                                f"{desired.nickname!r} is bound to another key", now)
            own = bindings.lookup_fingerprint(self.fingerprint, now)
            mined = self._mined
            if own is not None and own.height is not None:
                proof = chain.proof(own.record.id)
                if proof is not None:
                    header, index, path = proof
                    deep = chain.confirmations(own.height) >= self.watch_depth or (
                        mined is not None and mined.record.id == own.record.id and mined.deep)
                    mined = _Mined(own.record, header, index, tuple(path), deep)
            elif mined is not None and not chain.has_record(mined.record.id):
                main = chain.main_at(mined.header.height)
                later = bindings.identity(self.fingerprint)
                replaced = later is not None and later.record.seq > mined.record.seq
                if mined.deep and not replaced and (main is None or main.hash != mined.header.hash):
                    found["vanished"] = Alert(
                        "vanished", f"this node's record {mined.record.describe()} from {mined.header.describe()} "
                        "is no longer on the main chain (a branch without it replaced that block)", None, now)
        with self._lock:
            self._mined = mined
            old = self._alerts
            self._alerts = {k: old.get(k, a) for k, a in found.items()}   # keep the time an alert began
            alerts = list(self._alerts.values())
        for kind, alert in found.items():
            if kind not in old:
                log.warning("BINDING ALERT: %s. Other nodes are told (binding_alert); see docs/ledger.md, "
                            "\"Squats and disputes\"", alert.text)
        for kind in old.keys() - found.keys():
            log.info("binding alert cleared: %s", old[kind].text)
        if found:
            self._send(list(found))
        return alerts

    def _alert(self, kind: str, holder: Record, text: str, now: float) -> Alert:
        return Alert(kind, f"{text} ({crypto.format_fingerprint(holder.fingerprint, 4)}, record "
                     f"{holder.describe()}), not this node's {crypto.format_fingerprint(self.fingerprint, 4)}",
                     holder.fingerprint, now)

    def _send(self, kinds: list[str]) -> None:
        """Hand evidence to ``on_alert``: once per ``repeat`` seconds per piece of evidence."""
        evidence = self.evidence(kinds)
        if evidence is None:
            return
        now = time.monotonic()
        with self._lock:
            last = self._last_sent.get(evidence.id)
            if last is not None and now - last < self.repeat:
                return
            self._last_sent = {evidence.id: now}
        self._on_alert(evidence)

    def evidence(self, kinds: list[str] | None = None) -> Evidence | None:
        """Our evidence for the current alerts: the mined record with its block's header and path if we have
        one (its claim is what others check), else a freshly signed record of what our binding should be."""
        with self._lock:
            kinds = kinds if kinds is not None else list(self._alerts)
            mined = self._mined
            claim = self._claim
        if not kinds:
            return None
        kind = "vanished" if "vanished" in kinds else kinds[0]
        desired = self._desired()
        now = self.clock()
        if mined is not None and mined.record.expires > now and mined.record.ip == desired.ip:
            return Evidence(mined.record, kind, mined.header, mined.index, mined.path)
        if claim is None or claim.expires <= now or (claim.ip, claim.nickname) != (desired.ip, desired.nickname):
            claim = self._make_claim()
            with self._lock:
                self._claim = claim
        return Evidence(claim, kind)

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts.values())

    def resend_due(self) -> Evidence | None:
        """The evidence to send to a newly connected peer (None without alerts)."""
        return self.evidence() if self.alerts() else None
