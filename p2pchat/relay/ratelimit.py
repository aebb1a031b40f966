"""A token bucket that says how long to wait (sans-IO: the caller passes the time in and does the waiting)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """Allows ``rate`` units per second on average with bursts up to ``burst`` units.

    :meth:`reserve` always admits the request and returns how long the caller must wait before acting on it,
    so a unit larger than the burst still passes (after its share of time) and waiting callers queue fairly.
    Safe to share between threads (both directions of a relay session draw from one bucket).
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now
        self._lock = threading.Lock()

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` units at time ``now``; returns the seconds to wait before using them (0 if none)."""
        with self._lock:
            if now > self._last:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
            self._tokens -= amount
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class KeyedLimiter:
    """Admits at most ``burst`` events per key, refilled at ``per_minute`` per minute (a token bucket per key);
    refuses the rest and says how long until the next is allowed. Sans-IO and thread-safe.

    Memory is bounded: at most ``max_keys`` buckets; beyond that the least recently used one is forgotten.
    """

    def __init__(self, per_minute: float, burst: float, max_keys: int = 16384) -> None:
        if per_minute <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("per_minute must be positive, burst and max_keys at least 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def try_take(self, key: Hashable, now: float) -> float:
        """Take one token for ``key``: 0.0 if admitted, else the seconds until one is available (nothing taken)."""
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                self._buckets.move_to_end(key)
                return (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)
