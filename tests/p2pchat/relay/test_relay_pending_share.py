"""The relay's shared limit on calls waiting for an answer is no cheaper to use up than its connections: eight
addresses, each within every per-address and per-key limit (two keys registered and never answering, eight
calls to the other addresses' silent keys), filled the 64 waiting calls of the default and every honest call
was refused "too many pairings waiting" for as long as they kept it up (15 s a call, renewed). Now the default is
half the connections (256): the same flood waits, and an honest call is paired."""

from __future__ import annotations

from p2pchat.relay.protocol import expect
from p2pchat.relay.server import RelayServer
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.relay.relay_helpers import wait_until
from tests.p2pchat.relay.test_relay_limits import assert_pair_works


def test_eight_addresses_within_every_per_address_limit_cannot_fill_the_relays_waiting_calls(env) -> None:
    keys = make_identities(18)
    relay = env.relay(pair_timeout=60, bytes_per_second=None)
    assert relay.max_pending >= relay.max_connections // 2
    flood = keys[:16]
    addresses = [free_loopback_ip() for _ in range(8)]
    for i, key in enumerate(flood):                  # two silent hosts per address
        reg = env.raw(key, relay, "register", source_ip=addresses[i // 2])
        assert expect(reg, "registered", 10, relay.address)
    calls = 0
    for i, key in enumerate(flood):                  # each key calls four hosts of other addresses
        for k in range(1, 5):
            callee = flood[(i + 2 * k) % 16]
            env.raw(key, relay, "call", source_ip=addresses[i // 2], peer=callee.fingerprint)
            calls += 1
    wait_until(lambda: relay.pending_count == calls, 20, what=f"{calls} waiting calls")
    assert calls == 64                               # what used to be the whole relay's share
    assert_pair_works(env, relay, keys[16], keys[17])


def test_the_default_share_of_waiting_calls_is_half_the_connections() -> None:
    relay = RelayServer(free_loopback_ip(), 0)
    try:
        assert relay.max_pending == relay.max_connections // 2 == 256
    finally:
        relay._frame_server.close()
