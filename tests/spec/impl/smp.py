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


def _b(value: int, size: int = SIZE) -> bytes:
    return value.to_bytes(size, "big")


def _i(value: bytes, size: int = SIZE) -> int:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"a field of {len(value) if isinstance(value, bytes) else '?'} bytes, not {size}")
    return int.from_bytes(value, "big")


def _element(value: bytes) -> int:
    v = _i(value)
    if not in_group(v):
        raise ValueError("a group element outside the subgroup")
    return v


def _exponent_field(value: bytes) -> int:
    d = _i(value)
    if d >= Q:
        raise ValueError("an exponent not below q")
    return d


def _coordinates_ok(version: int, g2: int, g3: int, p: int, q: int, c: int, d5: int, d6: int) -> bool:
    return proof_hash(version, pow(g3, d5, P) * pow(p, c, P) % P,
                      pow(G, d5, P) * pow(g2, d6, P) * pow(q, c, P) % P) == c


def _equal_logs_ok(version: int, g3x: int, base: int, r: int, c: int, d7: int) -> bool:
    return proof_hash(version, pow(G, d7, P) * pow(g3x, c, P) % P, pow(base, d7, P) * pow(r, c, P) % P) == c


class Run:
    """One run of §5.8 on one side: Alice (``asker``) or Bob; every received message checked as the doc says."""

    def __init__(self, asker: bool, fp_initiator: bytes, fp_answerer: bytes, session_id: bytes,
                 random_bytes: Callable[[int], bytes]) -> None:
        self.asker, self.rand = asker, random_bytes
        self.ids = (fp_initiator, fp_answerer, session_id)
        self.matched: bool | None = None

    def _coordinates(self, version: int, secret_value: int) -> tuple[int, int, int, int, int, int]:
        r4, r5, r6 = exponent(self.rand), exponent(self.rand), exponent(self.rand)
        p = pow(self.g3, r4, P)
        q = pow(G, r4, P) * pow(self.g2, secret_value, P) % P
        c = proof_hash(version, pow(self.g3, r5, P), pow(G, r5, P) * pow(self.g2, r6, P) % P)
        return p, q, c, (r5 - r4 * c) % Q, (r6 - secret_value * c) % Q, r4

    def _equal_logs(self, version: int, base: int, a3: int) -> tuple[int, int, int]:
        r7 = exponent(self.rand)
        c = proof_hash(version, pow(G, r7, P), pow(base, r7, P))
        return pow(base, a3, P), c, (r7 - a3 * c) % Q

    # Alice
    def smp1(self, question: str, answer: str) -> dict[str, object]:
        self.x = secret(*self.ids, answer)
        self.a2, self.a3 = exponent(self.rand), exponent(self.rand)
        c2, d2 = prove_knowledge(1, self.a2, exponent(self.rand))
        c3, d3 = prove_knowledge(2, self.a3, exponent(self.rand))
        self.g3a = pow(G, self.a3, P)
        return {"g2a": _b(pow(G, self.a2, P)), "c2": _b(c2, 32), "d2": _b(d2), "g3a": _b(self.g3a),
                "c3": _b(c3, 32), "d3": _b(d3), "question": question}

    def smp3(self, m: dict[str, bytes]) -> dict[str, object]:
        g2b, g3b = _element(m["g2b"]), _element(m["g3b"])
        if not (check_knowledge(3, g2b, _i(m["c2"], 32), _exponent_field(m["d2"]))
                and check_knowledge(4, g3b, _i(m["c3"], 32), _exponent_field(m["d3"]))):
            raise ValueError("a proof of knowledge in smp2 does not verify")
        self.g2, self.g3, self.g3b = pow(g2b, self.a2, P), pow(g3b, self.a3, P), g3b
        self.pb, self.qb = _element(m["pb"]), _element(m["qb"])
        if not _coordinates_ok(5, self.g2, self.g3, self.pb, self.qb, _i(m["cp"], 32), _exponent_field(m["d5"]),
                               _exponent_field(m["d6"])):
            raise ValueError("the coordinates proof of smp2 does not verify")
        self.pa, self.qa, cp, d5, d6, _ = self._coordinates(6, self.x)
        self.base = self.qa * pow(self.qb, -1, P) % P
        ra, cr, d7 = self._equal_logs(7, self.base, self.a3)
        return {"pa": _b(self.pa), "qa": _b(self.qa), "cp": _b(cp, 32), "d5": _b(d5), "d6": _b(d6),
                "ra": _b(ra), "cr": _b(cr, 32), "d7": _b(d7)}

    def finish_alice(self, m: dict[str, bytes]) -> bool:
        rb = _element(m["rb"])
        if not _equal_logs_ok(8, self.g3b, self.base, rb, _i(m["cr"], 32), _exponent_field(m["d7"])):
            raise ValueError("the equal-logs proof of smp4 does not verify")
        self.matched = pow(rb, self.a3, P) == self.pa * pow(self.pb, -1, P) % P
        return self.matched

    # Bob
    def smp2(self, m: dict[str, bytes], answer: str) -> dict[str, object]:
        g2a, g3a = _element(m["g2a"]), _element(m["g3a"])
        if not (check_knowledge(1, g2a, _i(m["c2"], 32), _exponent_field(m["d2"]))
                and check_knowledge(2, g3a, _i(m["c3"], 32), _exponent_field(m["d3"]))):
            raise ValueError("a proof of knowledge in smp1 does not verify")
        y = secret(*self.ids, answer)
        b2, self.b3 = exponent(self.rand), exponent(self.rand)
        c2, d2 = prove_knowledge(3, b2, exponent(self.rand))
        c3, d3 = prove_knowledge(4, self.b3, exponent(self.rand))
        self.g2, self.g3, self.g3a = pow(g2a, b2, P), pow(g3a, self.b3, P), g3a
        self.pb, self.qb, cp, d5, d6, _ = self._coordinates(5, y)
        return {"g2b": _b(pow(G, b2, P)), "c2": _b(c2, 32), "d2": _b(d2), "g3b": _b(pow(G, self.b3, P)),
                "c3": _b(c3, 32), "d3": _b(d3), "pb": _b(self.pb), "qb": _b(self.qb), "cp": _b(cp, 32),
                "d5": _b(d5), "d6": _b(d6)}

    def smp4(self, m: dict[str, bytes]) -> dict[str, object]:
        pa, qa = _element(m["pa"]), _element(m["qa"])
        if pa == self.pb or qa == self.qb:
            raise ValueError("pa = pb or qa = qb")
        if not _coordinates_ok(6, self.g2, self.g3, pa, qa, _i(m["cp"], 32), _exponent_field(m["d5"]),
                               _exponent_field(m["d6"])):
            raise ValueError("the coordinates proof of smp3 does not verify")
        base = qa * pow(self.qb, -1, P) % P
        ra = _element(m["ra"])
        if not _equal_logs_ok(7, self.g3a, base, ra, _i(m["cr"], 32), _exponent_field(m["d7"])):
            raise ValueError("the equal-logs proof of smp3 does not verify")
        self.matched = pow(ra, self.b3, P) == pa * pow(self.pb, -1, P) % P
        rb, cr, d7 = self._equal_logs(8, base, self.b3)
        return {"rb": _b(rb), "cr": _b(cr, 32), "d7": _b(d7)}
