"""The chat node's relay fallback with a real relay server on loopback: a --no-inbound host reached by nickname,
a direct dial that fails over to the relay, the path shown, rotation through the relay, and a relay that goes
away mid-chat and comes back."""

from __future__ import annotations

from p2pchat.events import MessageReceived, Notice, SessionEnded, StepResult
from p2pchat.peer_directory import FixedDirectory
from p2pchat.relay import KeySetCallers, RelayKey, RelayServer
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.node_kit import entry, make_peer, wait_until

RELAY_KEY = RelayKey()     # one key for every relay here: a relay restarted on the same address keeps its key


def relay_server(ip: str | None = None, port: int = 0) -> RelayServer:
    # The callers' keys stand for ledger records (the relay refuses callers without one; docs/relay.md).
    known = KeySetCallers({identity.fingerprint for identity in make_identities(6)}, "test ledger")
    return RelayServer(ip or free_loopback_ip(), port, heartbeat=0.5, pair_timeout=5.0, key=RELAY_KEY,
                       callers=known).start()


def test_a_no_inbound_host_is_reached_by_nickname_through_its_relay_hint(identities):
    relay = relay_server()
    directory = FixedDirectory()
    relay_addr = relay.address
    bob = make_peer(identities[1], "bob", directory, no_inbound=True, relay=relay_addr, auto_accept=True,
                    register=False, rotate_every=2)
    directory.add(entry(identities[1], "bob", None, None, relay_addr))       # no address: relay only
    alice = make_peer(identities[0], "alice", directory, rotate_every=2)
    try:
        assert bob.node._registration.wait_registered(5)
        sid = alice.node.open_session("bob")
        alice.node.run_all(sid)
        alice.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        info = alice.node.session_info(sid)
        assert info.path == f"relay {relay_addr}"
        assert f"connected through relay {relay_addr}" in alice.log.wait(Notice, kind="path").text
        ready = bob.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        assert bob.node.session_info(ready.session).path == f"relay {relay_addr}"
        assert "incoming chat through relay" in bob.log.wait(Notice, kind="path").text
        for i in range(6):
            alice.node.send_text(sid, f"a{i}")
            bob.node.send_text(ready.session, f"b{i}")
        wait_until(lambda: len(bob.log.all(MessageReceived)) == 6 and len(alice.log.all(MessageReceived)) == 6)
        assert [m.text for m in bob.log.all(MessageReceived)] == [f"a{i}" for i in range(6)]
        # alice switches when bob's rotate_ack reaches her, which bob's last text need not wait for
        wait_until(lambda: alice.node.session_info(sid).key_epoch >= 1)
        assert not alice.log.all(Notice, kind="refused") and not bob.log.all(Notice, kind="refused")
    finally:
        alice.node.close()
        bob.node.close()
        relay.close()


def test_a_failed_direct_dial_by_nickname_falls_back_to_the_configured_relay_and_says_why(identities):
    relay = relay_server()
    directory = FixedDirectory()
    bob_ip = free_loopback_ip()
    bob = make_peer(identities[1], "bob", directory, ip=bob_ip, no_inbound=True, relay=relay.address,
                    auto_accept=True, register=False)
    directory.add(entry(identities[1], "bob", bob_ip, 9))     # the record names an address nobody answers on
    alice = make_peer(identities[0], "alice", directory, relay=relay.address, direct_timeout=0.5)
    try:
        assert bob.node._registration.wait_registered(5)
        sid = alice.node.open_session("bob")
        alice.node.run_all(sid)
        alice.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        path = alice.log.wait(Notice, kind="path").text
        assert path.startswith(f"connected through relay {relay.address} because the direct connection failed")
        alice.node.send_text(sid, "via the relay")
        bob.log.wait(MessageReceived, text="via the relay")
    finally:
        alice.node.close()
        bob.node.close()
        relay.close()


def test_a_call_by_address_never_uses_a_relay_and_says_why(identities):
    # The record binds bob's address but nobody answers there; bob is registered at the relay. By address the
    # call must fail with a plain reason, never reach bob through his relay hint or the caller's own relay.
    relay = relay_server()
    directory = FixedDirectory()
    bob_ip = free_loopback_ip()
    bob = make_peer(identities[1], "bob", directory, ip=bob_ip, no_inbound=True, relay=relay.address,
                    auto_accept=True, register=False)
    directory.add(entry(identities[1], "bob", bob_ip, 9, relay.address))
    alice = make_peer(identities[0], "alice", directory, relay=relay.address, direct_timeout=0.5)
    try:
        assert bob.node._registration.wait_registered(5)
        sid = alice.node.open_session(bob_ip)
        alice.node.run_all(sid)
        failed = alice.log.wait(StepResult, step=Step.CONNECT, ok=False)
        assert f"{bob_ip} is bound to key" in failed.detail
        assert f"did not answer at {bob_ip}:9" in failed.detail
        assert "a relay is not used for calls by address" in failed.detail
        assert not bob.log.all(StepResult)            # nothing ever reached bob
        assert not alice.log.all(Notice, kind="path")
    finally:
        alice.node.close()
        bob.node.close()
        relay.close()


def test_a_no_inbound_caller_dials_a_listener_without_relay_directly_and_is_checked_by_its_key(identities):
    # Outbound TCP works through NAT: the caller's hello claims no address, so the callee looks it up by the key it
    # sends (its record is relay-only) instead of by the NAT address it sees. The callee has no --relay at all.
    relay = relay_server()
    directory = FixedDirectory()
    alice = make_peer(identities[0], "alice", directory, auto_accept=True)
    carol = make_peer(identities[2], "carol", directory, no_inbound=True, relay=relay.address, register=False)
    directory.add(entry(identities[2], "carol", None, None, relay.address))
    try:
        assert carol.node._registration.wait_registered(5)
        for n, query in enumerate(("alice", alice.ip)):   # by nickname and by address
            sid = carol.node.open_session(query)
            carol.node.run_all(sid)
            carol.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
            assert carol.node.session_info(sid).path == "direct"
            carol.node.send_text(sid, f"from behind the NAT to {query}")
            alice.log.wait(MessageReceived, text=f"from behind the NAT to {query}")
            checked = alice.log.all(StepResult, step=Step.SWAP_KEYS, ok=True)
            assert len(checked) == n + 1
            assert "fingerprint" in checked[-1].detail and "(carol)" in checked[-1].detail
            carol.node.end_session(sid)
        # Its own calls did not knock its listener off the relay.
        assert carol.node.relay_state == f"registered at relay {relay.address}"
    finally:
        carol.node.close()
        alice.node.close()
        relay.close()


def test_a_caller_without_an_address_whose_record_names_another_address_is_refused(identities):
    # "Look me up by my key" is only for keys without an address, or calling from the address their record names:
    # a key bound to 10.x cannot call from elsewhere and be taken for its owner's machine.
    relay = relay_server()
    directory = FixedDirectory()
    alice = make_peer(identities[0], "alice", directory, auto_accept=True)
    carol = make_peer(identities[2], "carol", directory, no_inbound=True, relay=relay.address, register=False)
    directory.add(entry(identities[2], "carol", free_loopback_ip(), 8471))
    try:
        sid = carol.node.open_session("alice")
        carol.node.run_all(sid)
        failed = alice.log.wait(StepResult, step=Step.SWAP_KEYS, ok=False)
        assert "called without an address of its own, but the ledger binds its key" in failed.detail
        assert carol.log.wait(StepResult, step=Step.SWAP_KEYS, ok=False)
    finally:
        carol.node.close()
        alice.node.close()
        relay.close()


def test_a_relay_that_goes_away_ends_the_chat_and_the_registration_comes_back(identities):
    relay_ip = free_loopback_ip()
    relay = relay_server(relay_ip)
    port = relay.port
    directory = FixedDirectory()
    bob = make_peer(identities[1], "bob", directory, no_inbound=True, relay=relay.address, auto_accept=True,
                    register=False)
    directory.add(entry(identities[1], "bob", None, None, relay.address))
    alice = make_peer(identities[0], "alice", directory)
    try:
        assert bob.node._registration.wait_registered(5)
        sid = alice.node.open_session("bob")
        alice.node.run_all(sid)
        alice.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        relay.close()
        ended = alice.log.wait(SessionEnded, session=sid)
        assert not ended.clean and "relay" in ended.reason
        bob.log.wait(SessionEnded)
        relay = relay_server(relay_ip, port)               # back on the same address
        wait_until(lambda: bob.node._registration.registered, 15, what="bob registered again")
        again = alice.node.open_session("bob")
        alice.node.run_all(again)
        alice.log.wait(StepResult, session=again, step=Step.AGREE_KEY, ok=True)
    finally:
        alice.node.close()
        bob.node.close()
        relay.close()


def test_a_relay_pinned_with_its_key_is_used_and_one_pinned_with_another_key_is_refused(identities):
    relay = relay_server()
    directory = FixedDirectory()
    impostor_key = RelayKey().public.hex()
    wrong = make_peer(identities[1], "bob", directory, no_inbound=True, relay=f"{relay.address}#{impostor_key}",
                      auto_accept=True, register=False)
    try:
        wait_until(lambda: "someone may be intercepting" in (wrong.node.relay_state or ""),
                   what="the registration to refuse the relay's key")
        assert not relay.is_registered(identities[1].fingerprint)
    finally:
        wrong.node.close()
    pinned_relay = f"{relay.address}#{RELAY_KEY.public.hex()}"
    bob = make_peer(identities[1], "bob", directory, no_inbound=True, relay=pinned_relay, auto_accept=True,
                    register=False)
    directory.add(entry(identities[1], "bob", None, None, relay.address))   # the ledger hint: address only
    alice = make_peer(identities[0], "alice", directory, relay=pinned_relay)
    try:
        assert bob.node._registration.wait_registered(5)
        sid = alice.node.open_session("bob")
        alice.node.run_all(sid)
        alice.log.wait(StepResult, step=Step.AGREE_KEY, ok=True)
        assert alice.node.session_info(sid).path == f"relay {relay.address}"     # the pin is not shown
        alice.node.send_text(sid, "pinned")
        bob.log.wait(MessageReceived, text="pinned")
    finally:
        alice.node.close()
        bob.node.close()
        relay.close()
