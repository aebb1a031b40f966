"""Pairing through the relay and forwarding: both directions, order, large and batched frames, refusals, and
the FramedSocket-compatible link the chat node uses."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from p2pchat.foundation import crypto
from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import FrameError
from p2pchat.foundation.transport import FramedSocket, connect
from p2pchat.relay import RelayError
from p2pchat.relay.protocol import expect
from tests.conftest import make_identities
from tests.p2pchat.relay.malicious_relay import MaliciousRelay
from tests.p2pchat.relay.relay_helpers import INNER, wait_until


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


def test_caller_and_callee_exchange_many_frames_in_order_both_ways(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    for n in range(300):
        a.send("msg", n=n, body=n.to_bytes(2, "big") * (n % 7))
    assert [b.recv(timeout=5)["n"] for _ in range(300)] == list(range(300))
    for n in range(300):
        b.send("msg", n=-n, body=b"")
    assert [a.recv(timeout=5)["n"] for _ in range(300)] == [-n for n in range(300)]
    wait_until(lambda: relay.counters()["frames"] == 600, what="the relay to count 600 frames")


def test_the_link_names_the_relay_path_and_the_peer_fingerprint(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    assert a.peer_text == b.peer_text == f"relay {relay.address}"
    assert a.peer == b.peer == (relay.host, relay.port)
    assert a.peer_fingerprint == ids[1].fingerprint and b.peer_fingerprint == ids[0].fingerprint


def test_the_link_offers_the_framed_socket_members_the_chat_node_uses(env, ids):
    relay = env.relay()
    a, _ = env.pair(ids[0], ids[1], relay)
    direct = env.own(connect(relay.host, relay.port, INNER, timeout=5))
    assert isinstance(direct, FramedSocket)
    for name in ("send", "send_frame", "send_error", "recv", "close", "peer", "peer_text", "protocol", "timeout",
                 "local", "__enter__", "__exit__"):
        assert hasattr(direct, name) and hasattr(a, name), name
        assert callable(getattr(direct, name)) == callable(getattr(a, name)), name
    assert a.protocol is INNER
    a.timeout = 7.5
    assert a.timeout == 7.5


def test_either_side_can_call_the_other(env, ids):
    relay = env.relay()
    env.register(ids[0], relay)
    env.register(ids[1], relay)
    ab = env.call(ids[0], relay, ids[1])
    ba = env.call(ids[1], relay, ids[0])
    first, second = env.invites.get(), env.invites.get()
    by_peer = {first.peer_fingerprint: first, second.peer_fingerprint: second}
    ab.send("msg", n=1, body=b"a to b")
    ba.send("msg", n=2, body=b"b to a")
    assert by_peer[ids[0].fingerprint].recv(timeout=5)["body"] == b"a to b"
    assert by_peer[ids[1].fingerprint].recv(timeout=5)["body"] == b"b to a"


def test_the_relay_sees_only_the_opaque_bytes_the_clients_sent(env, ids):
    relay = env.relay(cls=MaliciousRelay, action="record")
    a, b = env.pair(ids[0], ids[1], relay)
    # Random bytes stand in for AES-GCM ciphertext: the relay passes them on without parsing them.
    secret = crypto.random_bytes(300)
    frame = INNER.encode("msg", n=1, body=secret)
    a.send_frame(frame)
    assert b.recv(timeout=5)["body"] == secret
    assert [(side, payload) for _, side, payload in relay.recorded] == [(0, frame)]


def test_a_frame_larger_than_the_relay_payload_limit_is_split_and_reassembled(env, ids):
    relay = env.relay(max_frame=4096)
    a, b = env.pair(ids[0], ids[1], relay)
    body = crypto.random_bytes(100_000)
    a.send("msg", n=1, body=body)
    assert b.recv(timeout=5)["body"] == body
    wait_until(lambda: relay.counters()["bytes"] > 100_000, what="the relay to count the bytes")
    assert relay.counters()["frames"] > 20


def test_several_frames_in_one_send_are_received_as_separate_messages(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    a.send_frame(b"".join(INNER.encode("msg", n=n, body=b"x") for n in range(5)))
    assert [b.recv(timeout=5)["n"] for _ in range(5)] == [0, 1, 2, 3, 4]


def test_frames_split_across_payloads_are_reassembled_as_one_stream(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    frame = INNER.encode("msg", n=5, body=b"split")
    for cut in (1, 4, 7):
        a.send_frame(frame[:cut])
        a.send_frame(frame[cut:])
        assert b.recv(timeout=5)["n"] == 5


def test_a_payload_after_a_lone_length_prefix_is_the_body_of_that_frame(env, ids):
    # The second payload happens to look like a whole frame of its own; it must still be read as the body
    # announced by the first payload (here: not valid msgpack), never as a separate message.
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    inner = INNER.encode("msg", n=1, body=b"smuggled")
    a.send_frame(HEADER.pack(len(inner)))
    a.send_frame(inner)
    with pytest.raises(FrameError, match="not valid msgpack"):
        b.recv(timeout=5)


def test_a_malformed_chat_frame_is_reported_by_the_receiving_link(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    a.send_frame(INNER.encode("msg", n=1, body=b"ok")[:4] + b"\xc1" * 20)
    with pytest.raises(FrameError):
        b.recv(timeout=5)


def test_calling_a_fingerprint_nobody_registered_is_refused(env, ids):
    relay = env.relay()
    with pytest.raises(RelayError, match=r"nobody with fingerprint .* is registered at this relay"):
        env.call(ids[0], relay, ids[1])
    assert relay.counters()["pair_failures"] == 1


def test_a_key_is_never_paired_with_itself(env, ids):
    relay = env.relay()
    env.register(ids[0], relay)
    with pytest.raises(RelayError, match="cannot be paired with itself"):
        env.call(ids[0], relay, ids[0])


def test_a_peer_registered_for_another_network_is_not_paired(env, ids):
    relay = env.relay()
    env.register(ids[1], relay, network="testnet")
    with pytest.raises(RelayError, match="registered at this relay for network 'testnet', not 'p2pchat'"):
        env.call(ids[0], relay, ids[1])


def test_a_callee_that_does_not_answer_fails_the_call_after_the_pair_timeout(env, ids):
    relay = env.relay(pair_timeout=0.3)
    silent = env.raw(ids[1], relay, "register")          # registered, but ignores invitations
    expect(silent, "registered", 5, relay.address)
    with pytest.raises(RelayError, match=r"did not answer the relay within 0\.3 s"):
        env.call(ids[0], relay, ids[1])
    assert silent.recv(timeout=5).type == "invite"
    assert relay.pending_count == 0


def test_an_invitation_ticket_works_once_and_only_for_the_invited_key(env, ids):
    relay = env.relay()
    callee = env.raw(ids[1], relay, "register")
    expect(callee, "registered", 5, relay.address)
    with ThreadPoolExecutor(1) as pool:
        calling = pool.submit(env.call, ids[0], relay, ids[1])
        invite = expect(callee, "invite", 5, relay.address)
        assert invite["caller"] == ids[0].fingerprint
        thief = env.raw(ids[2], relay, "answer", ticket=invite["ticket"])
        assert "not addressed to this key" in thief.recv(timeout=5)["reason"]
        answer = env.raw(ids[1], relay, "answer", ticket=invite["ticket"])
        paired = expect(answer, "paired", 5, relay.address)
        assert paired["peer"] == ids[0].fingerprint
        to_callee, to_caller = crypto.relay_pair_keys(paired["pair_key"])
        answer.set_pair_keys(to_caller, to_callee, paired["max_payload"])      # the callee's side of the session
        link = calling.result(timeout=10)
    again = env.raw(ids[1], relay, "answer", ticket=invite["ticket"])
    assert "unknown, has expired" in again.recv(timeout=5)["reason"]
    link.send("msg", n=7, body=b"hi")
    assert INNER.decode(expect(answer, "pair", 5, relay.address)["payload"][4:])["n"] == 7


def test_when_one_side_closes_the_other_is_told(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    a.close()
    with pytest.raises(RelayError, match="your peer left the relay session"):
        b.recv(timeout=5)
    wait_until(lambda: relay.sessions() == [], what="the session to end")


def test_a_half_close_delivers_everything_sent_before_the_peer_is_told(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    for n in range(50):
        a.send("msg", n=n, body=b"bye" * 100)
    a.shutdown_write()
    assert [b.recv(timeout=5)["n"] for _ in range(50)] == list(range(50))
    with pytest.raises(RelayError, match="your peer left"):
        b.recv(timeout=5)


def test_a_quiet_session_is_kept_alive_by_keepalives_past_the_idle_timeout(env, ids):
    relay = env.relay(idle_timeout=1.0)
    a, b = env.pair(ids[0], ids[1], relay)
    # Each side pings every 0.25 s; 12 pings (6 a side) span more than the idle timeout.
    wait_until(lambda: relay.counters()["keepalives"] >= 12, what="keepalives")
    a.send("msg", n=1, body=b"still here")
    assert b.recv(timeout=5)["n"] == 1
    assert relay.counters()["idle_drops"] == 0


def test_a_registration_stays_alive_on_heartbeats(env, ids):
    relay = env.relay(heartbeat=0.25)
    reg = env.register(ids[1], relay)
    wait_until(lambda: relay.counters()["heartbeats"] >= 5, what="heartbeats")   # longer than the 0.75 s window
    assert relay.is_registered(ids[1].fingerprint) and reg.registered and reg.connects == 1


def test_registering_again_replaces_the_previous_registration(env, ids):
    relay = env.relay()
    old = env.raw(ids[1], relay, "register")
    expect(old, "registered", 5, relay.address)
    new = env.raw(ids[1], relay, "register")
    expect(new, "registered", 5, relay.address)
    assert "registered again from a new connection" in old.recv(timeout=5)["reason"]
    assert relay.registered_count == 1


def test_a_registration_without_heartbeats_is_dropped(env, ids):
    relay = env.relay(heartbeat=0.1)
    silent = env.raw(ids[1], relay, "register")
    expect(silent, "registered", 5, relay.address)
    assert "no heartbeat for 0.3 s" in silent.recv(timeout=5)["reason"]
    wait_until(lambda: not relay.is_registered(ids[1].fingerprint), what="the registration to be dropped")


def test_send_nowait_never_blocks_and_keeps_the_stream_in_order_when_the_peer_reads_late(env, ids):
    """The chat node's reader thread answers through ``send_nowait``: it must never wait for a peer that does not
    read, and whatever it handed over reaches the peer in order once the peer reads again."""
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    body = bytes(range(256)) * 256                  # 64 KiB a frame: the socket buffers fill within a few frames
    taken: list[int] = []
    refused = 0
    while len(taken) < 400 and refused < 20:         # a refused frame is offered again (same n) until 20 refusals:
        n = len(taken)                               # the buffers may drain between tries, so n stays in order
        if a.send_nowait(INNER.encode("msg", n=n, body=body)):
            taken.append(n)
        else:
            refused += 1                             # the connection is backed up: send_nowait says so at once
    assert refused >= 1 and taken, "b reads nothing, so the buffers between a and the relay must fill up"
    def blocking_sends() -> None:                    # a blocking send after a refusal goes out after the rest;
        for n in range(len(taken), len(taken) + 3):  # it waits for room, so it runs while b reads
            a.send("msg", n=n, body=b"")
    sender = threading.Thread(target=blocking_sends, name="blocking-sends")
    sender.start()
    got = [b.recv(timeout=10)["n"] for _ in range(len(taken) + 3)]
    sender.join(10)
    assert not sender.is_alive()
    assert got == taken + list(range(len(taken), len(taken) + 3))
    assert taken == list(range(len(taken)))


def test_the_link_counts_messages_already_received_so_a_burst_can_share_one_receipt(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    a.send_frame(b"".join(INNER.encode("msg", n=n, body=b"") for n in range(5)))
    first = b.recv(timeout=5)
    assert first["n"] == 0
    assert b.buffered_messages >= 1                    # the other four came in the same relay frame
    rest = [b.recv(timeout=5)["n"] for _ in range(4)]
    assert rest == [1, 2, 3, 4] and b.buffered_messages == 0
