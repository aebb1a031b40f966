"""The relay's wire protocol: frame schemas, the login proof, limits shared by the relay and its clients.

Everything here travels inside the encrypted link of :mod:`p2pchat.relay.secure`. A connection to the relay
starts with the relay's ``challenge`` (protocol version and a fresh nonce). The
client answers either ``status`` (operators' view, no login) or ``login``: its public key and an RSA-PSS
signature under the context ``relay-login`` over :func:`login_proof_data` (the nonce, the relay address the
client dialled, the client's fingerprint and its network name), plus the role of the connection:

- ``register`` — a control connection of a host that wants to be reachable (``accept_unregistered``: also by
  callers without a ledger record): ``registered``, then ``ping``/``pong`` heartbeats and ``invite`` frames (a
  caller is waiting; answer with the ticket);
- ``call`` — asks to be paired with the registered client whose fingerprint is ``peer``;
- ``answer`` — answers an ``invite`` with its ``ticket``.

Once both sides of a pairing are present each receives ``paired`` (with the session's pair key) and from then
on pair records (:mod:`p2pchat.relay.secure`) carry opaque payloads (end-to-end encrypted chat bytes) both
ways; ``ping`` keeps a quiet side from being dropped as idle. ``error`` (every codec protocol has it) carries the
reason before the relay closes a connection.
"""

from __future__ import annotations

import struct
import time

from p2pchat.display import quote_peer
from p2pchat.foundation.codec import Field, Message, Protocol, opt
from p2pchat.foundation.errors import PeerUnreachable, ProtocolError
from p2pchat.foundation.transport import FramedSocket

VERSION = 2
SUPPORTED_VERSIONS = (2,)
LOGIN_CONTEXT = "relay-login"
NONCE_LEN = 32
TICKET_LEN = 16
FINGERPRINT_LEN = 32
MAX_KEY_DER = 2048            # an 8192-bit RSA public key in DER is about 1.1 KB
MAX_SIGNATURE = 1024
MAX_NETWORK_NAME = 64
DATA_OVERHEAD = 32            # kept from version 1: a session payload is 32 bytes less than the frame limit
MAX_RELAY_FRAME = 4 * 1024 * 1024
DEFAULT_MAX_FRAME = 256 * 1024 + DATA_OVERHEAD
# The largest L of a box record (p2pchat.relay.secure): one chat frame, its head (at most 65,535 bytes) and its
# box (a 1 MiB text or file chunk padded up to 1 MiB + 128 KiB, and its tag), with room to spare.
MAX_BOX_RECORD = 1_310_720
BOX_MAX_FLOOR = 1024          # a ``box_max`` below this is refused: it could not carry a box worth the record
MIN_MAX_FRAME = 1024
MIN_PING_MS = 100             # [redrelay] the shortest heartbeat or keepalive interval a relay may ask of a client
MAX_STATUS_SESSIONS = 200     # sessions listed individually in a status answer; the total is always given
ROLES = ("register", "call", "answer")

COUNTER_NAMES = (
    "connections",        # connections that reached the relay's handler
    "logins",             # valid login proofs
    "login_failures",     # refused login proofs (bad key, bad signature, wrong version)
    "registrations",      # registrations accepted (including re-registrations)
    "pair_requests",      # calls received
    "pair_failures",      # calls that did not end in a session (unknown peer, no answer, limits)
    "sessions",           # sessions paired
    "frames",             # session payloads (pair records) forwarded
    "bytes",              # payload bytes forwarded
    "heartbeats",         # pings from registered hosts
    "keepalives",         # pings from paired clients (they keep a quiet session from being dropped as idle)
    "throttled",          # times a session was slowed down by the per-pair rate limit
    "idle_drops",         # sessions and registrations dropped for silence
    "stalled_drops",      # sessions dropped because one side stopped reading
    "frame_errors",       # connections dropped for malformed or oversized frames
    "status_queries",
    "link_failures",      # connections that did not complete the encrypted link handshake
    "rings_refused",      # calls refused because the caller rang the same callee too often
    "callers_refused",    # calls refused because the caller has no ledger record and the callee wants one
    "hangups",            # calls dropped because the caller hung up before the callee answered
    "connects_refused",   # connections refused because their address opened too many in the last minute
)

_FP = Field(bytes, min_len=FINGERPRINT_LEN, max_len=FINGERPRINT_LEN)
_TICKET = Field(bytes, min_len=TICKET_LEN, max_len=TICKET_LEN)
_VERSION = Field(int, lo=0, hi=65535)
_COUNT = Field(int, lo=0)
_SESSION = Field(dict, fields={
    "a": Field(str, max_len=64),       # caller fingerprint prefix
    "b": Field(str, max_len=64),       # callee fingerprint prefix
    "age_s": _COUNT,
    "idle_s": _COUNT,
    "bytes_ab": _COUNT,
    "bytes_ba": _COUNT,
})
_LIMITS = Field(dict, fields={
    "max_connections": _COUNT,
    "max_per_ip": _COUNT,
    "max_pending": _COUNT,
    "max_frame": _COUNT,
    "bytes_per_second": _COUNT,        # 0 = unlimited
    "idle_timeout_ms": _COUNT,
    "pair_timeout_ms": _COUNT,
    "heartbeat_ms": _COUNT,
    "max_pending_per_callee": _COUNT,
    "max_pending_per_ip": _COUNT,
    "rings_per_minute": _COUNT,
    "connects_per_minute": _COUNT,
    "ledger": Field(str, max_len=80),  # the ledger node that checks callers ("" = none)
})


def relay_protocol(max_frame: int = MAX_RELAY_FRAME) -> Protocol:
    """The relay protocol with a frame limit of ``max_frame`` bytes (session payloads travel in pair records)."""
    if not MIN_MAX_FRAME <= max_frame <= MAX_RELAY_FRAME:
        raise ValueError(f"relay frame limit must be between {MIN_MAX_FRAME} and {MAX_RELAY_FRAME} bytes")
    return Protocol("relay", {
        "challenge": {"version": _VERSION, "nonce": Field(bytes, min_len=NONCE_LEN, max_len=NONCE_LEN)},
        "login": {
            "version": _VERSION,
            "network": Field(str, min_len=1, max_len=MAX_NETWORK_NAME),
            "role": Field(str, max_len=16),
            "key": Field(bytes, max_len=MAX_KEY_DER),
            "sig": Field(bytes, max_len=MAX_SIGNATURE),
            "peer": opt(bytes, min_len=FINGERPRINT_LEN, max_len=FINGERPRINT_LEN),
            "ticket": opt(bytes, min_len=TICKET_LEN, max_len=TICKET_LEN),
            "accept_unregistered": opt(bool),     # register: also take calls from keys in no ledger
            "box_records": opt(bool),             # call/answer: this client sends and takes box records
        },
        # [redrelay] floors a malicious relay cannot go under: pings 10 a second at most; payloads no smaller than
        # the smallest relay's (one record, and one AES-GCM pass, per byte sent would otherwise be asked for)
        "registered": {"heartbeat_ms": Field(int, lo=MIN_PING_MS, hi=3_600_000)},
        "ping": {},
        "pong": {},
        "invite": {"ticket": _TICKET, "caller": _FP},
        "paired": {
            "peer": _FP,
            "max_payload": Field(int, lo=MIN_MAX_FRAME - DATA_OVERHEAD, hi=MAX_PAIR_PAYLOAD),
            "keepalive_ms": Field(int, lo=MIN_PING_MS, hi=3_600_000),
            "pair_key": Field(bytes, min_len=32, max_len=32),
            "box_max": opt(int, lo=BOX_MAX_FLOOR, hi=MAX_BOX_RECORD),   # all three take box records
        },
        "status": {"version": _VERSION},
        "status_result": {
            "version": _VERSION,
            "address": Field(str, max_len=80),
            "relay_key": Field(bytes, min_len=32, max_len=32),
            "uptime_s": _COUNT,
            "registered": _COUNT,
            "pending": _COUNT,
            "session_count": _COUNT,
            "sessions": Field(list, max_len=MAX_STATUS_SESSIONS, items=_SESSION),
            "counters": Field(dict, fields={name: _COUNT for name in COUNTER_NAMES}),
            "limits": _LIMITS,
        },
    }, max_frame=max_frame, bounded_shape=True)


MAX_PAIR_PAYLOAD = 256 * 1024  # largest plaintext of one record (p2pchat.relay.secure.MAX_RECORD_PLAINTEXT)


def max_payload_for(max_frame: int) -> int:
    """Largest session payload (pair record plaintext) a relay with a ``max_frame`` frame limit accepts."""
    return min(max_frame - DATA_OVERHEAD, MAX_PAIR_PAYLOAD)


CLIENT_PROTOCOL = relay_protocol(MAX_RELAY_FRAME)


class RelayError(PeerUnreachable):
    """The relay refused a request or ended a connection; ``str()`` holds the relay's reason."""


def login_proof_data(nonce: bytes, relay_address: str, fingerprint: bytes, network: str) -> bytes:
    """The bytes a client signs (context ``relay-login``) to log in.

    ``nonce ‖ len16(relay address) ‖ relay address ‖ fingerprint ‖ len16(network) ‖ network``: the fresh nonce
    makes a proof useless on any other connection, the relay address (as the client dialled it, ``ip:port``)
    makes it useless at any other relay, and the fingerprint and network say who logs in where.
    """
    if len(nonce) != NONCE_LEN or len(fingerprint) != FINGERPRINT_LEN:
        raise ValueError("login proof needs a 32-byte nonce and a 32-byte fingerprint")
    addr = relay_address.encode()
    net = network.encode()
    return nonce + struct.pack(">H", len(addr)) + addr + fingerprint + struct.pack(">H", len(net)) + net


def check_version(version: int, who: str) -> None:
    """Refuse a relay protocol version this code does not speak, naming the ones it does."""
    if version not in SUPPORTED_VERSIONS:
        spoken = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise ProtocolError(f"{who} speaks relay protocol version {version}; this program speaks version {spoken}")


def short_fp(fingerprint: bytes) -> str:
    """The first 8 hex digits of a fingerprint, as the relay logs and shows them (``3f2a 9c01``)."""
    text = fingerprint.hex()[:8]
    return f"{text[:4]} {text[4:]}"


def expect(conn: FramedSocket, wanted: str, timeout: float, relay_text: str) -> Message:
    """Receive the next frame and require it to be ``wanted``; an ``error`` frame becomes :class:`RelayError`."""
    msg = conn.recv(timeout=timeout)
    if msg.type == "error":
        raise RelayError(f"relay {relay_text}: {quote_peer(msg['reason'])}")
    if msg.type != wanted:
        raise ProtocolError(f"relay {relay_text} sent '{msg.type}' where '{wanted}' was expected")
    return msg


def recv_or_none(conn: FramedSocket, timeout: float) -> Message | None:
    """``conn.recv`` that returns ``None`` when nothing arrived within ``timeout`` instead of raising.

    FramedSocket reports a timeout and a lost connection with the same exception; a timeout is recognised by
    the deadline having passed. Should a close coincide with the deadline, the next call reports it.
    """
    deadline = time.monotonic() + timeout
    try:
        return conn.recv(timeout=timeout)
    except PeerUnreachable:
        if time.monotonic() >= deadline:
            return None
        raise


__all__ = [
    "CLIENT_PROTOCOL", "COUNTER_NAMES", "LOGIN_CONTEXT", "MAX_RELAY_FRAME", "VERSION", "RelayError", "check_version",
    "expect", "login_proof_data", "max_payload_for", "recv_or_none", "relay_protocol", "short_fp",
]
