"""Nickname rules (consensus): which nicknames are well formed and when two nicknames are "the same".

Every step is specified in docs/ledger.md ("Nicknames"); the Unicode data is the generated table
:mod:`ledger._nickname_tables` (UTS #39 confusables 13.0.0, Scripts 15.1.0, assigned code points and marks of
Unicode 14.0.0), so the answer does not depend on the Python version a node runs.

- :func:`check_nickname` refuses a nickname with a code point unassigned in Unicode 14.0, more than
  :data:`MAX_MARK_RUN` combining marks in a row, or letters of several scripts (UTS #39 "highly restrictive":
  one script besides Common and Inherited, or Latin with Han and Hiragana/Katakana, Bopomofo or Hangul).
- :func:`nickname_keys` are the comparison keys: the UTS #39 skeleton of the case-folded NFKC form with every
  nonspacing and enclosing mark removed, so "carol", "CAROL", "сarol" (Cyrillic с), "carοl" (Greek ο), "ᴄarol"
  (small capital) and "cárol" share one key; plus the same without case folding first, so "Iris" and "lris"
  clash too. Two nicknames clash when they share any key.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from functools import cache, lru_cache

from ledger import _nickname_tables as tables
from ledger.errors import LedgerError

MAX_MARK_RUN = 3
COMMON_SCRIPTS = frozenset({"COMMON", "INHERITED"})
ALLOWED_SCRIPT_SETS = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


def _parse_ranges(text: str) -> tuple[list[int], list[int], list[str]]:
    starts: list[int] = []
    ends: list[int] = []
    values: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        starts.append(int(fields[0], 16))
        ends.append(int(fields[1], 16))
        values.append(fields[2] if len(fields) > 2 else "")
    return starts, ends, values


def _parse_confusables(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        src, dst = line.split(":")
        out[chr(int(src, 16))] = "".join(chr(int(h, 16)) for h in dst.split())
    return out


# The tables are parsed on first use, not at import: a process that only reads ASCII nicknames (every
# `ledger lookup`, every light client) never pays the ≈ 8 ms of parsing them.
@cache
def _confusables() -> dict[str, str]:
    return _parse_confusables(tables.CONFUSABLES)


@cache
def _ranges(name: str) -> tuple[list[int], list[int], list[str]]:
    return _parse_ranges(getattr(tables, name))


def _lookup(table: str, cp: int) -> str | None:
    starts, ends, values = _ranges(table)
    i = bisect_right(starts, cp) - 1
    if i >= 0 and cp <= ends[i]:
        return values[i]
    return None


def script_of(char: str) -> str:
    """The Unicode Script property value of ``char`` ("UNKNOWN" if the table has none)."""
    return _lookup("SCRIPTS", ord(char)) or "UNKNOWN"


def _is_mark(char: str) -> bool:
    return _lookup("MARKS", ord(char)) is not None


def check_nickname(nickname: str) -> None:
    """Raise :class:`LedgerError` (with a reason a person can act on) unless ``nickname`` passes the rules above.
    Length, printability and NFC are checked by the record itself."""
    problem = _nickname_problem(nickname)
    if problem is not None:
        raise LedgerError(problem)


@lru_cache(maxsize=65536)
def _nickname_problem(nickname: str) -> str | None:
    if nickname.isascii():
        return None  # ASCII: all assigned, no marks, only Latin and Common letters
    run = 0
    for char in unicodedata.normalize("NFD", nickname):
        if _lookup("ASSIGNED", ord(char)) is None:
            return (f"nickname {nickname!r} uses character U+{ord(char):04X}, which Unicode 14.0 does not assign; "
                    "choose another nickname")
        run = run + 1 if _is_mark(char) else 0
        if run > MAX_MARK_RUN:
            return f"nickname {nickname!r} stacks more than {MAX_MARK_RUN} combining marks on one letter"
    scripts = {script_of(c) for c in nickname} - COMMON_SCRIPTS
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in ALLOWED_SCRIPT_SETS):
        names = ", ".join(sorted(s.title() for s in scripts))
        return (f"nickname {nickname!r} mixes letters of several scripts ({names}); look-alike letters from other "
                "alphabets are not allowed: write it in one script")
    return None


def _strip_marks(text: str) -> str:
    if text.isascii():
        return text  # no ASCII code point is a mark (the table starts at U+0300)
    return "".join(c for c in text if not _is_mark(c))


def skeleton(text: str) -> str:
    """UTS #39 skeleton: NFD, every character replaced by its confusables prototype, NFD again."""
    confusables = _confusables()
    mapped = "".join(confusables.get(c, c) for c in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


def _finish(text: str) -> str:
    return _strip_marks(unicodedata.normalize("NFD", skeleton(text).casefold()))


@lru_cache(maxsize=65536)
def nickname_keys(nickname: str) -> tuple[str, ...]:
    """Every key a nickname claims (docs/ledger.md, "Nicknames"): the case-folded skeleton first, then the
    skeleton of the unfolded form when it differs (so "Iris" also claims "lris": capital I looks like l)."""
    nfkc = unicodedata.normalize("NFKC", nickname)
    first = _finish(_strip_marks(unicodedata.normalize("NFD", nfkc.casefold())))
    second = _finish(_strip_marks(unicodedata.normalize("NFD", nfkc)))
    return (first,) if second == first else (first, second)


def nickname_key(nickname: str) -> str:
    """The primary key: what a lookup by nickname is answered by."""
    return nickname_keys(nickname)[0]
