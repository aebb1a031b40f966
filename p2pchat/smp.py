"""The shared-secret check: the Socialist Millionaires' Protocol of OTR v3, bound to one chat session (sans-IO).

Two people who cannot compare fingerprints check each other with a question only they can answer: the asker
(the *initiator*, OTR's Alice) and the answerer (Bob) each feed their answer in; both learn only whether the
answers were the same, and an attacker inside the session gets one guess per run. The protocol is OTR v3's SMP
(zero-knowledge proofs in the 3072-bit MODP group of RFC 3526, generator 2, prime order ``q = (p − 1) / 2``) with
SHA-256 as the hash; docs/protocol.md ("Shared-secret check") states every layout with a vector.

The secret each side uses is not the typed answer but ``SHA-256`` over both identity fingerprints (initiator's
first), the session's transcript hash (the session id of every sealed frame) and the normalised answer (NFKC,
surrounding space stripped, casefolded) — so a relay in the middle of two sessions, or a later session, cannot
reuse a run.

API (one :class:`Smp` per run)::

    Smp.ask(my_fp, peer_fp, session_id, question, answer, randfunc=None) -> (run, Reply("smp1", fields))
    Smp.asked(my_fp, peer_fp, session_id, fields, randfunc=None) -> run       # from a received smp1
    run.answer(answer) -> [Reply("smp2", fields)] | [Reply("smp_abort"), Failed]   # the answerer's user answered
    run.receive(kind, fields) -> list[Reply | Finished | Failed]                 # smp2 / smp3 / smp4 / smp_abort
    run.abort(reason) -> Reply("smp_abort", {})                                  # either user gives up
    run.state, run.question, run.initiator

State (:class:`SmpState`), per side; every pair (state, message kind) not in :data:`TRANSITIONS` aborts the run
with a plain reason, so a replayed or out-of-order message can only end it, never move it on::

    initiator: EXPECT2 --smp2--> EXPECT4 --smp4--> DONE
    answerer:  (smp1) ANSWER --answer()--> EXPECT3 --smp3--> DONE
    any live state --smp_abort / abort() / a bad message--> ABORTED

Every received group element is checked to lie in ``2 .. p − 2`` and in the subgroup of order ``q``, every
exponent in ``0 .. q − 1``, before it is used.
"""

from __future__ import annotations

import enum
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.chat_protocol import SMP_CHALLENGES, SMP_ELEMENT_LEN, SMP_FIELDS, SMP_HASH_LEN, SMP_MAX_QUESTION
from p2pchat.foundation import crypto

# RFC 3526 §4, the 3072-bit MODP group: p = 2^3072 − 2^3008 − 1 + 2^64 · (⌊2^2942 · π⌋ + 1690314).
P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C"
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
    , 16)
Q = (P - 1) // 2
G = 2
ELEMENT_LEN = SMP_ELEMENT_LEN    # a group element or an exponent on the wire: 384 bytes, big-endian
HASH_LEN = SMP_HASH_LEN          # a proof's challenge c: SHA-256
MAX_QUESTION = SMP_MAX_QUESTION  # characters of the question carried in smp1
MAX_ANSWER = 1000                # characters of an answer
SECRET_LABEL = b"p2pchat/smp-secret/v1\x00"
PROOF_LABEL = b"p2pchat/smp-proof/v1\x00"

MESSAGE_FIELDS = SMP_FIELDS       # the layouts of smp1..smp4 (all bytes), in p2pchat.chat_protocol
_CHALLENGES = SMP_CHALLENGES
_EXPONENTS = frozenset({"d2", "d3", "d5", "d6", "d7"})

RandFunc = Callable[[int], bytes]


class SmpState(enum.Enum):
    EXPECT1 = "expect1"      # no run yet (the state a fresh answerer starts in)
    ANSWER = "answer"        # answerer: smp1 arrived, waiting for this user's answer
    EXPECT2 = "expect2"      # initiator: smp1 sent
    EXPECT3 = "expect3"      # answerer: smp2 sent
    EXPECT4 = "expect4"      # initiator: smp3 sent
    DONE = "done"
    ABORTED = "aborted"


LIVE = frozenset({SmpState.ANSWER, SmpState.EXPECT2, SmpState.EXPECT3, SmpState.EXPECT4})

# (state, received kind) -> handler name; anything else aborts the run.
TRANSITIONS: dict[tuple[SmpState, str], str] = {
    (SmpState.EXPECT2, "smp2"): "_on_smp2",
    (SmpState.EXPECT3, "smp3"): "_on_smp3",
    (SmpState.EXPECT4, "smp4"): "_on_smp4",
    **{(state, "smp_abort"): "_on_abort" for state in LIVE},
}


class SmpError(ValueError):
    """A received SMP message is unusable (its reason is our own sentence)."""


@dataclass(frozen=True)
class Reply:
    """Send this message to the peer (inside the encrypted channel)."""

    kind: str                       # smp1 .. smp4, smp_abort
    fields: dict[str, bytes | str]


@dataclass(frozen=True)
class Finished:
    matched: bool


@dataclass(frozen=True)
class Failed:
    """The run ended without a result: ``reason`` for the user (never text from the network)."""

    reason: str
    by_peer: bool = False           # the peer aborted (its smp_abort)


SmpEvent = Reply | Finished | Failed


# --- the secret ----------------------------------------------------------------------------------------------

def normalise_answer(answer: str) -> str:
    """NFKC, surrounding white space stripped, casefolded (then NFKC again: casefolding can denormalise)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", answer).strip().casefold())


def secret(initiator_fp: bytes, answerer_fp: bytes, session_id: bytes, answer: str) -> int:
    """The exponent x (or y) of a run: ``SHA-256(SECRET_LABEL | fp_initiator | fp_answerer | session id |
    u32 len(a) | a)`` as a big-endian integer, ``a`` the UTF-8 of :func:`normalise_answer`."""
    for part in (initiator_fp, answerer_fp, session_id):
        if len(part) != 32:
            raise ValueError("fingerprints and the session id are 32 bytes")
    raw = normalise_answer(answer).encode("utf-8")
    return int.from_bytes(crypto.sha256(SECRET_LABEL, initiator_fp, answerer_fp, session_id,
                                        struct.pack(">I", len(raw)), raw), "big")


# --- encoding and checks -------------------------------------------------------------------------------------

def encode(value: int) -> bytes:
    return value.to_bytes(ELEMENT_LEN, "big")


def proof_hash(version: int, *values: int) -> int:
    """A proof's challenge: ``SHA-256(PROOF_LABEL | u8 version | 384-byte value ...)`` as an integer."""
    return int.from_bytes(crypto.sha256(PROOF_LABEL, bytes([version]), *(encode(value) for value in values)), "big")


def check_element(name: str, value: int) -> int:
    """``value`` must be a group element of order q: in 2 .. p − 2 and ``value^q = 1 (mod p)``."""
    if not 2 <= value <= P - 2:
        raise SmpError(f"the peer's {name} is outside the group (a value out of range)")
    if crypto.mod_pow(value, Q, P) != 1:
        raise SmpError(f"the peer's {name} is not in the prime-order subgroup")
    return value


def _parse(kind: str, fields: dict[str, bytes | str]) -> dict[str, int]:
    """The integers of a message, with lengths and ranges checked (group membership is checked where used)."""
    out: dict[str, int] = {}
    for name in MESSAGE_FIELDS[kind]:
        raw = fields.get(name)
        size = HASH_LEN if name in _CHALLENGES else ELEMENT_LEN
        if not isinstance(raw, bytes) or len(raw) != size:
            raise SmpError(f"the peer's {kind} message has a malformed {name}")
        value = int.from_bytes(raw, "big")
        if name in _EXPONENTS and not value < Q:
            raise SmpError(f"the peer's {name} is out of range")
        out[name] = value
    return out


def _fields(**values: int) -> dict[str, bytes | str]:
    return {name: (value.to_bytes(HASH_LEN, "big") if name in _CHALLENGES else encode(value))
            for name, value in values.items()}


# --- the proofs (OTR v3 SMP, SHA-256) -------------------------------------------------------------------------

def _exp(base: int, exponent: int) -> int:
    return crypto.mod_pow(base, exponent, P)


def _mul(*values: int) -> int:
    out = 1
    for value in values:
        out = crypto.mod_mul(out, value, P)
    return out


def _d(r: int, a: int, c: int) -> int:
    """``r − a·c mod q``."""
    return crypto.mod_sub(r, crypto.mod_mul(a, c, Q), Q)


def prove_log(version: int, a: int, randfunc: RandFunc | None) -> tuple[int, int]:
    """Knowledge of ``a`` = log_g(g^a): ``c = H(v, g^r)``, ``D = r − a·c mod q``."""
    r = crypto.random_exponent(Q, randfunc)
    c = proof_hash(version, _exp(G, r))
    return c, _d(r, a, c)


def verify_log(version: int, element: int, c: int, d: int) -> bool:
    return proof_hash(version, _mul(_exp(G, d), _exp(element, c))) == c


def prove_coords(version: int, g2: int, g3: int, r: int, x: int, randfunc: RandFunc | None) -> tuple[int, int, int]:
    """P = g3^r and Q = g^r·g2^x share r: ``c = H(v, g3^r5, g^r5·g2^r6)``, ``D5 = r5 − r·c``, ``D6 = r6 − x·c``."""
    r5, r6 = crypto.random_exponent(Q, randfunc), crypto.random_exponent(Q, randfunc)
    c = proof_hash(version, _exp(g3, r5), _mul(_exp(G, r5), _exp(g2, r6)))
    return c, _d(r5, r, c), _d(r6, x, c)


def verify_coords(version: int, g2: int, g3: int, p: int, q: int, c: int, d5: int, d6: int) -> bool:
    return proof_hash(version, _mul(_exp(g3, d5), _exp(p, c)),
                      _mul(_exp(G, d5), _exp(g2, d6), _exp(q, c))) == c


def prove_equal_logs(version: int, base: int, a3: int, randfunc: RandFunc | None) -> tuple[int, int]:
    """log_g(g^a3) = log_base(base^a3): ``c = H(v, g^r7, base^r7)``, ``D7 = r7 − a3·c``."""
    r7 = crypto.random_exponent(Q, randfunc)
    c = proof_hash(version, _exp(G, r7), _exp(base, r7))
    return c, _d(r7, a3, c)


def verify_equal_logs(version: int, g3x: int, base: int, r: int, c: int, d7: int) -> bool:
    return proof_hash(version, _mul(_exp(G, d7), _exp(g3x, c)), _mul(_exp(base, d7), _exp(r, c))) == c


# --- one run -------------------------------------------------------------------------------------------------

class Smp:
    """One run of the check, on one side; see the module docstring."""

    def __init__(self, my_fp: bytes, peer_fp: bytes, session_id: bytes, *, initiator: bool,
                 question: str = "", randfunc: RandFunc | None = None) -> None:
        self.initiator = initiator
        self.question = question
        self._fps = (my_fp, peer_fp) if initiator else (peer_fp, my_fp)
        self._session_id = session_id
        self._rand = randfunc
        self.state = SmpState.EXPECT1
        self._v: dict[str, int] = {}          # this run's secrets and the peer's values, erased at the end
        self._smp1: dict[str, bytes | str] = {}   # the answerer's smp1, checked when its user answers

    # --- starting ------------------------------------------------------------------------------------

    @classmethod
    def ask(cls, my_fp: bytes, peer_fp: bytes, session_id: bytes, question: str, answer: str,
            randfunc: RandFunc | None = None) -> tuple[Smp, Reply]:
        """Start a run as the initiator: the run (in EXPECT2) and its smp1."""
        check_inputs(question, answer)
        question = question.strip()
        run = cls(my_fp, peer_fp, session_id, initiator=True, question=question, randfunc=randfunc)
        v = run._v
        v["x"] = secret(*run._fps, session_id, answer)
        v["a2"], v["a3"] = run._random(), run._random()
        c2, d2 = prove_log(1, v["a2"], randfunc)
        c3, d3 = prove_log(2, v["a3"], randfunc)
        v["g3a"] = _exp(G, v["a3"])
        run.state = SmpState.EXPECT2
        fields = _fields(g2a=_exp(G, v["a2"]), c2=c2, d2=d2, g3a=v["g3a"], c3=c3, d3=d3)
        fields["question"] = question
        return run, Reply("smp1", fields)

    @classmethod
    def asked(cls, my_fp: bytes, peer_fp: bytes, session_id: bytes, fields: dict[str, bytes | str],
              randfunc: RandFunc | None = None) -> Smp:
        """A received smp1 (its field sizes checked by the frame codec): the answerer's run in ANSWER. Nothing is
        computed here; the values and proofs are checked in :meth:`answer`, so a peer's questions cost nothing until
        this user answers one."""
        question = fields.get("question", "")
        run = cls(my_fp, peer_fp, session_id, initiator=False,
                  question=question if isinstance(question, str) else "", randfunc=randfunc)
        run._smp1 = fields
        run.state = SmpState.ANSWER
        return run

    def answer(self, answer: str) -> list[SmpEvent]:
        """The answerer's user typed an answer: smp2 (state EXPECT3), or an smp_abort and the failure when the
        peer's smp1 is unusable."""
        if self.state is not SmpState.ANSWER:
            raise ValueError("there is no question waiting for an answer")
        check_inputs("", answer)
        try:
            m = _parse("smp1", self._smp1)
            check_element("g2a", m["g2a"])
            check_element("g3a", m["g3a"])
            if not verify_log(1, m["g2a"], m["c2"], m["d2"]):
                raise SmpError("the peer's proof for g2a does not verify")
            if not verify_log(2, m["g3a"], m["c3"], m["d3"]):
                raise SmpError("the peer's proof for g3a does not verify")
        except SmpError as exc:
            return [Reply("smp_abort", {}), self._fail(str(exc))]
        v = self._v
        y = secret(*self._fps, self._session_id, answer)
        b2, b3 = self._random(), self._random()
        c2, d2 = prove_log(3, b2, self._rand)
        c3, d3 = prove_log(4, b3, self._rand)
        g2, g3 = _exp(m["g2a"], b2), _exp(m["g3a"], b3)
        r4 = self._random()
        pb, qb = _exp(g3, r4), _mul(_exp(G, r4), _exp(g2, y))
        cp, d5, d6 = prove_coords(5, g2, g3, r4, y, self._rand)
        v.update(g3a=m["g3a"], g2=g2, g3=g3, b3=b3, pb=pb, qb=qb)
        self.state = SmpState.EXPECT3
        return [Reply("smp2", _fields(g2b=_exp(G, b2), c2=c2, d2=d2, g3b=_exp(G, b3), c3=c3, d3=d3,
                                      pb=pb, qb=qb, cp=cp, d5=d5, d6=d6))]

    # --- the peer's messages ---------------------------------------------------------------------------

    def receive(self, kind: str, fields: dict[str, bytes | str]) -> list[SmpEvent]:
        """A message of this run from the peer; an unusable or out-of-turn one aborts the run (an smp_abort goes
        back, unless the run was already over)."""
        handler = TRANSITIONS.get((self.state, kind))
        if handler is None:
            return self._out_of_turn(kind)
        try:
            return getattr(self, handler)(fields)
        except SmpError as exc:
            return [Reply("smp_abort", {}), self._fail(str(exc))]

    def abort(self, reason: str) -> Reply | None:
        """This user gives up: the smp_abort to send (None when the run is already over)."""
        if self.state not in LIVE:
            return None
        self._fail(reason)
        return Reply("smp_abort", {})

    def _on_smp2(self, fields: dict[str, bytes | str]) -> list[SmpEvent]:
        m = _parse("smp2", fields)
        v = self._v
        for name in ("g2b", "g3b", "pb", "qb"):
            check_element(name, m[name])
        if not verify_log(3, m["g2b"], m["c2"], m["d2"]):
            raise SmpError("the peer's proof for g2b does not verify")
        if not verify_log(4, m["g3b"], m["c3"], m["d3"]):
            raise SmpError("the peer's proof for g3b does not verify")
        g2, g3 = _exp(m["g2b"], v["a2"]), _exp(m["g3b"], v["a3"])
        if not verify_coords(5, g2, g3, m["pb"], m["qb"], m["cp"], m["d5"], m["d6"]):
            raise SmpError("the peer's proof for Pb and Qb does not verify")
        r4 = self._random()
        pa, qa = _exp(g3, r4), _mul(_exp(G, r4), _exp(g2, v["x"]))
        cp, d5, d6 = prove_coords(6, g2, g3, r4, v["x"], self._rand)
        qab = crypto.mod_div(qa, m["qb"], P)
        ra = _exp(qab, v["a3"])
        cr, d7 = prove_equal_logs(7, qab, v["a3"], self._rand)
        v.update(g3b=m["g3b"], qab=qab, pab=crypto.mod_div(pa, m["pb"], P))
        self.state = SmpState.EXPECT4
        return [Reply("smp3", _fields(pa=pa, qa=qa, cp=cp, d5=d5, d6=d6, ra=ra, cr=cr, d7=d7))]

    def _on_smp3(self, fields: dict[str, bytes | str]) -> list[SmpEvent]:
        m = _parse("smp3", fields)
        v = self._v
        for name in ("pa", "qa", "ra"):
            check_element(name, m[name])
        if m["qa"] == v["qb"] or m["pa"] == v["pb"]:
            raise SmpError("the peer's Pa or Qa repeats ours")
        if not verify_coords(6, v["g2"], v["g3"], m["pa"], m["qa"], m["cp"], m["d5"], m["d6"]):
            raise SmpError("the peer's proof for Pa and Qa does not verify")
        qab = crypto.mod_div(m["qa"], v["qb"], P)
        if not verify_equal_logs(7, v["g3a"], qab, m["ra"], m["cr"], m["d7"]):
            raise SmpError("the peer's proof for Ra does not verify")
        rb = _exp(qab, v["b3"])
        cr, d7 = prove_equal_logs(8, qab, v["b3"], self._rand)
        matched = _exp(m["ra"], v["b3"]) == crypto.mod_div(m["pa"], v["pb"], P)
        self._end(SmpState.DONE)
        return [Reply("smp4", _fields(rb=rb, cr=cr, d7=d7)), Finished(matched)]

    def _on_smp4(self, fields: dict[str, bytes | str]) -> list[SmpEvent]:
        m = _parse("smp4", fields)
        v = self._v
        check_element("rb", m["rb"])
        if not verify_equal_logs(8, v["g3b"], v["qab"], m["rb"], m["cr"], m["d7"]):
            raise SmpError("the peer's proof for Rb does not verify")
        matched = _exp(m["rb"], v["a3"]) == v["pab"]
        self._end(SmpState.DONE)
        return [Finished(matched)]

    def _on_abort(self, fields: dict[str, bytes | str]) -> list[SmpEvent]:
        return [self._fail("the other side stopped the check", by_peer=True)]

    def _out_of_turn(self, kind: str) -> list[SmpEvent]:
        if self.state not in LIVE:
            return []          # the run is over: a late or replayed message changes nothing
        what = "ended the check" if kind == "smp_abort" else f"sent {kind} while {_WAITING[self.state]}"
        return [Reply("smp_abort", {}), self._fail(f"the peer {what} (a replayed or out-of-order message); "
                                                   "the check was stopped")]

    # --- helpers -----------------------------------------------------------------------------------------

    def _random(self) -> int:
        return crypto.random_exponent(Q, self._rand)

    def _fail(self, reason: str, *, by_peer: bool = False) -> Failed:
        self._end(SmpState.ABORTED)
        return Failed(reason, by_peer)

    def _end(self, state: SmpState) -> None:
        self.state = state
        self._v.clear()
        self._smp1 = {}


_WAITING = {SmpState.ANSWER: "our user was still answering", SmpState.EXPECT2: "we waited for smp2",
            SmpState.EXPECT3: "we waited for smp3", SmpState.EXPECT4: "we waited for smp4"}


def check_inputs(question: str, answer: str) -> None:
    """ValueError, in words for a person, unless ``question`` (stripped) and ``answer`` can be used."""
    if len(question.strip()) > MAX_QUESTION:
        raise ValueError(f"a question has at most {MAX_QUESTION} characters")
    if not normalise_answer(answer):
        raise ValueError("type an answer: an empty one cannot be checked")
    if len(answer) > MAX_ANSWER:
        raise ValueError(f"an answer has at most {MAX_ANSWER} characters")


__all__ = [
    "LIVE",
    "MAX_QUESTION",
    "MESSAGE_FIELDS",
    "TRANSITIONS",
    "Failed",
    "Finished",
    "G",
    "P",
    "Q",
    "Reply",
    "Smp",
    "SmpError",
    "SmpEvent",
    "SmpState",
    "check_element",
    "check_inputs",
    "normalise_answer",
    "proof_hash",
    "secret",
]
