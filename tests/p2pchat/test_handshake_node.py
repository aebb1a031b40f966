"""The node around the handshake core: steps 3 and 4 are prepared on both sides as soon as step 2 is done, while
the steps still run one click at a time (real sockets on loopback)."""

from __future__ import annotations

from p2pchat.events import MessageReceived, SessionEnded, StepRefused, StepResult
from p2pchat.handshake import Handshake
from p2pchat.steps import Step
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, pair


def handshake_of(peer: Peer, sid: str) -> Handshake:
    hs = peer.node._get(sid).handshake
    assert isinstance(hs, Handshake)
    return hs


def test_clicking_the_steps_one_at_a_time_prepares_ahead_and_reaches_a_working_chat(identities):
    with pair(identities[:2]) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_step(sid, Step.CONNECT)
        alice.log.wait(StepResult, session=sid, step=Step.CONNECT, ok=True)
        bob_sid = bob.log.wait(StepResult, step=Step.CONNECT, ok=True).session
        assert not handshake_of(alice, sid).prepare_due         # nothing to prepare before step 2

        alice.node.run_step(sid, Step.SWAP_KEYS)
        alice.log.wait(StepResult, session=sid, step=Step.SWAP_KEYS, ok=True)
        bob.log.wait(StepResult, session=bob_sid, step=Step.SWAP_KEYS, ok=True)
        # The pause between two clicks: both sides prepare their step-3/4 values on their own meanwhile ...
        hs_a, hs_b = handshake_of(alice, sid), handshake_of(bob, bob_sid)
        wait_until(lambda: not hs_a.prepare_due and not hs_b.prepare_due, what="both sides prepared")
        assert hs_a._auth_sig is not None and hs_b._ephemeral is not None
        # ... and send none of it: nobody reports step 3, and a click out of order is still refused.
        alice.node.run_step(sid, Step.AGREE_KEY)
        refused = alice.log.wait(StepRefused, session=sid, step=Step.AGREE_KEY)
        assert "Do step 3 (Authenticate) first" in refused.reason
        assert not alice.log.all(StepResult, step=Step.AUTHENTICATE)
        assert not bob.log.all(StepResult, step=Step.AUTHENTICATE)

        alice.node.run_step(sid, Step.AUTHENTICATE)
        alice.log.wait(StepResult, session=sid, step=Step.AUTHENTICATE, ok=True)
        bob.log.wait(StepResult, session=bob_sid, step=Step.AUTHENTICATE, ok=True)
        alice.node.run_step(sid, Step.AUTHENTICATE)
        assert "already done" in alice.log.wait(StepRefused, session=sid, step=Step.AUTHENTICATE).reason

        alice.node.run_step(sid, Step.AGREE_KEY)
        alice.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
        bob.log.wait(StepResult, session=bob_sid, step=Step.AGREE_KEY, ok=True)
        assert hs_b._ephemeral is None                           # erased after the agreement
        alice.node.send_text(sid, "prepared in advance")
        assert bob.log.wait(MessageReceived, session=bob_sid).text == "prepared in advance"


def test_a_chat_ended_after_step_2_erases_the_prepared_ephemeral_half(identities):
    with pair(identities[:2]) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        for step in (Step.CONNECT, Step.SWAP_KEYS):
            alice.node.run_step(sid, step)
            alice.log.wait(StepResult, session=sid, step=step, ok=True)
        bob_sid = bob.log.wait(StepResult, step=Step.SWAP_KEYS, ok=True).session
        hs_a, hs_b = handshake_of(alice, sid), handshake_of(bob, bob_sid)
        wait_until(lambda: hs_a._ephemeral is not None and hs_b._ephemeral is not None, what="both sides prepared")
        prepared = [hs_a._ephemeral, hs_b._ephemeral]
        alice.node.end_session(sid)
        alice.log.wait(SessionEnded, session=sid)
        bob.log.wait(SessionEnded, session=bob_sid)
        assert hs_a._ephemeral is None and hs_b._ephemeral is None
        assert all(eph._key is None for eph in prepared)        # crypto.EphemeralKey dropped its private half
