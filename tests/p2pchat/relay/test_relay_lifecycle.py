"""Restarts and shutdown: clean errors on both ends, reconnection with backoff, and close() that joins every
thread (the autouse fixture checks no relay thread outlives any test)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from p2pchat.relay import RelayError, RelayRegistration, RelayServer, open_relay_link
from p2pchat.relay.protocol import expect
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.p2pchat.relay.relay_helpers import INNER, Invites, relay_threads, wait_until


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


def test_a_relay_restart_mid_session_gives_both_ends_a_clean_error_and_the_registration_returns(env, ids):
    relay = env.relay(heartbeat=0.5)
    states: list[tuple[bool, str]] = []
    reg = env.register(ids[1], relay, min_backoff=0.05, max_backoff=0.2,
                       on_state=lambda ok, text: states.append((ok, text)))
    a = env.call(ids[0], relay, ids[1])
    b = env.invites.get()
    a.send("msg", n=1, body=b"before")
    assert b.recv(timeout=5)["n"] == 1

    relay.close()
    for link in (a, b):
        with pytest.raises(RelayError, match=f"relay {relay.address}: the relay is shutting down"):
            link.recv(timeout=5)
    wait_until(lambda: not reg.registered, what="the registration to notice")
    assert any(not ok and "the relay is shutting down" in text and "retrying in" in text for ok, text in states)

    again = env.relay(host=relay.host, port=relay.port, heartbeat=0.5, key=relay.key)   # same key file
    wait_until(lambda: reg.registered and reg.connects >= 2, what="the registration to come back")
    assert again.is_registered(ids[1].fingerprint)
    assert (True, f"registered at relay {relay.address}") in states[1:]
    a2 = env.call(ids[0], again, ids[1])
    b2 = env.invites.get()
    a2.send("msg", n=2, body=b"after")
    assert b2.recv(timeout=5)["n"] == 2


def test_a_registration_retries_with_growing_backoff_until_the_relay_appears(env, ids):
    host = free_loopback_ip()
    port = free_port(host)
    delays: list[float] = []
    invites = Invites()
    reg = env.own(RelayRegistration(ids[1], host, port, on_invite=invites, inner_protocol=INNER, timeout=2,
                                    min_backoff=0.02, max_backoff=0.16,
                                    on_state=lambda ok, text: ok or delays.append(reg.next_retry)))
    reg.start()
    wait_until(lambda: reg.failures >= 5, what="five failed attempts")
    assert "cannot connect" in reg.state_text and "failed, retrying in" in reg.state_text and not reg.registered
    assert len(delays) >= 5          # every failed attempt is reported
    # Doubling with jitter in [½, 1] of the base: never shorter than the previous one, capped.
    growing = delays[:4]
    assert growing == sorted(growing) and max(delays) <= 0.16
    relay = env.relay(host=host, port=port)
    wait_until(lambda: reg.registered, what="the registration once the relay is up")
    assert reg.failures == 0 and relay.is_registered(ids[1].fingerprint)


def test_closing_the_relay_releases_a_caller_waiting_for_an_answer(env, ids):
    relay = env.relay(pair_timeout=30)
    silent = env.raw(ids[1], relay, "register")
    expect(silent, "registered", 5, relay.address)
    with ThreadPoolExecutor(1) as pool:
        calling = pool.submit(env.call, ids[0], relay, ids[1])
        wait_until(lambda: relay.pending_count == 1, what="the call to wait")
        relay.close()
        with pytest.raises(RelayError, match="the relay is shutting down"):
            calling.result(timeout=10)


def test_closing_everything_leaves_no_thread_behind(ids):
    relay = RelayServer(free_loopback_ip(), 0, heartbeat=0.1).start()
    invites = Invites()
    reg = RelayRegistration(ids[1], relay.host, relay.port, on_invite=invites, inner_protocol=INNER,
                            accept_unregistered=True).start()
    assert reg.wait_registered(10)
    link = open_relay_link(ids[0], relay.host, relay.port, ids[1].fingerprint, inner_protocol=INNER)
    other = invites.get()
    assert relay_threads() != []
    link.close()
    other.close()
    reg.close()
    relay.close()
    assert relay_threads() == []


def test_closing_a_registration_unregisters_it(env, ids):
    relay = env.relay()
    reg = env.register(ids[1], relay)
    reg.close()
    assert not reg.registered and reg.state_text == "registration closed"
    wait_until(lambda: not relay.is_registered(ids[1].fingerprint), what="the relay to drop the registration")
    with pytest.raises(RelayError, match="nobody with fingerprint"):
        env.call(ids[0], relay, ids[1])
