"""What a malicious relay can make its clients do is bounded. It cannot make a registered host sign without
end: every invitation makes the host open an answer connection and sign a login (RSA-PSS, far dearer than the
relay's check of it, which a malicious relay need not even make). The relay here invites the host again as soon as
each answer's login arrives; the host answers a burst, then at its paced rate (``ANSWERS_BURST``,
``ANSWERS_PER_MINUTE`` in p2pchat/relay/link.py), and ignores the rest — an honest relay already rations rings per
caller and per host far below that. Nor can it ask a client for one-byte payloads or a ping every few
milliseconds (the floors of ``paired`` and ``registered``)"""

from __future__ import annotations

import time

import msgpack
import pytest

from p2pchat.foundation import crypto
from p2pchat.foundation.errors import FrameError
from p2pchat.relay.link import ANSWERS_BURST, ANSWERS_PER_MINUTE
from p2pchat.relay.protocol import CLIENT_PROTOCOL, DATA_OVERHEAD, MIN_MAX_FRAME, MIN_PING_MS, TICKET_LEN
from p2pchat.relay.server import RelayServer
from tests.conftest import free_loopback_ip, make_identities
from tests.p2pchat.relay.relay_helpers import wait_until


def test_a_relay_inviting_a_host_in_a_loop_gets_a_burst_of_answers_then_the_paced_rate(env) -> None:
    host, caller = make_identities(2)
    relay = env.relay()
    env.register(host, relay)
    reg = next(iter(relay._registry.values()))
    logins = relay.counters()["logins"]
    started = time.monotonic()
    for _ in range(50):
        before = relay.counters()["logins"]
        relay._send(reg.client.conn, "invite", ticket=crypto.random_bytes(TICKET_LEN), caller=caller.fingerprint)
        try:     # the next invitation as soon as the host answered this one (a refused login costs it nothing)
            wait_until(lambda b=before: relay.counters()["logins"] > b, 0.1, interval=0.005, what="an answer")
        except AssertionError:
            pass
    # an honest burst of calls is answered …
    wait_until(lambda: relay.counters()["logins"] - logins >= ANSWERS_BURST, 10, what="the burst of answers")
    elapsed = time.monotonic() - started
    answered = relay.counters()["logins"] - logins
    assert answered <= ANSWERS_BURST + ANSWERS_PER_MINUTE * elapsed / 60 + 1, (answered, elapsed)   # … no more


@pytest.mark.parametrize(("field", "value", "complaint"), [
    ("max_payload", 1, "max_payload"), ("keepalive_ms", 10, "keepalive_ms")])
def test_a_relay_cannot_ask_for_one_byte_records_or_a_ping_every_few_milliseconds(field, value, complaint) -> None:
    """``paired`` and ``registered`` carry numbers the client then obeys: a malicious relay asking for 1-byte
    payloads (one record and one AES-GCM pass per byte the chat sends) or pings every 10 ms is refused."""
    paired = {"t": "paired", "peer": b"p" * 32, "max_payload": 4096, "keepalive_ms": 1000, "pair_key": b"k" * 32}
    with pytest.raises(FrameError, match=complaint):
        CLIENT_PROTOCOL.decode(msgpack.packb({**paired, field: value}, use_bin_type=True))
    assert CLIENT_PROTOCOL.decode(msgpack.packb({**paired, field: {"max_payload": MIN_MAX_FRAME - DATA_OVERHEAD,
                                                                   "keepalive_ms": MIN_PING_MS}[field]},
                                                use_bin_type=True)).type == "paired"
    with pytest.raises(FrameError, match="heartbeat_ms"):
        CLIENT_PROTOCOL.decode(msgpack.packb({"t": "registered", "heartbeat_ms": 10}, use_bin_type=True))


def test_an_honest_relay_never_asks_for_less_than_the_floors(env) -> None:
    for below in ({"heartbeat": 0.05}, {"idle_timeout": 0.2}):
        with pytest.raises(ValueError, match="at least"):
            RelayServer(free_loopback_ip(), 0, **below)
    host, caller = make_identities(2)
    relay = env.relay(heartbeat=MIN_PING_MS / 1000, idle_timeout=4 * MIN_PING_MS / 1000)    # the floors
    env.register(host, relay)                                 # the registration decodes its "registered"
    link = env.call(caller, relay, host)                      # and the call its "paired"
    assert link.max_payload >= MIN_MAX_FRAME - DATA_OVERHEAD
