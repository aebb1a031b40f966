"""Maintained indexes over the binding state, so counts and prefix lookups never walk every identity.

:class:`SortedList` is a bucketed sorted list (the design of the ``sortedcontainers`` package, written out here
in a few lines): insertion and removal cost O(log n + bucket size); rank queries O(log n), after a rebuild of
the per-bucket offsets (O(n / bucket size), about 1,000 additions at 1,000,000 items) on the first query after a
change — so a flood of queries between two blocks costs O(log n) each.

:class:`IdentityTable` is the ``identities`` mapping of :class:`ledger.bindings.Bindings`: a dict that updates
its indexes on every assignment and removal, which is how both ``apply`` and ``undo`` change it, so the indexes
can never drift from the mapping.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


class _Ordered(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


T = TypeVar("T", bound=_Ordered)
_LOAD = 512
_MISSING: Any = object()


class SortedList(Generic[T]):
    """A sorted multiset of comparable items (see the module docstring for the costs)."""

    def __init__(self) -> None:
        self._lists: list[list[T]] = []
        self._maxes: list[T] = []
        self._len = 0
        self._before: list[int] | None = []   # items before each bucket; rebuilt lazily after a change
        self.work = 0                          # buckets visited by rank queries (a work counter for tests)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[T]:
        for bucket in self._lists:
            yield from bucket

    def add(self, item: T) -> None:
        if not self._lists:
            self._lists.append([item])
            self._maxes.append(item)
        else:
            pos = bisect_left(self._maxes, item)
            if pos == len(self._maxes):
                pos -= 1
                self._lists[pos].append(item)
                self._maxes[pos] = item
            else:
                insort(self._lists[pos], item)
            bucket = self._lists[pos]
            if len(bucket) > 2 * _LOAD:
                self._lists[pos:pos + 1] = [bucket[:_LOAD], bucket[_LOAD:]]
                self._maxes[pos:pos + 1] = [bucket[_LOAD - 1], bucket[-1]]
        self._len += 1
        self._before = None

    def remove(self, item: T) -> None:
        """Remove one occurrence of ``item``; :class:`KeyError` if there is none."""
        pos = bisect_left(self._maxes, item)
        if pos < len(self._maxes):
            bucket = self._lists[pos]
            i = bisect_left(bucket, item)
            if i < len(bucket) and not (item < bucket[i]) and not (bucket[i] < item):
                del bucket[i]
                self._len -= 1
                self._before = None
                if not bucket:
                    del self._lists[pos]
                    del self._maxes[pos]
                elif i == len(bucket):
                    self._maxes[pos] = bucket[-1]
                return
        raise KeyError(item)

    def _rank(self, item: T, right: bool) -> int:
        find = bisect_right if right else bisect_left
        pos = find(self._maxes, item)
        if pos == len(self._maxes):
            return self._len
        self.work += 1
        if self._before is None:
            self.work += len(self._lists)
            total, self._before = 0, []
            for bucket in self._lists:
                self._before.append(total)
                total += len(bucket)
        return self._before[pos] + find(self._lists[pos], item)

    def load(self, items: list[T]) -> None:
        """Fill an empty list from ``items`` (any order): one sort, then buckets, instead of one insertion each."""
        if self._len:
            raise ValueError("load() fills an empty list only")
        items = sorted(items)
        self._lists = [items[i:i + _LOAD] for i in range(0, len(items), _LOAD)]
        self._maxes = [bucket[-1] for bucket in self._lists]
        self._len = len(items)
        self._before = None

    def count_below(self, item: T) -> int:
        """How many items are < ``item``."""
        return self._rank(item, right=False)

    def count_at_most(self, item: T) -> int:
        """How many items are <= ``item``."""
        return self._rank(item, right=True)

    def from_item(self, item: T) -> Iterator[T]:
        """The items >= ``item`` in order (lazily: the caller decides how many to take)."""
        pos = bisect_left(self._maxes, item)
        if pos == len(self._maxes):
            return
        bucket = self._lists[pos]
        yield from bucket[bisect_left(bucket, item):]
        for bucket in self._lists[pos + 1:]:
            yield from bucket


class IdentityTable(dict[bytes, Any]):
    """Fingerprint → :class:`ledger.bindings.IdentityState`, with maintained indexes:

    - ``live``: sorted fingerprints of identities whose status is "live" (expired or not), for prefix lookups;
    - ``live_expiry``: sorted ``(expires, fingerprint)`` of the same identities, so the number of *unexpired*
      live bindings at any time is ``len(live) - live_expiry.count_at_most((floor(now), MAX))``;
    - ``status_counts``: identities per status ("live", "revoked", "rotated").
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: SortedList[bytes] = SortedList()
        self.live_expiry: SortedList[tuple[int, bytes]] = SortedList()
        self.status_counts: dict[str, int] = {"live": 0, "revoked": 0, "rotated": 0}
        self.prefix_examined = 0   # keys looked at by prefix lookups (a work counter for tests and status)

    def load(self, states: dict[bytes, Any]) -> None:
        """Fill an empty table at once (a start from the store), building each index with one sort."""
        if len(self):
            raise ValueError("load() fills an empty table only")
        super().update(states)
        live = [(fp, st) for fp, st in states.items() if st.status == "live"]
        self.live.load([fp for fp, _ in live])
        self.live_expiry.load([(st.expires, fp) for fp, st in live])
        for st in states.values():
            self.status_counts[st.status] += 1

    def work(self) -> dict[str, int]:
        """Work done by queries so far: what a flood of requests costs, whatever the number of identities."""
        return {"identities": len(self), "rank_steps": self.live.work + self.live_expiry.work,
                "prefix_keys_examined": self.prefix_examined}

    def _index(self, fp: bytes, state: Any, sign: int) -> None:
        self.status_counts[state.status] += sign
        if state.status == "live":
            if sign > 0:
                self.live.add(fp)
                self.live_expiry.add((state.expires, fp))
            else:
                self.live.remove(fp)
                self.live_expiry.remove((state.expires, fp))

    def __setitem__(self, fp: bytes, state: Any) -> None:
        old = super().get(fp, _MISSING)
        if old is not _MISSING:
            self._index(fp, old, -1)
        super().__setitem__(fp, state)
        self._index(fp, state, +1)

    def pop(self, fp: bytes, default: Any = _MISSING) -> Any:  # type: ignore[override]
        old = super().pop(fp, _MISSING)
        if old is _MISSING:
            if default is _MISSING:
                raise KeyError(fp)
            return default
        self._index(fp, old, -1)
        return old

    def __delitem__(self, fp: bytes) -> None:
        self.pop(fp)

    def _unsupported(self, *args: Any, **kw: Any) -> Any:
        raise TypeError("IdentityTable changes only through item assignment and pop (its indexes follow them)")

    update = setdefault = popitem = clear = _unsupported  # type: ignore[assignment]
