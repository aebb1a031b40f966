"""A verified peer's incoming chats at once are capped per key (p2pchat.admission.CHATS_PER_PEER): the allowance
on a fake clock, then with real sockets."""

from __future__ import annotations

from p2pchat.admission import WINDOW, Admission, Ticket
from p2pchat.events import MessageReceived, SessionEnded, StepResult
from p2pchat.steps import Step
from tests.p2pchat.node_kit import connect_all, pair, wait_until
from tests.p2pchat.test_admission import Clock

KEY, OTHER = b"k" * 32, b"o" * 32


def test_a_key_holds_at_most_its_chats_from_any_address_and_gets_them_back_when_they_end():
    adm = Admission(per_address=10, per_minute=100, per_peer=2)
    tickets = [adm.admit(a) for a in ("10.0.0.1", "10.0.0.2", "relayed-fp")]
    assert all(isinstance(t, Ticket) for t in tickets)
    first, second, third = tickets     # type: ignore[misc]
    assert adm.authenticated(first, KEY) is None
    assert adm.peer_full(KEY) is None
    assert adm.authenticated(second, KEY) is None
    assert "at most 2 at once" in (adm.peer_full(KEY) or "")
    refusal = adm.authenticated(third, KEY)             # a third address changes nothing: the key is counted
    assert refusal is not None and "already has 2 chats open with your key" in refusal
    assert adm.counts("relayed-fp") == (0, 0)           # the refused one is no stranger any more either
    assert adm.peer_full(OTHER) is None                 # another key is not affected
    adm.release(first)
    adm.release(first)                                  # idempotent
    assert adm.peer_chats(KEY) == 1
    retry = adm.admit("10.0.0.1")
    assert isinstance(retry, Ticket) and adm.authenticated(retry, KEY) is None
    for t in (second, third, retry):
        adm.release(t)
    assert adm.peer_chats(KEY) == 0


def test_a_chat_refused_for_its_key_keeps_its_handshake_of_the_minute():
    clock = Clock()
    adm = Admission(per_address=10, per_minute=3, per_peer=1, clock=clock)
    held = adm.admit("a")
    assert isinstance(held, Ticket) and adm.authenticated(held, KEY) is None
    for _ in range(3):                                  # a peer retrying at its limit is rationed like a stranger
        t = adm.admit("a")
        assert isinstance(t, Ticket) and adm.authenticated(t, KEY) is not None
        adm.release(t)
    refusal = adm.admit("a")
    assert isinstance(refusal, str) and "in the last minute" in refusal
    clock.now += WINDOW
    assert isinstance(adm.admit("a"), Ticket)


def test_a_peer_over_its_chats_at_once_is_refused_at_step_3_the_others_go_on_and_a_place_comes_back(identities):
    with pair(identities, bob={"admission": Admission(per_peer=2)}) as (alice, bob, _):
        open_ = [connect_all(alice, bob) for _ in range(2)]
        sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_all(sid)
        ended = alice.log.wait(SessionEnded, session=sid)
        assert not ended.clean and "already has 2 chats open with your key" in ended.reason
        refused = bob.log.wait(StepResult, step=Step.AUTHENTICATE, ok=False)
        assert "already has 2 chats open with you" in refused.detail and "it was told so" in refused.detail
        assert len(bob.log.all(StepResult, step=Step.AGREE_KEY, ok=True)) == 2
        for a_sid, _b_sid in open_:                     # the chats it holds are untouched
            alice.node.send_text(a_sid, f"still here {a_sid}")
        wait_until(lambda: len(bob.log.all(MessageReceived)) == 2, 10, step=bob.log.pump)
        assert bob.node.admission.peer_chats(_fp(alice)) == 2
        alice.node.end_session(open_[0][0])
        bob.log.wait(SessionEnded, session=open_[0][1])
        wait_until(lambda: bob.node.admission.peer_chats(_fp(alice)) == 1, 10, step=bob.log.pump)
        again, _ = connect_all(alice, bob)
        assert alice.node.session_info(again).peer_fingerprint


def _fp(peer) -> bytes:
    from p2pchat.foundation import crypto
    return crypto.fingerprint(peer.identity.public_der)
