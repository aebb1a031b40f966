"""How a key fingerprint is shown to people. Apart from :mod:`p2pchat.foundation.crypto` (which re-exports it) so
that command lines can format one without importing hashlib and OpenSSL at start-up (bench/startup_bench.py)."""

from __future__ import annotations


def format_fingerprint(fp: bytes, groups: int = 8) -> str:
    """Fingerprint as short hex groups for people, e.g. ``3f2a 9c01 …`` (first ``groups`` groups)."""
    text = fp.hex()
    return " ".join(text[i:i + 4] for i in range(0, min(len(text), groups * 4), 4))
