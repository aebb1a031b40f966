"""Network-adjusted time: this node's clock corrected by the median offset of its peers' clocks.

Each ``hello``/``hello_ack`` carries the sender's clock (``time``, docs/ledger-protocol.md §2.2). The offset of a
peer is its time minus ours when its hello arrived; one sample is kept per peer address (the newest), at most
``MAX_SAMPLES`` addresses. With at least ``MIN_SAMPLES`` of them, the median is this node's measured offset (of an
even count, the middle value nearer zero: never more correction than half the peers agree on). The node's time is
its clock plus the measured offset when that is within ``MAX_ADJUST``; beyond that it is not corrected (a few
addresses must not move a node's clock by hours) and the warning says so. Sans-IO: the caller passes the times.

Samples come from peers this node chose to dial (``chosen``: they may correct its clock) or from peers that
connected in (``heard``: anyone may connect in, so they never correct it). While fewer than ``MIN_SAMPLES`` peers
were dialled — a small network, where the others connected in first — the *warning* alone is made from every
sample, so a user whose clock is off is still told; nothing that reads the clock changes by it.
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


def _median(values: list[float]) -> float | None:
    """The median of sorted ``values`` (of an even count, the middle value nearer zero), None below ``MIN_SAMPLES``."""
    if len(values) < MIN_SAMPLES:
        return None
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return min(values[mid - 1], values[mid], key=abs)


class NetworkTime:
    """Peers' clock offsets and the corrected time of this node (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: OrderedDict[str, float] = OrderedDict()     # chosen: peers this node dialled
        self._heard: OrderedDict[str, float] = OrderedDict()       # peers that connected in (warning only)

    def add_sample(self, address: str, peer_time: float, local_time: float, *, chosen: bool = True) -> None:
        """Record what a peer's clock said (``peer_time``) when ours said ``local_time``; ``chosen``: this node
        dialled the peer (see the module docstring)."""
        with self._lock:
            into = self._samples if chosen else self._heard
            into.pop(address, None)
            into[address] = peer_time - local_time
            while len(into) > MAX_SAMPLES:
                into.popitem(last=False)

    @property
    def samples(self) -> int:
        """Dialled peers measured."""
        with self._lock:
            return len(self._samples)

    @property
    def heard(self) -> int:
        """Peers that connected in, measured (for the warning only)."""
        with self._lock:
            return len(self._heard)

    def measured_offset(self) -> float | None:
        """The median of the dialled peers' offsets (their clock minus ours), or None with fewer than
        ``MIN_SAMPLES``."""
        with self._lock:
            values = sorted(self._samples.values())
        return _median(values)

    def warned_offset(self) -> float | None:
        """The offset the warning reports: :meth:`measured_offset`, or while fewer than ``MIN_SAMPLES`` peers were
        dialled, the median over every peer measured (a dialled peer's sample wins for its address)."""
        measured = self.measured_offset()
        if measured is not None:
            return measured
        with self._lock:
            every = {**self._heard, **self._samples}
        return _median(sorted(every.values()))


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
        """A sentence for the user when this node's clock is off by more than ``WARN_OFFSET`` (:meth:`warned_offset`),
        else None."""
        measured = self.warned_offset()
        if measured is None or abs(measured) <= WARN_OFFSET:
            return None
        way = "behind" if measured > 0 else "ahead of"
        text = f"your clock is {describe_offset(measured)} {way} your peers; fix the system time"
        if abs(measured) > MAX_ADJUST:
            text += (" (too far off for this node to correct: " +
                     ("it refuses its peers' new blocks as dated in the future)" if measured > 0 else
                      "its peers refuse its records and blocks as dated in the future)"))
        elif self.measured_offset() is None:
            text += (" (measured from peers that connected to this node, which never correct its clock: it uses its"
                     " own until it has dialled 3 peers)")
        else:
            text += " (until then this node uses its peers' median time)"
        return text

    def status(self) -> dict[str, object]:
        measured = self.measured_offset()
        return {"offset": None if measured is None else round(measured, 1), "applied": round(self.offset(), 1),
                "samples": self.samples, "heard": self.heard, "warning": self.warning()}
