"""Two chat nodes talking through a relay that misbehaves on purpose (tests/p2pchat/relay/malicious_relay.py):
whatever it drops, duplicates, reorders, alters or delivers into another chat, the receiving user sees each
message at most once and in the order it was sent, and is told in plain words what was refused or went missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from p2pchat.events import DeliveryReceipt, MessageReceived, Notice, SessionEnded, StepResult
from p2pchat.peer_directory import FixedDirectory
from p2pchat.relay import KeySetCallers
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.node_kit import Peer, entry, make_peer, wait_until
from tests.p2pchat.relay.malicious_relay import MaliciousRelay
from tests.p2pchat.test_node_relay import RELAY_KEY


@contextmanager
def through(relay: MaliciousRelay, identities: list) -> Iterator[tuple[Peer, Peer]]:
    """alice calls bob, who is reachable only through ``relay``."""
    directory = FixedDirectory()
    bob = make_peer(identities[1], "bob", directory, no_inbound=True, relay=relay.address, auto_accept=True,
                    register=False, rotate_every=1000)
    directory.add(entry(identities[1], "bob", None, None, relay.address))
    alice = make_peer(identities[0], "alice", directory, rotate_every=1000)
    try:
        assert bob.node._registration.wait_registered(5)
        yield alice, bob
    finally:
        alice.node.close()
        bob.node.close()


def evil_relay(identities: list) -> MaliciousRelay:
    known = KeySetCallers({i.fingerprint for i in identities}, "test ledger")
    return MaliciousRelay(free_loopback_ip(), 0, action="record", heartbeat=0.5, pair_timeout=5.0, key=RELAY_KEY,
                          callers=known).start()


def chat(alice: Peer, bob: Peer) -> tuple[str, str]:
    sid = alice.node.open_session("bob")
    alice.node.run_all(sid)
    alice.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
    bsid = bob.log.wait(StepResult, step=Step.AGREE_KEY, ok=True).session
    return sid, bsid


def send_one(alice: Peer, sid: str, text: str) -> None:
    """One text in a frame of its own: sent once the one before it was receipted."""
    msg_id = alice.node.send_text(sid, text)
    alice.log.wait(DeliveryReceipt, session=sid, msg_id=msg_id)


def arm(relay: MaliciousRelay, action: str) -> None:
    """Apply ``action`` to the next payload from the caller (direction 0) of the relay's one session."""
    with relay._evil_lock:      # payloads are counted from the first one the action may pick
        relay._seen.clear()
        relay.action, relay.direction, relay.index = action, 0, 1


@pytest.mark.parametrize("action, shown, notice", [
    ("duplicate", ["a0", "a1", "a2"], "replayed"),
    ("drop", ["a0", "a2"], "never arrived"),
    ("reorder", ["a0", "a2"], "never arrived"),
    ("flip", ["a0", "a2"], "altered"),
])
def test_a_relay_that_tampers_with_a_text_never_shows_it_twice_or_out_of_order_and_says_so(action, shown, notice):
    identities = make_identities(2)
    relay = evil_relay(identities)
    try:
        with through(relay, identities) as (alice, bob):
            sid, _bsid = chat(alice, bob)
            send_one(alice, sid, "a0")
            arm(relay, action)
            alice.node.send_text(sid, "a1")
            wait_until(lambda: relay.tampered == 1, 10)
            alice.node.send_text(sid, "a2")
            wait_until(lambda: [m.text for m in bob.log.all(MessageReceived)][-1:] == ["a2"], 10, step=bob.log.pump)
            wait_until(lambda: any(notice in n.text for n in bob.log.all(Notice)), 10, step=bob.log.pump,
                       what=f"a notice saying '{notice}'")
            assert [m.text for m in bob.log.all(MessageReceived)] == shown
            assert not bob.log.all(SessionEnded)       # one refusal does not end the chat
    finally:
        relay.close()


def test_a_relay_that_delivers_a_text_into_another_chat_is_refused_there_and_nothing_is_shown_twice():
    identities = make_identities(2)
    relay = evil_relay(identities)
    try:
        with through(relay, identities) as (alice, bob):
            first, bfirst = chat(alice, bob)
            second = alice.node.open_session("bob")
            alice.node.run_all(second)
            alice.log.wait(StepResult, session=second, step=Step.AGREE_KEY, ok=True)
            wait_until(lambda: len(bob.log.all(StepResult, step=Step.AGREE_KEY, ok=True)) == 2, 10,
                       step=bob.log.pump)
            bsecond = next(e.session for e in bob.log.all(StepResult, step=Step.AGREE_KEY, ok=True)
                       if e.session != bfirst)
            with relay._evil_lock:      # the first chat's next text goes into the relay's newest session only
                relay._seen.clear()
                relay.action, relay.direction, relay.index = "crosswire", 0, None
            alice.node.send_text(first, "meant for the first chat")
            wait_until(lambda: relay.tampered >= 1, 10)
            wait_until(lambda: bob.log.all(Notice, session=bsecond, kind="refused"), 10, step=bob.log.pump)
            assert not bob.log.all(MessageReceived)
            assert "altered" in bob.log.all(Notice, session=bsecond, kind="refused")[0].text
            assert not bob.log.all(Notice, session=bfirst, kind="refused")
    finally:
        relay.close()
