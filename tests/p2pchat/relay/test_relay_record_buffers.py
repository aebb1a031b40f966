"""What a relay connection can make the record splitter hold (p2pchat.relay.secure._Opener; docs/relay.md, memory
bound): a long record gets a buffer of its own size only inside a relay session; before it (a stranger that has not
logged in and been paired) the opener holds no more than what arrived."""

from __future__ import annotations

import gc

import pytest

from p2pchat.foundation.errors import FrameError
from p2pchat.relay.protocol import MAX_BOX_RECORD
from p2pchat.relay.secure import (
    KIND_FLAGS,
    LONG_RECORD,
    MAX_RECORD,
    PAIR_FLAG,
    RECORD_HEADER,
    PairKeys,
    _Opener,
    seal_records,
)
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until

LINK_KEY, PAIR_KEY = bytes(32), bytes(range(32))


@pytest.mark.parametrize("word", [MAX_RECORD, LONG_RECORD, PAIR_FLAG | MAX_RECORD],
                         ids=["longest link record", "64 KiB link record", "pair record before pairing"])
def test_a_connection_outside_a_session_makes_the_opener_hold_only_what_it_sent(word):
    """A stranger announcing a long record and then stalling (slowloris across many connections) commits only
    the bytes it sent, however the rest trickles in."""
    opener = _Opener(LINK_KEY)
    sent = 0
    for piece in (RECORD_HEADER.pack(word) + b"\x00\x08", bytes(1), bytes(1000), bytes(30_000)):
        assert opener.feed(piece) == []
        sent += len(piece)
        assert opener.pending_view() is None
        assert opener.held() <= sent


def test_a_box_record_header_before_pairing_is_refused_before_anything_is_held():
    opener = _Opener(LINK_KEY)
    with pytest.raises(FrameError, match="did not agree on box records"):
        opener.feed(RECORD_HEADER.pack(KIND_FLAGS | MAX_BOX_RECORD) + b"\x00\x40")
    assert opener.held() == 0


@pytest.mark.parametrize("side", ["client", "relay"])
def test_in_a_session_a_long_record_is_read_into_a_buffer_of_its_own_and_arrives_whole(side):
    """The fast path stays: once paired, the rest of a long record is read where it will be opened or forwarded."""
    opener = _Opener(LINK_KEY)
    if side == "client":
        opener.pair = PairKeys(PAIR_KEY, PAIR_KEY)
    else:
        opener.forward_pairs = True
    payload = bytes(range(256)) * 1000
    record, _ = seal_records(PAIR_KEY, 0, payload, PAIR_FLAG)
    record = bytes(record)
    assert opener.feed(record[:100]) == []
    view = opener.pending_view()
    assert view is not None and len(view) == len(record) - 100
    view[:] = record[100:]
    got = opener.filled(len(view))
    assert got == [("pair", payload if side == "client" else record)]
    assert opener.held() == 0


def _openers() -> list[_Opener]:
    return [o for o in gc.get_objects() if isinstance(o, _Opener)]


def _new_openers_holding(existing: list[_Opener]) -> list[int]:
    """What each record splitter made since ``existing`` was listed holds, where it holds anything (in this test:
    the relay's for the stalled connections; the clients' hold nothing)."""
    return [o.held() for o in _openers() if o.held() and not any(o is e for e in existing)]


def test_strangers_announcing_long_records_before_login_make_a_real_relay_hold_only_what_they_sent(env, identities):
    """Real sockets: connections that finish the link handshake, announce a 256 KiB record, send two bytes more
    and stall hold six bytes each at the relay (not a buffer of the announced size); an honest pair is served."""
    from tests.p2pchat.relay.test_relay_limits import assert_pair_works, open_silent

    gc.collect()
    existing = _openers()         # (other tests' in this process, if any are still alive)
    relay = env.relay()
    flooder = free_loopback_ip()
    stalled = [open_silent(env, relay, flooder) for _ in range(6)]
    for conn in stalled:
        conn.sock.sendall(RECORD_HEADER.pack(MAX_RECORD) + b"\x00\x00")
    held = wait_until(lambda: (h := _new_openers_holding(existing)) and len(h) >= len(stalled) and h,
                      what="the relay to read the stalled connections' bytes")
    assert max(held) <= RECORD_HEADER.size + 2
    assert_pair_works(env, relay, identities[0], identities[1])
