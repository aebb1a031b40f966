"""The relay's limits: connections per address, pending pairings, frame size, rate, idle and stalled sides,
and floods that must not stop it serving a legitimate pair."""

import threading

import pytest

from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import PeerUnreachable, UserError
from p2pchat.foundation.transport import connect
from p2pchat.relay import RelayError
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import CLIENT_PROTOCOL, expect
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.relay.relay_helpers import INNER, wait_until


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


def open_silent(env, relay, source_ip):
    """A connection that reads the challenge and then says nothing."""
    conn = env.own(connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=source_ip, timeout=5))
    assert conn.recv(timeout=5).type == "challenge"
    return conn


def reason_of(conn) -> str:
    msg = conn.recv(timeout=5)
    assert msg.type == "error", msg
    return msg["reason"]


def assert_pair_works(env, relay, caller, callee):
    a, b = env.pair(caller, callee, relay)
    a.send("msg", n=42, body=b"through")
    assert b.recv(timeout=5)["n"] == 42
    b.send("msg", n=43, body=b"and back")
    assert a.recv(timeout=5)["n"] == 43


def test_connections_per_address_are_limited_and_other_addresses_still_served(env, ids):
    relay = env.relay(max_per_ip=3)
    flooder = free_loopback_ip()
    for _ in range(3):
        open_silent(env, relay, flooder)
    # Refused before the link exists: one clear error frame, naming only the client's own address.
    with pytest.raises(RelayError, match=f"too many connections from {flooder}"):
        connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=flooder, timeout=5)
    assert_pair_works(env, relay, ids[0], ids[1])


def test_the_rate_limit_slows_a_session_down_without_losing_or_reordering_frames(env, ids):
    relay = env.relay(bytes_per_second=100_000)
    a, b = env.pair(ids[0], ids[1], relay)
    for n in range(30):
        a.send("msg", n=n, body=bytes(5000))       # 150 KB: 50 KB over the one-second burst
    assert [b.recv(timeout=10)["n"] for _ in range(30)] == list(range(30))
    assert relay.counters()["throttled"] > 0


def test_pending_pairings_are_limited_in_all(env, ids):
    relay = env.relay(max_pending=1)
    callee = env.raw(ids[1], relay, "register")                     # never answers
    expect(callee, "registered", 5, relay.address)
    env.raw(ids[0], relay, "call", peer=ids[1].fingerprint)
    wait_until(lambda: relay.pending_count == 1, what="the first call to wait")
    with pytest.raises(RelayError, match="too many pairings waiting"):
        env.call(ids[2], relay, ids[1])


def test_pending_pairings_are_limited_per_caller(env, ids):
    relay = env.relay(max_pending_per_client=2)
    callee = env.raw(ids[1], relay, "register")
    expect(callee, "registered", 5, relay.address)
    for _ in range(2):
        env.raw(ids[0], relay, "call", peer=ids[1].fingerprint)
    wait_until(lambda: relay.pending_count == 2, what="two calls to wait")
    with pytest.raises(RelayError, match="already has 2 pairings waiting"):
        env.call(ids[0], relay, ids[1])
    # Another caller is not affected by the first one's backlog.
    env.raw(ids[2], relay, "call", peer=ids[1].fingerprint)
    wait_until(lambda: relay.pending_count == 3, what="the other caller's call to wait")


def paired_raw_caller(env, relay, caller, callee):
    """A hand-driven caller paired with a well-behaved callee link."""
    env.register(callee, relay)
    raw = env.raw(caller, relay, "call", peer=callee.fingerprint)
    expect(raw, "paired", 5, relay.address)
    return raw, env.invites.get()


def test_an_oversized_frame_ends_that_session_only(env, ids):
    relay = env.relay(max_frame=4096)
    raw, link = paired_raw_caller(env, relay, ids[0], ids[1])
    raw.send_frame(HEADER.pack(50_000_000))       # inside the link: a frame header announcing 50 MB
    assert "over the 4096-byte limit" in reason_of(raw)
    with pytest.raises(RelayError, match="your peer sent an invalid frame"):
        link.recv(timeout=5)
    assert relay.counters()["frame_errors"] == 1
    assert_pair_works(env, relay, ids[2], ids[0])


def test_a_silent_side_ends_the_session_after_the_idle_timeout(env, ids):
    relay = env.relay(idle_timeout=1.0)      # the link pings every 0.25 s: ample margin on a busy machine
    raw, link = paired_raw_caller(env, relay, ids[0], ids[1])    # the raw side sends no keepalives
    assert "silent for 1 s" in reason_of(raw)
    with pytest.raises(RelayError, match=r"silent for 1 s \(your peer went silent\)"):
        link.recv(timeout=5)
    assert relay.counters()["idle_drops"] == 1


def test_a_side_that_stops_reading_ends_the_session_instead_of_filling_the_relay(env, ids):
    relay = env.relay(send_timeout=0.5, bytes_per_second=None)
    a, _ = env.pair(ids[0], ids[1], relay)     # the callee never reads
    frame = INNER.encode("msg", n=0, body=bytes(64 * 1024))
    outcome: list[Exception] = []

    def flood() -> None:
        try:
            for _ in range(4000):              # 256 MB at most; the relay gives up long before
                a.send_frame(frame)
        except UserError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=flood)
    sender.start()
    sender.join(timeout=60)
    assert not sender.is_alive()
    assert relay.counters()["stalled_drops"] == 1
    # The sender learns why (its sends may also have failed once the relay stopped listening to it).
    assert all(isinstance(exc, PeerUnreachable) for exc in outcome)
    with pytest.raises(RelayError, match="your peer stopped receiving; the relay closed the session"):
        a.recv(timeout=5)
    # The relay never held more for the stalled side than the socket buffers take (a few MB, at most 64 MB with
    # this machine's largest buffers), not the 256 MB the sender tried to push.
    assert relay.counters()["bytes"] < 64 * 1024 * 1024
    assert_pair_works(env, relay, ids[2], ids[0])


def test_a_flood_of_silent_connections_and_bad_logins_does_not_stop_a_legitimate_pair(env, ids):
    relay = env.relay(max_per_ip=4, max_connections=64, login_timeout=2.0)
    for _ in range(6):
        flooder = free_loopback_ip()
        for _ in range(4):
            open_silent(env, relay, flooder)
    garbage = env.own(connect(relay.host, relay.port, CLIENT_PROTOCOL, timeout=5))     # no link handshake
    garbage.sock.sendall(b"\xff" * 64)
    bad_logins: list[str] = []

    def bad_login_loop() -> None:
        for _ in range(20):
            conn = env.raw(ids[2], relay, "register", signer=ids[0], source_ip="127.0.0.1")
            bad_logins.append(conn.recv(timeout=5)["reason"])
            conn.close()

    attacker = threading.Thread(target=bad_login_loop)
    attacker.start()
    try:
        assert_pair_works(env, relay, ids[0], ids[1])
    finally:
        attacker.join(timeout=60)
    assert len(bad_logins) == 20 and all("login refused" in r for r in bad_logins)
    # The silent connections are dropped after the login timeout; only the pair's three connections remain.
    wait_until(lambda: relay.connection_count == 3, what="the flood to be dropped")


def test_new_connections_per_address_are_rationed_before_any_link_work(env, ids):
    relay = env.relay(connects_per_minute=30)            # 3 at once, then one every 2 s
    hasty = free_loopback_ip()
    for _ in range(3):
        connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=hasty, timeout=5).close()
    with pytest.raises(RelayError, match=rf"too many new connections from {hasty}; try again in \d+ s"):
        connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=hasty, timeout=5)
    assert relay.counters()["connects_refused"] == 1 and relay.counters()["link_failures"] == 0
    assert_pair_works(env, relay, ids[0], ids[1])          # other addresses are served
