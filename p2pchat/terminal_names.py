"""How the terminal and the command line name peers and contacts: visible, with the code points of non-ASCII
letters spelled out, and marked when the name reads like a contact's on another key (the look-alike rule of
:mod:`p2pchat.lookalike`, the window's): "bоb (not your contact bob; non-ASCII: о=U+043E) ⚠". Two contacts
whose names read alike are both marked in listings: "BOB ⚠ looks like bob"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from p2pchat.display import LINE_MARKS, name_in_line
from p2pchat.lookalike import NameIndex

if TYPE_CHECKING:
    from p2pchat.contacts import Contact

MARK = "⚠"
NAME_CHARS = 40
"""Characters of a contact's name shown in a mark (the window cuts names as much)."""
REREAD_SECONDS = 2.0
"""The contact store is read again (the node pins a new contact after step 4; another process may rename one) at
most this often, whatever asks: a question, a step 2 or a group message a stranger can cause costs at most one read
(500 sealed contacts: about 0.1 s, bench/lookalike_bench.py) every REREAD_SECONDS."""


class ContactSource(Protocol):
    """What the names need of the contact store (:class:`p2pchat.contacts.ContactStore`)."""

    def all(self) -> list[Contact]: ...

    def get(self, fp: str) -> Contact | None: ...


def describe_name(name: str | None, fallback: str = "an unnamed peer", twin: str | None = None,
                  marks: frozenset[str] = LINE_MARKS) -> str:
    """A peer's nickname for one line: visible, with the code points of any non-ASCII letter spelled out, so a
    look-alike ("bоb" with a Cyrillic о) is told apart from the name it imitates; ``twin``: the contact whose
    name it reads like though its key is another, named in the mark."""
    if not name:
        return fallback
    notes = [f"not your contact {twin}"] if twin is not None else []
    odd = sorted({ch for ch in name if not ch.isascii()})
    if odd:
        spelled = ", ".join(f"{ch if ch.isprintable() else '?'}=U+{ord(ch):04X}" for ch in odd[:4])
        notes.append(f"non-ASCII: {spelled}{', …' if len(odd) > 4 else ''}")
    shown = name_in_line(name, marks=marks)
    shown = f"{shown} ({'; '.join(notes)})" if notes else shown
    return f"{shown} {MARK}" if twin is not None else shown


def contact_label(c: Contact) -> str:
    """What the user calls a contact (local name, else latest nickname, else the start of its key) in a mark: one
    line, its non-ASCII letters spelled out (a look-alike contact's name reads like the peer's, by definition)."""
    name = c.local_name or c.nickname or f"key {c.fp[:16]}"
    return describe_name(name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…")


class PeerNames:
    """The user's contacts (current keys) as the terminal names them, and the look-alike check of a peer's name
    against them; without a contact store nothing is ever marked."""

    def __init__(self, store: ContactSource | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._index: NameIndex[Contact] = NameIndex(())
        self._read_at: float | None = None

    def index(self) -> NameIndex[Contact]:
        """The contacts (current keys) by their names' keys, read again when the last read is REREAD_SECONDS old."""
        if self._read_at is None or self.clock() - self._read_at >= REREAD_SECONDS:
            self._read_at = self.clock()
            if self.store is not None:
                self._index = NameIndex(c for c in self.store.all() if c.replaced_by is None)
        return self._index

    def twin(self, name: str | None, fp: str | None) -> str | None:
        """The name of the contact ``name`` reads like whose key is not ``fp`` (hex or its start, spaced or not;
        None: not known yet), if any."""
        c = self.index().twin(name, fp)
        return contact_label(c) if c is not None else None

    def contact(self, fp: str | None) -> Contact | None:
        """The contact whose key starts with ``fp`` (hex, spaced or not), if any."""
        start = (fp or "").replace(" ", "").lower()
        if len(start) < 16:
            return None
        return next((c for key, c in self.index().by_fp.items() if key.startswith(start)), None)

    def peer(self, name: str | None, fp: str | None, fallback: str = "an unnamed peer") -> str:
        """A peer whose key is ``fp`` (None: not known yet: never marked) by the name it goes by."""
        return describe_name(name, fallback, self.twin(name, fp) if fp else None)

    def looks_like(self, fp: str) -> str:
        """For a listing of contacts: " ⚠ looks like bob" when contact ``fp``'s name reads like another
        contact's, else ""."""
        index = self.index()
        c = index.by_fp.get(fp)
        other = index.twin_of(c) if c is not None else None
        return f" {MARK} looks like {contact_label(other)}" if other is not None else ""

    def contact_name(self, fp: str) -> str:
        """A contact by its name (non-ASCII letters spelled out), marked when it reads like another contact's;
        anyone else by the start of its key."""
        c = self.store.get(fp) if self.store is not None else None
        if c is None or not (c.local_name or c.nickname):
            return f"key {fp[:16]}"
        return describe_name(c.local_name or c.nickname) + self.looks_like(fp)

    def stranger(self, name: str, fp: str) -> str:
        """Someone who is not a contact, by the name another gave it (e.g. the member who added it to a group)
        and its key; marked when that name reads like a contact's."""
        twin = self.twin(name, fp)
        if twin is not None:
            return f"{name_in_line(name)} (key {fp[:16]}, not your contact {twin}) {MARK}"
        return f"{name_in_line(name)} (key {fp[:16]}, not a contact)" if name else f"key {fp[:16]} (not a contact)"


def after_step_2(names: PeerNames, nickname: str | None, fp: str | None,
                 warned: bool = False) -> tuple[str | None, str | None]:
    """Step 2 showed the peer's key ``fp`` and its ledger nickname: (the contact the name reads like though the
    key is another, the line that warns of it). ``warned`` (the accept prompt said the name reads like a
    contact's): the line also says when the key is that contact's."""
    if not fp or not nickname:
        return None, None
    twin = names.twin(nickname, fp)
    if twin is not None:
        return twin, (f"{MARK} {describe_name(nickname)} is not your contact {twin}: the name reads like theirs, "
                      f"the key ({fp}) is another. Tell it nothing you would tell only {twin}.")
    own = names.contact(fp) if warned else None
    return None, (f"✓ the key is your contact {contact_label(own)}'s." if own is not None else None)


__all__ = ["MARK", "PeerNames", "after_step_2", "contact_label", "describe_name"]
