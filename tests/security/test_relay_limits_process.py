"""The figures of docs/relay.md's limits table against a running ``p2pchat relay`` process, each set through its
command-line option (small values, so each holds within a second or two): connections in all, per address and
per minute; calls waiting in all and per caller key; the frame size; a registration's heartbeat; the callee's
time to answer; a silent session side; box records off. The rest of the table has its process test in
tests/security/test_hardening_relay_attacks.py (per caller address, per callee, rings, ledger records, hang-ups)
and tests/security/test_relay_stalls.py (login timeout, send timeout)."""

from __future__ import annotations

import pytest

from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.identity import Identity
from p2pchat.relay import RelayError
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import expect
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.relay.relay_helpers import wait_until
from tests.security import test_hardening_relay_attacks as attacks
from tests.security.test_hardening_relay_attacks import exchange, start

pytestmark = pytest.mark.slow

relays = attacks.relays


@pytest.fixture(scope="module")
def ids() -> list[Identity]:
    return make_identities(6)


def silent_link(relay: attacks.Relay, source_ip: str):
    conn = connect_link((relay.host, relay.port), pin=relay.key, source_ip=source_ip, timeout=5)
    relay.closables.append(conn)
    expect(conn, "challenge", 5, relay.address)
    return conn


def test_connections_in_all_per_address_and_per_minute(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--max-connections", "8", "--max-per-ip", "3", "--connects-per-minute", "40",
                  "--login-timeout", "30")
    one = free_loopback_ip()
    for _ in range(3):
        silent_link(relay, one)
    with pytest.raises(RelayError, match=f"too many connections from {one}"):
        silent_link(relay, one)                              # --max-per-ip 3
    hasty = free_loopback_ip()
    for _ in range(4):                                        # --connects-per-minute 40: 4 at once
        connect_link((relay.host, relay.port), pin=relay.key, source_ip=hasty, timeout=5).close()
    with pytest.raises(RelayError, match=rf"too many new connections from {hasty}; try again in \d+ s"):
        connect_link((relay.host, relay.port), pin=relay.key, source_ip=hasty, timeout=5)
    held = [silent_link(relay, free_loopback_ip()) for _ in range(5)]   # 3 + 5 = 8 held: --max-connections 8
    with pytest.raises(RelayError, match="at its connection limit"):
        silent_link(relay, free_loopback_ip())
    held[0].close()                                           # one place free again: served at once

    def status() -> dict | None:
        try:
            return relay.status()
        except RelayError:
            return None                                       # the relay has not seen the close yet
    limits = wait_until(status, 10, what="the relay to answer again")["limits"]
    assert limits["max_connections"] == 8 and limits["max_per_ip"] == 3


def test_calls_waiting_in_all_and_per_caller_key_and_the_callees_time_to_answer(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--max-pending", "5", "--pair-timeout", "2", "--rings-per-minute", "30")
    for host in ids[3:5]:
        expect(relay.raw(host, "register"), "registered", 10, relay.address)     # never answer
    waiting = [relay.raw(ids[0], "call", peer=ids[3].fingerprint) for _ in range(4)]
    wait_until(lambda: relay.status()["pending"] == 4, 10, what="four waiting calls")
    with pytest.raises(RelayError, match="this key already has 4 pairings waiting"):   # per caller key: 4
        expect(relay.raw(ids[0], "call", peer=ids[4].fingerprint), "paired", 10, relay.address)
    relay.raw(ids[1], "call", peer=ids[4].fingerprint)
    wait_until(lambda: relay.status()["pending"] == 5, 10, what="five waiting calls")
    with pytest.raises(RelayError, match="too many pairings waiting"):                 # --max-pending 5
        expect(relay.raw(ids[2], "call", peer=ids[4].fingerprint), "paired", 10, relay.address)
    for conn in waiting:                                                               # --pair-timeout 2
        with pytest.raises(RelayError, match="did not answer the relay within 2 s"):
            expect(conn, "paired", 10, relay.address)


def test_frame_size_heartbeat_silence_and_box_records_off(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--max-frame", "4096", "--heartbeat", "0.5", "--idle-timeout", "1",
                  "--no-box-records")
    silent_host = relay.raw(ids[5], "register")
    assert expect(silent_host, "registered", 10, relay.address)["heartbeat_ms"] == 500
    with pytest.raises(RelayError, match=r"no heartbeat for 1.5 s; registration dropped"):
        expect(silent_host, "pong", 10, relay.address)                 # 3 heartbeats without a ping
    relay.register(ids[1], accept_unregistered=True)
    raw = relay.raw(ids[0], "call", peer=ids[1].fingerprint)
    paired = expect(raw, "paired", 10, relay.address)
    assert paired["box_max"] is None                                   # --no-box-records
    link = relay.invites.get(timeout=20)
    with pytest.raises(RelayError, match=r"silent for 1 s"):           # the raw side sends no keepalives
        expect(raw, "pong", 10, relay.address)
    with pytest.raises(RelayError, match=r"silent for 1 s \(your peer went silent\)"):
        link.recv(timeout=10)
    raw = relay.raw(ids[2], "call", peer=ids[1].fingerprint)
    expect(raw, "paired", 10, relay.address)
    relay.invites.get(timeout=20)
    raw.send_frame(HEADER.pack(50_000_000))                            # a frame header announcing 50 MB
    with pytest.raises(RelayError, match="over the 4096-byte limit"):
        expect(raw, "pong", 10, relay.address)
    honest = relay.call(ids[3], ids[1])                                 # the relay serves the next pair
    exchange(honest, relay.invites.get(timeout=20), 1)


def test_a_connection_keeps_the_one_role_it_logged_in_with(relays, tmp_path, ids):
    """A second login on a registration, or a login in a paired session, ends that connection with a reason (the
    session's other side is told); the relay serves the next pair."""
    relay = start(relays, tmp_path)
    again = {"version": 2, "network": "p2pchat", "role": "answer", "key": ids[0].public_der, "sig": b"s" * 64,
             "ticket": bytes(16)}
    reg = relay.raw(ids[0], "register")
    expect(reg, "registered", 10, relay.address)
    reg.send("login", **again)
    with pytest.raises(RelayError, match="'login' is not allowed on a registration connection"):
        expect(reg, "pong", 10, relay.address)
    relay.register(ids[1], accept_unregistered=True)
    raw = relay.raw(ids[2], "call", peer=ids[1].fingerprint)
    expect(raw, "paired", 10, relay.address)
    link = relay.invites.get(timeout=20)
    raw.send("login", **again)
    with pytest.raises(RelayError, match="'login' is not allowed during a relay session"):
        expect(raw, "pong", 10, relay.address)
    with pytest.raises(RelayError, match="your peer sent an invalid frame"):
        link.recv(timeout=10)
    exchange(relay.call(ids[3], ids[1]), relay.invites.get(timeout=20), 1)
