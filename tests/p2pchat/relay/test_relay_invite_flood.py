"""A malicious relay cannot make a registered host sign without end: every invitation makes the host open an
answer connection and sign a login (RSA-PSS, far dearer than the relay's check of it, which a malicious relay
need not even make). The relay here invites the host again as soon as each answer's login arrives; the host
answers a burst, then at its paced rate (``ANSWERS_BURST``, ``ANSWERS_PER_MINUTE`` in p2pchat/relay/link.py),
and ignores the rest — an honest relay already rations rings per caller and per host far below that."""

from __future__ import annotations

import time

from p2pchat.foundation import crypto
from p2pchat.relay.link import ANSWERS_BURST, ANSWERS_PER_MINUTE
from p2pchat.relay.protocol import TICKET_LEN
from tests.conftest import make_identities
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
