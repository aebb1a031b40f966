"""Event-loop lag: how late ``after()`` callbacks run compared with when they were due (Tk-free arithmetic)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by nearest rank; 0.0 for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LagMeter:
    """Keeps the last ``keep`` lateness samples (seconds)."""

    def __init__(self, keep: int = 20_000) -> None:
        self.samples: deque[float] = deque(maxlen=keep)

    def record(self, due: float, ran: float) -> None:
        self.samples.append(max(0.0, ran - due))

    def clear(self) -> None:
        self.samples.clear()

    def summary(self) -> dict[str, float]:
        """Count, p50, p99 and max lateness in milliseconds."""
        data = list(self.samples)
        return {"count": float(len(data)), "p50_ms": percentile(data, 50) * 1000,
                "p99_ms": percentile(data, 99) * 1000, "max_ms": max(data, default=0.0) * 1000}
