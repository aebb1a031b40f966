"""Sans-IO bookkeeping for the gossip node: peer standing and bans, rate limits, and the address book with
reconnect backoff. Time is always passed in (seconds, any monotonic origin), so every rule is tested without
clocks or sockets.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from ledger.blocks import Block
from p2pchat.foundation.addresses import format_address

log = logging.getLogger(__name__)

BAN_THRESHOLD = 100
DEFAULT_BAN_SECONDS = 600.0
DECAY_PER_SECOND = 1 / 60   # a point of bad standing is forgiven per minute of good behaviour

# Penalties, in points of BAN_THRESHOLD. Anything that cannot happen by honest mistake bans at once.
PENALTY_INVALID_BLOCK = 100     # bad work, linkage, Merkle root, signatures: costs the sender nothing to check
PENALTY_INVALID_HEADERS = 100
PENALTY_BAD_FRAME = 25          # malformed/oversized/unknown frame (the connection is closed as well)
PENALTY_PROTOCOL = 25           # wrong step order, unsolicited answers
PENALTY_BAD_RECORD = 20         # forged signature or malformed record
PENALTY_FLOOD = 10              # per second spent over the message rate limit
PENALTY_SILENT = 5              # connected and said nothing


@dataclass
class _Score:
    points: float = 0.0
    updated: float = 0.0
    banned_until: float = 0.0
    reason: str = ""


class Standing:
    """Per-IP standing: penalties add up, decay slowly, and at ``BAN_THRESHOLD`` the IP is banned a while."""

    def __init__(self, ban_seconds: float = DEFAULT_BAN_SECONDS, max_entries: int = 10_000) -> None:
        self.ban_seconds = ban_seconds
        self.max_entries = max_entries
        self._scores: dict[str, _Score] = {}

    def _current(self, ip: str, now: float) -> _Score:
        score = self._scores.get(ip)
        if score is None:
            if len(self._scores) >= self.max_entries:
                self._forget_oldest()
            score = self._scores[ip] = _Score(updated=now)
        score.points = max(0.0, score.points - (now - score.updated) * DECAY_PER_SECOND)
        score.updated = now
        return score

    def _forget_oldest(self) -> None:
        unbanned = sorted((s.updated, ip) for ip, s in self._scores.items() if s.banned_until == 0.0)
        for _, ip in unbanned[: max(1, len(unbanned) // 10)]:
            del self._scores[ip]
        if len(self._scores) >= self.max_entries:  # all banned: drop the oldest bans
            for ip in sorted(self._scores, key=lambda k: self._scores[k].banned_until)[: self.max_entries // 10]:
                del self._scores[ip]

    def penalize(self, ip: str, points: float, reason: str, now: float) -> bool:
        """Add ``points`` of bad standing; returns True when this (or an earlier) penalty got ``ip`` banned."""
        score = self._current(ip, now)
        score.points += points
        if score.points >= BAN_THRESHOLD and score.banned_until <= now:
            score.banned_until = now + self.ban_seconds
            score.reason = reason
            log.warning("banned %s for %.0f s: %s", ip, self.ban_seconds, reason)
        return score.banned_until > now

    def ban_reason(self, ip: str, now: float) -> str | None:
        """Why ``ip`` is banned, or None when it is not (expired bans are lifted here)."""
        score = self._scores.get(ip)
        if score is None or score.banned_until == 0.0:
            return None
        if score.banned_until <= now:
            score.banned_until = 0.0
            score.points = 0.0
            return None
        return score.reason

    def is_banned(self, ip: str, now: float) -> bool:
        return self.ban_reason(ip, now) is not None

    def points(self, ip: str, now: float) -> float:
        return self._current(ip, now).points if ip in self._scores else 0.0

    def banned(self, now: float) -> dict[str, str]:
        return {ip: s.reason for ip, s in self._scores.items() if s.banned_until > now}


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; returns 0 when allowed, else the seconds to wait until they are there.

        The debt is recorded either way, so a sender that ignores the wait keeps falling further behind.
        """
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= cost
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def try_take(self, now: float, cost: float = 1.0, within: float = 0.0) -> float | None:
        """Spend ``cost`` tokens if they are there within ``within`` seconds: returns the seconds to wait for them
        (0 when they are there), or None — and records no debt — when they are further off (a budget that
        refuses work)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            wait = 0.0
        elif self.rate > 0 and (cost - self.tokens) / self.rate <= within:
            wait = (cost - self.tokens) / self.rate
        else:
            return None
        self.tokens -= cost
        return wait


class SenderBudgets:
    """One :class:`TokenBucket` per sender IP, shared by all of that IP's connections (16 connections must not
    buy 16 budgets), for at most ``limit`` IPs (the least recently seen is forgotten). Thread-safe."""

    def __init__(self, rate: float, burst: float, limit: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, ip: str, now: float, cost: float = 1.0) -> float:
        """:meth:`TokenBucket.take` on ``ip``'s bucket."""
        with self._lock:
            return self._bucket(ip, now).take(now, cost)

    def try_take(self, ip: str, now: float, cost: float = 1.0, within: float = 0.0) -> float | None:
        """:meth:`TokenBucket.try_take` on ``ip``'s bucket."""
        with self._lock:
            return self._bucket(ip, now).try_take(now, cost, within)

    def _bucket(self, ip: str, now: float) -> TokenBucket:
        bucket = self._buckets.pop(ip, None) or TokenBucket(self.rate, self.burst, now)
        self._buckets[ip] = bucket
        while len(self._buckets) > self.limit:
            self._buckets.popitem(last=False)
        return bucket


def backoff_delay(failures: int, *, base: float = 1.0, cap: float = 60.0, jitter: float = 0.0) -> float:
    """Seconds to wait before the next attempt after ``failures`` failures in a row.

    ``jitter`` in [0, 1) spreads retries (pass a random fraction) so restarted peers are not hit in step.
    """
    if failures <= 0:
        return 0.0
    delay = min(cap, base * 2 ** min(failures - 1, 30))
    return delay * (1.0 + 0.25 * jitter)


Address = tuple[str, int]


@dataclass
class AddressInfo:
    failures: int = 0
    next_try: float = 0.0
    last_seen: float = 0.0
    seed: bool = False
    attempts: int = 0
    source: str | None = None     # the IP of the peer that told us about it (None: a seed or a peer itself)


def dialable(addr: Address) -> bool:
    """Whether a ledger node could listen at ``addr``: a unicast IP address that is not unspecified (nor, for IPv4,
    reserved or the broadcast address), and a port above 0 (loopback and private addresses are fine: labs and
    classes use them)."""
    ip, port = addr
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return False
    # 240.0.0.0/4, the broadcast address among them; IPv4 only, as Python counts IPv6 ::/8 (::1 too) as reserved
    reserved = parsed.version == 4 and parsed.is_reserved
    return 0 < port < 65536 and not (parsed.is_unspecified or parsed.is_multicast or reserved)


@dataclass
class AddressBook:
    """Addresses of ledger nodes we know of, with backoff state per address.

    Seeds are never forgotten; learned addresses are dropped after ``max_failures`` failures in a row and the
    book keeps at most ``max_size`` of them, of which at most ``max_per_source`` learned from any one peer IP
    (so peers on a few addresses cannot fill the book with addresses of their own choosing).
    """

    own: set[Address] = field(default_factory=set)
    max_size: int = 1000
    max_per_source: int = 64
    max_failures: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    _book: dict[Address, AddressInfo] = field(default_factory=dict)
    _per_source: dict[str, int] = field(default_factory=dict)

    def add(self, addr: Address, now: float, *, seed: bool = False, source: str | None = None) -> bool:
        """Remember ``addr`` (told by the peer at IP ``source``, if any); returns True if it was new. An address no
        ledger node can listen at (unspecified, multicast, broadcast or reserved, port 0) is remembered only as a
        seed (the operator's choice): a peer's list full of them would otherwise have every node dial them."""
        if addr in self.own or not (seed or dialable(addr)):
            return False
        info = self._book.get(addr)
        if info is not None:
            info.last_seen = now
            info.seed = info.seed or seed
            if source is None and info.source is not None:  # seen first-hand (a seed, or the peer itself)
                self._forget_source(info.source)
                info.source = None
            return False
        if len(self._book) >= self.max_size and not seed:
            return False
        if source is not None:
            if self._per_source.get(source, 0) >= self.max_per_source:
                return False
            self._per_source[source] = self._per_source.get(source, 0) + 1
        self._book[addr] = AddressInfo(last_seen=now, seed=seed, source=source)
        return True

    def _forget_source(self, source: str) -> None:
        left = self._per_source.get(source, 0) - 1
        if left > 0:
            self._per_source[source] = left
        else:
            self._per_source.pop(source, None)

    def _drop(self, addr: Address) -> None:
        info = self._book.pop(addr)
        if info.source is not None:
            self._forget_source(info.source)

    def __contains__(self, addr: Address) -> bool:
        return addr in self._book

    def __len__(self) -> int:
        return len(self._book)

    def due(self, now: float, exclude: set[Address]) -> list[Address]:
        """Addresses whose backoff has elapsed, seeds first, then the least-failed."""
        ready = [(not i.seed, i.failures, a) for a, i in self._book.items() if i.next_try <= now and a not in exclude]
        return [a for *_, a in sorted(ready)]

    def attempted(self, addr: Address, now: float) -> None:
        info = self._book.get(addr)
        if info is not None:
            info.attempts += 1
            # Until the attempt ends, do not dial the same address again.
            info.next_try = now + self.max_delay

    def succeeded(self, addr: Address, now: float) -> None:
        info = self._book.get(addr)
        if info is not None:
            info.failures = 0
            info.last_seen = now
            info.next_try = now

    def failed(self, addr: Address, now: float, jitter: float = 0.0) -> None:
        info = self._book.get(addr)
        if info is None:
            return
        info.failures += 1
        if info.failures >= self.max_failures and not info.seed:
            self._drop(addr)
            log.info("forgot peer %s after %d failed attempts", format_address(*addr), info.failures)
            return
        info.next_try = now + backoff_delay(info.failures, base=self.base_delay, cap=self.max_delay, jitter=jitter)

    def disconnected(self, addr: Address, now: float, jitter: float = 0.0) -> None:
        """A working connection ended: retry soon, but not in a tight loop."""
        info = self._book.get(addr)
        if info is not None:
            info.next_try = now + backoff_delay(1, base=self.base_delay, cap=self.max_delay, jitter=jitter)

    def sample(self, limit: int) -> list[Address]:
        """Addresses to share with a peer: recently seen, never-failed ones first."""
        ranked = sorted(self._book.items(), key=lambda kv: (kv[1].failures, -kv[1].last_seen))
        return [a for a, _ in ranked[:limit]]

    def info(self, addr: Address) -> AddressInfo | None:
        return self._book.get(addr)


PENALTY_STALL = 34              # a sync request left unanswered past its deadline (three in a row: banned)
PENALTY_ORPHAN = 12             # an orphan pushed out of the sender's bounded share (it never connected)
PENALTY_SIDE_BLOCK = 12         # an unrequested block whose branch has less work than our tip


@dataclass
class _Orphan:
    block: Block
    size: int
    owner: str


class OrphanBuffer:
    """Blocks whose parent is unknown yet, held in memory only and bounded per sender IP (count and bytes) and
    in total; the oldest of a sender's share is pushed out when a new one does not fit. Nothing here is stored
    on disk: an orphan joins the ledger only once its parent has."""

    def __init__(self, *, per_peer: int = 4, per_peer_bytes: int = 2_000_000, total_bytes: int = 16_000_000) -> None:
        self.per_peer = per_peer
        self.per_peer_bytes = per_peer_bytes
        self.total_bytes = total_bytes
        self._items: dict[bytes, _Orphan] = {}           # insertion order = age
        self._by_prev: dict[bytes, set[bytes]] = {}
        self._count: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self.bytes = 0

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._items

    def __len__(self) -> int:
        return len(self._items)

    def held_by(self, owner: str) -> tuple[int, int]:
        """(blocks, bytes) held for ``owner``."""
        return self._count.get(owner, 0), self._bytes.get(owner, 0)

    def add(self, block: Block, size: int, owner: str) -> list[Block]:
        """Hold ``block`` for ``owner``; returns the blocks pushed out to make room (the sender's oldest first,
        then anyone's oldest while the total is over). A block larger than a whole share is not held at all
        (returned as pushed out)."""
        if block.hash in self._items:
            return []
        if size > self.per_peer_bytes or size > self.total_bytes:
            return [block]
        pushed: list[Block] = []
        while self._count.get(owner, 0) >= self.per_peer or self._bytes.get(owner, 0) + size > self.per_peer_bytes:
            pushed.append(self._remove(next(h for h, o in self._items.items() if o.owner == owner)).block)
        while self.bytes + size > self.total_bytes:
            pushed.append(self._remove(next(iter(self._items))).block)
        self._items[block.hash] = _Orphan(block, size, owner)
        self._by_prev.setdefault(block.header.prev_hash, set()).add(block.hash)
        self._count[owner] = self._count.get(owner, 0) + 1
        self._bytes[owner] = self._bytes.get(owner, 0) + size
        self.bytes += size
        return pushed

    def children(self, parent_hash: bytes) -> list[tuple[str, Block]]:
        """Take out the held blocks that build on ``parent_hash`` (with their senders)."""
        out = []
        for h in sorted(self._by_prev.get(parent_hash, ())):
            orphan = self._remove(h)
            out.append((orphan.owner, orphan.block))
        return out

    def drop_owner(self, owner: str) -> int:
        """Forget everything held for ``owner`` (its last connection ended); returns how many."""
        hashes = [h for h, o in self._items.items() if o.owner == owner]
        for h in hashes:
            self._remove(h)
        return len(hashes)

    def _remove(self, block_hash: bytes) -> _Orphan:
        orphan = self._items.pop(block_hash)
        prev = orphan.block.header.prev_hash
        waiting = self._by_prev.get(prev)
        if waiting is not None:
            waiting.discard(block_hash)
            if not waiting:
                del self._by_prev[prev]
        self._count[orphan.owner] -= 1
        self._bytes[orphan.owner] -= orphan.size
        if not self._count[orphan.owner]:
            del self._count[orphan.owner], self._bytes[orphan.owner]
        self.bytes -= orphan.size
        return orphan
