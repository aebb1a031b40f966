"""Binding evidence and disputes: what a node does with an owner's complaint that its binding was taken.

An owner whose address or nickname is bound to another key, or whose mined record vanished from the main chain
(:mod:`ledger.watch`), gossips :class:`Evidence` in a ``binding_alert`` frame: its own signed record, and the
header and Merkle path of the block that held it when it was mined. Every node that receives it
(:class:`DisputeService`):

1. drops it if it saw the same evidence in the last ``evidence_ttl`` seconds, or if the sender is over its
   budget of alerts (a token bucket per sender IP);
2. checks its form, cheapest first: header fields and proof of work (one SHA-256), Merkle path, then the
   record's signature (one RSA verification, cached). A forged or malformed piece is the sender's fault;
3. looks for the conflict in its *own* ledger: the record's address or nickname held by another key, or the
   record's block off the main chain without the owner having moved on. No conflict there: not relayed, but
   kept (at most ``waiting_limit``, for ``evidence_ttl``) and looked at again on every chain change, since the
   evidence may arrive before the blocks that cause the conflict;
4. shows the conflict (bounded list for ``ledger status`` and the GUI, WARNING once) and relays the evidence:
   an address conflict only once this node's own dispute check confirmed it (anyone can sign a claim on any
   address, or mine one into a block of its own); a nickname or vanished conflict only when the evidence's
   header is a block this node accepted into its block tree (the owner's history is real, not a private block).

A dispute check dials the disputed address itself (never an address the sender chooses: only IPs bound in this
ledger, at the ledger ports of the bound record and of up to ``claims_per_ip`` claimants, at most once per
``check_interval`` per IP and once per ``check_spacing`` overall, one check at a time) and asks each port for a
reachability proof of a fresh nonce (:mod:`ledger.reachability`). If the bound key does not answer there and a
claimant's key does, the binding is *disputed*: lookups by that IP carry ``disputed`` (the bound key, the key
that answers, when it was checked), the chat refuses to treat the bound key as the owner of the address, and
the node's pool asks a reachability proof of any record for that IP. The mark is local: it is this node's
observation, never a block rule, because reachability depends on who is online (docs/ledger.md, "Squats and
disputes"). It lasts while the same record holds the address and no later check sees the bound key answer.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.blocks import BlockHeader
from ledger.errors import LedgerError
from ledger.local_ledger import LocalLedger
from ledger.merkle import verify_merkle_path
from ledger.params import NetworkParams
from ledger.peers import SenderBudgets
from ledger.protocol import LEDGER_PROTOCOL
from ledger.reachability import NONCE_LEN, check_proof, request_proof
from ledger.records import Record
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import LEDGER_PORT, format_address, parse_address
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.transport import connect

log = logging.getLogger(__name__)

ALERT_KINDS = ("address", "nickname", "vanished")
EVIDENCE_LABEL = b"p2pchat-binding-evidence-v1\x00"


@dataclass(frozen=True)
class DisputeConfig:
    """Bounds of the dispute machinery (tests shorten the intervals)."""

    evidence_ttl: float = 600.0        # the same evidence is handled once per this long
    seen_limit: int = 4096             # evidence ids remembered
    alert_rate: float = 1 / 30         # alerts per second accepted from one sender IP…
    alert_burst: float = 8.0           # …with this many saved up
    senders_limit: int = 1024          # sender buckets remembered
    conflicts_limit: int = 64          # conflicts kept for status
    check_interval: float = 60.0       # at most one dispute check per IP per this long…
    check_spacing: float = 1.0         # …and at most one check (of any IP) per this long, one at a time
    checks_pending: int = 256          # IPs waiting for a check; the oldest is dropped past this
    claims_per_ip: int = 4             # claimants kept per IP for its next check (the newest)
    check_timeout: float = 4.0         # per dial of a dispute check
    disputes_limit: int = 1024         # disputed addresses remembered
    waiting_limit: int = 64            # checked evidence without a conflict here yet, looked at on chain changes
    revalidate_interval: float = 5.0   # shown conflicts and dispute marks that no longer hold are dropped


def evidence_id(record_id: bytes, header_hash: bytes = b"") -> bytes:
    """SHA-256 of ``"p2pchat-binding-evidence-v1" 0x00 ‖ record id ‖ header hash`` (empty without a header)."""
    return crypto.sha256(EVIDENCE_LABEL, record_id, header_hash)


@dataclass(frozen=True)
class Evidence:
    """An owner's signed record and, if it was mined, the header and Merkle path of the block that held it."""

    record: Record
    kind: str                          # what the sender saw: address, nickname or vanished
    header: BlockHeader | None = None
    index: int | None = None
    path: tuple[bytes, ...] = ()

    @property
    def id(self) -> bytes:
        return evidence_id(self.record.id, self.header.hash if self.header else b"")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"record": self.record.to_wire(), "kind": self.kind}
        if self.header is not None:
            wire.update(header=self.header.packed, index=self.index, path=list(self.path))
        return wire

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> Evidence:
        kind = fields.get("kind")
        if kind not in ALERT_KINDS:
            raise LedgerError(f"unknown binding alert kind '{str(kind)[:16]}' (expected address, nickname or "
                              "vanished)")
        record = Record.from_wire(fields.get("record"))
        raw_header, index, path = fields.get("header"), fields.get("index"), fields.get("path")
        if raw_header is None:
            if index is not None or path:
                raise LedgerError("a binding alert has a Merkle path but no header")
            return cls(record, kind)
        header = BlockHeader.unpack(raw_header)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise LedgerError("a binding alert has a header but no valid record index")
        if not isinstance(path, list) or len(path) > 32 or not all(isinstance(p, bytes) and len(p) == 32
                                                                    for p in path):
            raise LedgerError("a binding alert has a malformed Merkle path")
        return cls(record, kind, header, index, tuple(path))

    def check(self, params: NetworkParams) -> None:
        """Raise :class:`LedgerError` unless the header has this network's proof of work and holds the record,
        and the record is signed by its key. Cheapest checks first: a SHA-256, the path, then one RSA check."""
        header = self.header
        if header is not None:
            if header.network_id != params.network_id or header.version != params.version:
                raise LedgerError("the header of a binding alert is from another network")
            if header.target_bits != params.difficulty_bits or not header.meets_target():
                raise LedgerError("the header of a binding alert lacks this network's proof of work")
            if header.height < 1:
                raise LedgerError("the header of a binding alert is the genesis block")
            assert self.index is not None
            if not verify_merkle_path(self.record.id, self.index, self.path, header.merkle_root):
                raise LedgerError(f"the record of a binding alert is not in {header.describe()} (Merkle proof "
                                  "fails)")
        self.record.verify_signatures(params.name)


@dataclass(frozen=True)
class Conflict:
    """A binding conflict this node sees in its own ledger, from an owner's evidence."""

    kinds: tuple[str, ...]             # address / nickname / vanished
    claimant: bytes                    # fingerprint of the owner who raised it
    nickname: str
    ip: str | None
    holder: bytes | None               # fingerprint of the key holding the address/nickname here, if another
    block: bytes | None                # the block that held the owner's record, if any
    source: str                        # who sent it ("this node" for our own alert)
    seen: float                        # unix time

    def describe(self) -> str:
        what = []
        if "address" in self.kinds:
            what.append(f"address {self.ip} is bound here to key {_short(self.holder)}")
        if "nickname" in self.kinds and "address" not in self.kinds:
            what.append(f"nickname {self.nickname!r} is bound here to key {_short(self.holder)}")
        elif "nickname" in self.kinds:
            what.append(f"nickname {self.nickname!r} too")
        if "vanished" in self.kinds:
            what.append(f"its record from block {self.block.hex()[:16] if self.block else '?'} is no longer on "
                        "the main chain")
        return (f"key {_short(self.claimant)} ({self.nickname!r} at {self.ip or 'no address'}) says its binding was "
                f"taken: " + "; ".join(what))

    def to_status(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "claimant": self.claimant.hex(), "nickname": self.nickname,
                "ip": self.ip, "holder": self.holder.hex() if self.holder else None,
                "block": self.block.hex() if self.block else None, "source": self.source, "seen": int(self.seen),
                "text": self.describe()}


@dataclass(frozen=True)
class Dispute:
    """A binding whose key does not answer at its address while another key does, as checked by ``node``."""

    ip: str
    holder: bytes                      # fingerprint of the bound key
    answering: bytes                   # fingerprint of the key that proved it answers at ``ip``
    checked: int                       # unix time of the check
    node: str                          # the node that checked ("ip:port")

    def describe(self) -> str:
        return (f"disputed: the key bound to {self.ip} ({_short(self.holder)}) does not answer there; key "
                f"{_short(self.answering)} does (checked by the ledger node at {self.node} "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.checked))})")

    def to_wire(self) -> dict[str, Any]:
        return {"holder": self.holder, "answering": self.answering, "checked": self.checked, "node": self.node}

    @classmethod
    def from_wire(cls, ip: str, data: Any) -> Dispute:
        if not isinstance(data, dict):
            raise LedgerError("the dispute mark of a lookup answer should be a map")
        holder, answering, checked, node = (data.get(k) for k in ("holder", "answering", "checked", "node"))
        if not (isinstance(holder, bytes) and len(holder) == 32 and isinstance(answering, bytes)
                and len(answering) == 32 and isinstance(checked, int) and not isinstance(checked, bool)
                and checked >= 0 and isinstance(node, str) and len(node) <= 64):
            raise LedgerError("the dispute mark of a lookup answer is malformed")
        try:   # shown to people ("checked by the ledger node at …"): an address, never the node's free text
            node = format_address(*parse_address(node, LEDGER_PORT))
        except UserError:
            raise LedgerError("the dispute mark of a lookup answer names no node address") from None
        return cls(ip, holder, answering, checked, node)

    def to_json(self) -> dict[str, Any]:
        return {"holder": self.holder.hex(), "answering": self.answering.hex(), "checked": self.checked,
                "node": self.node, "text": self.describe()}


def _short(fp: bytes | None) -> str:
    return crypto.format_fingerprint(fp, 4) if fp else "?"


def find_conflict(ledger: LocalLedger, evidence: Evidence, now: float) -> tuple[tuple[str, ...], Record | None]:
    """The conflicts ``evidence`` shows in ``ledger`` (kinds, and the record holding the address or nickname).

    Nothing when the owner's record has expired, is a revocation, or the owner itself moved on (a later record
    of its identity is on the main chain)."""
    record = evidence.record
    if record.kind == "revoke" or record.expires <= now:
        return (), None
    kinds: list[str] = []
    holder: Record | None = None
    with ledger.lock:
        bindings = ledger.chain.bindings
        own = bindings.identity(record.fingerprint)
        if own is not None and (own.status != "live" or own.record.seq > record.seq):
            return (), None            # rotated, revoked or updated since: the evidence is stale
        if record.ip is not None:
            info = bindings.lookup_ip(record.ip, now)
            if info is not None and info.record.fingerprint != record.fingerprint:
                kinds.append("address")
                holder = info.record
        if record.nickname:
            info = bindings.lookup_nickname(record.nickname, now)
            if info is not None and info.record.fingerprint != record.fingerprint:
                kinds.append("nickname")
                holder = holder or info.record
        header = evidence.header
        if header is not None and not ledger.chain.has_record(record.id):
            main = ledger.chain.main_at(header.height)
            if main is None or main.hash != header.hash:
                kinds.append("vanished")
    return tuple(kinds), holder


def who_answers(ip: str, port: int, params: NetworkParams, *, source_ip: str | None,
                timeout: float) -> bytes | None:
    """The fingerprint of the key that proves, over a fresh nonce, that it answers at ``ip:port``; None if
    nothing answers or the proof does not check out."""
    nonce = crypto.random_bytes(NONCE_LEN)
    try:
        with connect(ip, port, LEDGER_PROTOCOL, source_ip=source_ip, timeout=timeout) as conn:
            proof = request_proof(conn, params, nonce, timeout=timeout)
        key = proof.get("key")
        if not isinstance(key, bytes):
            return None
        fp = crypto.fingerprint(key)
        check_proof(proof, nonce=nonce, ip=ip, network=params.name, expected_fp=fp)
        return fp
    except (LedgerError, UserError) as exc:
        log.debug("dispute check: nothing proved at %s:%d (%s)", ip, port, exc)
        return None


RelayEvidence = Callable[[Evidence, object], None]
"""``relay(evidence, source)``: send the evidence to every peer but ``source``."""


@dataclass(frozen=True)
class _Claim:
    """An owner's claim on an address bound here to another record, waiting for a dispute check."""

    evidence: Evidence
    bound: Record
    kinds: tuple[str, ...]
    source: object
    source_text: str


class DisputeService:
    """Receives binding evidence, keeps the conflicts it confirms, and runs the bounded dispute checks.

    What is *shown* (status, WARNING, the GUI banner) and relayed: this node's own evidence; an address claim once
    a dispute check confirmed that the claimant's key answers at the address and the bound key does not; other
    conflicts when the evidence's header is a block this node accepted. Anything else is a signed wish — anyone
    can sign one, or mine one into a private block — and is logged at INFO only, never put on a screen.

    ``relay`` is called (outside any lock) for evidence to pass on; ``address`` names this node in dispute marks.
    ``start()`` starts the one checker thread, ``close()`` stops and joins it.
    """

    def __init__(self, ledger: LocalLedger, *, host: str, address: Callable[[], str], relay: RelayEvidence,
                 config: DisputeConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.params = ledger.params
        self.host = host
        self._address = address
        self._relay = relay
        self.config = config or DisputeConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._senders = SenderBudgets(self.config.alert_rate, self.config.alert_burst, self.config.senders_limit)
        self._conflicts: OrderedDict[bytes, tuple[Conflict, Evidence]] = OrderedDict()
        self._disputes: OrderedDict[str, tuple[bytes, Dispute]] = OrderedDict()   # ip → (bound record id, mark)
        self._last_check: OrderedDict[str, float] = OrderedDict()
        self._claims: OrderedDict[str, OrderedDict[bytes, _Claim]] = OrderedDict()  # ip → claimant fp → claim
        self._due: list[tuple[float, str]] = []        # heap of (when, ip) for the IPs in _claims
        self._next_check = 0.0
        self._next_revalidate = 0.0
        self._waiting: OrderedDict[bytes, tuple[Evidence, object, str, float]] = OrderedDict()
        self._thread = threading.Thread(target=self._check_loop, name="ledger-disputes")
        self.stats = {"alerts_received": 0, "alerts_handled": 0, "alerts_dropped": 0, "alerts_invalid": 0,
                      "conflicts": 0, "unconfirmed": 0, "checks": 0, "checks_done": 0, "checks_dropped": 0,
                      "dials": 0}

    def start(self) -> None:
        self.ledger.add_listener(on_block=self._on_block)
        self._thread.start()

    def close(self) -> None:
        self.ledger.remove_listener(on_block=self._on_block)
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def _on_block(self, block: Any, result: Any) -> None:
        """Chain change: evidence that showed no conflict yet is looked at again (cheap: no signature, no IO)."""
        if not (result.connected or result.disconnected):
            return
        now = time.monotonic()
        with self._lock:
            waiting = list(self._waiting.items())
        for eid, (evidence, source, source_text, since) in waiting:
            if now - since >= self.config.evidence_ttl:
                with self._lock:
                    self._waiting.pop(eid, None)
                continue
            kinds, holder = find_conflict(self.ledger, evidence, self.clock())
            if kinds:
                with self._lock:
                    self._waiting.pop(eid, None)
                self._consider(evidence, kinds, holder, source, source_text)
        self.revalidate()

    def revalidate(self) -> None:
        """Drop shown conflicts whose evidence no longer shows one here (the owner got its binding back, the
        squat expired, …) and dispute marks whose binding changed: the banner says what is true now."""
        now = self.clock()
        with self._lock:
            conflicts = list(self._conflicts.items())
            marks = list(self._disputes.items())
        for key, (conflict, evidence) in conflicts:
            if not find_conflict(self.ledger, evidence, now)[0]:
                with self._lock:
                    self._conflicts.pop(key, None)
                log.info("binding conflict resolved: %s", conflict.describe())
        for ip, (record_id, _mark) in marks:
            with self.ledger.lock:
                info = self.ledger.chain.bindings.lookup_ip(ip, now)
            if info is None or info.record.id != record_id:
                with self._lock:
                    if self._disputes.get(ip, (None,))[0] == record_id:
                        del self._disputes[ip]

    # --- evidence ------------------------------------------------------------------------------------------

    def receive(self, fields: dict[str, Any], *, sender_ip: str, source: object) -> str:
        """Handle a ``binding_alert`` from a peer; returns what became of it (for logs and tests).

        Raises :class:`LedgerError` for forged or malformed evidence (the caller penalises the sender)."""
        try:
            return self._receive(fields, sender_ip=sender_ip, source=source)
        finally:
            with self._lock:
                self.stats["alerts_handled"] += 1

    def _receive(self, fields: dict[str, Any], *, sender_ip: str, source: object) -> str:
        now = time.monotonic()
        with self._lock:
            self.stats["alerts_received"] += 1
            if self._senders.take(sender_ip, now) > 0:
                self.stats["alerts_dropped"] += 1
                return "dropped: the sender is over its budget of binding alerts"
        try:
            evidence = Evidence.from_wire(fields)
        except LedgerError:
            with self._lock:
                self.stats["alerts_invalid"] += 1
            raise
        return self.handle(evidence, source=source, source_text=sender_ip)

    def handle(self, evidence: Evidence, *, source: object, source_text: str) -> str:
        """Check evidence (ours, with ``source`` None, or a peer's) and act on it; see the module docstring."""
        now = time.monotonic()
        eid = evidence.id
        with self._lock:
            if self._seen_recently(eid, now):
                return "duplicate"
        try:
            evidence.check(self.params)
        except LedgerError:
            with self._lock:
                self.stats["alerts_invalid"] += 1
            raise
        # Marked only once it checked out: the id does not cover the Merkle path, so a copy with a broken path
        # sent first must not make the real evidence look like a duplicate.
        with self._lock:
            if self._seen_recently(eid, now):
                return "duplicate"
            self._seen[eid] = now
            self._seen.move_to_end(eid)
            while len(self._seen) > self.config.seen_limit:
                self._seen.popitem(last=False)
        kinds, holder = find_conflict(self.ledger, evidence, self.clock())
        if not kinds:
            with self._lock:
                self._waiting[eid] = (evidence, source, source_text, now)
                while len(self._waiting) > self.config.waiting_limit:
                    # Forgotten, not seen: a copy relayed later (once its conflict shows here) is handled again,
                    # so a stranger filling this list with its own claims cannot hide an owner's evidence.
                    pushed_out, _ = self._waiting.popitem(last=False)
                    self._seen.pop(pushed_out, None)
            return "no conflict in this ledger (yet): kept to look at again when the chain changes"
        return self._consider(evidence, kinds, holder, source, source_text)

    def _seen_recently(self, eid: bytes, now: float) -> bool:
        seen = self._seen.get(eid)
        return seen is not None and now - seen < self.config.evidence_ttl

    def _consider(self, evidence: Evidence, kinds: tuple[str, ...], holder: Record | None, source: object,
                  source_text: str) -> str:
        """A conflict here: show it now if the evidence carries weight, and check the address if it is one."""
        record = evidence.record
        if source is None or "address" in kinds:
            shown = source is None     # ours; an address claim waits for the check, whatever it carries
        elif evidence.header is not None and self._known_block(evidence.header.hash):
            shown = True               # a record in a block this node accepted: the owner's history is real
        else:
            log.info("binding alert from %s not shown: key %s's claim rests on no block this node knows",
                     source_text, _short(record.fingerprint))
            return "not shown: the claim rests on no block this node knows"
        if shown:
            self._show(evidence, kinds, holder, source, source_text)
        else:
            with self._lock:
                self.stats["unconfirmed"] += 1
            log.info("binding alert from %s: key %s claims %s, bound here to key %s; checking the address",
                     source_text, _short(record.fingerprint), record.ip, _short(holder.fingerprint if holder
                                                                                 else None))
        if "address" in kinds and holder is not None and record.ip is not None:
            self.schedule_check(record.ip, _Claim(evidence, holder, kinds, None if shown else source,
                                                  "" if shown else source_text))
        return ("conflict: " if shown else "awaiting a dispute check: ") + ",".join(kinds)

    def _known_block(self, block_hash: bytes) -> bool:
        with self.ledger.lock:
            return block_hash in self.ledger.chain

    def _show(self, evidence: Evidence, kinds: tuple[str, ...], holder: Record | None, source: object,
              source_text: str) -> None:
        """Keep the conflict for status, log it once at WARNING, relay the evidence."""
        record = evidence.record
        conflict = Conflict(kinds, record.fingerprint, record.nickname, record.ip,
                            holder.fingerprint if holder else None,
                            evidence.header.hash if evidence.header else None, source_text, self.clock())
        key = crypto.sha256(b"conflict", record.fingerprint, ",".join(kinds).encode(),
                            holder.id if holder else b"")
        with self._lock:
            fresh = key not in self._conflicts
            self._conflicts[key] = (conflict, evidence)
            self._conflicts.move_to_end(key)
            while len(self._conflicts) > self.config.conflicts_limit:
                self._conflicts.popitem(last=False)
            if fresh:
                self.stats["conflicts"] += 1
        if fresh:
            log.warning("binding conflict (from %s): %s", source_text, conflict.describe())
        self._relay(evidence, source)

    def conflicts(self) -> list[Conflict]:
        """The conflicts shown (newest last)."""
        with self._lock:
            return [conflict for conflict, _ in self._conflicts.values()]

    # --- dispute checks -----------------------------------------------------------------------------------

    def schedule_check(self, ip: str, claim: _Claim) -> None:
        """Add ``claim`` to the next check of ``ip``: due ``check_interval`` after the last one (now if none)."""
        now = time.monotonic()
        with self._wake:
            claims = self._claims.get(ip)
            if claims is None:
                claims = self._claims[ip] = OrderedDict()
                last = self._last_check.get(ip)
                heapq.heappush(self._due, (now if last is None else max(now, last + self.config.check_interval),
                                           ip))
                while len(self._claims) > self.config.checks_pending:
                    self._claims.popitem(last=False)     # its heap entry is skipped when it comes up
                    self.stats["checks_dropped"] += 1
            claims[claim.evidence.record.fingerprint] = claim
            claims.move_to_end(claim.evidence.record.fingerprint)
            while len(claims) > self.config.claims_per_ip:
                claims.popitem(last=False)
            self._wake.notify()

    def _check_loop(self) -> None:
        while True:
            with self._wake:
                item = self._next_due()
            if item is None:
                return
            if item == "revalidate":
                self.revalidate()
            else:
                self._run_check(*item)

    def _next_due(self) -> tuple[str, list[_Claim]] | str | None:
        """Wait (lock held) for the next IP whose check is due, respecting ``check_spacing``, or for the next
        revalidation (``"revalidate"``); None on close."""
        while not self._closing:
            now = time.monotonic()
            if now >= self._next_revalidate:
                self._next_revalidate = now + self.config.revalidate_interval
                return "revalidate"
            if not self._due:
                self._wake.wait(self._next_revalidate - now)
                continue
            when, ip = self._due[0]
            start = max(when, self._next_check)
            if start > now:
                self._wake.wait(min(start, self._next_revalidate) - now)
                continue
            heapq.heappop(self._due)
            claims = self._claims.pop(ip, None)
            if not claims:
                continue                                 # dropped while it waited
            self._last_check[ip] = now
            self._last_check.move_to_end(ip)
            while len(self._last_check) > self.config.disputes_limit:
                self._last_check.popitem(last=False)
            self._next_check = now + self.config.check_spacing
            return ip, list(claims.values())
        return None

    def check(self, ip: str, bound: Record, claimant: Record) -> Dispute | None:
        """Run one dispute check now (outside the schedule): ``claimant``'s claim on ``ip`` against ``bound``."""
        return self._run_check(ip, [_Claim(Evidence(claimant, "address"), bound, ("address",), None, "")])

    def _run_check(self, ip: str, claims: list[_Claim]) -> Dispute | None:
        """Dial ``ip`` at the ledger ports of the bound record and of the claimants; mark the binding disputed if
        the bound key does not answer there and a claimant's key does, clear the mark if the bound key answers."""
        try:
            return self._dial_and_judge(ip, claims)
        finally:
            with self._lock:
                self.stats["checks_done"] += 1

    def _dial_and_judge(self, ip: str, claims: list[_Claim]) -> Dispute | None:
        with self.ledger.lock:
            info = self.ledger.chain.bindings.lookup_ip(ip, self.clock())
        claims = [c for c in claims if info is not None and c.bound.id == info.record.id]
        if info is None or not claims:
            return None                # the binding changed meanwhile: nothing to dispute
        bound = info.record
        with self._lock:
            self.stats["checks"] += 1
        ports = [bound.ledger_port] + [c.evidence.record.ledger_port for c in claims]
        answers: dict[int, bytes | None] = {}
        for port in dict.fromkeys(p for p in ports if p is not None):
            with self._lock:
                self.stats["dials"] += 1
            answers[port] = who_answers(ip, port, self.params, source_ip=self.host, timeout=self.config.check_timeout)
        bound_answers = bound.ledger_port is not None and answers.get(bound.ledger_port) == bound.fingerprint
        provers = [c for c in claims if c.evidence.record.fingerprint in answers.values()]
        if bound_answers or not provers:
            with self._lock:
                cleared = self._disputes.pop(ip, None)
            if cleared is not None:
                log.info("the binding of %s is no longer disputed (bound key answers: %s)", ip, bound_answers)
            for claim in claims:
                if claim.source_text:
                    log.info("binding alert from %s not confirmed: %s", claim.source_text,
                             "the bound key answers at the address" if bound_answers else
                             "the claimant's key does not answer at the address")
            return None
        prover = provers[-1]
        mark = Dispute(ip, bound.fingerprint, prover.evidence.record.fingerprint, int(self.clock()),
                       self._address())
        with self._lock:
            self._disputes[ip] = (bound.id, mark)
            self._disputes.move_to_end(ip)
            while len(self._disputes) > self.config.disputes_limit:
                self._disputes.popitem(last=False)
        log.warning("binding of %s by key %s is %s", ip, _short(bound.fingerprint), mark.describe())
        if prover.source_text:        # confirmed now: show it and pass it on
            self._show(prover.evidence, prover.kinds, bound, prover.source, prover.source_text)
        return mark

    def disputed(self, ip: str, record_id: bytes) -> Dispute | None:
        """The dispute mark of the binding of ``ip`` by the record ``record_id``, if it is disputed here."""
        with self._lock:
            entry = self._disputes.get(ip)
        if entry is None or entry[0] != record_id:
            return None
        return entry[1]

    def status(self) -> dict[str, Any]:
        with self._lock:
            disputes = [mark.to_json() | {"ip": ip} for ip, (_, mark) in self._disputes.items()]
            conflicts = [c.to_status() for c, _ in self._conflicts.values()]
            stats = dict(self.stats)
        return {"binding_conflicts": conflicts, "disputes": disputes, "dispute_stats": stats}
