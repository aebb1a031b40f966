"""The ledger gossip node: a :class:`~p2pchat.foundation.transport.FrameServer` plus outgoing connections
around a :class:`~ledger.local_ledger.LocalLedger`.

What it does (docs/ledger-protocol.md has the frames and flows):

- handshake: the dialling side sends ``hello`` (version, network, genesis, parameters, height, tip, work,
  listen port, role), the other answers ``hello_ack`` or an ``error`` naming what it speaks;
- headers-first sync with a block locator from the peer with the most work, reported through ``on_progress``;
- announcements of new records and blocks (each accepted one is pushed to every other peer), peer exchange,
  reconnects with exponential backoff, a bound on peers, pings, and a timeout on every read;
- standing: a peer that sends invalid data loses standing and is disconnected (banned a while for what
  cannot be an honest mistake); a peer that connects and says nothing is dropped; a flooding peer is slowed
  to the message rate limit and dropped if it keeps flooding;
- records from peers or light clients are checked by the ledger, and a record that claims an IP address for a
  key that does not hold it yet is only admitted after a reachability proof (:mod:`ledger.reachability`);
- this machine's own record is registered, renewed before it expires, and updated when the address changes;
- lookups, status and reachability proofs are served on the same port.

Threads: the server's accept and connection threads, one thread per outgoing connection, one writer thread per
connection (so a slow reader never blocks us), the maintenance thread and the record-admission workers.
:meth:`LedgerNode.close` stops and joins all of them.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger.blocks import Block, BlockHeader
from ledger.chain import AddResult
from ledger.errors import LedgerError, StoreError
from ledger.local_ledger import LocalLedger
from ledger.lookup_service import AmbiguousLookup, answer_lookup
from ledger.peers import (
    PENALTY_BAD_FRAME,
    PENALTY_BAD_RECORD,
    PENALTY_FLOOD,
    PENALTY_INVALID_BLOCK,
    PENALTY_INVALID_HEADERS,
    PENALTY_PROTOCOL,
    PENALTY_SILENT,
    Address,
    AddressBook,
    Standing,
    TokenBucket,
)
from ledger.protocol import (
    LEDGER_PROTOCOL,
    MAX_BLOCKS_BYTES,
    MAX_HEADERS,
    MAX_PEERS_SHARED,
    ROLE_PEER,
    PeerHello,
    check_compatible,
    hello_fields,
    parse_lookup_kind,
)
from ledger.reachability import prove_reachability, sign_reachability
from ledger.records import Record, make_register
from ledger.sync import BlockDownload, SyncProgress
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address, normalize_ip, parse_address
from p2pchat.foundation.errors import FrameError, PeerUnreachable, ProtocolError, UserError
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect

log = logging.getLogger(__name__)

ProgressCallback = Callable[[SyncProgress], None]

# Cost of a message against the sender's rate limit (default 1): requests that make us sign or send a lot cost more.
_MESSAGE_COST = {"get_blocks": 5.0, "prove": 20.0, "submit": 10.0, "lookup": 2.0, "get_headers": 2.0}
_MAX_WIRE_INT = 2**63 - 1


@dataclass
class NodeConfig:
    """Timeouts, limits and intervals of a node (tests shorten them)."""

    handshake_timeout: float = 10.0        # the first frame must arrive within this
    idle_timeout: float = 120.0            # a peer silent this long is dropped (we ping every ping_interval)
    client_idle_timeout: float = 30.0      # same for light-client connections (they are not pinged)
    ping_interval: float = 30.0
    request_timeout: float = 30.0          # a peer must answer get_headers/get_blocks within this
    connect_timeout: float = 5.0
    send_timeout: float = 15.0
    reachability_timeout: float = 4.0
    maintain_interval: float = 0.25
    outbound_peers: int = 8
    message_rate: float = 200.0            # frames per second per connection
    message_burst: float = 1000.0
    flood_grace: float = 3.0               # seconds of sustained flooding before the peer is dropped
    ban_seconds: float = 600.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    block_batch: int = 250
    admission_workers: int = 2
    admission_queue: int = 2000
    send_queue: int = 4000                 # frames queued for a peer that does not read are capped…
    send_queue_bytes: int = 32 * 1024 * 1024  # …and so are their bytes (block answers are large)
    register: bool = True                  # register and renew this machine's record
    register_grace: float = 10.0           # with seeds, wait this long for the first sync before registering
    register_retry: float = 30.0           # after a refused registration
    register_check: float = 5.0            # how often the own record is compared with what it should say
    renew_fraction: float = 0.25           # renew when less than this fraction of the lifetime is left
    record_lifetime: int | None = None     # default: the network's default_record_lifetime
    mine: bool = True
    rejected_ttl: float = 120.0            # a refused record is not re-checked (or re-dialled) for this long


class Peer:
    """One handshaken connection (to a node or from a light client) with its own writer thread."""

    def __init__(self, conn: FramedSocket, hello: PeerHello, *, inbound: bool, listen_addr: Address | None,
                 config: NodeConfig, now: float) -> None:
        self.conn = conn
        self.hello = hello
        self.inbound = inbound
        self.ip: str = conn.peer[0]
        self.text = conn.peer_text
        self.listen_addr = listen_addr
        self.is_peer = hello.role == ROLE_PEER
        self.node_id = hello.nonce
        self.height = hello.height or 0
        self.work = hello.work or 0
        self.wants_sync = False           # it announced a block we could not connect
        self.connected_at = now
        self.last_recv = now
        self.last_ping = now
        self.bucket = TokenBucket(config.message_rate, config.message_burst, now)
        self.throttled_since: float | None = None
        self.download = BlockDownload(config.block_batch)
        self.awaiting: str | None = None  # "headers" or "blocks" while a sync request is out
        self.deadline: float | None = None
        self.sync_last: bytes | None = None
        self.closed = threading.Event()
        self._max_bytes = config.send_queue_bytes
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=config.send_queue)
        self._writer = threading.Thread(target=self._write_loop, name=f"ledger-send-{self.text}")
        self._writer.start()

    def send(self, type_: str, **fields: Any) -> bool:
        """Queue a frame; False if the peer is gone or so far behind that it was dropped."""
        return self.send_frame(LEDGER_PROTOCOL.encode(type_, **fields))

    def send_frame(self, frame: bytes) -> bool:
        if self.closed.is_set():
            return False
        with self._bytes_lock:
            over = self._queued_bytes + len(frame) > self._max_bytes and self._queued_bytes > 0
            if not over:
                self._queued_bytes += len(frame)
        try:
            if over:
                raise queue.Full
            self._queue.put_nowait(frame)
        except queue.Full:
            log.warning("dropping %s: it does not read what we send", self.text)
            self.abort()
            return False
        return True

    def _write_loop(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                break
            try:
                self.conn.send_frame(frame)
            except PeerUnreachable as exc:
                log.info("%s", exc)
                break
            with self._bytes_lock:
                self._queued_bytes -= len(frame)
        self.closed.set()
        self.conn.close()

    def close(self, reason: str | None = None) -> None:
        """Send ``reason`` as an error frame (if given), flush what is queued, then close."""
        if self.closed.is_set():
            return
        if reason is not None:
            frame = LEDGER_PROTOCOL.encode("error", reason=reason[:1000])
            try:
                self._queue.put_nowait(frame)
                with self._bytes_lock:
                    self._queued_bytes += len(frame)
            except queue.Full:
                pass
        self.closed.set()
        self._put_sentinel()

    def abort(self) -> None:
        """Close at once (shutting the socket down wakes the reading thread)."""
        self.closed.set()
        self.conn.close()
        self._put_sentinel()

    def _put_sentinel(self) -> None:
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def join(self) -> None:
        if self._writer is not threading.current_thread():
            self._writer.join()

    def describe(self) -> dict[str, Any]:
        return {"address": format_address(*self.listen_addr) if self.listen_addr else self.text,
                "inbound": self.inbound, "height": self.height, "agent": self.hello.agent}


class LedgerNode:
    """A ledger node (see the module docstring).

    ``seeds`` are addresses (``ip`` or ``ip:port``) to join through; ``on_progress`` hears about sync progress.
    The node mines (``config.mine``) and registers this machine's identity (``config.register``) unless told
    not to. ``start()`` binds and starts the threads; ``close()`` stops and joins them (the ledger stays open:
    its owner closes it).
    """

    def __init__(self, identity: Identity, ledger: LocalLedger, *, host: str, port: int = LEDGER_PORT,
                 chat_port: int | None = CHAT_PORT, seeds: Sequence[str] = (), nickname: str | None = None,
                 relay: str | None = None, no_inbound: bool = False, max_peers: int = 16,
                 config: NodeConfig | None = None, on_progress: ProgressCallback | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.ledger = ledger
        self.params = ledger.params
        self.host = normalize_ip(host)
        self.requested_port = port
        self.chat_port = chat_port
        self.nickname = nickname or default_nickname(self.host)
        self.relay = relay
        self.no_inbound = no_inbound
        self.max_peers = max_peers
        self.config = config or NodeConfig()
        self.on_progress = on_progress
        self.clock = clock
        if no_inbound and relay is None:
            raise LedgerError("a node without inbound connections must publish a relay hint (--relay IP:PORT)")
        self.node_id = crypto.random_bytes(8)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._peers: dict[Peer, None] = {}
        self._dialing: set[Address] = set()
        self._handshaking: set[FramedSocket] = set()
        self._threads: set[threading.Thread] = set()
        self._standing = Standing(self.config.ban_seconds)
        self._book = AddressBook(base_delay=self.config.backoff_base, max_delay=self.config.backoff_cap)
        self._seeds = [parse_address(s, LEDGER_PORT) for s in seeds]
        self._sync_peer: Peer | None = None
        self._sync_start_tip = b""
        self._progress: SyncProgress | None = None
        self._last_progress_log = 0.0
        self._ctx = threading.local()
        self._admit_queue: queue.Queue[tuple[Record, Peer | None] | None] = queue.Queue(self.config.admission_queue)
        self._admitting: set[bytes] = set()
        self._rejected: OrderedDict[bytes, tuple[float, str, tuple[bytes, int] | None]] = OrderedDict()
        self._next_register = 0.0
        self._next_revalidate = 0.0
        self._started_at = 0.0
        self._ever_synced = not self._seeds
        self.registration_error: str | None = None
        self.stats = {"rate_limited": 0, "flood_drops": 0, "silent_drops": 0, "bad_frames": 0, "invalid_blocks": 0,
                      "invalid_records": 0, "reachability_failures": 0, "records_admitted": 0}
        self._server: FrameServer | None = None
        self.port = port
        self._maintainer = threading.Thread(target=self._maintain_loop, name="ledger-maintain")
        self._workers = [threading.Thread(target=self._admission_loop, name=f"ledger-admit-{i}")
                         for i in range(self.config.admission_workers)]
        ledger.add_listener(on_block=self._on_block, on_record=self._on_record)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> LedgerNode:
        """Listen on ``host:port``, start mining, dial the seeds and start the maintenance threads."""
        self._server = FrameServer(self.host, self.requested_port, LEDGER_PROTOCOL, self._serve_inbound,
                                   name=f"ledger-{self.host}", max_connections=self.max_peers + 64,
                                   max_per_ip=16, timeout=self.config.send_timeout)
        self.port = self._server.port
        self._book.own.add((self.host, self.port))
        now = time.monotonic()
        self._started_at = now
        for seed in self._seeds:
            self._book.add(seed, now, seed=True)
        self._server.start()
        if self.config.mine:
            self.ledger.start_mining()
        for worker in self._workers:
            worker.start()
        self._maintainer.start()
        log.info("ledger node %s listening on %s (%s, fingerprint %s)", self.nickname,
                 format_address(self.host, self.port), self.params.describe(), self.identity.short_fingerprint)
        return self

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def close(self) -> None:
        """Stop mining, every connection and every thread (joined). The ledger itself stays open."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.ledger.remove_listener(on_block=self._on_block, on_record=self._on_record)
        self.ledger.stop_mining()
        if self._maintainer.is_alive():
            self._maintainer.join()
        while True:  # drop records still waiting: nothing will admit them now
            try:
                self._admit_queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._workers:
            self._admit_queue.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join()
        if self._server is not None:
            self._server.close()
        with self._lock:
            peers = list(self._peers)
            threads = list(self._threads)
            handshaking = list(self._handshaking)
        for conn in handshaking:
            conn.close()
        for peer in peers:
            peer.abort()
        for thread in threads:
            thread.join()
        for peer in peers:
            peer.join()

    def __enter__(self) -> LedgerNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public queries ------------------------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        """Handshaken gossip peers (not light clients)."""
        with self._lock:
            return [p for p in self._peers if p.is_peer and not p.closed.is_set()]

    def add_peer(self, address: str) -> None:
        """Dial another node (``ip`` or ``ip:port``) soon, e.g. the GUI's "join network"."""
        addr = parse_address(address, LEDGER_PORT)
        self._book.add(addr, time.monotonic(), seed=True)

    @property
    def progress(self) -> SyncProgress | None:
        return self._progress

    @property
    def syncing(self) -> bool:
        with self._lock:
            return self._sync_peer is not None

    def banned(self) -> dict[str, str]:
        with self._lock:
            return self._standing.banned(time.monotonic())

    def standing_points(self, ip: str) -> float:
        with self._lock:
            return self._standing.points(ip, time.monotonic())

    def own_record(self) -> Record | None:
        return self.ledger.latest_record(self.identity.fingerprint, self.clock())

    def status(self) -> dict[str, Any]:
        """The ledger's status plus this node's peers, sync state and own record (plain values)."""
        status = self.ledger.status()
        if status.get("cumulative_work", 0) > _MAX_WIRE_INT:
            status["cumulative_work"] = str(status["cumulative_work"])
        now = self.clock()
        own = self.own_record()
        own_info: dict[str, Any] | None = None
        if own is not None:
            mined = self.ledger.mined_record(self.identity.fingerprint)
            answer = self.ledger.lookup("fp", self.identity.fingerprint, now)
            own_info = {"seq": own.seq, "kind": own.kind, "nickname": own.nickname, "ip": own.ip, "port": own.port,
                        "ledger_port": own.ledger_port, "relay": own.relay, "expires": own.expires,
                        "state": "pending" if mined is None or mined.id != own.id else "mined",
                        "height": answer.height if answer is not None and answer.record.id == own.id else None}
        progress = self._progress
        status.update({
            "address": self.address, "host": self.host, "port": self.port, "nickname": self.nickname,
            "fingerprint": self.identity.fingerprint.hex(), "no_inbound": self.no_inbound, "relay": self.relay,
            "peers": [p.describe() for p in self.peers()], "peer_count": len(self.peers()),
            "known_addresses": len(self._book), "banned": self.banned(),
            "syncing": self.syncing,
            "sync": None if progress is None else {"peer": progress.peer, "phase": progress.phase,
                                                    "height": progress.height, "target": progress.target},
            "own_record": own_info, "registration_error": self.registration_error,
        })
        return status

    # --- connections ---------------------------------------------------------------------------------------

    def _our_hello(self, role: str) -> dict[str, Any]:
        height, tip, work = self.ledger.tip_info()
        return hello_fields(role=role, nonce=self.node_id, network=self.params.name,
                            genesis=self.params.genesis_hash, params=self.params.to_wire(), height=height, tip=tip,
                            work=work, listen_port=None if self.no_inbound else self.port)

    def _serve_inbound(self, conn: FramedSocket) -> None:
        """FrameServer handler: handshake, then serve the connection until it ends."""
        now = time.monotonic()
        with self._lock:
            reason = self._standing.ban_reason(conn.peer[0], now)
        if reason is not None:
            conn.send_error(f"this node does not talk to {conn.peer[0]} for a while: {reason}")
            return
        try:
            first = conn.recv(self.config.handshake_timeout)
        except PeerUnreachable:
            self.stats["silent_drops"] += 1
            self._penalize(conn.peer[0], PENALTY_SILENT, "connected and said nothing")
            log.info("dropped %s: it connected and said nothing within %g s", conn.peer_text,
                     self.config.handshake_timeout)
            return
        except FrameError as exc:
            self.stats["bad_frames"] += 1
            self._penalize(conn.peer[0], PENALTY_BAD_FRAME, f"bad frame: {exc}")
            raise
        if first.type == "error":
            log.info("%s said: %s", conn.peer_text, first["reason"])
            return
        hello = PeerHello.from_message(first)
        check_compatible(hello, network=self.params.name, genesis=self.params.genesis_hash)
        if hello.nonce == self.node_id:
            conn.send_error("this is a connection to the node itself")
            return
        listen_addr = (conn.peer[0], hello.listen_port) if hello.role == ROLE_PEER and hello.listen_port else None
        if hello.role == ROLE_PEER and len(self.peers()) >= self.max_peers:
            # Full: hand out other addresses so the newcomer can find room elsewhere.
            conn.send("peers", addrs=self._share_addresses(exclude=listen_addr))
            conn.send_error(f"this node has its maximum of {self.max_peers} peers; try the addresses it sent")
            return
        peer = Peer(conn, hello, inbound=True, listen_addr=listen_addr, config=self.config, now=time.monotonic())
        peer.send("hello_ack", **self._our_hello(ROLE_PEER))
        self._run_peer(peer)

    def _dial(self, addr: Address) -> None:
        """Thread body of an outgoing connection: connect, handshake, serve, then schedule a reconnect."""
        peer: Peer | None = None
        try:
            conn = connect(addr[0], addr[1], LEDGER_PROTOCOL, source_ip=self.host,
                           timeout=self.config.connect_timeout)
        except PeerUnreachable as exc:
            log.info("%s", exc)
            self._dial_done(addr, ok=False)
            return
        conn.timeout = self.config.send_timeout
        with self._lock:
            if self._closing.is_set():
                conn.close()
                return
            self._handshaking.add(conn)  # close() shuts these down instead of waiting out the handshake
        try:
            conn.send("hello", **self._our_hello(ROLE_PEER))
            first = conn.recv(self.config.handshake_timeout)
            if first.type == "peers":  # a full node offers other addresses before refusing
                self._learn_addresses(first["addrs"])
                first = conn.recv(self.config.handshake_timeout)
            if first.type == "error":
                raise PeerUnreachable(f"{format_address(*addr)} refused: {first['reason']}")
            hello = PeerHello.from_message(first)
            check_compatible(hello, network=self.params.name, genesis=self.params.genesis_hash)
            if hello.nonce == self.node_id:
                with self._lock:
                    self._book.own.add(addr)  # never dial it again
                raise ProtocolError("that address is this node itself")
            peer = Peer(conn, hello, inbound=False, listen_addr=addr, config=self.config, now=time.monotonic())
        except UserError as exc:
            log.info("cannot join %s: %s", format_address(*addr), exc)
            conn.close()
            with self._lock:
                self._handshaking.discard(conn)
            self._dial_done(addr, ok=False)
            return
        with self._lock:
            self._handshaking.discard(conn)
        self._book.succeeded(addr, time.monotonic())
        try:
            self._run_peer(peer)
        finally:
            self._dial_done(addr, ok=True)

    def _dial_done(self, addr: Address, *, ok: bool) -> None:
        now = time.monotonic()
        jitter = crypto.random_bytes(1)[0] / 256
        with self._lock:
            self._dialing.discard(addr)
            self._threads.discard(threading.current_thread())
            if ok:
                self._book.disconnected(addr, now, jitter)
            else:
                self._book.failed(addr, now, jitter)

    def _run_peer(self, peer: Peer) -> None:
        """Register a handshaken connection and read from it until it ends."""
        if not self._register_peer(peer):
            peer.join()
            return
        log.log(logging.INFO if peer.is_peer else logging.DEBUG, "connected to %s %s (%s, height %d)",
                "peer" if peer.is_peer else "client", peer.text, "inbound" if peer.inbound else "outbound",
                peer.height)
        try:
            if peer.is_peer:
                peer.send("get_peers")
                self._maybe_sync(peer)
            self._read_loop(peer)
        finally:
            self._unregister_peer(peer)
            peer.close()
            peer.join()
            peer.conn.close()

    def _register_peer(self, peer: Peer) -> bool:
        with self._lock:
            if self._closing.is_set():
                peer.abort()
                return False
            if peer.is_peer:
                for other in self._peers:
                    if other.is_peer and other.node_id == peer.node_id and not other.closed.is_set():
                        # Two connections between the same pair of nodes (both dialled at once): both sides keep
                        # the one dialled by the node with the smaller id.
                        keep_new = (peer.inbound == other.inbound) or (
                            (peer.node_id if peer.inbound else self.node_id)
                            < (other.node_id if other.inbound else self.node_id))
                        if keep_new:
                            other.close("duplicate connection")
                        else:
                            peer.close("duplicate connection")
                            return False
                if peer.listen_addr is not None:
                    self._book.add(peer.listen_addr, time.monotonic())
            self._peers[peer] = None
            return True

    def _unregister_peer(self, peer: Peer) -> None:
        with self._lock:
            self._peers.pop(peer, None)
            if self._sync_peer is peer:
                self._sync_peer = None
                height = self.ledger.height
                self._report_progress(SyncProgress(peer.text, "interrupted", height, max(peer.height, height)))
        if peer.is_peer:
            log.info("disconnected from %s", peer.text)
            self._maybe_sync()

    def _read_loop(self, peer: Peer) -> None:
        timeout = self.config.idle_timeout if peer.is_peer else self.config.client_idle_timeout
        while not peer.closed.is_set():
            try:
                msg = peer.conn.recv(timeout)
            except FrameError as exc:
                self.stats["bad_frames"] += 1
                log.warning("bad frame from %s: %s", peer.text, exc)
                self._penalize(peer.ip, PENALTY_BAD_FRAME, f"bad frame: {exc}")
                peer.close(str(exc))
                return
            except PeerUnreachable as exc:
                if not peer.closed.is_set() and not self._closing.is_set():
                    log.log(logging.INFO if peer.is_peer else logging.DEBUG, "%s", exc)
                return
            now = time.monotonic()
            peer.last_recv = now
            if not self._throttle(peer, msg.type, now):
                return
            try:
                self._dispatch(peer, msg.type, msg.fields)
            except StoreError as exc:
                # Our own database failed (e.g. the disk is full): not the peer's fault.
                log.error("%s", exc)
                peer.close("this node cannot store data right now")
                return
            except UserError as exc:
                log.warning("%s broke the protocol: %s", peer.text, exc)
                self._penalize(peer.ip, PENALTY_PROTOCOL, str(exc))
                peer.close(str(exc))
                return

    def _throttle(self, peer: Peer, type_: str, now: float) -> bool:
        """Apply the per-connection rate limit; False if the peer was dropped for flooding."""
        wait = peer.bucket.take(now, _MESSAGE_COST.get(type_, 1.0))
        if wait <= 0:
            peer.throttled_since = None
            return True
        self.stats["rate_limited"] += 1
        if peer.throttled_since is None:
            peer.throttled_since = now
        elif now - peer.throttled_since > self.config.flood_grace:
            self.stats["flood_drops"] += 1
            log.warning("dropping %s: it keeps sending faster than %g frames/s", peer.text, self.config.message_rate)
            self._penalize(peer.ip, PENALTY_FLOOD * self.config.flood_grace, "flooding")
            peer.close("too many messages; slow down")
            return False
        # Reading nothing while we wait pushes back on the sender through TCP.
        return not self._closing.wait(wait)

    def _penalize(self, ip: str, points: float, reason: str) -> None:
        with self._lock:
            banned = self._standing.penalize(ip, points, reason, time.monotonic())
            victims = [p for p in self._peers if p.ip == ip] if banned else []
        for peer in victims:
            peer.close(f"banned for a while: {reason}")

    # --- message handling ----------------------------------------------------------------------------------

    def _dispatch(self, peer: Peer, type_: str, f: dict[str, Any]) -> None:
        if type_ == "ping":
            peer.send("pong", nonce=f["nonce"])
        elif type_ == "pong":
            pass
        elif type_ == "error":
            log.info("%s closed the connection: %s", peer.text, f["reason"][:200])
            peer.close()
        elif type_ == "status":
            peer.send("status_result", status=self.status())
        elif type_ == "lookup":
            self._handle_lookup(peer, f["by"], f["value"])
        elif type_ == "get_headers":
            headers = self.ledger.headers_after(f["locator"], min(f["limit"], MAX_HEADERS))
            peer.send("headers", headers=[h.packed for h in headers])
        elif type_ == "prove":
            peer.send("proof", **sign_reachability(self.identity, f["nonce"], peer.conn.local[0], self.params.name))
        elif type_ == "submit":
            self._handle_submit(peer, f["record"])
        elif type_ == "get_checkpoint":  # finality survey (docs/ledger-protocol.md)
            peer.send("checkpoint", **self.ledger.checkpoint_answer(f.get("height"), self.clock()))
        elif not peer.is_peer:
            raise ProtocolError(f"a light client cannot send {type_}")
        elif type_ == "get_blocks":
            self._handle_get_blocks(peer, f["hashes"])
        elif type_ == "headers":
            self._handle_headers(peer, f["headers"])
        elif type_ == "blocks":
            self._handle_blocks(peer, f["blocks"])
        elif type_ == "block":
            self._handle_block_announcement(peer, f["block"])
        elif type_ == "record":
            self._handle_record_announcement(peer, f["record"])
        elif type_ == "get_peers":
            peer.send("peers", addrs=self._share_addresses(exclude=peer.listen_addr))
        elif type_ == "peers":
            self._learn_addresses(f["addrs"])
        else:
            raise ProtocolError(f"{type_} is not expected after the handshake")

    def _handle_lookup(self, peer: Peer, by: str, value: str) -> None:
        try:
            answer = answer_lookup(self.ledger, parse_lookup_kind(by), value, self.clock())
        except AmbiguousLookup as exc:
            peer.send("lookup_result", found=False, reason=str(exc))
            return
        if answer is None:
            peer.send("lookup_result", found=False, reason=f"no live binding for {by} {value[:64]}")
            return
        peer.send("lookup_result", found=True, **answer.to_wire())

    def _handle_submit(self, peer: Peer, wire: dict[str, Any]) -> None:
        try:
            record = Record.from_wire(wire)
            self.admit_record(record, source=peer)
        except LedgerError as exc:
            peer.send("submit_result", accepted=False, reason=str(exc))
            return
        peer.send("submit_result", accepted=True, id=record.id)

    def _handle_get_blocks(self, peer: Peer, hashes: list[bytes]) -> None:
        out: list[dict[str, Any]] = []
        budget = MAX_BLOCKS_BYTES
        for block in self.ledger.get_blocks(hashes):
            wire = block.to_wire()
            size = len(msgpack.packb(wire, use_bin_type=True))
            if out and size > budget:
                break  # the asker re-requests what is missing
            out.append(wire)
            budget -= size
        peer.send("blocks", blocks=out)

    def _learn_addresses(self, addrs: list[str]) -> None:
        now = time.monotonic()
        for text in addrs[:MAX_PEERS_SHARED]:
            try:
                addr = parse_address(text, LEDGER_PORT)
            except UserError:
                continue
            with self._lock:
                if not self._standing.is_banned(addr[0], now):
                    self._book.add(addr, now)

    def _share_addresses(self, exclude: Address | None) -> list[str]:
        with self._lock:
            addrs = [p.listen_addr for p in self._peers if p.is_peer and p.listen_addr is not None]
            addrs += self._book.sample(MAX_PEERS_SHARED)
        if not self.no_inbound:
            addrs.insert(0, (self.host, self.port))
        seen: list[str] = []
        for addr in addrs:
            text = format_address(*addr)
            if addr != exclude and text not in seen:
                seen.append(text)
        return seen[:MAX_PEERS_SHARED]

    # --- sync ----------------------------------------------------------------------------------------------

    def _maybe_sync(self, candidate: Peer | None = None) -> None:
        """Start a headers-first sync from ``candidate`` (or the best peer) if it may have more work than us."""
        with self._lock:
            if self._closing.is_set() or (self._sync_peer is not None and not self._sync_peer.closed.is_set()):
                return
            _, _, work = self.ledger.tip_info()
            pool = [candidate] if candidate is not None else list(self._peers)
            behind = [p for p in pool if p.is_peer and not p.closed.is_set() and (p.work > work or p.wants_sync)]
            if not behind:
                if any(p.is_peer for p in pool):
                    self._ever_synced = True  # a peer has no more work than we do: we are in sync with it
                return
            peer = max(behind, key=lambda p: p.work)
            peer.wants_sync = False
            self._sync_peer = peer
            self._sync_start_tip = self.ledger.tip_info()[1]
            peer.sync_last = None
        log.info("syncing from %s (its height %d, ours %d)", peer.text, peer.height, self.ledger.height)
        self._request_headers(peer)

    def _request_headers(self, peer: Peer) -> None:
        locator = self.ledger.locator()
        if peer.sync_last is not None:
            locator = [peer.sync_last, *locator][:64]
        peer.awaiting = "headers"
        peer.deadline = time.monotonic() + self.config.request_timeout
        self._report_progress(SyncProgress(peer.text, "headers", self.ledger.height, max(peer.height,
                                                                                           self.ledger.height)))
        peer.send("get_headers", locator=locator, limit=MAX_HEADERS)

    def _handle_headers(self, peer: Peer, packed: list[bytes]) -> None:
        if peer.awaiting != "headers":
            raise ProtocolError("headers were sent without being asked for")
        peer.awaiting, peer.deadline = None, None
        try:
            headers = [BlockHeader.unpack(h) for h in packed]
            new = self._unknown_suffix(headers)
            if new:
                self.ledger.check_headers(new, self.clock())
        except LedgerError as exc:
            self.stats["invalid_blocks"] += 1
            log.warning("invalid headers from %s: %s", peer.text, exc)
            self._penalize(peer.ip, PENALTY_INVALID_HEADERS, f"invalid headers: {exc}")
            peer.close(f"invalid headers: {exc}")
            return
        if not headers:
            self._finish_sync(peer)
            return
        peer.sync_last = headers[-1].hash
        peer.height = max(peer.height, headers[-1].height)
        peer.download.want([h.hash for h in new])
        self._request_blocks(peer)

    def _unknown_suffix(self, headers: list[BlockHeader]) -> list[BlockHeader]:
        """The headers after the last one we already have (they must build on it)."""
        with self.ledger.lock:
            chain = self.ledger.chain
            for i in range(len(headers) - 1, -1, -1):
                if headers[i].hash in chain:  # accepted blocks only: an orphan's header still needs checking
                    return headers[i + 1:]
        return headers

    def _request_blocks(self, peer: Peer) -> None:
        """Keep the download window full; once every body is in, ask whether there are more headers."""
        if peer.download.done:
            self._request_headers(peer)
            return
        while hashes := peer.download.next_request():
            peer.awaiting = "blocks"
            peer.deadline = time.monotonic() + self.config.request_timeout
            peer.send("get_blocks", hashes=hashes)

    def _handle_blocks(self, peer: Peer, wires: list[dict[str, Any]]) -> None:
        if peer.awaiting != "blocks" or peer.download.idle:
            raise ProtocolError("blocks were sent without being asked for")
        try:
            blocks = [Block.from_wire(w) for w in wires]
        except LedgerError as exc:
            self._invalid_block_from(peer, str(exc))
            return
        if peer.download.received([b.hash for b in blocks]):
            raise ProtocolError("the blocks answer holds blocks that were not asked for")
        if peer.download.stalled:
            log.info("%s does not have the blocks it announced; syncing elsewhere", peer.text)
            peer.download.clear()
            peer.awaiting, peer.deadline = None, None
            self._finish_sync(peer)
            return
        if peer.download.idle:
            peer.awaiting, peer.deadline = None, None
        else:
            peer.deadline = time.monotonic() + self.config.request_timeout
        if not peer.download.done:
            self._request_blocks(peer)  # the peer prepares the next batch while we validate this one
        self._ctx.bulk = True
        self._ctx.source = peer
        try:
            for block in blocks:
                if not self._receive(peer, block):
                    peer.download.clear()
                    return
        finally:
            self._ctx.bulk = False
            self._ctx.source = None
        height = self.ledger.height
        self._report_progress(SyncProgress(peer.text, "blocks", height, max(peer.height, height)))
        if peer.download.done:
            self._request_headers(peer)  # bodies done: ask whether there is more

    def _receive(self, peer: Peer, block: Block) -> bool:
        """Hand a block from ``peer`` to the ledger; False (and the peer penalised) if it is invalid."""
        now = self.clock()
        if block.header.timestamp > now + self.params.max_future_seconds:
            # Possibly only our clocks disagree: refuse without banning.
            log.info("ignoring %s from %s: dated in the future", block.header.describe(), peer.text)
            self._penalize(peer.ip, PENALTY_PROTOCOL, f"{block.header.describe()} is dated in the future")
            return False
        result = self.ledger.receive_block(block, now, source=peer.text)  # finality: names the peer of a parked branch
        if result.status == "invalid":
            self._invalid_block_from(peer, result.reason)
            return False
        if result.status == "added":
            with self.ledger.lock:
                work = self.ledger.chain.chain_work(block.hash)
            if work is not None:
                peer.work = max(peer.work, work)
                peer.height = max(peer.height, block.height)
        return True

    def _invalid_block_from(self, peer: Peer, reason: str) -> None:
        self.stats["invalid_blocks"] += 1
        log.warning("invalid block from %s: %s", peer.text, reason)
        self._penalize(peer.ip, PENALTY_INVALID_BLOCK, f"invalid block: {reason}")
        peer.close(f"invalid block: {reason}")

    def _finish_sync(self, peer: Peer) -> None:
        with self._lock:
            if self._sync_peer is peer:
                self._sync_peer = None
            self._ever_synced = True
        height, tip, work = self.ledger.tip_info()
        # It has nothing after our locator: its main chain ends at our tip (or it lied about its work).
        peer.work = work
        self._report_progress(SyncProgress(peer.text, "done", height, height))
        tip_block = self.ledger.get_block(tip)
        if tip_block is not None and tip != self._sync_start_tip:
            # Peers that are behind learn of the new tip (and fetch the rest) from one announcement.
            self._broadcast("block", {"block": tip_block.to_wire()}, exclude=peer)
        self._maybe_sync()

    def _report_progress(self, progress: SyncProgress) -> None:
        self._progress = progress
        now = time.monotonic()
        if progress.phase in ("done", "interrupted"):
            log.info("%s", progress.describe())
        elif now - self._last_progress_log >= 1.0:  # the CLI and GUI show progress through on_progress
            self._last_progress_log = now
            log.debug("%s", progress.describe())
        if self.on_progress is not None:
            self.on_progress(progress)

    # --- announcements -------------------------------------------------------------------------------------

    def _handle_block_announcement(self, peer: Peer, wire: dict[str, Any]) -> None:
        try:
            block = Block.from_wire(wire)
        except LedgerError as exc:
            self._invalid_block_from(peer, str(exc))
            return
        if self.ledger.has_block(block.hash):
            return
        peer.height = max(peer.height, block.height)
        self._ctx.source = peer
        try:
            ok = self._receive(peer, block)
        finally:
            self._ctx.source = None
        with self.ledger.lock:
            connected = block.hash in self.ledger.chain
        if ok and not connected:
            # Its parent is unknown to us: the peer is ahead on some branch; fetch headers from it.
            peer.wants_sync = True
            self._maybe_sync(peer)

    def _handle_record_announcement(self, peer: Peer, wire: dict[str, Any]) -> None:
        try:
            record = Record.from_wire(wire)
        except LedgerError as exc:
            self.stats["invalid_records"] += 1
            self._penalize(peer.ip, PENALTY_BAD_RECORD, f"malformed record: {exc}")
            log.info("malformed record from %s: %s", peer.text, exc)
            return
        state = self._ledger_state()   # read before taking our lock: never hold it while waiting for the ledger's
        with self._lock:
            if record.id in self._admitting or self._recently_rejected(record.id, state) is not None:
                return
            self._admitting.add(record.id)
        try:
            self._admit_queue.put_nowait((record, peer))
        except queue.Full:
            with self._lock:
                self._admitting.discard(record.id)
            log.warning("record admission queue is full; dropping a record from %s", peer.text)

    def _broadcast(self, type_: str, fields: dict[str, Any], exclude: Peer | None) -> None:
        frame = LEDGER_PROTOCOL.encode(type_, **fields)
        for peer in self.peers():
            if peer is not exclude:
                peer.send_frame(frame)

    def _on_block(self, block: Block, result: AddResult) -> None:
        """Ledger listener: push each new main-chain block to the peers (not during bulk sync)."""
        if getattr(self._ctx, "bulk", False) or not result.became_tip:
            return
        if any(b.hash == block.hash for b in result.connected):
            self._broadcast("block", {"block": block.to_wire()}, exclude=getattr(self._ctx, "source", None))

    def _on_record(self, record: Record) -> None:
        """Ledger listener: push each newly pending record to the peers."""
        self._broadcast("record", {"record": record.to_wire()}, exclude=getattr(self._ctx, "source", None))

    # --- record admission ----------------------------------------------------------------------------------

    def _ledger_state(self) -> tuple[bytes, int]:
        """What a rule check depends on: the tip and the pending pool (which only grows between blocks)."""
        with self.ledger.lock:
            return self.ledger.chain.tip_hash, len(self.ledger.pool)

    def _recently_rejected(self, record_id: bytes, state: tuple[bytes, int]) -> str | None:
        """The reason a record was refused, while that verdict still holds: a bad signature stays bad, but a
        record refused by the ledger rules (e.g. its predecessor had not arrived yet, as gossip may reorder) is
        checked again once the tip or the pool has changed."""
        entry = self._rejected.get(record_id)
        if entry is None:
            return None
        when, reason, then = entry
        if time.monotonic() - when > self.config.rejected_ttl or (then is not None and then != state):
            del self._rejected[record_id]
            return None
        return reason

    def _remember_rejection(self, record_id: bytes, reason: str, *, final: bool = False) -> None:
        state = None if final else self._ledger_state()
        with self._lock:
            self._rejected[record_id] = (time.monotonic(), reason, state)
            while len(self._rejected) > 10_000:
                self._rejected.popitem(last=False)

    def admit_record(self, record: Record, *, source: Peer | None = None) -> bool:
        """Check a record (signatures, ledger rules, and a reachability proof for a new IP claim) and add it to
        the pending pool, which announces it. Returns False if it was already known; raises
        :class:`LedgerError` with the reason when it is refused."""
        state = self._ledger_state()
        with self._lock:
            rejected = self._recently_rejected(record.id, state)
        if rejected is not None:
            raise LedgerError(rejected)
        now = self.clock()
        try:
            record.verify_signatures(self.params.name)
        except LedgerError as exc:
            self.stats["invalid_records"] += 1
            if source is not None:
                self._penalize(source.ip, PENALTY_BAD_RECORD, str(exc))
            self._remember_rejection(record.id, str(exc), final=True)
            raise
        try:
            new_claim = self._precheck(record, now)
            if new_claim is None:
                return False
            if new_claim:
                try:
                    prove_reachability(record, self.params, source_ip=self.host,
                                       timeout=self.config.reachability_timeout)
                except LedgerError:
                    self.stats["reachability_failures"] += 1
                    raise
            self._ctx.source = source
            try:
                added = self.ledger.submit_record(record, self.clock())
            finally:
                self._ctx.source = None
        except LedgerError as exc:
            log.info("refused record: %s", exc)
            self._remember_rejection(record.id, str(exc))
            raise
        if added:
            self.stats["records_admitted"] += 1
            log.info("admitted %s", record.describe())
        return added

    def _precheck(self, record: Record, now: float) -> bool | None:
        """Rule check against the tip and the pool; None if already known, else whether it is a new IP claim."""
        ledger = self.ledger
        with ledger.lock:
            if record.id in ledger.pool or ledger.chain.has_record(record.id):
                return None
            state = ledger.pool.state(ledger.chain, now)
            state.check(record, int(now))
            if record.ip is None:
                return False
            holder = state.lookup_ip(record.ip, now)
        return holder is None or holder.record.fingerprint not in (record.fingerprint, record.signer_fingerprint)

    def _admission_loop(self) -> None:
        while True:
            item = self._admit_queue.get()
            if item is None:
                return
            record, source = item
            try:
                self.admit_record(record, source=source)
            except LedgerError:
                pass  # logged with its reason by admit_record; the record is refused
            finally:
                with self._lock:
                    self._admitting.discard(record.id)

    # --- own record ----------------------------------------------------------------------------------------

    def _desired_binding(self) -> dict[str, Any]:
        if self.no_inbound:
            return {"nickname": self.nickname, "ip": None, "port": None, "ledger_port": None, "relay": self.relay}
        return {"nickname": self.nickname, "ip": self.host, "port": self.chat_port, "ledger_port": self.port,
                "relay": self.relay}

    def ensure_registered(self) -> Record | None:
        """Register, renew or update this machine's record if needed; returns the record submitted, if any.

        Raises :class:`LedgerError` when the ledger refuses it (e.g. the IP or nickname is taken)."""
        now = self.clock()
        fp = self.identity.fingerprint
        latest = self.ledger.latest_record(fp, now)
        desired = self._desired_binding()
        lifetime = self.config.record_lifetime or self.params.default_record_lifetime
        if latest is not None:
            if latest.kind == "revoke":
                raise LedgerError("this machine's identity was revoked; create a new key to register again")
            if latest.kind == "rotate" and latest.signer_fingerprint == fp:
                raise LedgerError("this machine's key was rotated away; start the node with the new key")
            same = all(getattr(latest, k) == v for k, v in desired.items())
            remaining = latest.expires - now
            if same and remaining > (latest.expires - latest.issued) * self.config.renew_fraction:
                return None
        seq, prev = self.ledger.next_sequence(fp, now)
        record = make_register(self.identity, network=self.params.name, seq=seq, prev=prev, issued=int(now),
                               lifetime=lifetime, **desired)
        action = "registering" if latest is None else "renewing" if same else "updating"
        log.info("%s this machine's record: %s", action, record.describe())
        self.admit_record(record)
        return record

    def _registration_due(self, now: float) -> bool:
        if not self.config.register or now < self._next_register:
            return False
        with self._lock:
            busy = self._sync_peer is not None
            synced = self._ever_synced
        if busy:
            return False
        return synced or now - self._started_at >= self.config.register_grace

    # --- maintenance ---------------------------------------------------------------------------------------

    def _maintain_loop(self) -> None:
        while not self._closing.wait(self.config.maintain_interval):
            now = time.monotonic()
            self._dial_more(now)
            self._check_peers(now)
            if self._registration_due(now):
                try:
                    self.ensure_registered()
                    self.registration_error = None
                    self._next_register = now + self.config.register_check
                except LedgerError as exc:
                    if self.registration_error != str(exc):
                        log.warning("cannot register this machine's record: %s", exc)
                    self.registration_error = str(exc)
                    self._next_register = now + self.config.register_retry
            if now >= self._next_revalidate:
                self._next_revalidate = now + 60.0
                self.ledger.revalidate_pool(self.clock())
            if not self.syncing:
                self._maybe_sync()

    def _dial_more(self, now: float) -> None:
        with self._lock:
            if self._closing.is_set():
                return
            peers = [p for p in self._peers if p.is_peer]
            outbound = sum(1 for p in peers if not p.inbound) + len(self._dialing)
            want = min(self.config.outbound_peers, self.max_peers - len(peers) + outbound) - outbound
            if want <= 0:
                return
            connected = {p.listen_addr for p in peers if p.listen_addr is not None}
            candidates = [a for a in self._book.due(now, exclude=connected | self._dialing)
                          if not self._standing.is_banned(a[0], now)][:want]
            for addr in candidates:
                self._book.attempted(addr, now)
                self._dialing.add(addr)
                thread = threading.Thread(target=self._dial, args=(addr,), name=f"ledger-dial-{addr[0]}")
                self._threads.add(thread)
                thread.start()

    def _check_peers(self, now: float) -> None:
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            if peer.deadline is not None and now > peer.deadline:
                log.info("%s did not answer a sync request in time", peer.text)
                peer.close("no answer to a sync request in time")
            elif peer.is_peer and min(now - peer.last_recv, now - peer.last_ping) > self.config.ping_interval:
                peer.last_ping = now
                peer.send("ping", nonce=int(now * 1000) & _MAX_WIRE_INT)


def default_nickname(host: str) -> str:
    """``<hostname>-<ip>`` cut to the 32 characters a nickname may have (unique per address on one machine)."""
    name = "".join(c for c in socket.gethostname().split(".")[0] if c.isalnum() or c in "-_") or "node"
    room = 32 - len(host) - 1
    return f"{name[:room]}-{host}" if room >= 3 else host[-32:]
