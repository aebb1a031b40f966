"""Look-alike names: two names a reader could take for each other, by the ledger's nickname rule
(:mod:`ledger.nicknames`: UTS #39 confusable skeletons, case folded, marks dropped) after zero-width and other
invisible characters are dropped, so "bоb" (Cyrillic о), "BOB" and "b\u200bob" all read like "bob".

The one rule every user interface marks look-alikes by: the window (``gui/``) and the terminal and command line
(``p2pchat/terminal*.py``, the ``contacts``, ``history`` and ``group`` listings)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from ledger.nicknames import nickname_keys

LOOKALIKE_CHARS = 200
"""Characters of a name compared for look-alikes (a longer one is compared by its start: the rest is cut when
shown anyway)."""


def looks_alike(a: str | None, b: str | None) -> bool:
    """Two names a reader could take for each other (see the module docstring); an empty name looks like none."""
    return not name_keys(a).isdisjoint(name_keys(b))


def name_keys(name: str | None) -> frozenset[str]:
    """The keys two names that read alike share (none for an empty one): index contacts by them."""
    return frozenset(nickname_keys(_visible_letters(name))) - {""}


def _visible_letters(name: str | None) -> str:
    text = (name or "")[:LOOKALIKE_CHARS]
    return "".join(ch for ch in text if ch.isprintable() and not ch.isspace())


class Named(Protocol):
    """A contact as the index reads it (:class:`p2pchat.contacts.Contact`)."""

    @property
    def fp(self) -> str: ...          # 64 hex digits
    @property
    def local_name(self) -> str | None: ...
    @property
    def nickname(self) -> str | None: ...


C = TypeVar("C", bound=Named)


class NameIndex(Generic[C]):
    """Contacts indexed by the keys of their local names and nicknames: finding the contact a name reads like is
    a lookup, not a comparison with every contact."""

    def __init__(self, contacts: Iterable[C]) -> None:
        self.by_fp: dict[str, C] = {}
        self._by_key: dict[str, list[C]] = {}
        for c in contacts:
            self.by_fp[c.fp] = c
            for key in name_keys(c.local_name) | name_keys(c.nickname):
                self._by_key.setdefault(key, []).append(c)

    def twin(self, name: str | None, fp: str | None) -> C | None:
        """A contact whose key is not ``fp`` (hex, or its start; spaces ignored; None: the key is not known yet,
        so any contact) and whose local name or nickname ``name`` reads like, if any."""
        start = fp.replace(" ", "").lower() if fp is not None else None
        for key in sorted(name_keys(name)):
            for c in self._by_key.get(key, ()):
                if start is None or not c.fp.startswith(start):
                    return c
        return None

    def twin_of(self, c: Named) -> C | None:
        """Another contact whose name reads like contact ``c``'s (its local name, else its nickname)."""
        return self.twin(c.local_name or c.nickname, c.fp)


__all__ = ["LOOKALIKE_CHARS", "NameIndex", "Named", "looks_alike", "name_keys"]
