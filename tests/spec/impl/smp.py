"""The shared-secret check's arithmetic (protocol.md §5.8): group, proofs, secret, the four messages."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable

SIZE = 384


def _arctan_inverse(x: int, one: int) -> int:
    """arctan(1/x) in fixed point (``one`` = 1.0)."""
    total, term, n, sign = 0, one // x, 1, 1
    while term:
        total += sign * (term // n)
        term //= x * x
        n += 2
        sign = -sign
    return total


def _pi_times_2_to(bits: int) -> int:
    guard = 64
    one = 1 << (bits + guard)
    return (16 * _arctan_inverse(5, one) - 4 * _arctan_inverse(239, one)) >> guard


P = 2**3072 - 2**3008 - 1 + 2**64 * (_pi_times_2_to(2942) + 1690314)
Q = (P - 1) // 2
G = 2


def enc(value: int) -> bytes:
    return value.to_bytes(SIZE, "big")


def proof_hash(version: int, *values: int) -> int:
    data = b"p2pchat/smp-proof/v1\x00" + bytes([version]) + b"".join(enc(v) for v in values)
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def normalise(answer: str) -> bytes:
    text = unicodedata.normalize("NFKC", answer).strip().casefold()
    return unicodedata.normalize("NFKC", text).encode()


def secret(fp_initiator: bytes, fp_answerer: bytes, session_id: bytes, answer: str) -> int:
    a = normalise(answer)
    data = (b"p2pchat/smp-secret/v1\x00" + fp_initiator + fp_answerer + session_id + len(a).to_bytes(4, "big") + a)
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def exponent(random_bytes: Callable[[int], bytes]) -> int:
    return 1 + int.from_bytes(random_bytes(400), "big") % (Q - 1)


def prove_knowledge(version: int, a: int, r: int) -> tuple[int, int]:
    c = proof_hash(version, pow(G, r, P))
    return c, (r - a * c) % Q


def check_knowledge(version: int, x: int, c: int, d: int) -> bool:
    return proof_hash(version, pow(G, d, P) * pow(x, c, P) % P) == c


def in_group(v: int) -> bool:
    return 2 <= v <= P - 2 and pow(v, Q, P) == 1
