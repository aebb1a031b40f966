"""Steps 3 and 4 prepared ahead of time (``Handshake.prepare``): the same result as computing on the spot, no frame
ever sent early, the prepared X25519 half erased on failure, close and agreement."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from p2pchat.chat_protocol import CHAT
from p2pchat.foundation import crypto
from p2pchat.handshake import EPHEMERAL_CONTEXT, Handshake, StepOrderError, ephemeral_message
from p2pchat.steps import Step
from tests.p2pchat.handshake_pair import Pair, counting_rng, decode, fixed_ephemerals

STEP_3_4_FRAMES = {"auth", "auth_reply", "auth_ok", "ephemeral", "ephemeral_reply", "confirm"}


class TrackedEphemeral:
    """A real X25519 key that remembers whether it was erased."""

    made: list[TrackedEphemeral]

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


def deterministic(identities: list[Any], **kw: Any) -> Pair:
    return Pair(identities[0], identities[1], rng_i=counting_rng(1), rng_r=counting_rng(2),
                eph_i=fixed_ephemerals(bytes(range(32))), eph_r=fixed_ephemerals(bytes(range(1, 33))), **kw)


def sent_types(pair: Pair) -> list[str]:
    return [decode(f).type for _, f in pair.log]


def test_preparing_ahead_gives_the_same_keys_as_computing_on_the_spot(identities):
    ahead = deterministic(identities, prepare=True).run()
    on_the_spot = deterministic(identities, prepare=False).run()
    assert (ahead.i.prepared, ahead.r.prepared) == (1, 1)
    assert (on_the_spot.i.prepared, on_the_spot.r.prepared) == (0, 0)
    for pair in (ahead, on_the_spot):
        ei, er = pair.i.established, pair.r.established
        assert ei is not None and er is not None
        assert ei.send_key == er.recv_key and ei.recv_key == er.send_key
        assert ei.send_chain == er.recv_chain and ei.transcript_hash == er.transcript_hash
    a, b = ahead.i.established, on_the_spot.i.established
    assert (a.transcript_hash, a.send_key, a.recv_key, a.send_chain, a.recv_chain) == \
        (b.transcript_hash, b.send_key, b.recv_key, b.send_chain, b.recv_chain)
    assert sent_types(ahead) == sent_types(on_the_spot)


def test_preparation_is_due_once_step_2_is_through_and_never_emits_or_sends_anything(identities):
    pair = Pair(identities[0], identities[1], prepare=False)
    for side in (pair.i, pair.r):
        assert not side.hs.prepare_due
    pair.run(Step.CONNECT)
    assert not pair.i.hs.prepare_due and not pair.r.hs.prepare_due     # T3 needs both keys and both nonces
    pair.i.hs.prepare()                                                 # nothing to do yet: a no-op
    pair.start(Step.SWAP_KEYS)
    assert pair.i.hs.prepare_due and pair.r.hs.prepare_due
    log, events = list(pair.log), (list(pair.i.events), list(pair.r.events))
    for side in (pair.r, pair.i):
        assert side.hs.prepare() is None
        assert not side.hs.prepare_due
        side.hs.prepare()                                               # again: nothing left to do
    assert pair.log == log and (pair.i.events, pair.r.events) == events
    assert not set(sent_types(pair)) & STEP_3_4_FRAMES
    assert pair.i.hs.next_step is Step.AUTHENTICATE and pair.i.hs.in_progress is None
    assert pair.r.hs.in_progress is None


def test_nothing_is_prepared_before_step_2_is_done_on_that_side(identities):
    """The responder's own check passed but the initiator's key_ok is held back: its step 2 is not done, so it
    prepares nothing, and a step-3 request arriving now is refused."""
    held: list[bytes] = []

    def wire(src: Any, frame: bytes) -> list[bytes]:
        if src.name == "initiator" and decode(frame).type == "key_ok":
            held.append(frame)
            return []
        return [frame]

    pair = Pair(identities[0], identities[1], wire=wire).run(Step.SWAP_KEYS)
    assert Step.SWAP_KEYS not in pair.r.hs.done and Step.SWAP_KEYS in pair.i.hs.done
    assert pair.i.prepared == 1 and pair.r.prepared == 0 and not pair.r.hs.prepare_due
    pair.r.hs.prepare()                         # asked anyway: nothing to do yet
    assert pair.r.hs._auth_sig is None and pair.r.hs._ephemeral is None
    pair.start(Step.AUTHENTICATE)               # the initiator's auth overtakes its own held-back key_ok
    assert pair.r.failed is not None and pair.r.failed.step is Step.SWAP_KEYS
    assert "before step 2 Swap public keys was finished" in pair.r.failed.reason
    assert [decode(f).type for name, f in pair.log if name == "responder"][-1] == "error"
    assert not {"auth_reply", "ephemeral_reply"} & set(sent_types(pair))


def test_prepared_values_go_out_only_with_their_own_step(identities):
    pair = Pair(identities[0], identities[1])
    pair.run(Step.SWAP_KEYS)
    assert (pair.i.prepared, pair.r.prepared) == (1, 1)
    assert not set(sent_types(pair)) & STEP_3_4_FRAMES
    pair.start(Step.AUTHENTICATE)
    assert sent_types(pair)[-3:] == ["auth", "auth_reply", "auth_ok"]
    assert not {"ephemeral", "ephemeral_reply", "confirm"} & set(sent_types(pair))
    pair.start(Step.AGREE_KEY)
    assert sent_types(pair)[-3:] == ["ephemeral", "ephemeral_reply", "confirm"]
    assert pair.i.established is not None and pair.r.established is not None


def test_the_prepared_ephemeral_half_is_the_one_signed_and_sent(identities):
    made, factory = tracking()
    pair = Pair(identities[0], identities[1], eph_r=factory).run(Step.AUTHENTICATE)
    assert len(made) == 1 and not made[0].erased      # prepared right after step 2, still unused
    pair.start(Step.AGREE_KEY)
    reply = next(decode(f) for _, f in pair.log if decode(f).type == "ephemeral_reply")
    assert reply["pub"] == made[0].public
    assert crypto.is_valid_signature(identities[1].public_der, EPHEMERAL_CONTEXT,
                                     ephemeral_message(b"responder", pair.r.hs._t3, made[0].public), reply["sig"])
    assert len(made) == 1 and made[0].erased          # erased right after the agreement


@pytest.mark.parametrize("prepare", [True, False])
def test_every_ephemeral_private_half_is_erased_after_agreement(identities, prepare):
    made_i, eph_i = tracking()
    made_r, eph_r = tracking()
    pair = Pair(identities[0], identities[1], eph_i=eph_i, eph_r=eph_r, prepare=prepare).run()
    assert pair.i.established is not None and pair.r.established is not None
    assert len(made_i) == len(made_r) == 1
    assert all(e.erased for e in made_i + made_r)


@pytest.mark.parametrize("how", ["error frame", "bad signature", "wrong step"])
def test_a_prepared_ephemeral_half_is_erased_when_the_handshake_fails(identities, how):
    made, factory = tracking()
    pair = Pair(identities[0], identities[1], eph_r=factory).run(Step.SWAP_KEYS)
    assert len(made) == 1 and not made[0].erased
    frame = {"error frame": CHAT.encode("error", reason="bye"),
             "bad signature": CHAT.encode("auth", sig=b"\x01" * 384),
             "wrong step": CHAT.encode("confirm", confirm=bytes(32))}[how]
    pair.deliver(pair.r, frame)
    assert pair.r.failed is not None
    assert made[0].erased and pair.r.hs._ephemeral is None
    assert not pair.r.hs.prepare_due
    pair.r.hs.prepare()
    assert len(made) == 1                             # a failed handshake prepares nothing new


def test_close_erases_a_prepared_ephemeral_half(identities):
    made_i, eph_i = tracking()
    made_r, eph_r = tracking()
    pair = Pair(identities[0], identities[1], eph_i=eph_i, eph_r=eph_r).run(Step.AUTHENTICATE)
    pair.i.hs.close()
    pair.r.hs.close()
    pair.r.hs.close()                                 # idempotent
    assert [e.erased for e in made_i + made_r] == [True, True]


def test_close_before_preparation_leaves_nothing_to_prepare(identities):
    made, factory = tracking()
    pair = Pair(identities[0], identities[1], eph_r=factory, prepare=False).run(Step.SWAP_KEYS)
    assert pair.r.hs.prepare_due
    pair.r.hs.close()
    assert not pair.r.hs.prepare_due
    pair.r.hs.prepare()
    assert not made and pair.r.hs._auth_sig is None


def test_a_step_requested_before_preparation_ran_is_computed_on_the_spot(identities):
    made, factory = tracking()
    pair = Pair(identities[0], identities[1], eph_i=factory, prepare=False).run(Step.SWAP_KEYS)
    assert pair.i.hs.prepare_due and not made
    pair.start(Step.AUTHENTICATE)
    assert Step.AUTHENTICATE in pair.i.hs.done and Step.AUTHENTICATE in pair.r.hs.done
    assert not made                                   # step 3 needs no X25519 half
    pair.r.hs.prepare()                               # late preparation on one side only: just step 4's half
    pair.start(Step.AGREE_KEY)
    assert len(made) == 1 and made[0].erased
    assert pair.i.established is not None and pair.r.established is not None
    assert pair.i.established.send_key == pair.r.established.recv_key


@pytest.mark.parametrize(("i_when", "r_when"), list(itertools.product(["never", "early", "late", "twice"],
                                                                      repeat=2)))
def test_steps_run_one_click_at_a_time_whenever_each_side_prepares(identities, i_when, r_when):
    """Each click is a separate call; between clicks either side may or may not have prepared (the IO layer runs
    preparation after writing frames, the user may wait minutes between clicks)."""
    pair = deterministic(identities, prepare=False)
    when = {"early": {Step.SWAP_KEYS}, "late": {Step.AUTHENTICATE}, "twice": {Step.SWAP_KEYS, Step.AUTHENTICATE},
            "never": set()}
    for step in Step:
        if step < Step.AGREE_KEY:                     # a click too early is refused, naming the step before
            with pytest.raises(StepOrderError, match=f"Do step {int(step)} .* first"):
                pair.i.hs.start(Step(step + 1))
        pair.start(step)
        assert pair.i.steps_done()[-1] is step and pair.r.steps_done()[-1] is step
        for side, chosen in ((pair.i, i_when), (pair.r, r_when)):
            if step in when[chosen]:
                side.hs.prepare()
    reference = deterministic(identities).run()
    assert pair.i.established.send_key == reference.i.established.send_key == pair.r.established.recv_key
    assert pair.r.established.transcript_hash == reference.r.established.transcript_hash


def test_nonces_are_fresh_per_session_and_bound_into_t3(identities):
    one = Pair(identities[0], identities[1]).run(Step.SWAP_KEYS)
    two = Pair(identities[0], identities[1]).run(Step.SWAP_KEYS)
    nonces = [decode(f)["nonce"] for p in (one, two) for _, f in p.log if decode(f).type == "key"]
    assert len(nonces) == 4 and len(set(nonces)) == 4 and all(len(n) == 32 for n in nonces)
    assert one.i.hs._t3 == one.r.hs._t3 and two.i.hs._t3 == two.r.hs._t3 and one.i.hs._t3 != two.i.hs._t3


def test_a_responder_that_has_not_sent_its_key_has_nothing_to_prepare(identities):
    hs = Handshake(initiator=False, identity=identities[1], nickname="bob", network="testnet",
                   local_address="127.0.0.3:8471", peer_address="127.0.0.2:40001")
    assert not hs.prepare_due
    hs.prepare()
    hs.close()
    assert hs._auth_sig is None and hs._ephemeral is None
