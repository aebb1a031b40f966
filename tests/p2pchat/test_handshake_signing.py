"""One RSA signature per side, and none from the responder before the initiator proved its key: counted through a
signer that records every private-key operation (a test double of the identity the handshake signs with), never
timed. Also: the work made ahead (``Handshake.prepare``: the initiator's X25519 half and signature, both sides'
step-4 keys, the responder's only after a verified ``auth``) gives what making it on the spot gives and is sent
only with its step; every X25519 private half is erased at agreement, failure and close."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from p2pchat.chat_protocol import CHAT
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import CryptoError
from p2pchat.foundation.identity import Identity
from p2pchat.handshake import AUTH_CONTEXT, Handshake, StepOrderError, auth_message, load_peer_key
from p2pchat.handshake_driver import Once
from p2pchat.steps import Step
from tests.p2pchat.handshake_pair import I_ADDR, R_ADDR, LowOrder, Pair, counting_rng, decode, fixed_ephemerals

STEP_3_4_FRAMES = {"auth", "auth_reply", "auth_ok", "confirm", "confirm_reply"}


@dataclass
class CountingSigner:
    """The :class:`p2pchat.handshake.Signer` seam around a real identity: every ``sign`` call (the only
    private-key operation the handshake can make) is recorded with the frames the holder had received by then."""

    identity: Identity
    calls: list[tuple[str, bytes]] = field(default_factory=list)
    received_before: list[list[str]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)

    @property
    def public_der(self) -> bytes:
        return self.identity.public_der

    def sign(self, context: str, data: bytes) -> bytes:
        self.calls.append((context, data))
        self.received_before.append(list(self.received))
        return self.identity.sign(context, data)


class TrackedEphemeral:
    """A real X25519 key that remembers whether it was erased."""

    def __init__(self) -> None:
        self.key = crypto.EphemeralKey()
        self.public = self.key.public
        self.erased = False

    def agree(self, peer_public: bytes) -> bytes:
        return self.key.agree(peer_public)

    def erase(self) -> None:
        self.erased = True
        self.key.erase()


def tracking() -> tuple[list[TrackedEphemeral], Any]:
    made: list[TrackedEphemeral] = []

    def factory() -> TrackedEphemeral:
        made.append(TrackedEphemeral())
        return made[-1]
    return made, factory


def counted_pair(identities: list[Identity], **kw: Any) -> tuple[Pair, CountingSigner, CountingSigner]:
    """A pair whose two handshakes sign through counting signers; each signer also logs what its side received."""
    si, sr = CountingSigner(identities[0]), CountingSigner(identities[1])
    pair = Pair(identities[0], identities[1], **kw)
    pair.i.hs._identity = si
    pair.r.hs._identity = sr
    deliver = pair.deliver

    def logging_deliver(side: Any, frame: bytes) -> None:
        (si if side is pair.i else sr).received.append(decode(frame).type)
        deliver(side, frame)
    pair.deliver = logging_deliver      # type: ignore[method-assign]
    return pair, si, sr


def deterministic(identities: list[Identity], **kw: Any) -> Pair:
    return Pair(identities[0], identities[1], rng_i=counting_rng(1), rng_r=counting_rng(2),
                eph_i=fixed_ephemerals(bytes(range(32))), eph_r=fixed_ephemerals(bytes(range(1, 33))), **kw)


def sent_types(pair: Pair) -> list[str]:
    return [decode(f).type for _, f in pair.log]


class Attacker:
    """A registered peer's own initiator that goes through steps 1 and 2 and then hangs up, or sends an `auth`
    of its choosing: the cheap loop that used to make the responder sign twice per connection."""

    def __init__(self, key: Identity, victim_signer: CountingSigner) -> None:
        self.pair = Pair(key, victim_signer.identity)
        self.pair.r.hs = Handshake(initiator=False, identity=victim_signer, nickname="bob", network="testnet",
                                   local_address=R_ADDR, peer_address="127.0.0.2:40001")

    def through_step_2(self) -> Attacker:
        self.pair.run(Step.SWAP_KEYS)
        assert Step.SWAP_KEYS in self.pair.r.hs.done, self.pair.r.failed
        return self


# --- the responder's private-key operations ----------------------------------------------------------------------

def test_hello_key_key_ok_then_hanging_up_costs_the_responder_no_signature(identities):
    victim = CountingSigner(identities[1])
    for _ in range(5):
        attacker = Attacker(identities[0], victim).through_step_2()
        assert not attacker.pair.r.hs.prepare_due
        attacker.pair.r.hs.prepare()                    # what the node calls after every write: still nothing
        attacker.pair.r.hs.close()                      # the attacker hangs up
    assert victim.calls == []


@pytest.mark.parametrize("forgery", ["garbage", "another key's signature", "the initiator role over another session",
                                     "the responder role (reflected)"])
def test_an_auth_that_does_not_verify_costs_the_responder_no_signature(identities, forgery):
    victim = CountingSigner(identities[1])
    attacker = Attacker(identities[0], victim).through_step_2()
    t2 = attacker.pair.r.hs._t2
    sig = {"garbage": b"\x01" * 384,
           "another key's signature": identities[2].sign(AUTH_CONTEXT, auth_message(b"initiator", t2, "unknown")),
           "the initiator role over another session": identities[0].sign(
               AUTH_CONTEXT, auth_message(b"initiator", bytes(32), "unknown")),
           "the responder role (reflected)": identities[0].sign(
               AUTH_CONTEXT, auth_message(b"responder", t2, "unknown")),
           }[forgery]
    attacker.pair.deliver(attacker.pair.r, CHAT.encode("auth", sig=sig, ledgers="unknown"))
    assert attacker.pair.r.failed is not None and attacker.pair.r.failed.step is Step.AUTHENTICATE
    assert "could not prove it holds the key" in attacker.pair.r.failed.reason
    assert victim.calls == []
    assert "auth_reply" not in sent_types(attacker.pair)


def test_frames_out_of_order_before_auth_cost_the_responder_no_signature(identities):
    """Every handshake frame type sent right after step 2 instead of `auth`: none makes the responder sign."""
    victim = CountingSigner(identities[1])
    for type_, fields in (("auth_ok", {}), ("confirm", {"confirm": bytes(32)}), ("key_ok", {}),
                          ("key", {"key": identities[0].public_der, "nonce": bytes(32), "ephemeral": bytes(32),
                                  "final_height": 0, "final_hash": bytes(32), "tip_height": 0, "tip_hash": bytes(32)})):
        attacker = Attacker(identities[0], victim).through_step_2()
        attacker.pair.deliver(attacker.pair.r, CHAT.encode(type_, **fields))
        assert attacker.pair.r.failed is not None, type_
    assert victim.calls == []


@pytest.mark.parametrize("prepare", [True, False])
def test_each_side_makes_exactly_one_signature_and_the_responder_only_after_a_verified_auth(identities, prepare):
    pair, si, sr = counted_pair(identities, prepare=prepare)
    pair.run()
    assert pair.i.established is not None and pair.r.established is not None
    assert [c for c, _ in si.calls] == [AUTH_CONTEXT] and [c for c, _ in sr.calls] == [AUTH_CONTEXT]
    t2 = pair.i.established.transcript_hash
    assert si.calls[0][1] == auth_message(b"initiator", t2, "unknown")
    assert sr.calls[0][1] == auth_message(b"responder", t2, "unknown")
    # The responder signed while handling the initiator's `auth`, i.e. after it verified (a bad one makes no
    # signature at all: the tests above) ...
    assert sr.received_before[0][-1] == "auth"
    # ... and the initiator ahead as soon as the responder's `key` had arrived (and matched its ledger), or on the
    # spot when step 3 starts.
    assert si.received_before[0][:2] == ["welcome", "key"] and "auth_reply" not in si.received_before[0]


@pytest.mark.parametrize("prepare", [True, False])
def test_the_responder_makes_no_private_key_operation_at_all_before_a_verified_auth(identities, prepare):
    """Beyond RSA: in steps 1-2 the responder generates an X25519 pair (cheap, public half sent), but computes
    no X25519 agreement either; the agreement waits until the initiator's `auth` verified (made ahead of step 4
    right after our `auth_reply` when the node prepares, else on the initiator's `confirm`)."""
    made: list[TrackedEphemeral] = []
    agreed: list[list[str]] = []       # what the responder had received when it made its agreement

    class Watched(TrackedEphemeral):
        def agree(self, peer_public: bytes) -> bytes:
            agreed.append(list(sr.received))
            return super().agree(peer_public)

    def watched() -> Watched:
        made.append(Watched())
        return made[-1]  # type: ignore[return-value]

    pair, _, sr = counted_pair(identities, eph_r=watched, prepare=prepare)
    pair.run(Step.SWAP_KEYS)
    pair.r.hs.prepare()                     # what the node calls after every write: still nothing
    assert len(made) == 1 and agreed == [] and sr.calls == []
    pair.start(Step.AUTHENTICATE)
    assert len(agreed) == (1 if prepare else 0)       # ahead: once the initiator's `auth` verified
    pair.start(Step.AGREE_KEY)
    assert len(agreed) == 1 and made[0].erased and pair.r.established is not None
    assert agreed[0][:4] == ["hello", "key", "key_ok", "auth"] and len(sr.calls) == 1


def test_an_auth_that_does_not_verify_costs_the_responder_no_x25519_agreement(identities):
    made: list[TrackedEphemeral] = []

    def factory() -> TrackedEphemeral:
        made.append(TrackedEphemeral())
        made[-1].agree = lambda peer_public: pytest.fail("the responder agreed with an unauthenticated peer")
        return made[-1]

    attacker = Attacker(identities[0], CountingSigner(identities[1]))
    attacker.pair.r.hs._ephemeral_factory = factory
    attacker.through_step_2()
    attacker.pair.deliver(attacker.pair.r, CHAT.encode("auth", sig=b"\x01" * 384, ledgers="unknown"))
    assert attacker.pair.r.failed is not None and not attacker.pair.r.hs.prepare_due
    attacker.pair.r.hs.prepare()
    assert len(made) == 1 and made[0].erased


# --- work made ahead: the initiator's signature, both sides' keys ----------------------------------------------------

def test_what_each_side_prepares_ahead_and_when(identities):
    """The initiator: its X25519 half from step 1, its signature once step 2 fixed T2, its keys once it sent
    `auth`; the responder: its X25519 half once it accepted the chat, its keys only once the initiator's `auth`
    verified, and never its signature. Each prepare emits and sends nothing, and is then no longer due."""
    pair, si, sr = counted_pair(identities, prepare=False)
    due: list[tuple[str, Step]] = []
    for step in Step:
        pair.start(step)
        for side in (pair.i, pair.r):
            if side.hs.prepare_due:
                due.append((side.name, step))
                log, events = list(pair.log), (list(pair.i.events), list(pair.r.events))
                assert side.hs.prepare() is None
                assert pair.log == log and (pair.i.events, pair.r.events) == events    # emits and sends nothing
                assert not side.hs.prepare_due
                side.hs.prepare()                                                       # again: nothing to do
    assert due == [("initiator", Step.CONNECT), ("responder", Step.CONNECT), ("initiator", Step.SWAP_KEYS),
                   ("initiator", Step.AUTHENTICATE), ("responder", Step.AUTHENTICATE)]
    assert pair.i.established is not None and len(si.calls) == len(sr.calls) == 1
    fresh = Pair(identities[0], identities[1], prepare=False).run(Step.SWAP_KEYS)
    assert fresh.i.hs.prepare_due and not fresh.r.hs.prepare_due
    assert not set(sent_types(fresh)) & STEP_3_4_FRAMES


@pytest.mark.parametrize("accept", [True, False])
def test_the_responder_makes_its_x25519_half_ahead_only_once_it_accepted_the_chat(identities, accept):
    """Made while the initiator's `key` travels, so the responder's `key` answer waits for no key generation;
    a chat its user has not accepted yet, or declined, makes nothing."""
    made: list[TrackedEphemeral] = []

    def factory() -> TrackedEphemeral:
        made.append(TrackedEphemeral())
        return made[-1]

    pair, _, sr = counted_pair(identities, eph_r=factory, prepare=False)
    (hello,) = pair.i.hs.start(Step.CONNECT)
    asked = pair.r.hs.receive(decode(hello.frame))
    assert [type(e).__name__ for e in asked] == ["NeedAccept"]
    assert not pair.r.hs.prepare_due and made == []            # the user is being asked: nothing made yet
    answer = pair.r.hs.accept(accept)
    assert pair.r.hs.prepare_due is accept
    pair.r.hs.prepare()
    assert len(made) == int(accept) and not pair.r.hs.prepare_due and sr.calls == []
    if accept:
        pair.handle(pair.r, answer)                            # the welcome reaches the initiator
        pair.start(Step.SWAP_KEYS)
        key = next(decode(f) for who, f in pair.log if who == "responder" and decode(f).type == "key")
        assert key["ephemeral"] == made[0].public and len(made) == 1     # the half made ahead went out
        assert sr.calls == []


def test_the_initiator_signs_ahead_once_the_responders_key_matched_its_ledger_not_before(identities):
    """T2 is complete when the responder's `key` frame arrived; the initiator signs it as soon as its own ledger
    check of that key passed — while the responder may still be checking ours (its `key_ok` held back here) —
    and not while its own lookup is still running."""
    held: list[bytes] = []

    def wire(src: Any, frame: bytes) -> list[bytes]:
        if src.name == "responder" and decode(frame).type == "key_ok":
            held.append(frame)
            return []
        return [frame]

    pair, si, sr = counted_pair(identities, wire=wire)
    pair.i.answer_lookups = False
    pair.run(Step.SWAP_KEYS)
    assert pair.i.hs.peer_public_der == identities[1].public_der        # the responder's key is here, unchecked
    assert not pair.i.hs.prepare_due and si.calls == [] and pair.i.prepared == 1     # its X25519 half, at step 1
    pair.handle(pair.i, pair.i.hs.ledger_answer(pair.i.binding))
    assert len(si.calls) == 1 and pair.i.prepared == 2                   # signed ahead ...
    assert Step.SWAP_KEYS not in pair.i.hs.done                          # ... before step 2 is done here
    assert not set(sent_types(pair)) & STEP_3_4_FRAMES and sr.calls == []
    with pytest.raises(StepOrderError, match="Step 2 Swap public keys is still in progress"):
        pair.i.hs.start(Step.AUTHENTICATE)
    pair.deliver(pair.i, held[0])
    assert Step.SWAP_KEYS in pair.i.hs.done and len(si.calls) == 1
    for step in (Step.AUTHENTICATE, Step.AGREE_KEY):
        pair.start(step)
    assert pair.i.established is not None and (len(si.calls), len(sr.calls)) == (1, 1)


def test_an_initiator_whose_ledger_check_fails_signs_nothing(identities):
    pair, si, sr = counted_pair(identities, i_binding=Pair(identities[0], identities[2]).i.binding)
    pair.run()
    assert pair.i.failed is not None and pair.i.failed.step is Step.SWAP_KEYS
    assert si.calls == [] and sr.calls == []


def test_the_prepared_signature_goes_out_only_with_auth_and_is_not_made_twice(identities):
    pair, si, sr = counted_pair(identities)
    pair.run(Step.SWAP_KEYS)
    assert (pair.i.prepared, pair.r.prepared) == (2, 1) and len(si.calls) == 1 and sr.calls == []   # r: its half
    assert not set(sent_types(pair)) & STEP_3_4_FRAMES
    pair.start(Step.AUTHENTICATE)
    assert sent_types(pair)[-3:] == ["auth", "auth_reply", "auth_ok"]
    assert len(si.calls) == 1 and len(sr.calls) == 1
    pair.start(Step.AGREE_KEY)
    assert sent_types(pair)[-2:] == ["confirm", "confirm_reply"]
    assert len(si.calls) == 1 and len(sr.calls) == 1


def test_signing_ahead_gives_the_same_keys_and_frames_as_signing_on_the_spot(identities):
    ahead = deterministic(identities, prepare=True).run()
    on_the_spot = deterministic(identities, prepare=False).run()
    # initiator: X25519 half, signature, keys; responder: X25519 half, keys
    assert (ahead.i.prepared, ahead.r.prepared) == (3, 2) and (on_the_spot.i.prepared, on_the_spot.r.prepared) == (0, 0)
    a, b = ahead.i.established, on_the_spot.i.established
    assert (a.transcript_hash, a.send_key, a.recv_key, a.send_chain, a.recv_chain) == \
        (b.transcript_hash, b.send_key, b.recv_key, b.send_chain, b.recv_chain)
    assert sent_types(ahead) == sent_types(on_the_spot)


@pytest.mark.parametrize(("when", "clicks_early"), list(itertools.product(["never", "after step 2", "twice"],
                                                                          [False, True])))
def test_steps_run_one_click_at_a_time_whenever_the_initiator_prepares(identities, when, clicks_early):
    """Each click is a separate call; between clicks the initiator may or may not have signed ahead (the IO layer
    prepares after writing frames; a user may wait minutes between clicks)."""
    pair = deterministic(identities, prepare=False)
    for step in Step:
        if clicks_early and step < Step.AGREE_KEY:        # a click too early is refused, naming the step before
            with pytest.raises(StepOrderError, match=f"Do step {int(step)} .* first"):
                pair.i.hs.start(Step(step + 1))
        pair.start(step)
        assert pair.i.steps_done()[-1] is step and pair.r.steps_done()[-1] is step
        if step is Step.SWAP_KEYS and when != "never":
            pair.i.hs.prepare()
        if when == "twice":
            pair.i.hs.prepare()
            pair.r.hs.prepare()
    reference = deterministic(identities).run()
    assert pair.i.established.send_key == reference.i.established.send_key == pair.r.established.recv_key
    assert pair.r.established.transcript_hash == reference.r.established.transcript_hash


# --- X25519 halves: fresh, in the transcript, erased ---------------------------------------------------------------

def test_nonces_and_x25519_halves_are_fresh_per_session_and_bound_into_t2(identities):
    one = Pair(identities[0], identities[1]).run(Step.SWAP_KEYS)
    two = Pair(identities[0], identities[1]).run(Step.SWAP_KEYS)
    keys = [decode(f) for p in (one, two) for _, f in p.log if decode(f).type == "key"]
    nonces, halves = [k["nonce"] for k in keys], [k["ephemeral"] for k in keys]
    assert len(set(nonces)) == 4 and all(len(n) == 32 for n in nonces)
    assert len(set(halves)) == 4 and all(len(h) == 32 for h in halves)
    assert one.i.hs._t2 == one.r.hs._t2 and two.i.hs._t2 == two.r.hs._t2 and one.i.hs._t2 != two.i.hs._t2


@pytest.mark.parametrize("prepare", [True, False])
def test_the_x25519_half_sent_in_step_2_is_the_one_used_and_erased_at_agreement(identities, prepare):
    """Made on the spot, the agreement waits for step 4; made ahead, it follows step 3 (the halves are erased
    then); either way the half sent in step 2 is the one agreed with, once."""
    made_i, eph_i = tracking()
    made_r, eph_r = tracking()
    pair = Pair(identities[0], identities[1], eph_i=eph_i, eph_r=eph_r, prepare=prepare).run(Step.AUTHENTICATE)
    sent = {name: decode(f)["ephemeral"] for name, f in pair.log if decode(f).type == "key"}
    assert sent == {"initiator": made_i[0].public, "responder": made_r[0].public}
    assert made_i[0].erased == made_r[0].erased == prepare
    pair.start(Step.AGREE_KEY)
    assert pair.i.established is not None and pair.r.established is not None
    assert len(made_i) == len(made_r) == 1 and made_i[0].erased and made_r[0].erased


@pytest.mark.parametrize("how", ["error frame", "bad signature", "wrong step"])
def test_the_x25519_half_is_erased_when_the_handshake_fails(identities, how):
    made, factory = tracking()
    pair = Pair(identities[0], identities[1], eph_r=factory).run(Step.SWAP_KEYS)
    assert len(made) == 1 and not made[0].erased
    frame = {"error frame": CHAT.encode("error", reason="bye"),
             "bad signature": CHAT.encode("auth", sig=b"\x01" * 384, ledgers="unknown"),
             "wrong step": CHAT.encode("confirm", confirm=bytes(32))}[how]
    pair.deliver(pair.r, frame)
    assert pair.r.failed is not None
    assert made[0].erased and pair.r.hs._ephemeral is None
    assert len(made) == 1


def test_close_erases_the_x25519_halves_and_leaves_nothing_to_prepare(identities):
    made_i, eph_i = tracking()
    made_r, eph_r = tracking()
    pair = Pair(identities[0], identities[1], eph_i=eph_i, eph_r=eph_r, prepare=False).run(Step.SWAP_KEYS)
    assert pair.i.hs.prepare_due
    pair.i.hs.close()
    pair.r.hs.close()
    pair.r.hs.close()                                 # idempotent
    assert [e.erased for e in made_i + made_r] == [True, True]
    assert not pair.i.hs.prepare_due
    pair.i.hs.prepare()
    assert pair.i.hs._auth_sig is None


def test_a_responder_that_has_not_sent_its_key_has_nothing_to_prepare_or_erase(identities):
    hs = Handshake(initiator=False, identity=identities[1], nickname="bob", network="testnet",
                   local_address=R_ADDR, peer_address=I_ADDR)
    assert not hs.prepare_due
    hs.prepare()
    hs.close()
    assert hs._auth_sig is None and hs._ephemeral is None


def test_a_peer_key_that_comes_back_is_parsed_once(identities):
    """Parsing an RSA key is most of what a responder spends on a peer before its `auth`; a ledger key seen
    before is taken from a small cache by its exact DER bytes, and a refused key is never cached."""
    load_peer_key.cache_clear()
    for _ in range(3):
        assert Pair(identities[0], identities[1]).run(Step.SWAP_KEYS).r.hs.peer_public_der == identities[0].public_der
    info = load_peer_key.cache_info()
    assert (info.misses, info.hits) == (2, 4)            # each side parsed the other's key once, then reused it
    with pytest.raises(CryptoError):
        load_peer_key(b"\x30\x03garbage")
    with pytest.raises(CryptoError):
        load_peer_key(b"\x30\x03garbage")
    assert load_peer_key.cache_info().currsize == 2


# --- the responder's step-4 keys, started in the background while it signs ---------------------------------------

class Later:
    """The handshake's ``background`` as the node gives it (each job run once, by whoever asks first:
    :class:`Once`), with the node's work-ahead thread replaced by a real thread started when the test says — or
    never, as a node that is shutting down."""

    def __init__(self) -> None:
        self.jobs: list[Once] = []

    def __call__(self, fn: Callable[[], Any]) -> Once:
        self.jobs.append(Once(fn))
        return self.jobs[-1]

    def run_on_a_thread(self) -> None:
        threads = [threading.Thread(target=once.ahead) for once in self.jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


@pytest.mark.parametrize("background", ["runs it", "never runs it"])
@pytest.mark.parametrize("prepare", [True, False])
def test_keys_started_in_the_background_are_the_keys_made_on_the_spot(identities, background, prepare):
    later = Later()
    ahead = deterministic(identities, background_r=later, prepare=prepare).run(Step.AUTHENTICATE)
    assert len(later.jobs) == 1
    if background == "runs it":
        later.run_on_a_thread()
    ahead.start(Step.AGREE_KEY)
    on_the_spot = deterministic(identities, prepare=False).run()
    for side in ("i", "r"):
        a, b = getattr(ahead, side).established, getattr(on_the_spot, side).established
        assert (a.transcript_hash, a.send_key, a.recv_key, a.send_chain, a.recv_chain) == \
            (b.transcript_hash, b.send_key, b.recv_key, b.send_chain, b.recv_chain)
    assert sent_types(ahead) == sent_types(on_the_spot)


def test_the_responder_starts_its_keys_in_the_background_only_after_the_initiators_auth_verified(identities):
    """Started before its own signature (so the agreement runs on another core while it signs), never before the
    initiator's signature verified; the X25519 half goes with it and is erased by the agreement."""
    later = Later()
    made, factory = tracking()
    pair, _, sr = counted_pair(identities, eph_r=factory, background_r=later)
    pair.run(Step.SWAP_KEYS)
    assert later.jobs == [] and sr.calls == []
    pair.start(Step.AUTHENTICATE)
    assert len(later.jobs) == 1 and len(sr.calls) == 1 and pair.r.hs._ephemeral is None
    later.run_on_a_thread()
    assert made[0].erased
    pair.start(Step.AGREE_KEY)
    assert pair.i.established is not None and pair.r.established is not None
    assert pair.i.established.send_key == pair.r.established.recv_key


def test_an_auth_that_does_not_verify_starts_no_background_agreement(identities):
    later = Later()

    def forge(src: Any, frame: bytes) -> list[bytes]:
        msg = decode(frame)
        if msg.type == "auth":
            return [CHAT.encode("auth", sig=b"\x01" * 384, ledgers=msg["ledgers"])]
        return [frame]

    pair = Pair(identities[0], identities[1], wire=forge, background_r=later).run()
    assert pair.r.failed is not None and pair.r.failed.step is Step.AUTHENTICATE
    assert later.jobs == []


def test_a_handshake_that_ends_while_its_background_agreement_waits_erases_the_half_and_agrees_nothing(identities):
    later = Later()
    agreed: list[bytes] = []
    made: list[TrackedEphemeral] = []

    class Watched(TrackedEphemeral):
        def agree(self, peer_public: bytes) -> bytes:
            agreed.append(peer_public)
            return super().agree(peer_public)

    def factory() -> Watched:
        made.append(Watched())
        return made[-1]  # type: ignore[return-value]

    pair = Pair(identities[0], identities[1], eph_r=factory, background_r=later, prepare=False)
    pair.run(Step.AUTHENTICATE)
    pair.r.hs.close()                   # the connection dropped before the pool got to it
    assert made[0].erased
    later.run_on_a_thread()             # the pool runs it late: nothing left to agree with
    assert agreed == [] and pair.r.established is None


def test_a_low_order_point_found_in_the_background_fails_step_4_when_it_starts(identities):
    later = Later()
    pair = Pair(identities[0], identities[1], eph_i=LowOrder, background_r=later).run(Step.AUTHENTICATE)
    later.run_on_a_thread()
    assert Step.AUTHENTICATE in pair.r.hs.done and pair.r.failed is None      # nothing said before step 4
    pair.start(Step.AGREE_KEY)
    assert pair.r.failed.step is Step.AGREE_KEY and "unusable key material" in pair.r.failed.reason
    assert pair.r.established is None


def test_a_programming_error_in_the_background_agreement_is_ours_not_the_peers(identities):
    """Raised where the handshake collects the keys (the node then fails the session as an internal error),
    never turned into "the peer sent unusable key material"; ending the handshake afterwards still works."""
    later = Later()
    pair = Pair(identities[0], identities[1], background_r=later, prepare=False).run(Step.AUTHENTICATE)
    job = later.jobs[0]
    job._fn = lambda: 1 // 0          # a bug in what runs on the other thread
    with pytest.raises(ZeroDivisionError):
        job.ahead()
    with pytest.raises(RuntimeError, match="failed on another thread"):
        pair.start(Step.AGREE_KEY)
    pair.r.hs.close()
