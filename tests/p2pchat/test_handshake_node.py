"""The node around the handshake core (real sockets on loopback): the initiator signs step 3 ahead as soon as step 2
is done while the steps still run one click at a time, and a responder makes no RSA private-key operation for a
peer that stops after step 2, however often it comes back (counted, not timed)."""

from __future__ import annotations

import threading
from typing import Any

from p2pchat.chat_protocol import CHAT, Send
from p2pchat.events import MessageReceived, SessionEnded, StepRefused, StepResult
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import connect
from p2pchat.handshake import Failed, Handshake, LedgerBinding, NeedLookup, StepDone
from p2pchat.steps import Step
from tests.helpers import wait_until
from tests.p2pchat.node_kit import Peer, pair


class CountingIdentity(Identity):
    """A real identity that counts its RSA private-key operations (``sign`` is the only one a node makes)."""

    def __init__(self, other: Identity) -> None:
        super().__init__(other._key)
        self._lock = threading.Lock()
        self.signed: list[str] = []

    def sign(self, context: str, data: bytes) -> bytes:
        with self._lock:
            self.signed.append(context)
        return super().sign(context, data)


def handshake_of(peer: Peer, sid: str) -> Handshake:
    hs = peer.node._get(sid).handshake
    assert isinstance(hs, Handshake)
    return hs


def through_step_2_and_hang_up(attacker: Identity, src_ip: str, victim: Peer) -> None:
    """A registered peer's cheapest loop against a responder: hello, key, key_ok, then close the connection."""
    conn = connect(victim.ip, victim.node.port, CHAT, source_ip=src_ip, timeout=10)
    hs = Handshake(initiator=True, identity=attacker, nickname="mallory", network=victim.node.network,
                   local_address=f"{src_ip}:1", peer_address=f"{victim.ip}:{victim.node.port}")
    binding = LedgerBinding(public_der=victim.identity.public_der, nickname=victim.nickname, ip=victim.ip,
                            port=victim.node.port, relay=None, height=5, confirmations=2)

    def act(events: list[Any]) -> list[Any]:
        out: list[Any] = []
        for ev in events:
            if isinstance(ev, Send):
                conn.send_frame(ev.frame)
            elif isinstance(ev, NeedLookup):
                out += act(hs.ledger_answer(binding))
            else:
                out.append(ev)
        return out

    try:
        for step in (Step.CONNECT, Step.SWAP_KEYS):
            events = act(hs.start(step))
            while not any(isinstance(e, StepDone) and e.step is step for e in events):
                assert not any(isinstance(e, Failed) for e in events), events
                events += act(hs.receive(conn.recv(10)))
    finally:
        hs.close()
        conn.close()


def test_a_peer_that_stops_after_step_2_costs_the_responder_no_signature_however_often(identities):
    bob_identity = CountingIdentity(identities[1])
    with pair([identities[0], bob_identity]) as (alice, bob, _):
        for _ in range(6):
            through_step_2_and_hang_up(identities[0], alice.ip, bob)
            bob.log.wait(SessionEnded, session=bob.log.wait(StepResult, step=Step.SWAP_KEYS, ok=True).session)
            bob.log.events.clear()
        assert bob_identity.signed == []
        # An honest chat from the same address afterwards: one signature on each side, no more.
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_all(sid)
        alice.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
        bob.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        assert bob_identity.signed == ["chat-auth"]


def test_clicking_the_steps_one_at_a_time_signs_ahead_on_the_initiator_only(identities):
    alice_identity, bob_identity = CountingIdentity(identities[0]), CountingIdentity(identities[1])
    with pair([alice_identity, bob_identity]) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_step(sid, Step.CONNECT)
        alice.log.wait(StepResult, session=sid, step=Step.CONNECT, ok=True)
        bob_sid = bob.log.wait(StepResult, step=Step.CONNECT, ok=True).session
        assert not handshake_of(alice, sid).prepare_due         # its X25519 half is made already, nothing else

        alice.node.run_step(sid, Step.SWAP_KEYS)
        alice.log.wait(StepResult, session=sid, step=Step.SWAP_KEYS, ok=True)
        bob.log.wait(StepResult, session=bob_sid, step=Step.SWAP_KEYS, ok=True)
        # The pause between two clicks: the initiator makes its one signature meanwhile; the responder none ...
        hs_a, hs_b = handshake_of(alice, sid), handshake_of(bob, bob_sid)
        wait_until(lambda: alice_identity.signed == ["chat-auth"], what="the initiator signed ahead")
        assert not hs_a.prepare_due and not hs_b.prepare_due and hs_b._auth_sig is None
        assert bob_identity.signed == []
        # ... and sends none of it: nobody reports step 3, and a click out of order is still refused.
        alice.node.run_step(sid, Step.AGREE_KEY)
        refused = alice.log.wait(StepRefused, session=sid, step=Step.AGREE_KEY)
        assert "Do step 3 (Authenticate) first" in refused.reason
        assert not alice.log.all(StepResult, step=Step.AUTHENTICATE)
        assert not bob.log.all(StepResult, step=Step.AUTHENTICATE)

        alice.node.run_step(sid, Step.AUTHENTICATE)
        alice.log.wait(StepResult, session=sid, step=Step.AUTHENTICATE, ok=True)
        bob.log.wait(StepResult, session=bob_sid, step=Step.AUTHENTICATE, ok=True)
        assert alice_identity.signed == ["chat-auth"] and bob_identity.signed == ["chat-auth"]
        alice.node.run_step(sid, Step.AUTHENTICATE)
        assert "already done" in alice.log.wait(StepRefused, session=sid, step=Step.AUTHENTICATE).reason

        alice.node.run_step(sid, Step.AGREE_KEY)
        alice.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
        bob.log.wait(StepResult, session=bob_sid, step=Step.AGREE_KEY, ok=True)
        assert hs_a._ephemeral is None and hs_b._ephemeral is None     # erased after the agreement
        assert alice_identity.signed == ["chat-auth"] and bob_identity.signed == ["chat-auth"]
        alice.node.send_text(sid, "one signature each")
        assert bob.log.wait(MessageReceived, session=bob_sid).text == "one signature each"


def test_a_chat_ended_after_step_2_erases_both_x25519_halves(identities):
    with pair(identities[:2]) as (alice, bob, _):
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        for step in (Step.CONNECT, Step.SWAP_KEYS):
            alice.node.run_step(sid, step)
            alice.log.wait(StepResult, session=sid, step=step, ok=True)
        bob_sid = bob.log.wait(StepResult, step=Step.SWAP_KEYS, ok=True).session
        hs_a, hs_b = handshake_of(alice, sid), handshake_of(bob, bob_sid)
        made = [hs_a._ephemeral, hs_b._ephemeral]                # made with the step-2 key frames
        assert all(eph is not None for eph in made)
        alice.node.end_session(sid)
        alice.log.wait(SessionEnded, session=sid)
        bob.log.wait(SessionEnded, session=bob_sid)
        assert hs_a._ephemeral is None and hs_b._ephemeral is None
        assert all(eph._key is None for eph in made)             # crypto.EphemeralKey dropped its private half
