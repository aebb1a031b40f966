"""The four-step handshake core, between two in-memory Handshake objects (no sockets)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from p2pchat.chat_protocol import CHAT, HANDSHAKE_TYPES, Send
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import FrameError
from p2pchat.handshake import (
    AUTH_CONTEXT,
    Failed,
    Handshake,
    LedgerBinding,
    NeedAccept,
    NeedLookup,
    Phase,
    Ready,
    StepDone,
    StepOrderError,
    auth_message,
)
from p2pchat.steps import Step
from tests.p2pchat.handshake_pair import I_ADDR, R_ADDR, LowOrder, Pair, Side, binding_for, decode


def frame_type(frame: bytes) -> str:
    return decode(frame).type


def rewrite(frame: bytes, **changes: Any) -> bytes:
    """Re-encode a frame with some fields changed (what an active attacker on the wire can do)."""
    msg = decode(frame)
    return CHAT.encode(msg.type, **{**msg.fields, **changes})


def assert_nothing_established(pair: Pair) -> None:
    assert pair.i.established is None and pair.r.established is None
    assert pair.i.hs.established is None and pair.r.hs.established is None
    assert not any(frame_type(f) == "sealed" for _, f in pair.log)


# --- the happy path -------------------------------------------------------------------------------------------

def test_all_four_steps_complete_on_both_sides_with_crosswise_keys(identities):
    pair = Pair(identities[0], identities[1]).run()
    assert pair.i.steps_done() == list(Step)
    assert pair.r.steps_done() == list(Step)
    ei, er = pair.i.established, pair.r.established
    assert ei is not None and er is not None
    assert ei.initiator and not er.initiator
    assert ei.send_key == er.recv_key and ei.recv_key == er.send_key and ei.send_key != ei.recv_key
    assert ei.send_chain == er.recv_chain and ei.recv_chain == er.send_chain
    assert len(ei.send_key) == 32 and len(ei.recv_key) == 32
    assert ei.transcript_hash == er.transcript_hash
    assert ei.safety_number == er.safety_number
    assert ei.peer_public_der == identities[1].public_der and er.peer_public_der == identities[0].public_der
    assert ei.peer_nickname == "bob" and er.peer_nickname == "alice"
    assert ei.peer_binding.height == 7
    assert [type(e) for e in pair.i.events if not isinstance(e, (Send, NeedLookup))][-2:] == [StepDone, Ready]
    assert not pair.i.of(Failed) and not pair.r.of(Failed)


def test_each_step_is_driven_on_its_own_and_reports_progress_on_both_sides(identities):
    pair = Pair(identities[0], identities[1])
    assert pair.i.hs.next_step is Step.CONNECT
    for step in Step:
        pair.start(step)
        assert pair.i.steps_done()[-1] is step
        assert pair.r.steps_done()[-1] is step
        assert pair.i.hs.in_progress is None
        assert pair.i.hs.done == set(Step) if step is Step.AGREE_KEY else step in pair.i.hs.done
        assert pair.i.hs.next_step is (Step(step + 1) if step < Step.AGREE_KEY else None)
    details = [e.detail for e in pair.i.of(StepDone)]
    assert "accepted the chat" in details[0]
    assert "matches the ledger record for 127.0.0.3 (block 7, 3 confirmations)" in details[1]
    assert "proved it holds key" in details[2]
    assert pair.i.established.safety_number in details[3]


def test_the_phase_says_where_each_side_stands_after_every_frame(identities):
    seen: dict[str, list[Phase]] = {"initiator": [], "responder": []}

    def wire(src: Side, frame: bytes) -> list[bytes]:
        seen[src.name].append(src.hs.phase)
        return [frame]

    pair = Pair(identities[0], identities[1], wire=wire)
    assert pair.i.hs.phase is Phase.START and pair.r.hs.phase is Phase.START
    pair.run()
    # the sender's phase once the call that produced each of its frames returned
    assert seen["initiator"] == [Phase.HELLO_SENT, Phase.SWAPPING, Phase.SWAPPED, Phase.AUTH_SENT,
                                 Phase.AUTHENTICATED, Phase.CONFIRM_SENT]
    assert seen["responder"] == [Phase.CONNECTED, Phase.SWAPPING, Phase.SWAPPING, Phase.AUTH_REPLIED,
                                 Phase.ESTABLISHED]
    assert pair.i.hs.phase is Phase.ESTABLISHED and pair.r.hs.phase is Phase.ESTABLISHED
    assert pair.i.hs.in_progress is None and pair.r.hs.in_progress is None


def test_a_closed_handshake_refuses_steps_and_ignores_frames(identities):
    pair = Pair(identities[0], identities[1]).run(Step.SWAP_KEYS)
    pair.i.hs.close()
    pair.r.hs.close()
    assert pair.i.hs.phase is Phase.CLOSED and pair.i.hs.next_step is None
    with pytest.raises(StepOrderError, match="The connection has ended"):
        pair.i.hs.start(Step.AUTHENTICATE)
    assert pair.r.hs.receive(decode(_frame_of_type("auth"))) == []
    assert pair.r.hs.phase is Phase.CLOSED and pair.r.failed is None


def test_responder_reports_the_callers_hello_and_asks_its_user(identities):
    pair = Pair(identities[0], identities[1])
    pair.r.accept = True
    pair.start(Step.CONNECT)
    (ask,) = pair.r.of(NeedAccept)
    assert ask.nickname == "alice"
    assert ask.address == "127.0.0.2:40001"
    assert ask.claimed_address == I_ADDR
    assert pair.i.hs.peer_nickname == "bob" and pair.r.hs.peer_claimed_address == I_ADDR


def test_direct_lookups_use_the_socket_address_not_the_claim(identities):
    pair = Pair(identities[0], identities[1]).run()
    assert pair.i.lookups == [NeedLookup("127.0.0.3", "address")]
    assert pair.r.lookups == [NeedLookup("127.0.0.2", "address")]


def test_relayed_lookups_use_what_the_user_asked_for_or_the_sent_key(identities):
    a, b = identities[0], identities[1]
    pair = Pair(a, b)
    pair.i.hs = Handshake(initiator=True, identity=a, nickname="alice", network="testnet", local_address=I_ADDR,
                          peer_address="127.0.0.9:8472", via_relay=True, peer_query="bob")
    pair.r.hs = Handshake(initiator=False, identity=b, nickname="bob", network="testnet", local_address=R_ADDR,
                          peer_address="127.0.0.9:8472", via_relay=True)
    pair.run()
    assert pair.i.established is not None and pair.r.established is not None
    assert pair.i.lookups == [NeedLookup("bob", "query")]
    assert pair.r.lookups == [NeedLookup(crypto.fingerprint(a.public_der).hex(), "fingerprint")]


# --- steps out of order ----------------------------------------------------------------------------------------

def test_a_step_out_of_order_is_refused_naming_the_step_that_comes_first(identities):
    pair = Pair(identities[0], identities[1])
    with pytest.raises(StepOrderError, match=r"^Do step 1 \(Connect\) first$"):
        pair.i.hs.start(Step.AUTHENTICATE)
    pair.start(Step.CONNECT)
    with pytest.raises(StepOrderError, match=r"^Do step 2 \(Swap public keys\) first$"):
        pair.i.hs.start(Step.AGREE_KEY)
    assert pair.i.hs.refusal(Step.AUTHENTICATE) == "Do step 2 (Swap public keys) first"
    assert pair.i.hs.refusal(Step.SWAP_KEYS) is None
    with pytest.raises(StepOrderError, match="Step 1 Connect is already done; do step 2 Swap public keys next"):
        pair.i.hs.start(Step.CONNECT)
    pair.start(Step.SWAP_KEYS)
    pair.start(Step.AUTHENTICATE)
    with pytest.raises(StepOrderError, match="Step 2 Swap public keys is already done; do step 4 Agree AES key next"):
        pair.i.hs.start(Step.SWAP_KEYS)
    pair.start(Step.AGREE_KEY)
    with pytest.raises(StepOrderError, match="already done; the chat is ready"):
        pair.i.hs.start(Step.AGREE_KEY)
    assert not pair.i.of(Failed) and not pair.r.of(Failed)
    assert pair.i.established is not None


def test_a_step_asked_for_while_it_runs_is_refused(identities):
    pair = Pair(identities[0], identities[1])
    pair.r.answer_lookups = False       # the responder's ledger is slow: step 2 stays in progress
    pair.run(Step.CONNECT)
    pair.start(Step.SWAP_KEYS)
    with pytest.raises(StepOrderError, match="Step 2 Swap public keys is still in progress"):
        pair.i.hs.start(Step.SWAP_KEYS)
    with pytest.raises(StepOrderError, match="still in progress"):
        pair.i.hs.start(Step.AUTHENTICATE)
    pair.handle(pair.r, pair.r.hs.ledger_answer(pair.r.binding))
    assert pair.i.steps_done()[-1] is Step.SWAP_KEYS and pair.r.steps_done()[-1] is Step.SWAP_KEYS


def test_the_responder_cannot_drive_steps(identities):
    pair = Pair(identities[0], identities[1]).run(Step.CONNECT)
    with pytest.raises(StepOrderError, match="drives the steps"):
        pair.r.hs.start(Step.SWAP_KEYS)


def test_steps_after_a_failure_are_refused(identities):
    pair = Pair(identities[0], identities[1])
    pair.r.accept = False
    pair.run()
    with pytest.raises(StepOrderError, match="failed at step 1 Connect"):
        pair.i.hs.start(Step.SWAP_KEYS)
    assert pair.i.hs.next_step is None


def test_accept_or_lookup_answers_nobody_asked_for_are_refused(identities):
    pair = Pair(identities[0], identities[1])
    with pytest.raises(StepOrderError, match="No chat request"):
        pair.r.hs.accept(True)
    with pytest.raises(StepOrderError, match="No ledger lookup"):
        pair.i.hs.ledger_answer(pair.i.binding)
    with pytest.raises(StepOrderError, match="No chat request"):
        pair.i.hs.accept(True)


def test_late_answers_after_a_failure_are_ignored(identities):
    pair = Pair(identities[0], identities[1])
    pair.r.answer_lookups = False
    pair.run(Step.CONNECT)
    pair.start(Step.SWAP_KEYS)
    pair.deliver(pair.r, CHAT.encode("error", reason="gone"))
    assert pair.r.failed is not None
    assert pair.r.hs.ledger_answer(pair.r.binding) == []
    assert pair.r.hs.receive(decode(CHAT.encode("key_ok"))) == []


# --- step 1 refusals ---------------------------------------------------------------------------------------------

def test_a_declined_chat_fails_on_both_sides_with_the_reason(identities):
    pair = Pair(identities[0], identities[1])
    pair.r.accept = False
    pair.run()
    assert pair.i.failed.step is Step.CONNECT and "declined the chat" in pair.i.failed.reason
    assert pair.r.failed.reason.startswith("you declined the chat from alice")
    assert [frame_type(f) for f in pair.r.sent] == ["decline"]
    assert_nothing_established(pair)


def test_an_unknown_protocol_version_is_refused_naming_the_supported_versions(identities):
    pair = Pair(identities[0], identities[1])
    hello = CHAT.encode("hello", version=7, network="testnet", nickname="eve", address=I_ADDR)
    pair.deliver(pair.r, hello)
    assert "version 7" in pair.r.failed.reason and "supports version 2 only" in pair.r.failed.reason
    assert not pair.r.of(NeedAccept)
    (err,) = [decode(f) for f in pair.r.sent]
    assert err.type == "error"
    assert err["reason"] == "this node supports chat protocol version 2 only, not version 7"


def test_a_responder_answering_with_another_version_is_refused(identities):
    pair = Pair(identities[0], identities[1],
                wire=lambda src, f: [rewrite(f, version=3)] if frame_type(f) == "welcome" else [f])
    pair.run()
    assert "supports version 2 only" in pair.i.failed.reason
    assert_nothing_established(pair)


def test_a_network_mismatch_is_refused_on_both_sides(identities):
    pair = Pair(identities[0], identities[1], r_network="mainnet")
    pair.run()
    assert pair.r.failed.reason == "127.0.0.2:40001 is on network 'testnet', this node on 'mainnet'"
    assert "this node is on network 'mainnet', not 'testnet'" in pair.i.failed.reason
    assert pair.i.failed.step is Step.CONNECT
    assert_nothing_established(pair)


# --- step 2: the ledger -------------------------------------------------------------------------------------------

def test_a_peer_whose_address_is_bound_to_another_key_is_stopped_at_step_2(identities):
    a, b, c = identities[:3]
    pair = Pair(a, b, i_binding=binding_for(c, "127.0.0.3", "carol"))
    pair.run()
    reason = pair.i.failed.reason
    assert pair.i.failed.step is Step.SWAP_KEYS
    assert f"the key {crypto.format_fingerprint(crypto.fingerprint(b.public_der), groups=4)} …" in reason
    assert "sent by 127.0.0.3:8471 is not the key the ledger binds to 127.0.0.3" in reason
    assert f"(the ledger has {crypto.format_fingerprint(crypto.fingerprint(c.public_der), groups=4)} …)" in reason
    assert pair.r.failed.step is Step.SWAP_KEYS
    assert "the key you sent is not the one the ledger binds to your address 127.0.0.3" in pair.r.failed.reason
    assert_nothing_established(pair)


def test_a_missing_ledger_record_stops_step_2_with_the_reason(identities):
    pair = Pair(identities[0], identities[1], r_binding=None)
    pair.r.lookup_error = "no ledger node answered"
    pair.run()
    assert pair.r.failed.reason == "the ledger has no record for 127.0.0.2 (no ledger node answered)"
    assert "has no record for your address 127.0.0.2" in pair.i.failed.reason
    assert_nothing_established(pair)


def test_a_ledger_answer_for_another_address_is_not_accepted(identities):
    pair = Pair(identities[0], identities[1], i_binding=binding_for(identities[1], "127.0.0.99", "bob"))
    pair.run()
    assert pair.i.failed.reason == "the ledger answered for 127.0.0.99, not for 127.0.0.3"


def test_an_unusable_key_is_refused(identities):
    """Even when the ledger holds the very same bytes (a ledger node that let a broken key in)."""
    garbage = b"\x30\x03garbage"
    bad_record = LedgerBinding(public_der=garbage, nickname="alice", ip="127.0.0.2", port=8471, relay=None,
                               height=7, confirmations=3)
    pair = Pair(identities[0], identities[1], r_binding=bad_record,
                wire=lambda src, f: [rewrite(f, key=garbage)] if src.name == "initiator" and frame_type(f) == "key"
                else [f])
    pair.run()
    assert pair.r.failed.step is Step.SWAP_KEYS
    assert "is unusable: the public key is not a valid RSA key" in pair.r.failed.reason
    assert not pair.r.hs.prepare_due and pair.r.hs._auth_sig is None      # nothing signed over that key
    assert not any(frame_type(f) in {"auth", "auth_reply", "confirm", "confirm_reply"} for _, f in pair.log)
    assert_nothing_established(pair)


def test_a_garbage_key_not_in_the_ledger_is_stopped_by_the_ledger_check(identities):
    pair = Pair(identities[0], identities[1],
                wire=lambda src, f: [rewrite(f, key=b"\x30\x03garbage")] if frame_type(f) == "key" else [f])
    pair.run()
    assert pair.r.failed.step is Step.SWAP_KEYS and "is not the key the ledger binds" in pair.r.failed.reason
    assert_nothing_established(pair)


# --- attackers in the middle -------------------------------------------------------------------------------------

def test_a_man_in_the_middle_substituting_keys_fails_at_step_2_and_learns_nothing(identities):
    """Mallory terminates both connections with her own key (two handshakes of her own). Both honest sides'
    ledgers bind the peer's address to the real key, so both stop at step 2 and no secret is ever derived."""
    a, b, m = identities[:3]
    to_a = Handshake(initiator=False, identity=m, nickname="bob", network="testnet", local_address=R_ADDR,
                     peer_address="127.0.0.2:40001")
    to_b = Handshake(initiator=True, identity=m, nickname="alice", network="testnet", local_address=I_ADDR,
                     peer_address=R_ADDR)
    alice = Pair(a, b)      # Alice (honest initiator) ↔ Mallory's responder
    bob = Pair(a, b)        # Mallory's initiator ↔ Bob (honest responder)
    alice.r.hs = to_a       # Mallory's own lookups find the honest records, so her checks pass
    bob.i.hs = to_b
    for step in (Step.CONNECT, Step.SWAP_KEYS):
        alice.start(step)
        bob.start(step)
    with pytest.raises(StepOrderError, match="failed at step 2"):
        alice.i.hs.start(Step.AUTHENTICATE)
    assert alice.i.failed.step is Step.SWAP_KEYS and "is not the key the ledger binds" in alice.i.failed.reason
    assert bob.r.failed.step is Step.SWAP_KEYS and "is not the key the ledger binds" in bob.r.failed.reason
    for p in (alice, bob):
        assert_nothing_established(p)
        assert not any(frame_type(f) in {"auth", "auth_reply", "confirm", "confirm_reply"} for _, f in p.log)


@pytest.mark.parametrize(("target", "field", "step"), [
    ("hello", "address", Step.AUTHENTICATE),       # a claim changed on the way: the transcripts differ
    ("welcome", "nickname", Step.AUTHENTICATE),
    ("key", "nonce", Step.AUTHENTICATE),            # a challenge changed on the way: the transcripts differ
    ("key", "ephemeral", Step.AUTHENTICATE),        # Mallory's own X25519 half: not in what the peer signs
    ("auth", "sig", Step.AUTHENTICATE),
    ("auth_reply", "sig", Step.AUTHENTICATE),
    ("confirm", "confirm", Step.AGREE_KEY),
    ("confirm_reply", "confirm", Step.AGREE_KEY),
])
def test_an_active_attacker_changing_any_handshake_field_is_detected(identities, target, field, step):
    mallory = crypto.EphemeralKey()

    def wire(src: Side, frame: bytes) -> list[bytes]:
        msg = decode(frame)
        if msg.type != target:
            return [frame]
        value = msg[field]
        if field == "ephemeral":
            new: Any = mallory.public
        elif isinstance(value, bytes):
            new = bytes([value[0] ^ 1]) + value[1:]
        elif field == "address":
            new = value.replace(":8471", ":8472")      # still a valid address: only the transcript can tell
        else:
            new = value + "x"
        return [rewrite(frame, **{field: new})]

    pair = Pair(identities[0], identities[1], wire=wire).run()
    failures = [s.failed for s in (pair.i, pair.r) if s.failed]
    assert failures and all(f.step is step for f in failures)
    assert any(w in failures[0].reason for w in ("does not verify", "not signed", "key confirmation failed",
                                                 "could not prove", "derived different keys"))
    if target == "confirm_reply":     # the responder finished first; the initiator refuses: nothing goes sealed
        assert pair.i.established is None and pair.i.failed.step is Step.AGREE_KEY
    else:
        assert_nothing_established(pair)


def test_handshake_frames_replayed_into_a_new_session_fail_at_step_3(identities):
    a, b = identities[:2]
    recorded = Pair(a, b).run()
    from_initiator = [f for name, f in recorded.log if name == "initiator"]
    from_responder = [f for name, f in recorded.log if name == "responder"]

    # An attacker replays Alice's side of the old session to Bob (it answers nothing Bob says).
    victim = Pair(a, b, wire=lambda src, f: [])
    for frame in from_initiator:
        if victim.r.failed:
            break
        victim.handle(victim.r, victim.r.hs.receive(decode(frame)))
    assert victim.r.failed.step is Step.AUTHENTICATE
    assert "could not prove it holds the key" in victim.r.failed.reason
    assert victim.r.established is None

    # ... and Bob's side of the old session to Alice, each step's recorded answers after Alice's request.
    victim = Pair(a, b, wire=lambda src, f: [])
    answers = {Step.CONNECT: ["welcome"], Step.SWAP_KEYS: ["key", "key_ok"],
               Step.AUTHENTICATE: ["auth_reply"], Step.AGREE_KEY: ["confirm_reply"]}
    for step in Step:
        if victim.i.failed:
            break
        victim.start(step)
        for frame in from_responder:
            if frame_type(frame) in answers[step] and not victim.i.failed:
                victim.deliver(victim.i, frame)
    assert victim.i.failed.step is Step.AUTHENTICATE
    assert victim.i.established is None


def test_a_signature_reflected_to_its_signer_fails_even_with_the_same_key_on_both_sides(identities):
    """Worst case for reflection: both ends hold the same identity (a chat with oneself through a relay).
    The role label in the signed data still tells the two signatures apart."""
    a = identities[0]
    captured: dict[str, bytes] = {}

    def wire(src: Side, frame: bytes) -> list[bytes]:
        msg = decode(frame)
        if msg.type == "auth":
            captured["sig"] = msg["sig"]
        if msg.type == "auth_reply":     # the attacker answers Alice with her own signature
            return [rewrite(frame, sig=captured["sig"])]
        return [frame]

    pair = Pair(a, a, wire=wire, i_binding=binding_for(a, "127.0.0.3", "me"),
                r_binding=binding_for(a, "127.0.0.2", "me")).run()
    assert pair.i.failed.step is Step.AUTHENTICATE and "could not prove" in pair.i.failed.reason
    t2 = pair.i.hs._t2
    assert t2 == pair.r.hs._t2      # the same transcript on both ends: only the role tells the signatures apart
    signed = auth_message(b"initiator", t2, "unknown")
    assert crypto.is_valid_signature(a.public_der, AUTH_CONTEXT, signed, captured["sig"])
    assert_nothing_established(pair)


def test_an_ephemeral_half_reflected_to_its_sender_fails(identities):
    """The initiator's X25519 half sent back to it as the responder's (same key on both ends, worst case): the two
    transcripts then differ, so the responder's signature fails step 3 before any key is derived."""
    a = identities[0]
    halves: dict[str, bytes] = {}

    def wire(src: Side, frame: bytes) -> list[bytes]:
        msg = decode(frame)
        if msg.type == "key" and src.name == "initiator":
            halves["i"] = msg["ephemeral"]
        if msg.type == "key" and src.name == "responder":
            return [rewrite(frame, ephemeral=halves["i"])]
        return [frame]

    pair = Pair(a, a, wire=wire, i_binding=binding_for(a, "127.0.0.3", "me"),
                r_binding=binding_for(a, "127.0.0.2", "me")).run()
    assert pair.i.hs._t2 != pair.r.hs._t2
    assert pair.r.failed.step is Step.AUTHENTICATE and "could not prove" in pair.r.failed.reason
    assert not any(frame_type(f) == "auth_reply" for _, f in pair.log)
    assert_nothing_established(pair)


def test_a_confirmation_tag_reflected_to_its_sender_fails(identities):
    """The initiator's own step-4 tag answered back to it: the role in the tag tells them apart."""
    a = identities[0]
    pair = Pair(a, a, i_binding=binding_for(a, "127.0.0.3", "me"), r_binding=binding_for(a, "127.0.0.2", "me"))
    pair.run(Step.AUTHENTICATE)
    (send,) = [e for e in pair.i.hs.start(Step.AGREE_KEY) if isinstance(e, Send)]
    mine = decode(send.frame)
    pair.deliver(pair.i, CHAT.encode("confirm_reply", confirm=mine["confirm"]))
    assert pair.i.failed.step is Step.AGREE_KEY and "key confirmation failed" in pair.i.failed.reason
    assert pair.i.established is None


# --- bad frames at every step ---------------------------------------------------------------------------------------

def _frame_of_type(type_: str) -> bytes:
    samples: dict[str, dict[str, Any]] = {
        "hello": {"version": 1, "network": "testnet", "nickname": "x", "address": I_ADDR},
        "welcome": {"version": 1, "network": "testnet", "nickname": "x", "address": R_ADDR},
        "decline": {"reason": "no"}, "key": {"key": b"k" * 10, "nonce": bytes(32), "ephemeral": bytes(32),
                                              "final_height": 0, "final_hash": bytes(32), "tip_height": 0,
                                              "tip_hash": bytes(32)},
        "key_ok": {}, "auth": {"sig": b"s", "ledgers": "agree"}, "auth_reply": {"sig": b"s", "ledgers": "agree"},
        "auth_ok": {},
        "confirm": {"confirm": bytes(32)}, "confirm_reply": {"confirm": bytes(32)},
        "sealed": {"epoch": 0, "counter": 0, "box": bytes(16)},
    }
    return CHAT.encode(type_, **samples[type_])


# The frame each side legitimately expects next after the initiator completed `done` steps.
_EXPECTED = {
    ("responder", 0): {"hello"}, ("responder", 1): {"key"}, ("responder", 2): {"auth"},
    ("responder", 3): {"confirm"},
    ("initiator", 0): set(), ("initiator", 1): set(), ("initiator", 2): set(), ("initiator", 3): set(),
}


@pytest.mark.parametrize("done", [0, 1, 2, 3])
@pytest.mark.parametrize("who", ["initiator", "responder"])
@pytest.mark.parametrize("type_", sorted(HANDSHAKE_TYPES | {"sealed"}))
def test_a_wrong_or_garbage_frame_at_any_step_fails_cleanly_with_an_error_frame(identities, done, who, type_):
    pair = Pair(identities[0], identities[1])
    if done:
        pair.run(Step(done))
    side = pair.i if who == "initiator" else pair.r
    before = len(side.sent)
    events = side.hs.receive(decode(_frame_of_type(type_)))
    side.events += events
    failed = [e for e in events if isinstance(e, Failed)]
    if type_ in _EXPECTED[(who, done)]:
        # the right type with garbage inside: refused too (bad version/key/signature/point), or merely waiting
        assert failed or any(isinstance(e, (NeedAccept, Send)) for e in events)
    else:
        assert len(failed) == 1, events
        assert failed[0].reason
        sent = [decode(e.frame) for e in events if isinstance(e, Send)]
        assert [m.type for m in sent] == ["error"]
    assert not any(isinstance(e, Ready) for e in events)
    if failed:
        assert side.hs.receive(decode(_frame_of_type(type_))) == []      # the dead handshake stays quiet
        assert len(side.sent) == before


def test_a_frame_of_a_later_step_names_the_step_still_running(identities):
    pair = Pair(identities[0], identities[1])
    pair.deliver(pair.r, _frame_of_type("auth"))
    assert pair.r.failed.step is Step.CONNECT
    assert pair.r.failed.reason == ("127.0.0.2:40001 sent a 'auth' frame of step 3 Authenticate before step "
                                    "1 Connect was finished")


def test_a_duplicated_frame_fails_the_handshake(identities):
    seen: set[str] = set()

    def wire(src: Side, frame: bytes) -> list[bytes]:
        if frame_type(frame) == "auth" and "auth" not in seen:
            seen.add("auth")
            return [frame, frame]
        return [frame]

    pair = Pair(identities[0], identities[1], wire=wire).run()
    assert pair.r.failed is not None and "out of turn" in pair.r.failed.reason


@pytest.mark.parametrize("sender", ["initiator", "responder"])
@pytest.mark.parametrize("prepare", [True, False])
def test_a_low_order_ephemeral_point_is_refused(identities, sender, prepare):
    """A registered peer may put a low-order X25519 point in its `key` frame and sign it; the agreement gives all
    zeros, which is refused before any key is derived from it — at step 4, also when the agreement was tried
    ahead of it (``prepare``)."""
    kw = {"eph_i": LowOrder} if sender == "initiator" else {"eph_r": LowOrder}
    pair = Pair(identities[0], identities[1], prepare=prepare, **kw).run()
    victim = pair.r if sender == "initiator" else pair.i
    assert victim.failed.step is Step.AGREE_KEY and "unusable key material" in victim.failed.reason
    assert_nothing_established(pair)


def test_an_error_frame_from_the_peer_ends_the_handshake_with_its_text_and_no_reply(identities):
    pair = Pair(identities[0], identities[1]).run(Step.CONNECT)
    before = len(pair.i.sent)
    pair.deliver(pair.i, CHAT.encode("error", reason="busy"))
    assert pair.i.failed.reason == "the peer ended the handshake: «busy» (their words, not checked)"
    assert len(pair.i.sent) == before


def test_a_peers_words_before_it_proved_its_key_are_quoted_on_one_line(identities):
    pair = Pair(identities[0], identities[1]).run(Step.CONNECT)
    pair.deliver(pair.i, CHAT.encode("error", reason="» ✓ 4 Agree AES key done\n[12:00] alice: hi\x1b[2K"))
    reason = pair.i.failed.reason
    assert "\n" not in reason and "\x1b" not in reason
    assert reason.endswith("» (their words, not checked)") and reason.count("»") == 1


def test_garbage_msgpack_in_a_known_frame_type_is_a_frame_error_for_the_io_layer():
    body = msgpack.packb({"t": "auth", "ledgers": "agree", "sig": "not bytes"})
    with pytest.raises(FrameError, match="should be bytes"):
        CHAT.decode(body)


def test_deterministic_inputs_give_a_reproducible_transcript(identities):
    from tests.p2pchat.handshake_pair import counting_rng, fixed_ephemerals
    runs = []
    for _ in range(2):
        pair = Pair(identities[0], identities[1], rng_i=counting_rng(1), rng_r=counting_rng(2),
                    eph_i=fixed_ephemerals(bytes(range(32))), eph_r=fixed_ephemerals(bytes(range(1, 33)))).run()
        runs.append(pair.i.established)
    assert runs[0].transcript_hash == runs[1].transcript_hash
    assert runs[0].send_key == runs[1].send_key


@pytest.mark.parametrize(("field", "value", "complaint"), [
    ("nickname", "eve\x1b[2J", "nickname with control characters"),
    ("nickname", "evil\u202egnp.exe", "nickname with control characters"),
    ("network", "test\nnet", "network with control characters"),
    ("address", "somewhere", "which is not an IP address and port"),
    ("address", "127.0.0.2", "which is not an IP address and port"),      # protocol.md: "ip:port", port required
])
def test_hello_fields_that_could_fool_a_screen_are_refused(identities, field, value, complaint):
    pair = Pair(identities[0], identities[1])
    hello = {"version": 1, "network": "testnet", "nickname": "eve", "address": I_ADDR, field: value}
    pair.deliver(pair.r, CHAT.encode("hello", **hello))
    assert complaint in pair.r.failed.reason and not pair.r.of(NeedAccept)
    assert decode(pair.r.sent[-1]).type == "error"
