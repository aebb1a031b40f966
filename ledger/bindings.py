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

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from ledger.errors import LedgerError
from ledger.index import IdentityTable, SortedList
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


@dataclass(frozen=True, slots=True)
class IdentityState:
    """An identity key's latest record and where it was mined (``height``/``index`` None while pending)."""

    record: Record
    height: int | None
    index: int | None
    status: Status


    @property
    def expires(self) -> int:
        return self.record.expires


RecordFetch = Callable[[bytes], Record]


class _Changes:
    """A dict-like view whose changes sit in ``own`` (``_DELETED`` marks a deletion); subclasses say in ``get``
    where an unchanged key is read from."""

    def __init__(self) -> None:
        self.own: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        raise NotImplementedError

    def __setitem__(self, key: Any, value: Any) -> None:
        self.own[key] = value

    def pop(self, key: Any, default: Any = None) -> Any:
        value = self.get(key, _MISSING)
        self.own[key] = _DELETED
        return default if value is _MISSING else value

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING


class StoredMap(_Changes):
    """A dict-like map kept in the store: reads go to ``read`` (an SQLite point query) unless this process
    changed the key since the store was last written; those changes sit in ``own`` (with tombstones) until
    :meth:`persisted` is called after the store committed them. So memory holds only unwritten changes.
    Iteration (rare: tests and diagnostics) merges ``scan`` with ``own``."""

    def __init__(self, read: Callable[[Any], Any], scan: Callable[[], Iterable[tuple[Any, Any]]]) -> None:
        super().__init__()
        self._read, self._scan = read, scan

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.own.get(key, _MISSING)
        if value is _MISSING:
            value = self._read(key)
            return default if value is None else value
        return default if value is _DELETED else value

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def items(self) -> list[tuple[Any, Any]]:
        merged = dict(self._scan())
        for key, value in self.own.items():
            if value is _DELETED:
                merged.pop(key, None)
            else:
                merged[key] = value
        return list(merged.items())

    def keys(self) -> list[Any]:
        return [k for k, _ in self.items()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def persisted(self) -> None:
        """The store now holds every change: forget them here."""
        self.own.clear()


class StoredIdentityState(IdentityState):
    """An identity's state restored from the store's checkpoint: what the indexes need (status, expiry, position)
    is held; the record itself is read on demand by its id through ``fetch`` (the chain's lazy, cached bodies),
    so memory does not hold every identity's record."""

    __slots__ = ("_expires", "_fetch", "_record_id")
    _record_id: bytes
    _expires: int
    _fetch: RecordFetch

    def __init__(self, record_id: bytes, height: int, index: int, status: Status, expires: int,
                 fetch: RecordFetch) -> None:
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "_record_id", record_id)
        object.__setattr__(self, "_expires", expires)
        object.__setattr__(self, "_fetch", fetch)

    @property  # type: ignore[override]
    def record(self) -> Record:
        return self._fetch(self._record_id)

    @property
    def record_id(self) -> bytes:
        return self._record_id

    @property
    def expires(self) -> int:
        return self._expires

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdentityState):
            return NotImplemented
        return (state_row(self), self.status) == (state_row(other), other.status)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StoredIdentityState({self._record_id.hex()[:16]}, {self.height}, {self.index}, {self.status})"


IdentityRow = tuple[bytes, bytes, int, int, str, int]   # fp, record id, height, index, status, expires
_STATUSES: dict[str, Status] = {"live": "live", "revoked": "revoked", "rotated": "rotated"}


class _LiveKeys:
    """The live-fingerprint index of a :class:`StoredIdentityTable`: the store's primary key (a page of rows at a
    time) merged with the changes not written yet."""

    PAGE = 64

    def __init__(self, table: StoredIdentityTable) -> None:
        self.table = table
        self.work = 0

    def __len__(self) -> int:
        return self.table.status_counts["live"]

    def _stored(self, start: bytes) -> Iterator[bytes]:
        own = self.table.own
        while True:
            page = self.table.read_live(start, self.PAGE)
            self.work += 1
            yield from (fp for fp in page if fp not in own)
            if len(page) < self.PAGE:
                return
            start = page[-1] + b"\x00"   # the smallest key after the page's last

    def from_item(self, start: bytes) -> Iterator[bytes]:
        """Live fingerprints >= ``start`` in order, lazily."""
        changed = sorted(fp for fp, st in self.table.own.items()
                         if fp >= start and st is not _DELETED and st.status == "live")
        return heapq.merge(self._stored(start), changed)


class _LiveExpiries:
    """Expiry times of the live identities of a :class:`StoredIdentityTable`, sorted (8–40 bytes an identity).
    Read from the store when a count or the first change asks for them, not at start (a linear read): until the
    first change, the stored rows are the state in memory."""

    def __init__(self, load: Callable[[], list[int]], live: int) -> None:
        self._load, self._live = load, live
        self._sorted: SortedList[int] | None = None

    @property
    def sorted(self) -> SortedList[int]:
        if self._sorted is None:
            expiries = self._load()
            if len(expiries) != self._live:
                raise LedgerError("the stored live identities do not match their count; run 'ledger verify'")
            self._sorted = SortedList()
            self._sorted.load(expiries)
        return self._sorted

    def change(self, expires: int, sign: int) -> None:
        """A live identity with this expiry time was added (``sign`` +1) or removed (-1)."""
        if sign > 0:
            self.sorted.add(expires)
        else:
            self.sorted.remove(expires)

    @property
    def work(self) -> int:
        return self._sorted.work if self._sorted is not None else 0

    def count_at_most(self, item: tuple[int, bytes]) -> int:
        """How many live identities expire at or before ``item[0]`` (the in-memory table's ``(expires, fp)``
        form: its fingerprint part only breaks ties, which a count up to the largest fingerprint ignores)."""
        return self.sorted.count_at_most(item[0])


class StoredIdentityTable:
    """The ``identities`` map of a binding state restored from the store: rows stay in SQLite (``bind_id``) and
    are read when asked for, changes sit in ``own`` until :meth:`persisted` (like :class:`StoredMap`). What
    :class:`ledger.index.IdentityTable` keeps as indexes is kept here as counts per status, the sorted expiry
    times of live identities (for the live-binding count) and the store's fingerprint order (for prefix
    lookups), so memory holds a few bytes an identity instead of its whole state."""

    def __init__(self, read: Callable[[bytes], IdentityRow | None], scan: Callable[[], Iterable[IdentityRow]],
                 read_live: Callable[[bytes, int], list[bytes]], counts: dict[str, int],
                 expiries: Callable[[], list[int]], fetch: RecordFetch) -> None:
        unknown = set(counts) - set(_STATUSES)
        if unknown:
            raise LedgerError(f"stored identities have an unknown status {sorted(unknown)[0]!r:.20}")
        self._read, self._scan, self.read_live, self._fetch = read, scan, read_live, fetch
        self.own: dict[bytes, Any] = {}
        self.status_counts = {status: counts.get(status, 0) for status in _STATUSES}
        self._len = sum(self.status_counts.values())
        self.live = _LiveKeys(self)
        self.live_expiry = _LiveExpiries(expiries, counts.get("live", 0))
        self.prefix_examined = 0

    def _state(self, row: IdentityRow) -> IdentityState:
        _fp, record_id, height, index, status, expires = row
        known = _STATUSES.get(status)
        if known is None:
            raise LedgerError(f"stored identity {_fp.hex()[:16]} has an unknown status {status!r:.20}")
        return StoredIdentityState(record_id, height, index, known, expires, self._fetch)

    def get(self, fp: bytes, default: Any = None) -> Any:
        value = self.own.get(fp, _MISSING)
        if value is _MISSING:
            row = self._read(fp)
            return default if row is None else self._state(row)
        return default if value is _DELETED else value

    def __contains__(self, fp: object) -> bool:
        return isinstance(fp, bytes) and self.get(fp) is not None

    def __len__(self) -> int:
        return self._len

    def _index(self, state: IdentityState, sign: int) -> None:
        self.status_counts[state.status] += sign
        self._len += sign
        if state.status == "live":
            self.live_expiry.change(state.expires, sign)

    def __setitem__(self, fp: bytes, state: IdentityState) -> None:
        old = self.get(fp)
        if old is not None:
            self._index(old, -1)
        self.own[fp] = state
        self._index(state, +1)

    def pop(self, fp: bytes, default: Any = _MISSING) -> Any:
        old = self.get(fp)
        if old is None:
            if default is _MISSING:
                raise KeyError(fp)
            return default
        self._index(old, -1)
        self.own[fp] = _DELETED
        return old

    def items(self) -> list[tuple[bytes, IdentityState]]:
        """Every identity (a walk of the store: diagnostics and tests only)."""
        merged = {row[0]: self._state(row) for row in self._scan()}
        for fp, value in self.own.items():
            if value is _DELETED:
                merged.pop(fp, None)
            else:
                merged[fp] = value
        return sorted(merged.items(), key=lambda item: item[0])

    def values(self) -> list[IdentityState]:
        return [state for _, state in self.items()]

    def __iter__(self) -> Iterator[bytes]:
        return iter([fp for fp, _ in self.items()])

    def work(self) -> dict[str, int]:
        """Work done by queries so far (see :meth:`ledger.index.IdentityTable.work`)."""
        return {"identities": len(self), "rank_steps": self.live.work + self.live_expiry.work,
                "prefix_keys_examined": self.prefix_examined}

    def persisted(self) -> None:
        """The store now holds every change: forget them here."""
        self.own.clear()


def state_row(state: IdentityState) -> tuple[bytes, int, int, str, int]:
    """The stored form of a mined identity state: ``(record id, height, index, status, expires)``."""
    record_id = state.record_id if isinstance(state, StoredIdentityState) else state.record.id
    if state.height is None or state.index is None:
        raise ValueError("only mined identity states are stored")
    return record_id, state.height, state.index, state.status, state.expires


@dataclass(frozen=True)
class BindingInfo:
    """A live binding: the record that established it and its position in the chain."""

    record: Record
    height: int | None
    index: int | None


class _Layer(_Changes):
    """A copy-on-write dict view over ``base`` (tombstones for deletions); ``base`` is never modified."""

    def __init__(self, base: Any) -> None:
        super().__init__()
        self.base = base

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.own.get(key, _MISSING)
        if value is _MISSING:
            return self.base.get(key, default)
        return default if value is _DELETED else value



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

    @classmethod
    def restore(cls, params: NetworkParams, identities: StoredIdentityTable, by_ip: StoredMap,
                by_nick: StoredMap) -> Bindings:
        """The state kept in the store: every map reads the store (see :class:`StoredIdentityTable` and
        :class:`StoredMap`) and holds only what was not written yet."""
        state = cls(params)
        state.identities = identities
        state.by_ip = by_ip
        state.by_nick = by_nick
        return state

    def persisted(self) -> None:
        """The store committed every change so far (see :class:`StoredMap`)."""
        for mapping in (self.identities, self.by_ip, self.by_nick):
            if isinstance(mapping, StoredMap | StoredIdentityTable):
                mapping.persisted()

    def code_of(self, mapping: Any) -> int:
        """0, 1 or 2 for this state's identities, IP and nickname maps (the codes of stored undo logs)."""
        return 0 if mapping is self.identities else 1 if mapping is self.by_ip else 2

    def encode_undo(self, log: UndoLog) -> bytes:
        """An undo log as bytes for the store (identity states by their record, see :meth:`decode_undo`)."""
        out = []
        for mapping, key, old in log:
            code = self.code_of(mapping)
            if old is _MISSING:
                value: Any = None
            elif code == 0:
                value = [old.record.to_wire(), old.height, old.index, old.status]
            else:
                value = old
            out.append([code, key, value])
        return msgpack.packb(out, use_bin_type=True)

    def decode_undo(self, blob: bytes) -> UndoLog:
        maps = (self.identities, self.by_ip, self.by_nick)
        log: UndoLog = []
        for code, key, value in msgpack.unpackb(blob, raw=False):
            if value is None:
                old: Any = _MISSING
            elif code == 0:
                old = IdentityState(Record.from_wire(value[0]), value[1], value[2], value[3])
            else:
                old = value
            log.append((maps[code], key, old))
        return log

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
        if state is None or state.status != "live" or state.expires + RECLAIM_GRACE_SECONDS <= lapse_at:
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
        if state is None or state.status != "live" or state.expires <= now:
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

    def _table(self) -> IdentityTable | StoredIdentityTable:
        if not isinstance(self.identities, IdentityTable | StoredIdentityTable):
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

