"""Binding state: which identity holds which IP address and nickname, applied and undone block by block.

State (all maps keyed for O(1) lookups):

- ``identities``: key fingerprint → :class:`IdentityState` (latest record, where it was mined, and whether the
  key is live, revoked or retired by a rotation). Every key that ever appeared stays here, which is what makes
  "a rotated key cannot be reused" and "revoked identities are dead" cheap to check.
- ``by_ip`` / ``by_nick``: IP / nickname key → fingerprint of the identity whose latest record claims it. The
  entry can be stale (the holder's record expired); liveness is decided at lookup time against ``now``.

Rules (checked by :meth:`Bindings.check` against a time ``at``: the block's timestamp when mining/validating a
block, the caller's ``now`` for pending records):

- an identity's records are numbered: ``seq`` is last + 1 and ``prev`` is the id of its last record
  (a lower seq is a replay, a higher one skips records); a first record has seq 0;
- a revoked identity and a key retired by a rotation can no longer sign records; a rotation's new key must
  never have appeared before;
- a record must not be expired at ``at``, not issued more than ``max_future_seconds`` after ``at``, and live
  at most ``max_record_lifetime``;
- an IP is bound to at most one live identity: the first valid claim wins, another identity's claim on a live
  binding is refused; once the holder moves away or is revoked, the IP is free again; once its record expires,
  the IP stays reserved for the former holder (who may renew it) until the median time past of the block's
  parent reaches ``expires + RECLAIM_GRACE_SECONDS``. Nicknames likewise, compared by their confusable skeleton
  (:func:`ledger.nicknames.nickname_key`); an empty nickname claims nothing.

Counts and fingerprint-prefix lookups come from indexes maintained by :class:`ledger.index.IdentityTable` on
every change of ``identities`` (apply and undo alike): :meth:`Bindings.counts` is O(log n) and
:meth:`Bindings.live_with_prefix` O(log n) plus the few keys sharing the prefix; nothing walks every identity.

:meth:`Bindings.apply` returns an undo log, :meth:`Bindings.undo` reverts it, so the chain moves its state
along a reorg in time proportional to the blocks involved. :meth:`Bindings.overlay` gives a copy-on-write view
(for the pending pool) that never touches the state below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ledger.errors import LedgerError
from ledger.index import IdentityTable
from ledger.nicknames import nickname_key
from ledger.params import NetworkParams
from ledger.records import Record
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import normalize_ip
from p2pchat.foundation.errors import AddressError

Status = Literal["live", "revoked", "rotated"]
# Consensus rule of ledger version 1: after a binding's record expires, its IP and nickname stay reserved for the
# former holder this long (judged by median time past) before another key may claim them.
RECLAIM_GRACE_SECONDS = 86400
_MISSING: Any = object()
UndoLog = list[tuple[Any, Any, Any]]
MAX_FINGERPRINT = b"\xff" * 33   # sorts after every 32-byte fingerprint
PREFIX_SCAN_LIMIT = 64           # keys with one prefix examined at most per lookup


class NicknameTaken(LedgerError):
    """A record's nickname clashes with (shares a key with) another live identity's nickname."""


@dataclass(frozen=True)
class IdentityState:
    """An identity key's latest record and where it was mined (``height``/``index`` None while pending)."""

    record: Record
    height: int | None
    index: int | None
    status: Status


@dataclass(frozen=True)
class BindingInfo:
    """A live binding: the record that established it and its position in the chain."""

    record: Record
    height: int | None
    index: int | None


class _Layer:
    """A copy-on-write dict view over ``base`` (tombstones for deletions); ``base`` is never modified."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.own: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.own.get(key, _MISSING)
        if value is _MISSING:
            return self.base.get(key, default)
        return default if value is _DELETED else value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.own[key] = value

    def pop(self, key: Any, default: Any = None) -> Any:
        value = self.get(key, _MISSING)
        self.own[key] = _DELETED
        return default if value is _MISSING else value

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING


_DELETED: Any = object()


class Bindings:
    """Binding state at one point of the chain (see the module docstring)."""

    def __init__(self, params: NetworkParams, *, _base: Bindings | None = None) -> None:
        self.params = params
        if _base is None:
            self.identities: Any = IdentityTable()
            self.by_ip: Any = {}
            self.by_nick: Any = {}
        else:
            self.identities = _Layer(_base.identities)
            self.by_ip = _Layer(_base.by_ip)
            self.by_nick = _Layer(_base.by_nick)

    def overlay(self) -> Bindings:
        """A copy-on-write view: records applied to it leave this state untouched. Valid until this state changes."""
        return Bindings(self.params, _base=self)

    # --- checks --------------------------------------------------------------------------------------------

    def check(self, record: Record, at: int, lapse_at: int | None = None) -> None:
        """Raise :class:`LedgerError` unless ``record`` may be applied to this state at time ``at``.

        ``at`` judges the record itself (issue time, own expiry); ``lapse_at`` — the median time past of the
        block's parent, which a miner cannot push ahead — judges whether another key's binding has lapsed
        (default ``at``). A lapsed binding stays reserved for its former holder for ``RECLAIM_GRACE_SECONDS``.
        """
        p = self.params
        lapse = at if lapse_at is None else lapse_at
        if record.expires - record.issued > p.max_record_lifetime:
            raise LedgerError(f"{record.describe()}: lifetime of {(record.expires - record.issued) // 86400} days "
                              f"exceeds the network's {p.max_record_lifetime // 86400} days")
        if record.issued > at + p.max_future_seconds:
            raise LedgerError(f"{record.describe()}: issued in the future ({record.issued} > {at})")
        if record.kind != "revoke" and record.expires <= at:
            raise LedgerError(f"{record.describe()}: already expired")
        signer = record.signer_fingerprint
        state = self.identities.get(signer)
        if state is None:
            if record.seq != 0:
                raise LedgerError(f"{record.describe()}: the ledger has no earlier record of this key, "
                                  "so its first record must have seq 0")
        else:
            if state.status == "revoked":
                raise LedgerError(f"{record.describe()}: this identity was revoked")
            if state.status == "rotated":
                raise LedgerError(f"{record.describe()}: this key was retired by a key rotation")
            last = state.record.seq
            if record.seq <= last:
                raise LedgerError(f"{record.describe()}: replayed or stale (the identity is at seq {last})")
            if record.seq > last + 1:
                raise LedgerError(f"{record.describe()}: skips records (the identity is at seq {last})")
            if record.prev != state.record.id:
                raise LedgerError(f"{record.describe()}: does not follow the identity's previous record")
        if record.kind == "rotate":
            new_fp = record.fingerprint
            if new_fp in self.identities:
                raise LedgerError(f"{record.describe()}: the new key was already used in the ledger")
        if record.ip is not None:
            holder = self._live_holder(self.by_ip.get(record.ip), lapse, signer)
            if holder is not None:
                raise LedgerError(f"{record.describe()}: IP {record.ip} is bound to another key "
                                  f"({crypto.format_fingerprint(holder.record.fingerprint, 4)}) until "
                                  f"{holder.record.expires}, and reserved for it for "
                                  f"{RECLAIM_GRACE_SECONDS // 3600} h after that (judged by the median time "
                                  f"of recent blocks, now {lapse})")
        for key in record.nickname_keys:
            holder = self._live_holder(self.by_nick.get(key), lapse, signer)
            if holder is not None:
                other = crypto.format_fingerprint(holder.record.fingerprint, 4)
                raise NicknameTaken(f"{record.describe()}: nickname '{record.nickname}' is taken by another key "
                                    f"('{holder.record.nickname}', {other})")

    def _live_holder(self, fp: bytes | None, lapse_at: int, signer: bytes) -> IdentityState | None:
        """The other identity that still holds (or, within the grace period, still reserves) a binding."""
        if fp is None or fp == signer:
            return None
        state = self.identities.get(fp)
        if state is None or state.status != "live" or state.record.expires + RECLAIM_GRACE_SECONDS <= lapse_at:
            return None
        return state

    # --- apply / undo --------------------------------------------------------------------------------------

    def apply(self, record: Record, at: int, height: int | None, index: int | None, undo: UndoLog | None,
              lapse_at: int | None = None) -> None:
        """Check ``record`` (see :meth:`check`) and apply it, appending the inverse operations to ``undo``."""
        self.check(record, at, lapse_at)
        signer = record.signer_fingerprint
        old = self.identities.get(signer)
        if old is not None:
            if old.record.ip is not None and self.by_ip.get(old.record.ip) == signer:
                self._pop(self.by_ip, old.record.ip, undo)
            for key in old.record.nickname_keys:
                if self.by_nick.get(key) == signer:
                    self._pop(self.by_nick, key, undo)
        if record.kind == "revoke":
            self._set(self.identities, signer, IdentityState(record, height, index, "revoked"), undo)
            return
        holder = signer
        if record.kind == "rotate":
            self._set(self.identities, signer, IdentityState(record, height, index, "rotated"), undo)
            holder = record.fingerprint
        self._set(self.identities, holder, IdentityState(record, height, index, "live"), undo)
        if record.ip is not None:
            self._set(self.by_ip, record.ip, holder, undo)
        for key in record.nickname_keys:
            self._set(self.by_nick, key, holder, undo)

    def apply_all(self, records: tuple[Record, ...] | list[Record], at: int, height: int | None,
                  lapse_at: int | None = None) -> UndoLog:
        """Apply a block's records in order; on failure the state is restored and the error re-raised."""
        undo: UndoLog = []
        try:
            for index, record in enumerate(records):
                self.apply(record, at, height, index, undo, lapse_at)
        except LedgerError:
            self.undo(undo)
            raise
        return undo

    def undo(self, log: UndoLog) -> None:
        """Revert the operations recorded in ``log`` (newest first)."""
        for mapping, key, old in reversed(log):
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        log.clear()

    @staticmethod
    def _set(mapping: Any, key: Any, value: Any, undo: UndoLog | None) -> None:
        if undo is not None:
            undo.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    @staticmethod
    def _pop(mapping: Any, key: Any, undo: UndoLog | None) -> None:
        old = mapping.pop(key, _MISSING)
        if undo is not None and old is not _MISSING:
            undo.append((mapping, key, old))

    # --- lookups -------------------------------------------------------------------------------------------

    def identity(self, fingerprint: bytes) -> IdentityState | None:
        """The identity's latest state, live or not (None if the key never appeared)."""
        return self.identities.get(fingerprint)

    def _live(self, fp: bytes | None, now: float) -> BindingInfo | None:
        if fp is None:
            return None
        state = self.identities.get(fp)
        if state is None or state.status != "live" or state.record.expires <= now:
            return None
        return BindingInfo(state.record, state.height, state.index)

    def lookup_ip(self, ip: str, now: float) -> BindingInfo | None:
        """The live binding of ``ip`` at ``now``, if any."""
        try:
            ip = normalize_ip(ip)
        except AddressError:
            return None
        return self._live(self.by_ip.get(ip), now)

    def lookup_nickname(self, name: str, now: float) -> BindingInfo | None:
        if not name:
            return None
        return self._live(self.by_nick.get(nickname_key(name)), now)

    def lookup_fingerprint(self, fp: bytes, now: float) -> BindingInfo | None:
        return self._live(fp, now)

    def _table(self) -> IdentityTable:
        if not isinstance(self.identities, IdentityTable):
            raise TypeError("counts and prefix lookups are only available on a base state, not an overlay")
        return self.identities

    def counts(self, now: float) -> dict[str, int]:
        """Identities per status and the number of live (unexpired) bindings at ``now``, from the indexes."""
        table = self._table()
        expired = table.live_expiry.count_at_most((int(now // 1), MAX_FINGERPRINT))
        return {"identities": len(table), "live_bindings": len(table.live) - expired, **table.status_counts}

    def live_with_prefix(self, prefix: str, now: float, limit: int = 2,
                         scan_limit: int = PREFIX_SCAN_LIMIT) -> tuple[list[BindingInfo], bool]:
        """Live bindings (mined, unexpired at ``now``) whose fingerprint's hex starts with ``prefix``.

        Returns at most ``limit`` of them and whether the search was complete: it stops after ``limit`` matches
        or after ``scan_limit`` keys with the prefix (live once but expired now), so its cost is bounded whatever
        an attacker registered. Fingerprints are SHA-256 values, so sharing an 8-digit prefix is rare.
        """
        table = self._table()
        prefix = prefix.lower()
        start = bytes.fromhex(prefix + "0" * (len(prefix) % 2))
        found: list[BindingInfo] = []
        for scanned, fp in enumerate(table.live.from_item(start)):
            table.prefix_examined += 1
            if not fp.hex().startswith(prefix):
                return found, True
            if scanned >= scan_limit:
                return found, False
            info = self._live(fp, now)
            if info is not None and info.height is not None:
                found.append(info)
                if len(found) >= limit:
                    return found, False
        return found, True

