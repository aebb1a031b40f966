"""Who may ring a registered host: the relay's check that a caller's key has a ledger record.

A host registers with ``accept_unregistered`` false by default: the relay then pairs it only with callers
whose fingerprint its :class:`CallerCheck` knows. :class:`LedgerCallers` asks a ledger node, caching answers
(bounded in entries and time) and refusing at once when ``max_inflight`` lookups are already running, so a
stranger with fresh keys cannot make the relay do unbounded work or queue unbounded threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from enum import Enum
from typing import Protocol

from p2pchat.foundation.errors import UserError

log = logging.getLogger("p2pchat.relay.callers")


class Verdict(Enum):
    KNOWN = "known"             # the key has a ledger record
    UNKNOWN = "unknown"         # it has none
    BUSY = "busy"               # too many lookups running; try again
    UNAVAILABLE = "unavailable"  # the ledger could not be asked


class CallerCheck(Protocol):
    """Answers whether a caller's fingerprint holds a ledger record."""

    @property
    def description(self) -> str: ...

    def check(self, fingerprint: bytes) -> Verdict: ...


class Binding(Protocol):
    @property
    def fingerprint(self) -> bytes: ...


class Finder(Protocol):
    """The part of :class:`ledger.client.LedgerClient` the relay uses."""

    def find(self, query: str, *, by: str | None = None) -> Binding | None: ...


class KeySetCallers:
    """A fixed set of fingerprints (a closed classroom relay, or a test standing in for the ledger)."""

    def __init__(self, fingerprints: set[bytes], description: str = "allow-list") -> None:
        self._known = frozenset(fingerprints)
        self._description = description

    @property
    def description(self) -> str:
        return self._description

    def check(self, fingerprint: bytes) -> Verdict:
        return Verdict.KNOWN if fingerprint in self._known else Verdict.UNKNOWN


class LedgerCallers:
    """Looks fingerprints up through ``finder`` (a ledger client), with a bounded cache and bounded concurrency.

    Found keys are cached ``ttl_known`` seconds, missing ones ``ttl_unknown`` (short, so a newly registered key
    is soon accepted); at most ``cache_size`` entries (least recently used dropped first). Failures are not cached.
    """

    def __init__(self, finder: Finder, description: str, *, cache_size: int = 4096, ttl_known: float = 300.0,
                 ttl_unknown: float = 30.0, max_inflight: int = 4) -> None:
        if cache_size < 1 or max_inflight < 1:
            raise ValueError("cache_size and max_inflight must be at least 1")
        self._finder = finder
        self._description = description
        self.cache_size = cache_size
        self.ttl_known = ttl_known
        self.ttl_unknown = ttl_unknown
        self._cache: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self.lookups = 0

    @property
    def description(self) -> str:
        return self._description

    def cached(self, fingerprint: bytes) -> bool | None:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(fingerprint)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._cache[fingerprint]
                return None
            self._cache.move_to_end(fingerprint)
            return entry[0]

    def _store(self, fingerprint: bytes, known: bool) -> None:
        expires = time.monotonic() + (self.ttl_known if known else self.ttl_unknown)
        with self._lock:
            self._cache[fingerprint] = (known, expires)
            self._cache.move_to_end(fingerprint)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def check(self, fingerprint: bytes) -> Verdict:
        hit = self.cached(fingerprint)
        if hit is not None:
            return Verdict.KNOWN if hit else Verdict.UNKNOWN
        if not self._slots.acquire(blocking=False):
            return Verdict.BUSY
        try:
            self.lookups += 1
            try:
                binding = self._finder.find(fingerprint.hex(), by="fp")
            except UserError as exc:
                log.warning("ledger lookup of a caller failed: %s", exc)
                return Verdict.UNAVAILABLE
            known = binding is not None and binding.fingerprint == fingerprint
            self._store(fingerprint, known)
            return Verdict.KNOWN if known else Verdict.UNKNOWN
        finally:
            self._slots.release()
