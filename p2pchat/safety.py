"""Safety numbers: a short code derived from both identity keys that two people compare by voice.

``safety_number(der_a, der_b)`` is the same whichever side computes it (the two fingerprints are sorted
first), and changes completely if either key changes. It is 12 decimal digits in groups of four,
e.g. ``"0417 9921 3086"``: easy to read out, and about 40 bits, so an attacker who wants two different key
pairs to show the same code must generate on the order of 2^40 RSA-3072 keys. It is a second check on top of
the ledger binding, which already authenticates the key; docs/security.md explains when to use it.
"""

from __future__ import annotations

from p2pchat.foundation import crypto

SAFETY_LABEL = b"p2pchat/safety-number/v1\x00"
DIGITS = 12
GROUP = 4


def safety_number_from_fingerprints(fp_a: bytes, fp_b: bytes, *, digits: int = DIGITS, group: int = GROUP) -> str:
    """The safety number of two SHA-256 key fingerprints (order does not matter).

    ``SHA-256(label | min(fp) | max(fp))``; the first 8 bytes read as a big-endian integer, reduced modulo
    10^digits (bias below 2^-24 for 12 digits), written with leading zeros in groups of ``group`` digits.
    """
    if len(fp_a) != 32 or len(fp_b) != 32:
        raise ValueError("fingerprints are 32-byte SHA-256 digests")
    if not 1 <= digits <= 18:
        raise ValueError("a safety number has between 1 and 18 digits")
    low, high = sorted((fp_a, fp_b))
    value = int.from_bytes(crypto.sha256(SAFETY_LABEL, low, high)[:8], "big") % 10**digits
    text = f"{value:0{digits}d}"
    return " ".join(text[i:i + group] for i in range(0, digits, group))


def safety_number(public_der_a: bytes, public_der_b: bytes, *, digits: int = DIGITS, group: int = GROUP) -> str:
    """The safety number of two DER public keys; see :func:`safety_number_from_fingerprints`."""
    return safety_number_from_fingerprints(crypto.fingerprint(public_der_a), crypto.fingerprint(public_der_b),
                                           digits=digits, group=group)


__all__ = ["safety_number", "safety_number_from_fingerprints"]
