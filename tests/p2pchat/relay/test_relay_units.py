"""Sans-IO parts of the relay: the login proof layout, version checks, frame schemas, the rate limiter, the
reconnect backoff and the status text."""

import threading
from pathlib import Path
from types import SimpleNamespace

import msgpack
import pytest

from p2pchat.foundation.codec import HEADER
from p2pchat.foundation.errors import FrameError, PeerUnreachable, ProtocolError
from p2pchat.relay.callers import LedgerCallers, Verdict
from p2pchat.relay.cli import format_status
from p2pchat.relay.link import backoff_delay
from p2pchat.relay.protocol import (
    CLIENT_PROTOCOL,
    COUNTER_NAMES,
    DEFAULT_MAX_FRAME,
    MAX_RELAY_FRAME,
    check_version,
    login_proof_data,
    max_payload_for,
    relay_protocol,
)
from p2pchat.relay.ratelimit import KeyedLimiter, TokenBucket
from p2pchat.relay.secure import MAX_RECORD_PLAINTEXT

NONCE = bytes(range(32))
FP = bytes(range(100, 132))


def test_login_proof_binds_nonce_relay_address_fingerprint_and_network():
    base = login_proof_data(NONCE, "127.0.0.9:8472", FP, "p2pchat")
    assert base.startswith(NONCE)
    variants = [
        login_proof_data(bytes(32), "127.0.0.9:8472", FP, "p2pchat"),
        login_proof_data(NONCE, "127.0.0.9:8473", FP, "p2pchat"),
        login_proof_data(NONCE, "127.0.0.9:8472", bytes(32), "p2pchat"),
        login_proof_data(NONCE, "127.0.0.9:8472", FP, "testnet"),
    ]
    assert len({base, *variants}) == 5


def test_login_proof_fields_are_length_prefixed_so_they_cannot_be_shifted():
    # Moving characters between the address and the network must change the signed bytes.
    a = login_proof_data(NONCE, "1.2.3.4:5", FP, "ab")
    b = login_proof_data(NONCE, "1.2.3.4:5a", FP, "b")
    assert a != b


def test_login_proof_matches_the_vector_in_the_docs():
    data = login_proof_data(NONCE, "127.0.0.9:8472", FP, "p2pchat")
    assert data == NONCE + b"\x00\x0e127.0.0.9:8472" + FP + b"\x00\x07p2pchat"
    docs = (Path(__file__).resolve().parents[3] / "docs" / "relay.md").read_text()
    block = docs.split("N = `p2pchat` → (hex)")[1].split("```")[1]
    assert bytes.fromhex("".join(block.split())) == data


def test_unsupported_version_is_refused_naming_the_supported_one():
    check_version(2, "the relay")
    with pytest.raises(ProtocolError, match="speaks relay protocol version 7; this program speaks version 2"):
        check_version(7, "the relay")


def test_a_frame_over_the_limit_is_refused_before_allocation_and_payloads_fit_one_record():
    proto = relay_protocol(4096)
    with pytest.raises(FrameError, match="over the 4096-byte limit"):
        proto.reader().feed(HEADER.pack(10_000_000))
    assert max_payload_for(4096) == 4064
    assert max_payload_for(DEFAULT_MAX_FRAME) == MAX_RECORD_PLAINTEXT == 256 * 1024
    assert max_payload_for(MAX_RELAY_FRAME) == MAX_RECORD_PLAINTEXT      # one session payload is one record


def test_relay_frame_limit_must_be_sane():
    with pytest.raises(ValueError):
        relay_protocol(10)
    with pytest.raises(ValueError):
        relay_protocol(MAX_RELAY_FRAME + 1)


@pytest.mark.parametrize("fields, complaint", [
    ({"t": "login", "version": 1, "network": "p2pchat", "role": "call", "key": b"k", "sig": b"s",
      "peer": b"short"}, "too short"),
    ({"t": "invite", "ticket": b"t" * 16}, "'caller' is missing"),
    ({"t": "login", "version": 1, "network": "", "role": "call", "key": b"k", "sig": b"s"}, "too short"),
    ({"t": "dial", "host": "10.0.0.1"}, "unknown message type 'dial'"),
])
def test_malformed_relay_frames_are_refused_with_a_reason(fields, complaint):
    with pytest.raises(FrameError, match=complaint):
        CLIENT_PROTOCOL.decode(msgpack.packb(fields, use_bin_type=True))


def test_token_bucket_allows_a_burst_then_paces_to_the_rate():
    bucket = TokenBucket(rate=1000, burst=2000, now=0.0)
    assert bucket.reserve(1500, now=0.0) == 0
    assert bucket.reserve(500, now=0.0) == 0
    assert bucket.reserve(500, now=0.0) == pytest.approx(0.5)
    # Waiting callers queue: the next one waits for its own share too.
    assert bucket.reserve(500, now=0.0) == pytest.approx(1.0)
    # After a long pause the bucket refills, but never above the burst.
    assert bucket.reserve(2000, now=100.0) == 0
    assert bucket.reserve(1, now=100.0) > 0


def test_token_bucket_passes_a_unit_bigger_than_the_burst_after_its_share_of_time():
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.reserve(300, now=0.0) == pytest.approx(2.0)


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens():
    full = [backoff_delay(n, 0.5, 8.0, 1.0) for n in range(1, 8)]
    assert full == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff_delay(3, 0.5, 8.0, 0.0) == 1.0
    # With any jitter the next delay is never shorter than the previous one before the cap.
    assert backoff_delay(2, 0.5, 8.0, 0.0) >= backoff_delay(1, 0.5, 8.0, 1.0)


def test_status_text_names_sessions_by_fingerprint_prefix_with_byte_counts():
    status = {
        "version": 2, "address": "127.0.0.9:8472", "relay_key": bytes(range(32)),
        "uptime_s": 4000, "registered": 2, "pending": 1,
        "session_count": 1,
        "sessions": [{"a": "3f2a 9c01", "b": "77ab 1e02", "age_s": 12, "idle_s": 1, "bytes_ab": 12_300,
                      "bytes_ba": 999}],
        "counters": dict.fromkeys(COUNTER_NAMES, 0) | {"sessions": 5},
        "limits": {"max_connections": 512, "max_per_ip": 16, "max_pending": 64, "max_frame": 262176,
                   "bytes_per_second": 0, "idle_timeout_ms": 90000, "pair_timeout_ms": 15000,
                   "heartbeat_ms": 20000, "max_pending_per_callee": 8, "max_pending_per_ip": 8,
                   "rings_per_minute": 3, "connects_per_minute": 600, "ledger": ""},
    }
    text = format_status(status)
    assert "relay 127.0.0.9:8472" in text and "up 66 min 40 s" in text
    assert "registered hosts: 2" in text and "pending pairings: 1" in text and "sessions: 1" in text
    assert "3f2a 9c01 -> 77ab 1e02" in text and "sent 12.3 KB / received 999 B" in text
    assert "sessions 5" in text and "unlimited per session" in text


def test_ringing_is_refused_after_the_burst_and_allowed_again_as_tokens_come_back():
    rings = KeyedLimiter(per_minute=3, burst=3, max_keys=2)
    assert [rings.try_take("a→b", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rings.try_take("a→b", 100.0) == pytest.approx(20.0)     # one token back after 60/3 s
    assert rings.try_take("c→b", 100.0) == 0.0                      # another caller is not affected
    assert rings.try_take("a→b", 120.0) == 0.0
    rings.try_take("d→b", 121.0)
    assert len(rings) == 2                                          # bounded: the least recently used is dropped


class _Ledger:
    """Stands in for a ledger node's lookups by fingerprint (the real one is tested in
    tests/security/test_hardening_relay_attacks.py); can hold a lookup until released."""

    def __init__(self, known: set[bytes]) -> None:
        self.known = known
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Semaphore(0)
        self.fail = False

    def find(self, query: str, *, by: str | None = None) -> SimpleNamespace | None:
        self.calls += 1
        self.inside.release()
        self.gate.wait(10)
        if self.fail:
            raise PeerUnreachable("ledger down")
        fp = bytes.fromhex(query)
        return SimpleNamespace(fingerprint=fp) if fp in self.known and by == "fp" else None


def test_ledger_checks_are_cached_bounded_and_never_queue_more_than_the_limit():
    known, stranger = bytes(32), b"\x01" * 32
    ledger = _Ledger({known})
    callers = LedgerCallers(ledger, "ledger test", cache_size=2, max_inflight=1)
    assert callers.check(known) is Verdict.KNOWN and callers.check(stranger) is Verdict.UNKNOWN
    assert callers.check(known) is Verdict.KNOWN and ledger.calls == 2            # answered from the cache
    callers.check(b"\x02" * 32)
    callers.check(b"\x03" * 32)
    assert ledger.calls == 4 and callers.check(known) is Verdict.KNOWN and ledger.calls == 5   # evicted, asked again
    # While one lookup runs, another caller is told the relay is busy instead of waiting for it.
    ledger.gate.clear()
    worker = threading.Thread(target=callers.check, args=(b"\x04" * 32,))
    worker.start()
    assert ledger.inside.acquire(timeout=10)
    ledger.inside = threading.Semaphore(0)
    assert callers.check(b"\x05" * 32) is Verdict.BUSY
    ledger.gate.set()
    worker.join()
    ledger.fail = True
    assert callers.check(b"\x06" * 32) is Verdict.UNAVAILABLE
    ledger.fail = False
    assert callers.check(b"\x06" * 32) is Verdict.UNKNOWN                         # a failure is not cached
