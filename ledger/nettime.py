"""Network-adjusted time: this node's clock corrected by the median offset of its peers' clocks.

Each ``hello``/``hello_ack`` carries the sender's clock (``time``, docs/ledger-protocol.md §2.2). The offset of a
peer is its time minus ours when its hello arrived; one sample is kept per peer address (the newest), at most
``MAX_SAMPLES`` addresses. With at least ``MIN_SAMPLES`` of them, the median is this node's measured offset (of an
even count, the middle value nearer zero: never more correction than half the peers agree on). The node's time is
its clock plus the measured offset when that is within ``MAX_ADJUST``; beyond that it is not corrected (a few
addresses must not move a node's clock by hours) and the warning says so. Sans-IO: the caller passes the times.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

MIN_SAMPLES = 3          # peers' clocks needed before this node believes its own is off
MAX_SAMPLES = 64         # peer addresses remembered (the oldest is forgotten first)
MAX_ADJUST = 30 * 60.0   # the most this node corrects its clock by
WARN_OFFSET = 60.0       # a clock off by more than this is reported to the user


def describe_offset(seconds: float) -> str:
    """``9 min`` / ``45 s`` / ``2 h 5 min`` for an absolute offset."""
    s = round(abs(seconds))
    if s < 120:
        return f"{s} s"
    minutes = round(s / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


class NetworkTime:
    """Peers' clock offsets and the corrected time of this node (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: OrderedDict[str, float] = OrderedDict()

    def add_sample(self, address: str, peer_time: float, local_time: float) -> None:
        """Record what a peer's clock said (``peer_time``) when ours said ``local_time``."""
        with self._lock:
            self._samples.pop(address, None)
            self._samples[address] = peer_time - local_time
            while len(self._samples) > MAX_SAMPLES:
                self._samples.popitem(last=False)

    @property
    def samples(self) -> int:
        with self._lock:
            return len(self._samples)

    def measured_offset(self) -> float | None:
        """The median of the peers' offsets (their clock minus ours), or None with fewer than ``MIN_SAMPLES``."""
        with self._lock:
            values = sorted(self._samples.values())
        if len(values) < MIN_SAMPLES:
            return None
        mid = len(values) // 2
        if len(values) % 2:
            return values[mid]
        return min(values[mid - 1], values[mid], key=abs)

    def offset(self) -> float:
        """The correction applied to this node's clock: the measured offset if within ``MAX_ADJUST``, else 0."""
        measured = self.measured_offset()
        if measured is None or abs(measured) > MAX_ADJUST:
            return 0.0
        return measured

    def issue_offset(self) -> float:
        """The correction for the times this node puts on what it makes (its own records, the blocks it mines):
        :meth:`offset` once ``MIN_SAMPLES`` clocks are measured; before that, when every peer measured so far
        says this node's clock is ahead (within ``MAX_ADJUST``), the smallest of those corrections, so that a node
        whose clock is ahead does not date its first record and block in its peers' future while it still
        measures. Dating back is harmless (a block's time is also kept above the median of the last blocks);
        dating forward on the word of one or two peers is not, so that is never done."""
        if self.measured_offset() is not None:
            return self.offset()
        with self._lock:
            values = list(self._samples.values())
        if values and all(-MAX_ADJUST <= v < 0 for v in values):
            return max(values)
        return 0.0

    def now(self) -> float:
        """This node's clock, corrected by its peers' median offset (bounded)."""
        return self._clock() + self.offset()

    def behind(self, by: float) -> bool:
        """True if this node's clock was measured more than ``by`` seconds behind its peers'."""
        measured = self.measured_offset()
        return measured is not None and measured > by

    def warning(self) -> str | None:
        """A sentence for the user when this node's clock is off by more than ``WARN_OFFSET``, else None."""
        measured = self.measured_offset()
        if measured is None or abs(measured) <= WARN_OFFSET:
            return None
        way = "behind" if measured > 0 else "ahead of"
        text = f"your clock is {describe_offset(measured)} {way} your peers; fix the system time"
        if abs(measured) > MAX_ADJUST:
            text += (" (too far off for this node to correct: " +
                     ("it refuses its peers' new blocks as dated in the future)" if measured > 0 else
                      "its peers refuse its records and blocks as dated in the future)"))
        else:
            text += " (until then this node uses its peers' median time)"
        return text

    def status(self) -> dict[str, object]:
        measured = self.measured_offset()
        return {"offset": None if measured is None else round(measured, 1), "applied": round(self.offset(), 1),
                "samples": self.samples, "warning": self.warning()}
