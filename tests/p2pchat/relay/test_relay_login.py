"""Clients prove their key to the relay: forged, borrowed, replayed or misdirected proofs are refused, and
nobody can register (and so receive calls) under someone else's fingerprint."""

import pytest

from p2pchat.foundation.errors import PeerUnreachable
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import expect
from tests.conftest import make_identities
from tests.p2pchat.relay.relay_helpers import wait_until


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


def refusal(conn) -> str:
    msg = conn.recv(timeout=5)
    assert msg.type == "error"
    return msg["reason"]


def test_a_valid_proof_registers_the_key(env, ids):
    relay = env.relay()
    conn = env.raw(ids[0], relay, "register")
    assert conn.recv(timeout=5).type == "registered"
    wait_until(lambda: relay.is_registered(ids[0].fingerprint), what="registration")
    assert relay.counters()["logins"] == 1


def test_a_signature_over_the_wrong_data_is_refused(env, ids):
    relay = env.relay()
    conn = env.raw(ids[0], relay, "register", nonce=bytes(32))
    assert "login refused" in refusal(conn)
    assert not relay.is_registered(ids[0].fingerprint)
    assert relay.counters()["login_failures"] == 1


def test_nobody_can_register_under_someone_elses_fingerprint(env, ids):
    victim, mallory = ids[0], ids[1]
    relay = env.relay()
    # Mallory sends the victim's public key but can only sign with her own.
    conn = env.raw(mallory, relay, "register", key=victim.public_der, signer=mallory)
    assert "does not prove ownership of that key" in refusal(conn)
    assert relay.registered_count == 0


def test_a_captured_proof_cannot_be_replayed_on_a_new_connection(env, ids):
    relay = env.relay()
    first = connect_link((relay.host, relay.port), pin=relay.key.public, timeout=5)
    env.own(first)
    old_nonce = expect(first, "challenge", 5, relay.address)["nonce"]
    # A proof made for the first connection's nonce, sent on a second connection (new nonce): refused.
    conn = env.raw(ids[0], relay, "register", nonce=old_nonce)
    assert "login refused" in refusal(conn)


def test_a_proof_made_for_another_relay_is_refused(env, ids):
    relay = env.relay()
    conn = env.raw(ids[0], relay, "register", address="127.0.0.99:8472")
    assert "login refused" in refusal(conn)


def test_a_proof_for_the_advertised_public_address_is_accepted(env, ids):
    relay = env.relay(public_address="192.0.2.7:8472")
    conn = env.raw(ids[0], relay, "register", address="192.0.2.7:8472")
    assert conn.recv(timeout=5).type == "registered"


def test_an_invalid_key_is_refused_with_a_reason(env, ids):
    relay = env.relay()
    conn = env.raw(ids[0], relay, "register", key=b"\x30\x03\x02\x01\x01")
    assert "login refused: the public key is not a valid RSA key" in refusal(conn)


def test_an_unknown_protocol_version_is_refused_naming_the_supported_one(env, ids):
    relay = env.relay()
    conn = env.raw(ids[0], relay, "register", version=9)
    assert "version 9; this program speaks version 2" in refusal(conn)


def test_an_unknown_role_is_refused(env, ids):
    relay = env.relay()
    conn = env.raw(ids[0], relay, "forward")
    assert "unknown role 'forward'" in refusal(conn)


def test_data_before_login_is_refused_and_never_forwarded(env, ids):
    relay = env.relay()
    conn = env.own(connect_link((relay.host, relay.port), pin=relay.key.public, timeout=5))
    expect(conn, "challenge", 5, relay.address)
    conn.send("ping")
    assert "expected a login or a status request first, got 'ping'" in refusal(conn)
    assert relay.counters()["frames"] == 0


def test_a_client_that_never_logs_in_is_dropped_after_the_login_timeout(env, ids):
    relay = env.relay(login_timeout=0.3)
    conn = env.own(connect_link((relay.host, relay.port), pin=relay.key.public, timeout=5))
    expect(conn, "challenge", 5, relay.address)
    assert refusal(conn) == "no login within 0.3 s"
    with pytest.raises(PeerUnreachable, match="closed the connection"):
        conn.recv(timeout=5)
    wait_until(lambda: relay.connection_count == 0, what="the silent connection to be dropped")


def test_a_client_trickling_its_login_is_dropped_after_the_login_timeout(env, ids):
    relay = env.relay(login_timeout=0.3)
    conn = env.own(connect_link((relay.host, relay.port), pin=relay.key.public, timeout=5))
    expect(conn, "challenge", 5, relay.address)
    conn.sock.sendall(b"\x00\x00\x01")  # three bytes of a length prefix, then nothing
    assert refusal(conn) == "no login within 0.3 s"
