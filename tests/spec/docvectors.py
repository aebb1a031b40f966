"""Reads the test vectors out of the docs themselves, so the spec tests check what a reader of the docs sees."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def named_blocks(doc: str) -> dict[str, str]:
    """Every ```vector NAME block of ``docs/<doc>``, by name, as its raw text."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in re.finditer(r"```vector ([\w-]+)\n(.*?)```", text, re.S)}


def vector(doc: str, name: str) -> dict[str, str]:
    """A ``key = value`` vector; indented lines continue the value; quotes are kept off text values."""
    values: dict[str, str] = {}
    last = ""
    for line in named_blocks(doc)[name].splitlines():
        if line.startswith((" ", "\t")) and last:
            values[last] += line.strip()
        elif "=" in line:
            key, value = line.split("=", 1)
            last = key.strip()
            values[last] = value.strip()
    return {k: (v[1:-1] if v.startswith('"') and v.endswith('"') else v) for k, v in values.items()}


def hexblock(doc: str, name: str) -> bytes:
    """A vector block that is one hex value, wrapped."""
    return bytes.fromhex("".join(named_blocks(doc)[name].split()))


def x(value: str) -> bytes:
    return bytes.fromhex(value)


def find(pattern: str, text: str, flags: int = 0) -> str:
    """The first group of ``pattern`` in ``text``; fails the test when the doc has no such passage."""
    match = re.search(pattern, text, flags)
    assert match is not None, f"the doc has no passage matching {pattern!r}"
    return match.group(1)
