"""The relay server: pairs two clients that proved their keys and forwards opaque frames between them.

Built on :class:`~p2pchat.foundation.transport.FrameServer` (one thread per connection). Each connection
first sets up the encrypted link (:mod:`p2pchat.relay.secure`), then proves its key inside it (see
:mod:`p2pchat.relay.protocol`). A *registration* keeps a host reachable; a *call*
names a registered fingerprint, the relay invites that host with a one-time ticket, and the host's *answer*
connection completes the pairing. The two connection threads of a session then each read one side and write
the other, so at most one frame per direction is ever held in memory: a slow reader blocks the writer (TCP
backpressure reaches the sender), and one that stays stalled past the send timeout ends the session.

Who may ring whom: a callee that did not accept unregistered callers is rung only for callers its
:class:`~p2pchat.relay.callers.CallerCheck` knows; one key rings one callee at most ``rings_per_minute`` times a
minute; pending calls are capped in all, per caller key, per caller address and per callee; a call whose caller
hangs up is dropped at once; answers do not count against their address.

The relay never dials out, never pairs a client that has not logged in or a callee that is not registered,
never pairs a key with itself, and logs metadata only (fingerprint prefixes, addresses, byte counts, times).
:meth:`RelayServer.forward` is the one place payloads pass; tests subclass it to build a malicious relay.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import RELAY_PORT, format_address
from p2pchat.foundation.allocator import keep_freed_buffers
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import CryptoError, FrameError, PeerUnreachable, ProtocolError, UserError
from p2pchat.foundation.transport import FramedSocket, FrameServer
from p2pchat.relay.callers import CallerCheck, Verdict
from p2pchat.relay.protocol import (
    COUNTER_NAMES,
    DEFAULT_MAX_FRAME,
    LOGIN_CONTEXT,
    MAX_BOX_RECORD,
    MAX_RELAY_FRAME,
    MAX_STATUS_SESSIONS,
    MIN_PING_MS,
    NONCE_LEN,
    ROLES,
    TICKET_LEN,
    VERSION,
    check_version,
    login_proof_data,
    max_payload_for,
    recv_or_none,
    relay_protocol,
    short_fp,
)
from p2pchat.relay.ratelimit import KeyedLimiter, TokenBucket
from p2pchat.relay.secure import (
    KIND_FLAGS,
    PAIR_FLAG,
    PAIR_TYPE,
    RECORD_HEADER,
    RelayKey,
    SecureSocket,
    open_record,
    record_payload_len,
    seal_records,
    server_handshake,
)

log = logging.getLogger("p2pchat.relay")

HEARTBEAT_GRACE = 3          # a registration silent for this many heartbeats is dropped
KEEPALIVE_FRACTION = 4       # paired clients ping every idle_timeout / 4
NOTICE_TIMEOUT = 1.0         # longest the relay waits to hand a closing notice to a client
SHUTDOWN_NOTICE = "the relay is shutting down"
CHECK_INTERVAL = 1.0         # a pump thread blocked in a read notices a closed session within this time
LINGER_SECONDS = 2.0         # how long a closed session's connection waits for the client to close first
SHUTDOWN_GRACE = 1.0         # how long close() lets clients hang up after the shutdown notice
FLUSH_BYTES = 64 * 1024      # a pump thread writes out what it forwarded at least this often (bigger frames alone)


class PairingRefused(UserError):
    """The relay cannot pair this call (unknown peer, no answer, limits); sent to the client as an error."""


@dataclass(frozen=True)
class _Client:
    """A connection whose key is proven."""

    fingerprint: bytes
    network: str
    conn: SecureSocket
    box_records: bool = False       # announced in its login: it sends and takes box records

    @property
    def short(self) -> str:
        return short_fp(self.fingerprint)


@dataclass
class _Registration:
    client: _Client
    since: float
    accept_unregistered: bool = False


class _AddressSlot:
    """One connection counted against its source address until it proves to be an answer (see ``_handle``)."""

    def __init__(self, server: RelayServer, ip: str) -> None:
        self._server = server
        self.ip = ip
        self._held = True

    def release(self) -> None:
        with self._server._lock:
            if self._held:
                self._held = False
                left = self._server._per_ip[self.ip] - 1
                if left:
                    self._server._per_ip[self.ip] = left
                else:
                    del self._server._per_ip[self.ip]


@dataclass
class _Pending:
    """A call waiting for the callee's answer connection."""

    ticket: bytes
    caller: _Client
    callee: bytes
    created: float
    done: threading.Event = field(default_factory=threading.Event)
    session: RelaySession | None = None
    # Wakes the caller's thread, which waits on its socket (to notice a hang-up) and on this at once.
    waker: tuple[socket.socket, socket.socket] = field(default_factory=socket.socketpair)

    @property
    def caller_ip(self) -> str:
        return self.caller.conn.peer[0]

    def finish(self) -> None:
        """Mark the call decided (paired, refused or shut down) and wake the caller's thread."""
        self.done.set()
        try:
            self.waker[1].send(b"\0")
        except OSError:
            pass        # the caller's thread already left and closed it


class RelaySession:
    """Two paired connections: side 0 is the caller, side 1 the callee.

    Payloads are pair records, sealed by one client for the other under the session's pair keys: an honest relay
    passes them on unopened with :meth:`deliver`. :meth:`open_record` and :meth:`seal_record` let a test relay see
    and rewrite them (it must then reseal everything it delivers, since it keeps its own record counters).
    :meth:`close` ends the session once, with a reason for each side that should hear one.
    """

    def __init__(self, server: RelayServer, session_id: int, caller: _Client, callee: _Client,
                 bucket: TokenBucket | None, pair_key: bytes) -> None:
        self.server = server
        self.pair_key = pair_key
        # keys[side] seals what side ``side`` sends (caller→callee, callee→caller).
        self._pair_keys = crypto.relay_pair_keys(pair_key)
        self._opened = [0, 0]
        self._sealed = [0, 0]
        self.id = session_id
        self.network = caller.network
        self.fingerprints = (caller.fingerprint, callee.fingerprint)
        self.conns = (caller.conn, callee.conn)
        self.bucket = bucket
        self.started = time.monotonic()
        self.last_heard = [self.started, self.started]
        self.bytes_from = [0, 0]
        self.frames_from = [0, 0]
        self.reason: str | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    @property
    def caller(self) -> bytes:
        return self.fingerprints[0]

    @property
    def callee(self) -> bytes:
        return self.fingerprints[1]

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True if the session closed meanwhile (used for rate-limit pauses)."""
        return self._closed.wait(seconds)

    def deliver(self, to_side: int, payload: bytes) -> bool:
        """Send one opaque payload (a whole pair record) to side ``to_side`` (0 caller, 1 callee).

        Called from a pump thread, the record joins that thread's outbox and is written with the rest of the
        records that arrived together (one system call for many small ones). Writing blocks while that side's
        socket is full (backpressure); if it stays stalled for the send timeout the session is closed. Returns
        False if the session is closed.
        """
        if self.closed:
            return False
        outbox: _Outbox | None = getattr(_pump_state, "outbox", None)
        size = record_payload_len(payload)      # counted as the chat bytes it carries
        if outbox is not None:
            outbox.add(self, to_side, payload, size)
            return True
        return self._write(to_side, [payload], size)

    def open_record(self, from_side: int, record: bytes) -> bytes:
        """The plaintext of the next pair record side ``from_side`` sent (for test relays)."""
        plain = open_record(self._pair_keys[from_side], self._opened[from_side], record)
        self._opened[from_side] += 1
        return plain

    def seal_record(self, to_side: int, plaintext: bytes) -> bytes:
        """``plaintext`` as the next pair record(s) side ``to_side`` will accept (for test relays)."""
        sealed, count = seal_records(self._pair_keys[1 - to_side], self._sealed[to_side], plaintext, PAIR_FLAG)
        self._sealed[to_side] += count
        return bytes(sealed)

    def _write(self, to_side: int, frames: list[bytes], payload_bytes: int) -> bool:
        if self.closed:
            return False
        try:
            self.conns[to_side].send_raw(frames[0] if len(frames) == 1 else b"".join(frames))
        except PeerUnreachable:
            if not self.closed:
                self.server.count("stalled_drops")
                self.close({1 - to_side: "your peer stopped receiving; the relay closed the session",
                            to_side: "you stopped receiving; the relay closed the session"},
                           f"side {to_side} stopped receiving")
            return False
        self.server.count_forwarded(len(frames), payload_bytes)
        return True

    def close(self, notices: Mapping[int, str], why: str) -> None:
        """End the session (once): tell each side in ``notices`` why, then half-close both connections (each
        pump thread notices within a second, drains its side until the client hangs up, and returns)."""
        with self._lock:
            if self._closed.is_set():
                return
            self.reason = why
            self._closed.set()
        for side, text in notices.items():
            _notify(self.conns[side], text)
        # FIN after the notice, not a close: closing with unread input (a keepalive in flight) would send a
        # reset that can destroy the notice. Each pump thread drains its side until the client closes.
        for conn in self.conns:
            _shutdown_write(conn)
        self.server._session_ended(self)

    def describe(self, now: float) -> dict[str, Any]:
        """Metadata for the status view: fingerprint prefixes, age, idle time, bytes each way."""
        return {"a": short_fp(self.caller), "b": short_fp(self.callee),
                "age_s": int(now - self.started), "idle_s": int(now - max(self.last_heard)),
                "bytes_ab": self.bytes_from[0], "bytes_ba": self.bytes_from[1]}


class _Outbox:
    """Frames a pump thread has forwarded but not yet written; :meth:`flush` writes each run of frames for the
    same side with one ``send_frame``. Holds at most what arrived in one read plus ``FLUSH_BYTES``."""

    def __init__(self) -> None:
        self._items: list[tuple[RelaySession, int, bytes, int]] = []
        self.size = 0

    def add(self, session: RelaySession, to_side: int, frame: bytes, payload_bytes: int) -> None:
        self._items.append((session, to_side, frame, payload_bytes))
        self.size += len(frame)

    def flush(self) -> None:
        items, self._items, self.size = self._items, [], 0
        start = 0
        while start < len(items):
            session, to_side = items[start][0], items[start][1]
            end = start
            while end < len(items) and items[end][0] is session and items[end][1] == to_side:
                end += 1
            run = items[start:end]
            session._write(to_side, [item[2] for item in run], sum(item[3] for item in run))
            start = end


_pump_state = threading.local()   # ``outbox`` of the pump thread running on this thread, if any


def _notify(conn: FramedSocket, text: str) -> None:
    """Best effort, bounded in time: a client that does not read must not hold up the relay."""
    conn.timeout = min(conn.timeout, NOTICE_TIMEOUT)
    conn.send_error(text)


def _shutdown_write(conn: FramedSocket) -> None:
    """Send FIN after what was written so far; reading still works (see :func:`_linger`)."""
    try:
        conn.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _linger(conn: FramedSocket, seconds: float) -> None:
    """After a FIN, read and drop whatever the client still sends until it closes (or ``seconds`` pass), so the
    final close does not reset the connection before the client has read the relay's last frames."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            if recv_or_none(conn, remaining) is None:
                return
        except FrameError:
            continue
        except PeerUnreachable:
            return


class RelayServer:
    """A relay listening on ``host:port``; ``start()`` it, ``close()`` stops and joins every thread.

    Limits: ``max_connections`` in all and ``max_per_ip`` per source address (refused at accept),
    ``max_pending`` calls waiting for an answer (``max_pending_per_client`` per caller key; half the connections by
    default, so that a few addresses cannot use it up more cheaply than the connections), ``login_timeout``
    to prove a key, ``heartbeat`` interval of registrations (dropped after 3 silent intervals),
    ``pair_timeout`` for the callee to answer, ``idle_timeout`` of silence from one side of a session,
    ``bytes_per_second`` per session (both directions together; ``None`` = unlimited), ``max_frame`` bytes per
    frame, ``send_timeout`` for a side that does not read. ``public_address`` ("ip:port") is the address
    clients dial if it differs from the listening one (port forwarding); login proofs may name either.
    ``key`` is the static link key (fresh if not given); ``callers`` checks callers' ledger records (``None``: no
    caller can be checked); ``max_pending_per_callee``/``max_pending_per_ip`` cap waiting calls per host and per
    caller address; ``rings_per_minute`` rations calls from one key to one host; ``connects_per_minute`` rations
    new connections per address. ``max_per_ip`` counts every connection of an address except answers.
    """

    def __init__(self, host: str, port: int = RELAY_PORT, *, max_connections: int = 512, max_per_ip: int = 16,
                 max_pending: int = 256, max_pending_per_client: int = 4, login_timeout: float = 10.0,
                 heartbeat: float = 20.0, idle_timeout: float = 90.0, pair_timeout: float = 15.0,
                 bytes_per_second: int | None = 4_000_000, max_frame: int = DEFAULT_MAX_FRAME,
                 send_timeout: float = 10.0, public_address: str | None = None, key: RelayKey | None = None,
                 callers: CallerCheck | None = None, max_pending_per_callee: int = 8, max_pending_per_ip: int = 8,
                 rings_per_minute: int = 3, connects_per_minute: int = 600, box_records: bool = True) -> None:
        for name, value in (("max_connections", max_connections), ("max_per_ip", max_per_ip),
                            ("max_pending", max_pending), ("max_pending_per_client", max_pending_per_client),
                            ("max_pending_per_callee", max_pending_per_callee),
                            ("max_pending_per_ip", max_pending_per_ip), ("rings_per_minute", rings_per_minute),
                            ("connects_per_minute", connects_per_minute)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        for name, seconds in (("login_timeout", login_timeout), ("heartbeat", heartbeat),
                              ("idle_timeout", idle_timeout), ("pair_timeout", pair_timeout),
                              ("send_timeout", send_timeout)):
            if seconds <= 0:
                raise ValueError(f"{name} must be positive")
        # clients refuse to ping more often than every MIN_PING_MS (protocol.py): a relay that needed it could not
        # be kept alive by them
        for name, seconds, least in (("heartbeat", heartbeat, MIN_PING_MS / 1000),
                                     ("idle_timeout", idle_timeout, KEEPALIVE_FRACTION * MIN_PING_MS / 1000)):
            if seconds < least:
                raise ValueError(f"{name} must be at least {least:g} s")
        if bytes_per_second is not None and bytes_per_second < 1:
            raise ValueError("bytes_per_second must be positive (or None for no limit)")
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_pending = max_pending
        self.max_pending_per_client = max_pending_per_client
        self.login_timeout = login_timeout
        self.heartbeat = heartbeat
        self.idle_timeout = idle_timeout
        self.pair_timeout = pair_timeout
        self.bytes_per_second = bytes_per_second
        self.max_frame = max_frame
        self.max_payload = max_payload_for(max_frame)
        self.box_records = box_records
        self.send_timeout = send_timeout
        self.public_address = public_address
        self.key = key or RelayKey()
        self.callers = callers
        self.max_pending_per_callee = max_pending_per_callee
        self.max_pending_per_ip = max_pending_per_ip
        self.rings_per_minute = rings_per_minute
        # A caller may ring one callee ``rings_per_minute`` times in a burst, then once per 60/rings_per_minute s.
        self._rings = KeyedLimiter(rings_per_minute, rings_per_minute)
        # New connections per source address (a tenth of a minute's worth at once): each costs the relay a link
        # handshake before the client has proved anything.
        self.connects_per_minute = connects_per_minute
        self._connects = KeyedLimiter(connects_per_minute, max(1, connects_per_minute // 10))
        self._per_ip: dict[str, int] = {}
        self._inbound = relay_protocol(max_frame)
        # Frames the relay writes (status answers, notices) are bounded by the client's limit, not the inbound one.
        self._outbound = relay_protocol(MAX_RELAY_FRAME)
        self._lock = threading.Lock()
        self._registry: dict[tuple[str, bytes], _Registration] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._sessions: dict[int, RelaySession] = {}
        self._next_session = 0
        self._stopping = False
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._counter_lock = threading.Lock()
        self._started = time.monotonic()
        self._frame_server = FrameServer(host, port, self._inbound, self._handle, name="relay",
                                         max_connections=max_connections, timeout=send_timeout)
        self.host = host
        self.port = self._frame_server.port

    # --- lifecycle and views -----------------------------------------------------------------------------

    def start(self) -> RelayServer:
        keep_freed_buffers()     # forwarded records of up to 256 KiB reuse the heap, not fresh mappings each
        self._started = time.monotonic()
        self._frame_server.start()
        log.info("relay listening on %s", self.address)
        return self

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def close(self) -> None:
        """Tell every client the relay is going away, close every connection and join every thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            pending = list(self._pending.values())
            self._pending.clear()
            sessions = list(self._sessions.values())
            registrations = list(self._registry.values())
        for p in pending:
            _notify(p.caller.conn, SHUTDOWN_NOTICE)
            _shutdown_write(p.caller.conn)
            p.finish()
        for session in sessions:
            session.close({0: SHUTDOWN_NOTICE, 1: SHUTDOWN_NOTICE}, "relay shutting down")
        for reg in registrations:
            _notify(reg.client.conn, SHUTDOWN_NOTICE)
            _shutdown_write(reg.client.conn)
        # Clients hang up when they read the notice; whoever has not after the grace period is cut off.
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self._frame_server.connection_count and time.monotonic() < deadline:
            time.sleep(0.01)
        self._frame_server.close()
        log.info("relay %s stopped", self.address)

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counters(self) -> dict[str, int]:
        with self._counter_lock:
            return dict(self._counters)

    def count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += amount

    def count_forwarded(self, frames: int, payload_bytes: int) -> None:
        with self._counter_lock:
            self._counters["frames"] += frames
            self._counters["bytes"] += payload_bytes

    def sessions(self) -> list[RelaySession]:
        """The sessions currently paired (a malicious test relay uses this to cross-wire them)."""
        with self._lock:
            return list(self._sessions.values())

    def is_registered(self, fingerprint: bytes, network: str = "p2pchat") -> bool:
        with self._lock:
            return (network, fingerprint) in self._registry

    @property
    def registered_count(self) -> int:
        with self._lock:
            return len(self._registry)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def connection_count(self) -> int:
        return self._frame_server.connection_count

    def status(self) -> dict[str, Any]:
        """Everything the ``status`` frame reports: counts, session metadata, counters and limits."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
            registered = len(self._registry)
            pending = len(self._pending)
        return {
            "version": VERSION,
            "address": self.address,
            "relay_key": self.key.public,
            "uptime_s": int(now - self._started),
            "registered": registered,
            "pending": pending,
            "session_count": len(sessions),
            "sessions": [s.describe(now) for s in sessions[:MAX_STATUS_SESSIONS]],
            "counters": self.counters(),
            "limits": {
                "max_connections": self.max_connections, "max_per_ip": self.max_per_ip,
                "max_pending": self.max_pending, "max_frame": self.max_frame,
                "bytes_per_second": self.bytes_per_second or 0,
                "idle_timeout_ms": int(self.idle_timeout * 1000), "pair_timeout_ms": int(self.pair_timeout * 1000),
                "heartbeat_ms": int(self.heartbeat * 1000),
                "max_pending_per_callee": self.max_pending_per_callee, "max_pending_per_ip": self.max_pending_per_ip,
                "rings_per_minute": self.rings_per_minute, "connects_per_minute": self.connects_per_minute,
                "ledger": self.callers.description[:80] if self.callers is not None else "",
            },
        }

    def encode_frame(self, type_: str, **fields: Any) -> bytes:
        """A complete relay frame as the relay sends it."""
        return self._outbound.encode(type_, **fields)

    # --- the seam for malicious-relay tests --------------------------------------------------------------

    def forward(self, session: RelaySession, sender: int, payload: bytes) -> None:
        """Pass one opaque payload from side ``sender`` of ``session`` to the other side.

        An honest relay delivers it unchanged. Tests override this to drop, duplicate, delay, reorder, alter
        or cross-wire payloads (with :meth:`RelaySession.deliver` and :meth:`sessions`); the end-to-end
        channel must detect each of those.
        """
        session.deliver(1 - sender, payload)

    # --- connection handling -----------------------------------------------------------------------------

    def _send(self, conn: FramedSocket, type_: str, **fields: Any) -> None:
        conn.send_frame(self._outbound.encode(type_, **fields))

    def _handle(self, plain: FramedSocket) -> None:
        """Count the connection against its address, run the link handshake, then serve everything inside the
        encrypted link: no reason, fingerprint or ticket ever leaves the relay in clear."""
        self.count("connections")
        ip = plain.peer[0]
        wait = self._connects.try_take(ip, time.monotonic())
        if wait > 0:
            self.count("connects_refused")
            _notify(plain, f"too many new connections from {ip}; try again in {math.ceil(wait)} s")
            return
        with self._lock:
            crowded = self._per_ip.get(ip, 0) >= self.max_per_ip
            if not crowded:
                self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        if crowded:
            # Before the link exists, so in clear; it names nothing but the client's own address.
            log.warning("relay: refused %s: too many connections from that address", ip)
            _notify(plain, f"too many connections from {ip}")
            return
        slot = _AddressSlot(self, ip)
        try:
            started = time.monotonic()
            try:
                conn = server_handshake(plain, self.key, timeout=self.login_timeout)
            except UserError as exc:
                self.count("link_failures")
                log.info("relay: no link with %s: %s", plain.peer_text, exc)
                return
            try:
                self._serve_link(conn, slot, self.login_timeout - (time.monotonic() - started))
            except FrameError as exc:
                self.count("frame_errors")
                log.warning("relay: bad frame from %s: %s", conn.peer_text, exc)
                conn.send_error(str(exc))
            except PeerUnreachable as exc:
                log.info("relay: %s", exc)
            except UserError as exc:
                log.warning("relay: %s: %s", conn.peer_text, exc)
                conn.send_error(str(exc))
        finally:
            slot.release()

    def _serve_link(self, conn: SecureSocket, slot: _AddressSlot, login_time: float) -> None:
        nonce = crypto.random_bytes(NONCE_LEN)
        self._send(conn, "challenge", version=VERSION, nonce=nonce)
        first = recv_or_none(conn, max(0.0, login_time))
        if first is None:
            _notify(conn, f"no login within {self.login_timeout:g} s")
            return
        if first.type == "status":
            self._serve_status(conn, first)
            return
        if first.type != "login":
            raise ProtocolError(f"expected a login or a status request first, got '{first.type}'")
        client = self._authenticate(conn, nonce, first)
        role = first["role"]
        if role == "register":
            self._serve_registration(client, bool(first["accept_unregistered"]))
        elif role == "call":
            self._serve_call(client, first["peer"])
        else:
            self._serve_answer(client, first["ticket"], slot)

    def _authenticate(self, conn: SecureSocket, nonce: bytes, login: Message) -> _Client:
        try:
            check_version(login["version"], "this client")
            if login["role"] not in ROLES:
                raise ProtocolError(f"unknown role '{login['role'][:16]}' (expected register, call or answer)")
            key = crypto.load_public(login["key"])
        except (ProtocolError, CryptoError) as exc:
            self.count("login_failures")
            raise ProtocolError(f"login refused: {exc}") from None
        fingerprint = crypto.fingerprint(login["key"])
        addresses = [format_address(*conn.local)]
        if self.public_address:
            addresses.append(self.public_address)
        if not any(crypto.is_valid_signature(key, LOGIN_CONTEXT,
                                             login_proof_data(nonce, addr, fingerprint, login["network"]),
                                             login["sig"]) for addr in addresses):
            self.count("login_failures")
            log.warning("login refused from %s: bad proof for key %s", conn.peer[0], short_fp(fingerprint))
            raise ProtocolError("login refused: the signature does not prove ownership of that key "
                                "for this relay and this connection")
        self.count("logins")
        return _Client(fingerprint, login["network"], conn, bool(login["box_records"]))

    def _serve_status(self, conn: FramedSocket, request: Message) -> None:
        check_version(request["version"], "this client")
        if not _is_local(conn):
            raise ProtocolError("this relay shows its status only to clients on its own machine")
        self.count("status_queries")
        self._send(conn, "status_result", **self.status())

    def _serve_registration(self, client: _Client, accept_unregistered: bool) -> None:
        conn = client.conn
        key = (client.network, client.fingerprint)
        reg = _Registration(client, time.monotonic(), accept_unregistered)
        with self._lock:
            if self._stopping:
                raise PairingRefused(SHUTDOWN_NOTICE)
            old = self._registry.get(key)
            self._registry[key] = reg
        self.count("registrations")
        if old is not None:
            # A reconnecting host replaces its half-open previous registration.
            _notify(old.client.conn, "this key registered again from a new connection; this one is closed")
            _shutdown_write(old.client.conn)
        try:
            self._send(conn, "registered", heartbeat_ms=max(MIN_PING_MS, int(self.heartbeat * 1000)))
            log.info("registered %s from %s", client.short, conn.peer[0])
            silence = self.heartbeat * HEARTBEAT_GRACE
            while True:
                msg = recv_or_none(conn, silence)
                if msg is None:
                    self.count("idle_drops")
                    log.info("registration of %s dropped: no heartbeat for %g s", client.short, silence)
                    _notify(conn, f"no heartbeat for {silence:g} s; registration dropped")
                    return
                if msg.type == "ping":
                    self.count("heartbeats")
                    self._send(conn, "pong")
                elif msg.type == "error":
                    return
                else:
                    raise ProtocolError(f"'{msg.type}' is not allowed on a registration connection")
        finally:
            with self._lock:
                if self._registry.get(key) is reg:
                    del self._registry[key]

    def _refuse(self, text: str) -> PairingRefused:
        self.count("pair_failures")
        return PairingRefused(text)

    def _serve_call(self, client: _Client, peer: bytes | None) -> None:
        self.count("pair_requests")
        if peer is None:
            raise self._refuse("a call must name the fingerprint of the peer to be paired with")
        if peer == client.fingerprint:
            raise self._refuse("a key cannot be paired with itself")
        with self._lock:
            reg = self._registry.get((client.network, peer))
            if reg is None:
                raise self._refuse(self._not_registered_text(peer, client.network))
        wait = self._rings.try_take((client.fingerprint, peer), time.monotonic())
        if wait > 0:
            self.count("rings_refused")
            raise self._refuse(f"you rang {short_fp(peer)} more than {self.rings_per_minute} times in a minute; "
                               f"try again in {math.ceil(wait)} s")
        if not reg.accept_unregistered:
            self._check_caller(client, peer)
        ticket = crypto.random_bytes(TICKET_LEN)
        with self._lock:
            if self._stopping:
                raise self._refuse(SHUTDOWN_NOTICE)
            reg = self._registry.get((client.network, peer))
            if reg is None:
                raise self._refuse(self._not_registered_text(peer, client.network))
            refusal = self._pending_refusal(client, peer)
            if refusal is not None:
                raise self._refuse(refusal)
            pending = _Pending(ticket, client, peer, time.monotonic())
            self._pending[ticket] = pending
        try:
            try:
                self._send(reg.client.conn, "invite", ticket=ticket, caller=client.fingerprint)
            except PeerUnreachable:
                with self._lock:
                    self._pending.pop(ticket, None)
                raise self._refuse("the peer's registration at this relay was just lost; try again") from None
            log.info("call %s -> %s: invitation sent", client.short, short_fp(peer))
            outcome = self._await_answer(pending)
        finally:
            for sock in pending.waker:
                sock.close()
        if outcome == "hung up":
            with self._lock:
                dropped = self._pending.pop(ticket, None) is not None
            if dropped:
                self.count("hangups")
                self.count("pair_failures")
                log.info("call %s -> %s dropped: the caller hung up", client.short, short_fp(peer))
                return
        elif outcome == "expired":
            with self._lock:
                expired = self._pending.pop(ticket, None) is not None
            if expired:
                raise self._refuse(f"{short_fp(peer)} did not answer the relay within {self.pair_timeout:g} s")
        if not pending.done.is_set():
            # The answer took the ticket just now; its thread sets ``done`` once both sides are told.
            pending.done.wait(2 * self.send_timeout + NOTICE_TIMEOUT)
        if pending.session is not None:
            self._pump(pending.session, 0)

    def _pending_refusal(self, client: _Client, peer: bytes) -> str | None:
        """Why one more pending call from ``client`` to ``peer`` is refused, if it is (``_lock`` held)."""
        if len(self._pending) >= self.max_pending:
            return "the relay has too many pairings waiting; try again later"
        ip = client.conn.peer[0]
        mine = by_ip = to_peer = 0
        for p in self._pending.values():
            mine += p.caller.fingerprint == client.fingerprint
            by_ip += p.caller_ip == ip
            to_peer += p.callee == peer
        if mine >= self.max_pending_per_client:
            return f"this key already has {mine} pairings waiting at the relay"
        if by_ip >= self.max_pending_per_ip:
            return f"{ip} already has {by_ip} pairings waiting at the relay"
        if to_peer >= self.max_pending_per_callee:
            return f"{short_fp(peer)} already has {to_peer} calls waiting; try again later"
        return None

    def _check_caller(self, client: _Client, peer: bytes) -> None:
        """Refuse a caller whose key has no ledger record (the callee did not accept unregistered keys)."""
        verdict = self.callers.check(client.fingerprint) if self.callers is not None else None
        if verdict is Verdict.KNOWN:
            return
        self.count("callers_refused")
        if verdict is None:
            text = (f"{short_fp(peer)} takes calls only from keys with a ledger record, and this relay has no "
                    "ledger to check yours")
        elif verdict is Verdict.UNKNOWN:
            text = (f"{short_fp(peer)} takes calls only from keys with a ledger record; the relay's ledger has "
                    "none for your key")
        elif verdict is Verdict.BUSY:
            text = "the relay is busy checking other callers' keys; try again in a few seconds"
        else:
            text = "the relay could not reach its ledger to check your key; try again later"
        raise self._refuse(text)

    def _await_answer(self, pending: _Pending) -> str:
        """Wait for the callee's answer while watching the caller's socket: ``"answered"``, ``"hung up"`` (the
        caller closed its connection; the call is dropped at once) or ``"expired"``."""
        sock, wake = pending.caller.conn.sock, pending.waker[0]
        deadline = pending.created + self.pair_timeout
        while not pending.done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "expired"
            try:
                readable = select.select([sock, wake], [], [], remaining)[0]
            except (OSError, ValueError):
                return "hung up"
            if sock in readable and not pending.done.is_set():
                try:
                    # MSG_DONTWAIT instead of changing the socket's timeout: the answer's thread may be writing
                    # to this socket at the same moment.
                    early = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except (BlockingIOError, TimeoutError):
                    continue
                except OSError:
                    return "hung up"
                if not early:
                    return "hung up"
                # Bytes before ``paired``: an honest client sends them only once it was told it is paired, so
                # ``done`` follows at once; anything else waits here (without spinning) until the deadline.
                pending.done.wait(min(0.25, max(0.0, deadline - time.monotonic())))
        return "answered"

    def _not_registered_text(self, peer: bytes, network: str) -> str:
        others = sorted(net for net, fp in self._registry if fp == peer)
        if others:
            return (f"{short_fp(peer)} is registered at this relay for network '{others[0]}', "
                    f"not '{network}'")
        return f"nobody with fingerprint {short_fp(peer)} is registered at this relay"

    def _serve_answer(self, client: _Client, ticket: bytes | None, slot: _AddressSlot) -> None:
        if ticket is None:
            raise self._refuse("an answer must carry the ticket of the invitation")
        with self._lock:
            pending = self._pending.get(ticket)
            if (pending is None or pending.callee != client.fingerprint
                    or pending.caller.network != client.network):
                raise self._refuse("this invitation is unknown, has expired or is not addressed to this key")
            del self._pending[ticket]
            self._next_session += 1
            # One second's worth of burst; bigger frames still pass after their share of time.
            bucket = (TokenBucket(self.bytes_per_second, self.bytes_per_second, time.monotonic())
                      if self.bytes_per_second else None)
            session = RelaySession(self, self._next_session, pending.caller, client, bucket,
                                   crypto.random_bytes(crypto.AES_KEY_LEN))
            self._sessions[session.id] = session
        # An answer is bounded by the callee's pending calls, not by its address: callers cannot use up the
        # callee's connection slots by making it answer.
        slot.release()
        # Each side's pair records are forwarded unopened from now on (set before either side hears ``paired``;
        # the caller's socket is not being read while its call waits). Box records only if all three take them.
        box_max = MAX_BOX_RECORD if self.box_records and pending.caller.box_records and client.box_records else None
        for conn in session.conns:
            conn.forward_pair_records(box_max)
        try:
            keepalive_ms = max(MIN_PING_MS, int(self.idle_timeout * 1000 / KEEPALIVE_FRACTION))
            for side, other in ((0, 1), (1, 0)):
                try:
                    self._send(session.conns[side], "paired", peer=session.fingerprints[other],
                               max_payload=self.max_payload, keepalive_ms=keepalive_ms, pair_key=session.pair_key,
                               box_max=box_max)
                except PeerUnreachable:
                    self.count("pair_failures")
                    session.close({other: "your peer left before the pairing completed"}, "left while pairing")
                    return
            self.count("sessions")
            log.info("session %d paired: %s -> %s", session.id, short_fp(session.caller), short_fp(session.callee))
            pending.session = session
        finally:
            pending.finish()
        self._pump(session, 1)

    def _pump(self, session: RelaySession, side: int) -> None:
        """Read side ``side`` of a session and forward its payloads, until the session ends.

        Frames that arrived together (already read and decoded) are handled as one batch and their forwarded
        copies written together at the end of it, so many small frames cost one write.
        """
        conn = session.conns[side]
        other = 1 - side
        outbox = _Outbox()
        _pump_state.outbox = outbox
        try:
            while not session.closed:
                silent_for = time.monotonic() - session.last_heard[side]
                if silent_for >= self.idle_timeout:
                    self.count("idle_drops")
                    text = f"the relay session was silent for {self.idle_timeout:g} s"
                    session.close({side: text, other: f"{text} (your peer went silent)"}, "idle")
                    break
                # Wake up at least every CHECK_INTERVAL to notice a session the other side has ended.
                msg = recv_or_none(conn, min(self.idle_timeout - silent_for, CHECK_INTERVAL))
                while msg is not None and not session.closed:
                    self._pump_one(session, side, msg, outbox)
                    if outbox.size >= FLUSH_BYTES:
                        outbox.flush()
                    msg = recv_or_none(conn, 0)      # only frames already received: never blocks
                outbox.flush()
        except (FrameError, ProtocolError) as exc:
            outbox.flush()
            if not session.closed:
                self.count("frame_errors")
                log.warning("session %d: side %d broke the protocol: %s", session.id, side, exc)
                session.close({side: str(exc), other: "your peer sent an invalid frame; the relay closed the session"},
                              f"bad frame from side {side}")
        except PeerUnreachable:
            outbox.flush()
            session.close({other: "your peer left the relay session"}, f"side {side} left")
        finally:
            _pump_state.outbox = None
            if not session.closed:
                # Only reached through an unexpected exception (e.g. in a ``forward`` override): it propagates,
                # but the session must not outlive this thread.
                session.close({0: "the relay closed the session", 1: "the relay closed the session"},
                              f"pump of side {side} failed")
        _linger(conn, LINGER_SECONDS)

    def _pump_one(self, session: RelaySession, side: int, msg: Message, outbox: _Outbox) -> None:
        now = time.monotonic()
        session.last_heard[side] = now
        if msg.type == PAIR_TYPE:
            payload: bytes = msg["payload"]
            size = record_payload_len(payload)
            # a box record's size was checked against the agreed ``box_max`` before it was buffered
            (word,) = RECORD_HEADER.unpack_from(payload)
            if word & KIND_FLAGS != KIND_FLAGS and size > self.max_payload:
                raise FrameError(f"a session payload of {size} bytes is over the {self.max_payload}-byte limit")
            session.bytes_from[side] += size
            session.frames_from[side] += 1
            if session.bucket is not None:
                delay = session.bucket.reserve(len(payload), now)
                if delay > 0:
                    outbox.flush()                  # what is due goes out before the pause
                    self.count("throttled")
                    if session.wait_closed(delay):
                        return
            self.forward(session, side, payload)
        elif msg.type == "ping":
            self.count("keepalives")
        elif msg.type == "error":
            session.close({1 - side: "your peer left the relay session"}, f"side {side} left")
        else:
            raise ProtocolError(f"'{msg.type}' is not allowed during a relay session")

    def _session_ended(self, session: RelaySession) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)
        log.info("session %d ended after %.1f s (%d B -> / %d B <-): %s", session.id,
                 time.monotonic() - session.started, session.bytes_from[0], session.bytes_from[1], session.reason)


def _is_local(conn: FramedSocket) -> bool:
    """A client on the relay's own machine: a loopback source or the relay's own address."""
    try:
        return ipaddress.ip_address(conn.peer[0]).is_loopback or conn.peer[0] == conn.local[0]
    except ValueError:
        return False
