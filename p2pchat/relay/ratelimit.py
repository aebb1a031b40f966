"""A token bucket that says how long to wait (sans-IO: the caller passes the time in and does the waiting)."""

from __future__ import annotations

import threading


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
