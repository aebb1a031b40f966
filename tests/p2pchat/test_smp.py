"""The shared-secret check's protocol core (p2pchat/smp.py), sans IO: match, mismatch, binding to the session,
replayed and out-of-order messages, aborts at every step, hostile group elements and forged proofs."""

from __future__ import annotations

import hashlib

import pytest

from p2pchat import smp
from p2pchat.smp import Failed, Finished, Reply, Smp, SmpState

ALICE_FP = bytes(range(32))
BOB_FP = bytes(range(32, 64))
SESSION = hashlib.sha256(b"session").digest()


def _run(answer_a: str, answer_b: str, *, session_b: bytes = SESSION) -> tuple[Smp, Smp, list[smp.SmpEvent],
                                                                              list[smp.SmpEvent]]:
    alice, m1 = Smp.ask(ALICE_FP, BOB_FP, SESSION, "Where did we meet?", answer_a)
    bob = Smp.asked(BOB_FP, ALICE_FP, session_b, m1.fields)
    assert bob.question == "Where did we meet?" and bob.state is SmpState.ANSWER
    m2 = bob.answer(answer_b)[0]
    assert isinstance(m2, Reply) and m2.kind == "smp2"
    out_a = alice.receive("smp2", m2.fields)
    m3 = out_a[0]
    assert isinstance(m3, Reply) and m3.kind == "smp3"
    out_b = bob.receive("smp3", m3.fields)
    m4 = out_b[0]
    assert isinstance(m4, Reply) and m4.kind == "smp4"
    return alice, bob, alice.receive("smp4", m4.fields), out_b


def _messages() -> tuple[Smp, Smp, Reply, Reply, Reply]:
    """Alice and Bob after smp3 was made (Bob has not seen it), with the first three messages."""
    alice, m1 = Smp.ask(ALICE_FP, BOB_FP, SESSION, "q", "secret")
    bob = Smp.asked(BOB_FP, ALICE_FP, SESSION, m1.fields)
    m2 = bob.answer("secret")[0]
    assert isinstance(m2, Reply)
    m3 = alice.receive("smp2", m2.fields)[0]
    assert isinstance(m3, Reply)
    return alice, bob, m1, m2, m3


def _answered() -> tuple[Smp, Reply]:
    """Alice waiting for smp2, and Bob's smp2."""
    alice, m1 = Smp.ask(ALICE_FP, BOB_FP, SESSION, "q", "secret")
    m2 = Smp.asked(BOB_FP, ALICE_FP, SESSION, m1.fields).answer("secret")[0]
    assert isinstance(m2, Reply)
    return alice, m2


def test_the_same_answer_matches_on_both_sides_after_normalisation() -> None:
    alice, bob, out_a, out_b = _run("  The Old Mill ", "the old mill")
    assert out_a == [Finished(True)] and out_b[1] == Finished(True)
    assert alice.state is bob.state is SmpState.DONE


def test_different_answers_do_not_match() -> None:
    _, _, out_a, out_b = _run("the old mill", "the new mill")
    assert out_a == [Finished(False)] and out_b[1] == Finished(False)


def test_the_same_answer_in_another_session_does_not_match() -> None:
    _, _, out_a, out_b = _run("mill", "mill", session_b=hashlib.sha256(b"other").digest())
    assert out_a == [Finished(False)] and out_b[1] == Finished(False)


def test_the_secret_binds_both_fingerprints_in_order_and_the_session() -> None:
    base = smp.secret(ALICE_FP, BOB_FP, SESSION, "Straße")
    assert base == smp.secret(ALICE_FP, BOB_FP, SESSION, "  STRASSE ")     # NFKC + casefold + strip
    assert base != smp.secret(BOB_FP, ALICE_FP, SESSION, "Straße")
    assert base != smp.secret(ALICE_FP, BOB_FP, bytes(32), "Straße")


def test_a_replayed_message_aborts_the_run_with_a_plain_reason() -> None:
    alice, _, _, m2, _m3 = _messages()
    out = alice.receive("smp2", m2.fields)           # smp2 again while waiting for smp4
    assert out[0] == Reply("smp_abort", {})
    assert isinstance(out[1], Failed) and "replayed or out-of-order" in out[1].reason
    assert alice.state is SmpState.ABORTED
    assert alice.receive("smp2", m2.fields) == []    # after the end: nothing more happens


@pytest.mark.parametrize("kind", ["smp1", "smp3", "smp4"])
def test_an_out_of_order_message_aborts_the_initiator(kind: str) -> None:
    alice, _ = Smp.ask(ALICE_FP, BOB_FP, SESSION, "q", "a")
    out = alice.receive(kind, {})
    assert out[0].kind == "smp_abort" and alice.state is SmpState.ABORTED    # type: ignore[union-attr]


def test_aborts_at_every_step_end_both_sides() -> None:
    # the answerer gives up before answering
    alice, m1 = Smp.ask(ALICE_FP, BOB_FP, SESSION, "q", "a")
    bob = Smp.asked(BOB_FP, ALICE_FP, SESSION, m1.fields)
    abort = bob.abort("you gave up")
    assert abort == Reply("smp_abort", {}) and bob.state is SmpState.ABORTED
    assert alice.receive("smp_abort", {}) == [Failed("the other side stopped the check", by_peer=True)]
    # the initiator gives up after smp2 was sent
    alice, bob, _, _m2, m3 = _messages()
    assert alice.abort("stop") is not None
    assert bob.receive("smp_abort", {})[0] == Failed("the other side stopped the check", by_peer=True)
    assert bob.state is SmpState.ABORTED
    # the answerer gives up waiting for smp3; the initiator gives up waiting for smp4
    alice, bob, _, _, m3 = _messages()
    assert bob.abort("stop") is not None and alice.receive("smp_abort", {})[0].by_peer   # type: ignore[union-attr]
    assert alice.state is SmpState.ABORTED and alice.abort("again") is None
    assert bob.receive("smp3", m3.fields) == []      # over: a late message changes nothing


@pytest.mark.parametrize("value", [1, smp.P - 1, 2**3072 - 1])
def test_group_elements_out_of_range_abort(value: int) -> None:
    alice, m2 = _answered()
    fields = dict(m2.fields, pb=value.to_bytes(384, "big"))
    out = alice.receive("smp2", fields)
    assert out[0].kind == "smp_abort"                                 # type: ignore[union-attr]
    assert isinstance(out[1], Failed) and "pb is outside the group" in out[1].reason


def test_an_element_outside_the_prime_order_subgroup_aborts() -> None:
    _alice, m1 = Smp.ask(ALICE_FP, BOB_FP, SESSION, "q", "a")
    # p = 3 (mod 4), so −1 is no square and −4 = p − 4 lies outside the order-q subgroup of the squares
    outsider = smp.P - 4
    assert pow(outsider, smp.Q, smp.P) == smp.P - 1
    bob = Smp.asked(BOB_FP, ALICE_FP, SESSION, dict(m1.fields, g2a=outsider.to_bytes(384, "big")))
    out = bob.answer("a")
    assert out[0] == Reply("smp_abort", {}) and isinstance(out[1], Failed) and "subgroup" in out[1].reason
    assert bob.state is SmpState.ABORTED


def test_an_exponent_out_of_range_aborts() -> None:
    alice, m2 = _answered()
    out = alice.receive("smp2", dict(m2.fields, d5=smp.Q.to_bytes(384, "big")))
    assert isinstance(out[1], Failed) and "out of range" in out[1].reason


def test_a_wrong_proof_aborts() -> None:
    _alice, bob, _, _, m3 = _messages()
    cr = bytearray(m3.fields["cr"])      # type: ignore[arg-type]
    cr[-1] ^= 1
    out = bob.receive("smp3", dict(m3.fields, cr=bytes(cr)))
    assert isinstance(out[1], Failed) and "proof for Ra does not verify" in out[1].reason


def test_a_peer_cannot_make_a_match_by_echoing_our_values() -> None:
    # Pa = Pb, Qa = Qb would make Pa/Pb = Qa/Qb = 1 and Ra = 1 "match" whatever the answers
    _alice, bob, _, m2, m3 = _messages()
    forged = dict(m3.fields, pa=m2.fields["pb"], qa=m2.fields["qb"], ra=(1).to_bytes(384, "big"))
    out = bob.receive("smp3", forged)
    assert isinstance(out[1], Failed) and bob.state is SmpState.ABORTED


def test_a_malformed_field_aborts() -> None:
    alice, m2 = _answered()
    out = alice.receive("smp2", dict(m2.fields, g2b=b"\x01"))
    assert isinstance(out[1], Failed) and "malformed g2b" in out[1].reason


def test_questions_and_answers_are_bounded() -> None:
    with pytest.raises(ValueError):
        Smp.ask(ALICE_FP, BOB_FP, SESSION, "x" * 201, "a")
    with pytest.raises(ValueError):
        Smp.ask(ALICE_FP, BOB_FP, SESSION, "q", "   ")
