"""The malicious-relay seam works: a RelayServer subclass overriding ``forward`` can record, drop, duplicate,
reorder, alter and cross-wire payloads. (That the chat layer detects each of these is tested with the channel;
here the inner protocol is unprotected, so the tampering shows up as is.)"""

import pytest

from p2pchat.foundation.errors import PeerUnreachable
from tests.conftest import make_identities
from tests.p2pchat.relay.malicious_relay import MaliciousRelay
from tests.p2pchat.relay.relay_helpers import Invites, wait_until


@pytest.fixture(scope="module")
def ids():
    return make_identities(4)


def send_numbers(link, count: int) -> None:
    for n in range(1, count + 1):
        link.send("msg", n=n, body=b"payload %d" % n)


def received_numbers(link, count: int) -> list[int]:
    return [link.recv(timeout=5)["n"] for _ in range(count)]


def evil_pair(env, ids, **kw):
    relay = env.relay(cls=MaliciousRelay, **kw)
    a, b = env.pair(ids[0], ids[1], relay)
    return relay, a, b


def test_an_honest_pass_through_is_the_baseline(env, ids):
    relay, a, b = evil_pair(env, ids, action="record")
    send_numbers(a, 4)
    assert received_numbers(b, 4) == [1, 2, 3, 4]
    assert len(relay.recorded) == 4 and relay.tampered == 0


def test_drop_removes_the_chosen_payload(env, ids):
    _, a, b = evil_pair(env, ids, action="drop", direction=0, index=2)
    send_numbers(a, 4)
    assert received_numbers(b, 3) == [1, 3, 4]


def test_duplicate_delivers_the_chosen_payload_twice(env, ids):
    _, a, b = evil_pair(env, ids, action="duplicate", direction=0, index=2)
    send_numbers(a, 3)
    assert received_numbers(b, 4) == [1, 2, 2, 3]


def test_reorder_swaps_the_chosen_payload_with_the_next(env, ids):
    _, a, b = evil_pair(env, ids, action="reorder", direction=0, index=2)
    send_numbers(a, 4)
    assert received_numbers(b, 4) == [1, 3, 2, 4]


def test_flip_alters_one_bit_of_the_chosen_payload(env, ids):
    _, a, b = evil_pair(env, ids, action="flip", direction=0, index=1)
    a.send("msg", n=1, body=b"pay 100")
    assert b.recv(timeout=5)["body"] == b"pay 101"


def test_the_direction_filter_leaves_the_other_direction_alone(env, ids):
    _, a, b = evil_pair(env, ids, action="drop", direction=1)
    send_numbers(a, 2)
    assert received_numbers(b, 2) == [1, 2]
    b.send("msg", n=9, body=b"lost")
    with pytest.raises(PeerUnreachable, match="did not answer in time"):
        a.recv(timeout=0.3)


def test_crosswire_delivers_into_another_session(env, ids):
    relay = env.relay(cls=MaliciousRelay, action="crosswire", direction=0, index=1)
    a, b = env.pair(ids[0], ids[1], relay)
    other_invites = Invites()
    env.own(other_invites)
    env.register(ids[3], relay, invites=other_invites)
    c = env.call(ids[2], relay, ids[3])
    d = other_invites.get()
    wait_until(lambda: len(relay.sessions()) == 2, what="two sessions")
    c.send("msg", n=1, body=b"meant for d")   # first payload of the newer session goes into the older one
    assert b.recv(timeout=5)["body"] == b"meant for d"
    a.send("msg", n=1, body=b"meant for b")   # and vice versa
    assert d.recv(timeout=5)["body"] == b"meant for b"
    assert relay.tampered == 2


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="unknown action"):
        MaliciousRelay("127.0.0.1", 0, action="mitm")
