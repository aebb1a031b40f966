"""Safety numbers: a 60-digit code derived from both identity keys that two people compare by voice or on screen.

``safety_number(der_a, der_b)`` is the same whichever side computes it and changes completely if either key
changes. Each key gives 30 digits of its own (:func:`half_number`, an iterated SHA-256 of its fingerprint); the
number is the two halves in ascending order, 12 groups of 5 digits, e.g. ``"04179 92130 …"`` (as Signal does).
60 digits carry about 199 bits, so no attacker can make a key of its own show a chosen half; the iterations
(:data:`ITERATIONS`) make each try cost thousands of hashes on top of an RSA-3072 key generation.
docs/protocol.md §4 states the derivation exactly, with a vector; docs/security.md explains when to compare it.
"""

from __future__ import annotations

import functools

from p2pchat.foundation import crypto

SAFETY_LABEL = b"p2pchat/safety-number/v2\x00"
ITERATIONS = 5200
DIGITS = 60
GROUP = 5
_CHUNKS = 6            # 6 chunks of 5 bytes per key, each read mod 10^5: 30 digits


@functools.lru_cache(maxsize=512)     # ~6 ms each; our own half is the same in every chat
def half_number(fp: bytes) -> str:
    """The 30 digits one key fingerprint contributes.

    ``h = SHA-256(label | fp)``, then ``ITERATIONS - 1`` times ``h = SHA-256(h | fp)``; bytes ``5i .. 5i+4`` of
    the final ``h`` (i = 0..5) read as a big-endian integer mod 100000, each written as 5 digits.
    """
    if len(fp) != 32:
        raise ValueError("fingerprints are 32-byte SHA-256 digests")
    h = crypto.sha256(SAFETY_LABEL, fp)
    for _ in range(ITERATIONS - 1):
        h = crypto.sha256(h, fp)
    return "".join(f"{int.from_bytes(h[5 * i:5 * i + 5], 'big') % 100000:05d}" for i in range(_CHUNKS))


def safety_number_from_fingerprints(fp_a: bytes, fp_b: bytes) -> str:
    """The safety number of two SHA-256 key fingerprints (order does not matter): the two 30-digit halves in
    ascending order, 60 digits in 12 groups of 5 separated by spaces."""
    text = "".join(sorted((half_number(fp_a), half_number(fp_b))))
    return " ".join(text[i:i + GROUP] for i in range(0, DIGITS, GROUP))


def safety_number(public_der_a: bytes, public_der_b: bytes) -> str:
    """The safety number of two DER public keys; see :func:`safety_number_from_fingerprints`."""
    return safety_number_from_fingerprints(crypto.fingerprint(public_der_a), crypto.fingerprint(public_der_b))


__all__ = ["half_number", "safety_number", "safety_number_from_fingerprints"]
