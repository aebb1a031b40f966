"""The client side of the relay: a registration that keeps a host reachable, and paired links.

Every connection first sets up the encrypted link (:func:`connect_link`, pinned to ``relay_key`` or, without one,
to the key the relay presented first in this process) and logs in inside it.

- :func:`open_relay_link` (caller): log in, ask to be paired with a fingerprint, return a :class:`RelayLink`.
- :class:`RelayRegistration` (callee): keeps a registration alive (heartbeats, reconnect with backoff) and,
  when the relay relays an invitation, opens the answering connection and hands a ready :class:`RelayLink` to
  ``on_invite``.
- :class:`RelayLink` behaves like :class:`~p2pchat.foundation.transport.FramedSocket` for the chat node
  (``send``, ``send_frame``, ``send_error``, ``recv``, ``close``, ``peer``, ``peer_text``, ``protocol``,
  ``timeout``): chat frames travel inside relay ``data`` frames and are decoded with the chat protocol. The
  relay sees only those opaque bytes; the end-to-end handshake and channel protect them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from p2pchat.display import quote_peer
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import RELAY_PORT, check_port, format_address, normalize_ip, parse_address
from p2pchat.foundation.codec import HEADER, Frame, Message, Protocol
from p2pchat.foundation.errors import AddressError, CryptoError, PeerUnreachable, ProtocolError, UserError
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, connect
from p2pchat.relay.protocol import (
    CLIENT_PROTOCOL,
    FINGERPRINT_LEN,
    LOGIN_CONTEXT,
    VERSION,
    RelayError,
    check_version,
    expect,
    login_proof_data,
    recv_or_none,
    short_fp,
)
from p2pchat.relay.ratelimit import KeyedLimiter
from p2pchat.relay.secure import (
    KNOWN_RELAYS,
    PAIR_TYPE,
    KnownRelays,
    SecureSocket,
    client_handshake,
    parse_key,
)

log = logging.getLogger("p2pchat.relay.client")

DEFAULT_NETWORK = "p2pchat"
DEAD_AFTER_HEARTBEATS = 3     # a relay that answers no heartbeat for this many intervals is considered gone
# [redrelay] Invitations a registration answers: each costs this host a connection and an RSA signature (a
# malicious relay's check of it costs nothing), so past a burst they are answered at a paced rate, the rest
# ignored (the caller hears "did not answer"). An honest relay rings a host far less (docs/relay.md "Limits").
ANSWERS_BURST = 16
ANSWERS_PER_MINUTE = 120


class RelayLink:
    """A stream to one peer through a relay, duck-type compatible with ``FramedSocket`` for the chat node.

    ``send_frame`` takes complete chat frames (length prefix included; any number of whole or partial frames
    per call) and carries them in relay ``data`` frames, split to the relay's payload limit; ``send_nowait`` does
    the same without ever blocking the caller (the chat node's reader thread answers through it); ``recv`` returns
    the next chat :class:`~p2pchat.foundation.codec.Message`, decoded with ``protocol`` (the chat protocol)
    under its own frame limit. A keepalive thread pings the relay while the link is quiet so a live but
    silent chat is not dropped as idle; ``close()`` stops and joins it.
    """

    def __init__(self, conn: SecureSocket, protocol: Protocol, *, relay: tuple[str, int], peer_fingerprint: bytes,
                 max_payload: int, keepalive: float) -> None:
        self._conn = conn
        self.protocol = protocol
        self.peer: tuple[str, int] = relay
        self.local: tuple[str, int] = conn.local
        self.peer_fingerprint = peer_fingerprint
        self.max_payload = max_payload
        self.keepalive = keepalive
        self._reader = protocol.reader()
        self._ready: list[Message] = []
        self._send_lock = threading.Lock()
        self._last_sent = time.monotonic()
        # The sealed pieces ``send_nowait`` could not write at once; the keepalive thread finishes them
        # (``_wake``), and every later send waits for them, so the relay's byte stream stays in order.
        self._backlog: list[memoryview] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._keepalive_thread = threading.Thread(target=self._keepalive_loop, name="relay-link-keepalive")
        self._keepalive_thread.start()

    @property
    def relay_text(self) -> str:
        return format_address(*self.peer)

    @property
    def peer_text(self) -> str:
        """How UIs name this path, e.g. ``relay 127.0.0.9:8472``."""
        return f"relay {self.relay_text}"

    @property
    def timeout(self) -> float:
        """Default ``recv`` timeout and the longest a send may block, like ``FramedSocket.timeout``."""
        return self._conn.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._conn.timeout = value

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def box_max(self) -> int | None:
        """The largest box record this session agreed on (docs/relay.md), or None: every payload is sealed whole."""
        return self._conn.box_max

    @property
    def buffered_messages(self) -> int:
        """Chat messages (or relay frames holding some) already received that ``recv`` returns without waiting;
        like ``FramedSocket.buffered_messages``, it lets the node send one receipt for a burst of texts."""
        return len(self._ready) + self._conn.buffered_messages

    def send(self, type_: str, **fields: Any) -> None:
        """Encode a chat message with ``protocol`` and send it through the relay."""
        self.send_frame(self.protocol.encode(type_, **fields))

    def send_frame(self, frame: Frame | memoryview) -> None:
        """Send pre-encoded chat frame bytes (length prefix included) to the peer."""
        if not frame:
            return
        with self._send_lock:
            # Chunks of one call stay together even if several threads send.
            self._finish_backlog()
            self._conn.send_pair(frame)
            self._last_sent = time.monotonic()

    def send_nowait(self, frame: Frame | memoryview) -> int:
        """Hand chat frame bytes to the relay without blocking, like ``FramedSocket.send_nowait``: returns
        ``len(frame)`` when they were taken (written, or the tail of their relay frame left to the link's own
        thread), 0 when the connection is busy and nothing was taken (send them later, e.g. with ``send_frame``
        from a thread that may wait)."""
        if not frame:
            return 0
        if not self._send_lock.acquire(blocking=False):
            return 0
        try:
            if self._backlog:
                return 0
            tail = self._conn.try_send_pair(frame)
            if tail is None:
                return 0
            if tail:
                self._backlog = tail
                self._wake.set()
            self._last_sent = time.monotonic()
            return len(frame)
        finally:
            self._send_lock.release()

    def _finish_backlog(self) -> None:
        """Write the sealed pieces ``send_nowait`` left, waiting for room (``_send_lock`` held)."""
        backlog, self._backlog = self._backlog, []
        for piece in backlog:
            self._conn.send_raw(piece)

    def send_error(self, reason: str) -> None:
        """Best effort: tell the peer (end to end, in the chat protocol) why the link is being closed."""
        try:
            self.send("error", reason=reason[:1000])
        except UserError:
            pass

    def recv(self, timeout: float | None = None) -> Message:
        """The next chat message from the peer.

        Raises :class:`PeerUnreachable` on timeout, :class:`RelayError` when the relay ends the session (with
        its reason) or the connection to it is lost, :class:`FrameError` on a malformed chat or relay frame.
        """
        if self._ready:
            return self._ready.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerUnreachable(f"the peer did not answer in time (via {self.peer_text})")
            try:
                msg = recv_or_none(self._conn, remaining)
            except PeerUnreachable:
                self._conn.close()
                raise RelayError(f"lost the connection to {self.peer_text}") from None
            if msg is None:
                continue
            if msg.type == PAIR_TYPE:
                self._take(msg["payload"])
            elif msg.type == "error":
                self._conn.close()      # the session is over; let the relay finish its side at once
                raise RelayError(f"{self.peer_text} ended the session: {quote_peer(msg['reason'])}")
            elif msg.type != "pong":
                raise ProtocolError(f"{self.peer_text} sent an unexpected '{msg.type}' frame during a session")
        return self._ready.pop(0)

    def _take(self, payload: bytes | memoryview) -> None:
        """Decode the chat frames in one payload (they may also be split across payloads)."""
        if self._reader.next_frame_size() is None and self._reader.pending() == 0 and len(payload) > HEADER.size:
            (size,) = HEADER.unpack_from(payload)
            if size == len(payload) - HEADER.size:
                # Exactly one whole frame, the usual case: decode it in place instead of via the reassembly
                # buffer (same limits: decode checks the size against the chat protocol's frame limit).
                body = memoryview(payload)[HEADER.size:]
                # A box record opened in its own buffer is writable and ours alone: its box is decrypted there.
                self._ready.append(self.protocol.decode(body) if body.readonly else self.protocol.decode_buffer(body))
                return
        self._ready.extend(self._reader.feed(payload))

    def _keepalive_loop(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.keepalive)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if woken:
                    with self._send_lock:
                        self._finish_backlog()
                    continue
                if time.monotonic() - self._last_sent < self.keepalive / 2:
                    continue
                with self._send_lock:
                    self._finish_backlog()
                    self._conn.send("ping")
            except PeerUnreachable:
                self._conn.close()
                return      # the reader reports the lost connection
            self._last_sent = time.monotonic()

    def shutdown_write(self) -> None:
        """Half-close after the last frame: the relay forwards everything sent so far, then ends the session and
        tells the peer; ``recv`` keeps working until then. ``close()`` is still needed afterwards."""
        self._stop.set()
        self._wake.set()
        with self._send_lock:
            try:
                self._finish_backlog()
                self._conn.sock.shutdown(socket.SHUT_WR)
            except (OSError, PeerUnreachable):
                pass

    def close(self) -> None:
        """Close the connection to the relay (the relay tells the peer) and join the keepalive thread."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._conn.close()
        if self._keepalive_thread is not threading.current_thread():
            self._keepalive_thread.join()

    def __enter__(self) -> RelayLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RelayLink({self.peer_text}, peer {short_fp(self.peer_fingerprint)})"


def parse_relay(text: str) -> tuple[str, int, bytes | None]:
    """``IP[:PORT][#KEY]`` as given to ``--relay``: the relay's address and, if pinned, its static X25519 key
    (64 hex digits, as ``p2pchat relay`` prints it)."""
    address, sep, key_text = text.strip().partition("#")
    ip, port = parse_address(address, RELAY_PORT)
    if not sep:
        return ip, port, None
    try:
        return ip, port, parse_key(key_text)
    except CryptoError as exc:
        raise AddressError(f"relay '{text[:120]}': {exc}") from None


def connect_link(relay: tuple[str, int], *, pin: bytes | None, source_ip: str | None = None, timeout: float,
                 known: KnownRelays | None = KNOWN_RELAYS) -> SecureSocket:
    """Connect to the relay and run the link handshake (see :mod:`p2pchat.relay.secure`)."""
    relay_text = format_address(*relay)
    plain = connect(relay[0], relay[1], CLIENT_PROTOCOL, source_ip=source_ip, timeout=timeout)
    try:
        return client_handshake(plain, relay_text, pin=pin, known=known, timeout=timeout)
    except BaseException:
        plain.close()
        raise


def _login(identity: Identity, relay: tuple[str, int], *, source_ip: str | None, timeout: float, network: str,
           role: str, pin: bytes | None, peer: bytes | None = None, ticket: bytes | None = None,
           accept_unregistered: bool | None = None, box_records: bool = False) -> SecureSocket:
    """Connect to the relay, set up the encrypted link and prove our key inside it; returns the connection right
    after the login frame."""
    relay_text = format_address(*relay)
    conn = connect_link(relay, pin=pin, source_ip=source_ip, timeout=timeout)
    try:
        challenge = expect(conn, "challenge", timeout, relay_text)
        check_version(challenge["version"], f"the relay at {relay_text}")
        proof = login_proof_data(challenge["nonce"], relay_text, identity.fingerprint, network)
        conn.send("login", version=VERSION, network=network, role=role, key=identity.public_der,
                  sig=identity.sign(LOGIN_CONTEXT, proof), peer=peer, ticket=ticket,
                  accept_unregistered=accept_unregistered, box_records=box_records or None)
    except BaseException:
        conn.close()
        raise
    return conn


def _relay_endpoint(relay_ip: str, relay_port: int) -> tuple[str, int]:
    return normalize_ip(relay_ip), check_port(relay_port)


def _paired_link(conn: SecureSocket, inner_protocol: Protocol, relay: tuple[str, int], expected_peer: bytes,
                 timeout: float, *, caller: bool) -> RelayLink:
    """Wait for ``paired`` on a logged-in call/answer connection and wrap it in a link (closes it on failure)."""
    relay_text = format_address(*relay)
    try:
        paired = expect(conn, "paired", timeout, relay_text)
        if paired["peer"] != expected_peer:
            raise ProtocolError(f"relay {relay_text} paired this connection with {short_fp(paired['peer'])} "
                                f"instead of {short_fp(expected_peer)}")
        forward, backward = crypto.relay_pair_keys(paired["pair_key"])
        conn.set_pair_keys(*((forward, backward) if caller else (backward, forward)), paired["max_payload"],
                           paired["box_max"])
        return RelayLink(conn, inner_protocol, relay=relay, peer_fingerprint=paired["peer"],
                         max_payload=paired["max_payload"], keepalive=paired["keepalive_ms"] / 1000)
    except BaseException:
        conn.close()
        raise


def open_relay_link(identity: Identity, relay_ip: str, relay_port: int, peer_fingerprint: bytes, *,
                    inner_protocol: Protocol, source_ip: str | None = None, timeout: float = 20.0,
                    network: str = DEFAULT_NETWORK, relay_key: bytes | None = None,
                    box_records: bool = True) -> RelayLink:
    """Ask the relay to pair us with the registered host ``peer_fingerprint``; returns the paired link.

    ``relay_key`` pins the relay's static key; without it the key the relay presented first in this process is
    required (trust on first use). Everything after the link handshake is encrypted.

    ``timeout`` bounds the connection, the login and the wait for the peer to answer (keep it above the relay's
    pair timeout, 15 s by default). ``box_records`` offers box records (docs/relay.md; used only if the peer
    and the relay agree). Raises :class:`RelayError` with the relay's reason when it refuses (peer not
    registered, no answer, limits), :class:`PeerUnreachable` if the relay cannot be reached.
    """
    if len(peer_fingerprint) != FINGERPRINT_LEN:
        raise ValueError("peer_fingerprint must be the 32-byte SHA-256 fingerprint")
    relay = _relay_endpoint(relay_ip, relay_port)
    conn = _login(identity, relay, source_ip=source_ip, timeout=timeout, network=network, role="call",
                  pin=relay_key, peer=peer_fingerprint, box_records=box_records)
    return _paired_link(conn, inner_protocol, relay, peer_fingerprint, timeout, caller=True)


def backoff_delay(failures: int, minimum: float, maximum: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: doubling from ``minimum``, capped at ``maximum``,
    scaled by ``0.5 + jitter / 2`` (``jitter`` in [0, 1]) so many clients of a restarted relay spread out."""
    base = min(maximum, minimum * 2 ** max(0, failures - 1))
    return base * (0.5 + jitter / 2)


def _jitter() -> float:
    return int.from_bytes(crypto.random_bytes(2), "big") / 0xFFFF


InviteHandler = Callable[[RelayLink], None]
StateHandler = Callable[[bool, str], None]


class RelayRegistration:
    """Keeps ``identity`` registered at a relay so that callers can reach this host through it.

    ``start()`` runs a thread that logs in, sends heartbeats and reconnects with exponential backoff (with
    jitter) whenever the registration is lost. For every invitation it opens the answering connection on a
    worker thread (at most ``max_invites`` at once) and passes the paired :class:`RelayLink` to ``on_invite``,
    which takes ownership of it and should return promptly. ``on_state(registered, text)`` (optional) hears
    every change, e.g. ``(True, "registered at relay 127.0.0.9:8472")``. ``close()`` unregisters and joins every
    thread it started. ``relay_key`` pins the relay's link key; ``accept_unregistered`` lets callers without a
    ledger record ring this host (default: only callers the relay's ledger knows); ``box_records`` offers box
    records on the answer connections (docs/relay.md).
    """

    def __init__(self, identity: Identity, relay_ip: str, relay_port: int, *, on_invite: InviteHandler,
                 inner_protocol: Protocol, source_ip: str | None = None, network: str = DEFAULT_NETWORK,
                 timeout: float = 10.0, min_backoff: float = 0.5, max_backoff: float = 30.0,
                 max_invites: int = 8, on_state: StateHandler | None = None, relay_key: bytes | None = None,
                 accept_unregistered: bool = False, box_records: bool = True) -> None:
        self.identity = identity
        self.box_records = box_records
        self.relay_key = relay_key
        self.accept_unregistered = accept_unregistered
        self.relay = _relay_endpoint(relay_ip, relay_port)
        self.on_invite = on_invite
        self.on_state = on_state
        self.inner_protocol = inner_protocol
        self.source_ip = source_ip
        self.network = network
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_invites = max_invites
        self.state_text = "not started"
        self.connects = 0             # successful registrations so far (a reconnect adds one)
        self.failures = 0             # consecutive failed attempts (reset once registered)
        self.next_retry = 0.0         # the backoff delay chosen after the last failure, in seconds
        self._registered = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[FramedSocket] = set()
        self._workers: list[threading.Thread] = []
        self._answers = KeyedLimiter(ANSWERS_PER_MINUTE, ANSWERS_BURST, max_keys=1)   # [redrelay]
        self.ignored = 0              # invitations ignored over the answers' pace
        self._thread = threading.Thread(target=self._run, name="relay-registration")

    @property
    def relay_text(self) -> str:
        return format_address(*self.relay)

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    def wait_registered(self, timeout: float) -> bool:
        """Block until registered (True) or ``timeout`` seconds pass (False)."""
        return self._registered.wait(timeout)

    def start(self) -> RelayRegistration:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop heartbeats and reconnects, close every connection this registration opened, join all threads."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        current = threading.current_thread()
        if self._thread.ident is not None and self._thread is not current:
            self._thread.join()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker is not current:
                worker.join()
        self._set_state(False, "registration closed")

    def __enter__(self) -> RelayRegistration:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- threads -----------------------------------------------------------------------------------------

    def _set_state(self, registered: bool, text: str) -> None:
        if registered:
            self._registered.set()
        else:
            self._registered.clear()
        if text == self.state_text:
            return
        self.state_text = text
        if self.on_state is not None:
            self.on_state(registered, text)

    def _track(self, conn: FramedSocket) -> bool:
        """Remember a connection so ``close()`` can interrupt it; False (and closed) if already closing."""
        with self._lock:
            if self._stop.is_set():
                conn.close()
                return False
            self._conns.add(conn)
            return True

    def _untrack(self, conn: FramedSocket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._registration()
                reason = "the relay closed the registration"
            except UserError as exc:
                reason = str(exc)
            if self._stop.is_set():
                return
            self.failures += 1
            delay = self.next_retry = backoff_delay(self.failures, self.min_backoff, self.max_backoff, _jitter())
            log.info("relay %s: %s; registering again in %.1f s", self.relay_text, reason, delay)
            self._set_state(False, f"not registered at relay {self.relay_text} ({reason}); "
                                   f"attempt {self.failures} failed, retrying in {delay:.1f} s")
            self._stop.wait(delay)

    def _registration(self) -> None:
        """One registration connection, from login until it is lost."""
        conn = _login(self.identity, self.relay, source_ip=self.source_ip, timeout=self.timeout,
                      network=self.network, role="register", pin=self.relay_key,
                      accept_unregistered=self.accept_unregistered)
        if not self._track(conn):
            return
        try:
            registered = expect(conn, "registered", self.timeout, self.relay_text)
            heartbeat = registered["heartbeat_ms"] / 1000
            self.connects += 1
            self.failures = 0
            self._set_state(True, f"registered at relay {self.relay_text}")
            last_heard = time.monotonic()
            next_ping = last_heard + heartbeat
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= last_heard + DEAD_AFTER_HEARTBEATS * heartbeat:
                    raise RelayError(f"relay {self.relay_text} stopped answering heartbeats")
                if now >= next_ping:
                    conn.send("ping")
                    next_ping = now + heartbeat
                msg = recv_or_none(conn, max(0.001, min(next_ping, last_heard + DEAD_AFTER_HEARTBEATS * heartbeat)
                                             - time.monotonic()))
                if msg is None:
                    continue
                last_heard = time.monotonic()
                if msg.type == "invite":
                    self._answer_later(msg["ticket"], msg["caller"])
                elif msg.type == "error":
                    raise RelayError(f"relay {self.relay_text}: {quote_peer(msg['reason'])}")
                elif msg.type != "pong":
                    raise ProtocolError(f"relay {self.relay_text} sent an unexpected '{msg.type}' frame")
        finally:
            self._untrack(conn)
            conn.close()

    def _answer_later(self, ticket: bytes, caller: bytes) -> None:
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            if len(self._workers) >= self.max_invites:
                log.warning("relay %s: ignoring an invitation from %s, %d are being answered already",
                            self.relay_text, short_fp(caller), len(self._workers))
                return
            if self._answers.try_take(None, time.monotonic()) > 0:
                self.ignored += 1
                (log.warning if self.ignored == 1 else log.debug)(
                    "relay %s: ignoring an invitation from %s: more than %d a minute (each costs a signature)",
                    self.relay_text, short_fp(caller), ANSWERS_PER_MINUTE)
                return
            worker = threading.Thread(target=self._answer, args=(ticket, caller), name="relay-answer")
            self._workers.append(worker)
            worker.start()

    def _answer(self, ticket: bytes, caller: bytes) -> None:
        try:
            conn = _login(self.identity, self.relay, source_ip=self.source_ip, timeout=self.timeout,
                          network=self.network, role="answer", pin=self.relay_key, ticket=ticket,
                          box_records=self.box_records)
            if not self._track(conn):
                return
            try:
                link = _paired_link(conn, self.inner_protocol, self.relay, caller, self.timeout, caller=False)
            finally:
                self._untrack(conn)
        except UserError as exc:
            log.warning("relay %s: could not answer %s: %s", self.relay_text, short_fp(caller), exc)
            return
        if self._stop.is_set():
            link.close()
            return
        log.info("relay %s: paired with %s", self.relay_text, short_fp(caller))
        try:
            self.on_invite(link)
        except UserError as exc:
            log.warning("relay %s: the session with %s was refused: %s", self.relay_text, short_fp(caller), exc)
            link.close()
