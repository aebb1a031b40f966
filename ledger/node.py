"""The ledger gossip node: a :class:`~p2pchat.foundation.transport.FrameServer` plus outgoing connections
around a :class:`~ledger.local_ledger.LocalLedger`.

What it does (docs/ledger-protocol.md has the frames and flows):

- handshake: the dialling side sends ``hello`` (version, network, genesis, parameters, height, tip, work,
  listen port, role), the other answers ``hello_ack`` or an ``error`` naming what it speaks;
- headers-first sync: peers that may have more are probed for headers; the headers of the peer whose checked
  headers show the preferred chain (never by the work a hello claims) are followed, and their bodies are fetched
  from every peer at once (:mod:`ledger.block_download`) and applied in height order; a stalling peer is
  penalised and left, its heights asked of the others; progress is reported through ``on_progress``;
- announcements of new records and blocks (each accepted one is pushed to every other peer); orphans held in
  bounded per-sender shares in memory; side blocks that would not be preferred are not stored;
- peer exchange, reconnects with exponential backoff, outbound slots inbound peers cannot take, at most 2 inbound
  peers per address, pings, and a timeout on every read;
- standing: a peer that sends invalid data loses standing and is disconnected (banned a while for what
  cannot be an honest mistake); a peer that connects and says nothing is dropped; a flooding peer is slowed
  to the message rate limit and dropped if it keeps flooding;
- work per stranger: what one address can make the node do is budgeted per address, all its connections
  together (frames, bytes of answers, new connections, reachability proofs — these also for everyone); a
  connection is not read while its answers wait unsent; when every connection is taken, the address holding
  most gives one up to a newcomer from another;
- records from peers or light clients are checked by the ledger, and a record that claims an IP address for a
  key that does not hold it yet is only admitted after a reachability proof (:mod:`ledger.reachability`);
- this machine's own record is registered, renewed before it expires, and updated when the address changes;
- lookups, status and reachability proofs are served on the same port.

Threads: the server's accept and connection threads, one thread per outgoing connection, one writer thread per
connection (so a slow reader never blocks us), the maintenance thread, the record-admission workers and the
sync applier (downloaded bodies are applied there, so no peer's reading waits on validation).
:meth:`LedgerNode.close` stops and joins all of them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ledger.assume_valid import AssumeValid, BackgroundVerifier, VerifyState
from ledger.bindings import NicknameTaken
from ledger.block_download import DownloadScheduler
from ledger.blocks import Block, BlockHeader, chain_preference
from ledger.chain import AddResult
from ledger.checkpoint_evidence import CheckpointEvidence, EvidenceConfig
from ledger.control import ControlServer, local_answer
from ledger.disputes import DisputeConfig, DisputeService, Evidence
from ledger.errors import LedgerError, StoreError
from ledger.local_ledger import LocalLedger
from ledger.lookup_service import AmbiguousLookup, answer_lookup
from ledger.nettime import MIN_SAMPLES, NetworkTime
from ledger.peers import (
    PENALTY_BAD_FRAME,
    PENALTY_BAD_RECORD,
    PENALTY_FLOOD,
    PENALTY_INVALID_BLOCK,
    PENALTY_INVALID_HEADERS,
    PENALTY_ORPHAN,
    PENALTY_PROTOCOL,
    PENALTY_SIDE_BLOCK,
    PENALTY_SILENT,
    PENALTY_STALL,
    Address,
    AddressBook,
    OrphanBuffer,
    SenderBudgets,
    Standing,
    TokenBucket,
)
from ledger.protocol import (
    LEDGER_PROTOCOL,
    MAX_BLOCKS_BYTES,
    MAX_HEADERS,
    MAX_PEERS_SHARED,
    ROLE_CLIENT,
    ROLE_PEER,
    PeerHello,
    check_compatible,
    hello_fields,
    parse_lookup_kind,
)
from ledger.prune import Pruner, not_served
from ledger.reachability import prove_reachability, sign_reachability
from ledger.records import Record, make_register, validate_nickname
from ledger.splits import SplitReport, SplitWatch, significant
from ledger.sync import SyncProgress
from ledger.watch import Desired, OwnerWatch
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address, normalize_ip, parse_address
from p2pchat.foundation.errors import FrameError, PeerUnreachable, ProtocolError, UserError
from p2pchat.foundation.host_address import HostFollower, HostWatch
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect

log = logging.getLogger(__name__)

ProgressCallback = Callable[[SyncProgress], None]

# Cost of a message against the sender's rate limit (default 1): requests that make us sign or send a lot cost more.
_MESSAGE_COST = {"get_blocks": 5.0, "prove": 20.0, "submit": 10.0, "lookup": 2.0, "get_headers": 2.0,
                 "binding_alert": 20.0, "checkpoint_evidence": 10.0}
_MAX_WIRE_INT = 2**63 - 1
MAX_CONNECTIONS_PER_IP = 16


@dataclass
class NodeConfig:
    """Timeouts, limits and intervals of a node (tests shorten them)."""

    handshake_timeout: float = 10.0        # the first frame must arrive within this
    idle_timeout: float = 120.0            # a peer silent this long is dropped (we ping every ping_interval)
    client_idle_timeout: float = 30.0      # same for light-client connections (they are not pinged)
    ping_interval: float = 30.0
    request_timeout: float = 10.0          # a sync request (get_headers/get_blocks) unanswered this long is a
                                           # stall: the peer is penalised and another one syncs us
    stall_cooldown: float = 300.0          # a stalled peer's address is not asked to sync us for this long
    max_pending_headers: int = 8000        # checked headers of a branch not yet ahead of ours, per peer
    orphans_per_peer: int = 4              # blocks with an unknown parent held per sender address…
    orphan_bytes_per_peer: int = 2_000_000  # …and their bytes;
    orphan_bytes_total: int = 16_000_000   # all orphans together
    connect_timeout: float = 5.0
    send_timeout: float = 15.0
    reachability_timeout: float = 4.0
    maintain_interval: float = 0.25
    future_retry: float = 30.0             # a peer whose blocks or headers are dated in the future by our clock is
                                           # asked again after this long (clocks may disagree; ledger/nettime.py)
    tip_announce_interval: float = 60.0    # our tip block is announced again to peers whose known tip differs
                                           # (equal-work forks heal without a new block)
    outbound_peers: int = 8                # outbound target; up to max_peers // 2 of them are reserved:
                                           # inbound peers can never take those slots (eclipse resistance)
    max_inbound_per_ip: int = 2            # gossip peers accepted from one address
    extra_connections: int = 64            # inbound connections beyond max_peers (light clients, handshakes);
                                           # when all are taken, a newcomer from an address holding fewer of
                                           # them displaces the newest connection of the address holding most
    message_rate: float = 200.0            # frames per second per sender IP (all its connections together)
    message_burst: float = 1000.0
    # --- work per stranger: budgets per sender IP, so 16 connections from one address buy no more than one ---
    answer_rate: float = 8 * 1024 * 1024   # bytes of answers a second per sender IP (reading waits past it)…
    answer_burst: float = 32 * 1024 * 1024  # …saved up to this many (making them costs ~10 ms a MiB)
    announce_rate: float = 2 * 1024 * 1024  # bytes of announced blocks a second per sender IP (reading waits past
    announce_burst: float = 16 * 1024 * 1024  # it): parsing one costs ~16 ms a MB, repeats and early ones cost
                                           # their sender nothing else (red team 2026-12-07 night)
    handshake_rate: float = 50.0           # new connections a second per sender IP (a handshake costs ~1 ms)…
    handshake_burst: float = 200.0         # (a chat node looks up each caller over a connection of its own)
    handshake_wait: float = 2.0            # …one that would wait longer for its turn is refused
    proof_rate_per_ip: float = 0.1         # reachability proofs (one RSA signature each) per sender IP…
    proof_burst_per_ip: float = 4.0
    proof_rate: float = 8.0                # …and for everyone together
    proof_burst: float = 64.0
    unread_client_bytes: int = 0           # a connection is not read again while more than this of our answers
    unread_peer_bytes: int = 8 * 1024 * 1024  # wait unsent (a peer keeps two block answers in flight)
    flood_grace: float = 3.0               # seconds of sustained flooding before the peer is dropped
    ban_seconds: float = 600.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    block_batch: int = 128                 # hashes per get_blocks request (ledger/block_download.py)…
    blocks_in_flight: int = 2              # …requests out to each peer at once…
    download_window: int = 1024            # …heights ahead of the next one to apply…
    download_buffer_bytes: int = 32_000_000  # …and bodies held waiting for their turn
    block_stall_timeout: float = 2.0       # the holder of the lowest missing body while the window is used up is
                                           # cut off after this (doubled each time, up to 64 s)
    apply_batch: int = 256                 # downloaded bodies applied per turn of the sync applier
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
    control_socket: bool = True            # answer `ledger lookup` on <data dir>/ledger.sock (ledger/control.py)
    rejected_ttl: float = 120.0            # a refused record is not re-checked (or re-dialled) for this long
    # --- owner watch and disputes (ledger/watch.py, ledger/disputes.py) ---
    watch_repeat: float = 600.0            # our binding alert is gossiped again this often while it lasts
    disputes: DisputeConfig = field(default_factory=DisputeConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)   # chat nodes' checkpoint reports
    # --- assumed-valid join (ledger/assume_valid.py) ---
    verify_rate: float = 0.0               # blocks a second checked in the background (0: unlimited)
    # --- pruning (ledger/prune.py) ---
    prune_keep: int | None = None          # prune bodies below the final height minus this many (None: never)


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
        self.pruned = hello.pruned or 0   # it serves no bodies at or below this height (prune.py)
        self.pruned_noted = False
        self.claimed_work = hello.work or 0   # what its hello says: a reason to ask it, never a ranking
        self.claims_more = True           # until a headers answer shows all it has after our locator
        self.validated_work = 0           # work of the best chain of its whose headers (or blocks) we checked
        self.validated_tip = b""
        self.pending: list[BlockHeader] = []  # its checked headers of a branch, bodies not downloaded yet
        self.spent: tuple[int, int] = (-1, 0)  # its validated preference when a sync from it last ended: it is
                                              # chosen again only once it shows more than that
        self.wants_sync = False           # it announced a block we could not connect
        self.known_tip = hello.tip or b""  # the newest main-chain tip it told us of (hello, announcements) or we
                                           # announced to it: a differing one is announced again (§5.1)
        self.pongs = 0                    # answers to our pings (an idle connection's heartbeat)
        self.bodies_delivered = 0         # block bodies it sent us in downloads (checked against their headers)
        self.connected_at = now
        self.clock_offset: float | None = None  # its clock minus ours when its hello came (None: not said)
        self.probe_after = 0.0            # a probe refused for future-dated headers waits until then (monotonic)
        self.last_recv = now
        self.last_ping = now
        self.throttled_since: float | None = None
        # "headers" while a get_headers is out, "checking" while its answer is being checked (block requests are
        # the download scheduler's)
        self.awaiting: str | None = None
        self.deadline: float | None = None
        self.sync_last: bytes | None = None
        self.helper_probed = -1           # the download's last height when we last asked it for headers to see
                                          # whether it holds the bodies (ledger/block_download.py)
        self.closed = threading.Event()
        self._max_bytes = config.send_queue_bytes
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._drained = threading.Condition(self._bytes_lock)
        self.queued_total = 0             # bytes ever queued: what an answer cost is read off it
        self._unread_limit = config.unread_peer_bytes if self.is_peer else config.unread_client_bytes
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=config.send_queue)
        self._writer = threading.Thread(target=self._write_loop, name=f"ledger-send-{self.text}")
        self._writer.start()

    @property
    def claimed_preference(self) -> tuple[int, int]:
        """Fork-choice key of the chain its hello claims: a reason to probe it (equal work and a lower tip hash
        included, so equal-work forks heal on reconnect), never a ranking."""
        return chain_preference(self.claimed_work, self.hello.tip or b"\xff" * 32)

    @property
    def validated_preference(self) -> tuple[int, int]:
        """Fork-choice key of its best checked chain (0 work before anything was checked)."""
        return chain_preference(self.validated_work, self.validated_tip or b"\xff" * 32)

    def note_validated(self, work: int, tip: bytes) -> None:
        if chain_preference(work, tip) > self.validated_preference:
            self.validated_work, self.validated_tip = work, tip

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
                self.queued_total += len(frame)
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
                self._drained.notify_all()
        self.closed.set()
        self.conn.close()
        with self._bytes_lock:
            self._drained.notify_all()

    def wait_answers_sent(self) -> bool:
        """Wait until what we queued for this connection is down to its unread limit (a client: nothing left;
        a peer: 8 MiB), so a connection that asks and never reads holds one answer, not thousands. Bounded: a
        peer that reads nothing fails the writer's send timeout, which closes the connection. False once closed."""
        with self._bytes_lock:
            while self._queued_bytes > self._unread_limit and not self.closed.is_set():
                self._drained.wait(0.5)
        return not self.closed.is_set()

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
                "inbound": self.inbound, "height": self.height, "agent": self.hello.agent,
                "blocks_delivered": self.bodies_delivered}


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
                 clock: Callable[[], float] = time.time,
                 reload_identity: Callable[[bytes], Identity | None] | None = None,
                 assume_valid: AssumeValid | None = None, host_watch: HostWatch | None = None) -> None:
        self.identity = identity
        self.ledger = ledger
        self.params = ledger.params
        # --host auto: ``host_watch`` follows this machine's address; the node moves with it (move_to)
        self.host = normalize_ip(host_watch.current if host_watch is not None else host)
        self._host_follower = (None if host_watch is None else
                               HostFollower(host_watch, self.move_to, name="ledger-host-watch"))
        self.requested_port = port
        self.chat_port = chat_port
        self.nickname = validate_nickname(nickname) if nickname else default_nickname(identity.fingerprint)
        # --- own record published by hand (ledger update / rotate-key / revoke): see _follow_own_records ---
        self._nickname_given = nickname is not None
        self._reload_identity = reload_identity
        self._own_seen: set[bytes] | None = None   # ids of own records this node made or already followed
        self.relay = relay
        self.no_inbound = no_inbound
        self.max_peers = max_peers
        self.config = config or NodeConfig()
        self.on_progress = on_progress
        # --- network-adjusted time (ledger/nettime.py): our clock corrected by the peers' median offset ---
        self._raw_clock = clock
        self.nettime = NetworkTime(clock)
        self.clock: Callable[[], float] = self.nettime.now
        ledger_clock = ledger.clock
        ledger.clock = lambda: ledger_clock() + self.nettime.issue_offset()   # blocks we mine: the corrected time
        self._clock_warned: str | None = None
        # --- end network-adjusted time ---
        if no_inbound and relay is None:
            raise LedgerError("a node without inbound connections must publish a relay hint (--relay IP:PORT)")
        self.node_id = crypto.random_bytes(8)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._peers: dict[Peer, None] = {}
        self._dialing: set[Address] = set()
        self._unmeasured: set[Address] = set()   # dialled because a stranger's report named them: clock not sampled
        self._clock_probed: set[Address] = set()  # peers that connected in, dialled once to read their clock
        self._handshaking: set[FramedSocket] = set()
        self._threads: set[threading.Thread] = set()
        self._standing = Standing(self.config.ban_seconds)
        self._inbound: OrderedDict[FramedSocket, None] = OrderedDict()   # inbound connections, oldest first
        # Work per stranger (docs/ledger-protocol.md §6): budgets per sender IP, and one for every prover.
        self._rates = SenderBudgets(self.config.message_rate, self.config.message_burst)
        self._answers = SenderBudgets(self.config.answer_rate, self.config.answer_burst)
        self._announced = SenderBudgets(self.config.announce_rate, self.config.announce_burst)
        self._handshakes = SenderBudgets(self.config.handshake_rate, self.config.handshake_burst)
        self._proofs_per_ip = SenderBudgets(self.config.proof_rate_per_ip, self.config.proof_burst_per_ip)
        self._proofs = TokenBucket(self.config.proof_rate, self.config.proof_burst, time.monotonic())
        self._book = AddressBook(base_delay=self.config.backoff_base, max_delay=self.config.backoff_cap)
        self._seeds = [parse_address(s, LEDGER_PORT) for s in seeds]
        self._sync_peer: Peer | None = None
        self._stalled: dict[str, float] = {}                    # address → until when it is not asked to sync us
        self._orphans = OrphanBuffer(per_peer=self.config.orphans_per_peer,
                                     per_peer_bytes=self.config.orphan_bytes_per_peer,
                                     total_bytes=self.config.orphan_bytes_total)
        self._side_seen: OrderedDict[bytes, None] = OrderedDict()  # side blocks refused lately (repeats are free)
        self._sync_start_tip = b""
        # --- parallel block download (ledger/block_download.py): the sync peer's headers, bodies from everyone ---
        self._download: DownloadScheduler[Peer] = DownloadScheduler(
            batch=self.config.block_batch, requests_per_peer=self.config.blocks_in_flight,
            window=self.config.download_window, max_buffered_bytes=self.config.download_buffer_bytes,
            request_timeout=self.config.request_timeout, stall_timeout=self.config.block_stall_timeout,
            full_answer_bytes=MAX_BLOCKS_BYTES - self.params.max_block_bytes)
        self._bodies_ready = threading.Condition(self._lock)
        self._applier = threading.Thread(target=self._apply_loop, name="ledger-sync-apply")
        self._download_mark: tuple[float, int] = (0.0, 0)   # when the sync began, and our height then
        self._progress: SyncProgress | None = None
        self._last_progress_log = 0.0
        self._ctx = threading.local()
        self._admit_queue: queue.Queue[tuple[Record, Peer | None] | None] = queue.Queue(self.config.admission_queue)
        self._admitting: set[bytes] = set()
        self._rejected: OrderedDict[bytes, tuple[float, str, tuple[bytes, int] | None]] = OrderedDict()
        self._next_register = 0.0
        self._next_revalidate = 0.0
        self._next_tip_announce = 0.0
        self._started_at = 0.0
        self._ever_synced = not self._seeds
        self.registration_error: str | None = None
        self.nickname_problem: str | None = None   # set while the nickname clashes and the record goes without it
        self.stats = {"rate_limited": 0, "flood_drops": 0, "silent_drops": 0, "bad_frames": 0, "invalid_blocks": 0,
                      "invalid_records": 0, "reachability_failures": 0, "records_admitted": 0, "stalls": 0,
                      "orphans_dropped": 0, "side_blocks_refused": 0, "tip_announcements": 0, "proofs_refused": 0,
                      "connections_refused": 0, "announcements_slowed": 0}
        self._server: FrameServer | None = None
        self.port = port
        self._maintainer = threading.Thread(target=self._maintain_loop, name="ledger-maintain")
        # --- assumed-valid join: signatures below the agreed checkpoint are checked in the background ---
        self.assume_valid = assume_valid
        self._verifier = None if assume_valid is None else BackgroundVerifier(
            ledger, assume_valid, rate=self.config.verify_rate)
        self._workers = [threading.Thread(target=self._admission_loop, name=f"ledger-admit-{i}")
                         for i in range(self.config.admission_workers)]
        ledger.add_listener(on_block=self._on_block, on_record=self._on_record)
        # --- owner watch and disputes (ledger/watch.py, ledger/disputes.py) ---
        self.disputes = DisputeService(ledger, host=self.host, address=lambda: self.address,
                                       relay=self._relay_evidence, config=self.config.disputes, clock=self.clock)
        self.watch = OwnerWatch(ledger, identity.fingerprint, self._watched_binding, self._sign_claim,
                                self._own_alert, repeat=self.config.watch_repeat,
                                busy=lambda: self.syncing, clock=self.clock)
        self._next_watch = 0.0
        # --- end owner watch and disputes ---
        # --- checkpoint evidence from chat nodes (ledger/checkpoint_evidence.py) ---
        self.checkpoint_evidence = CheckpointEvidence(ledger, dial=self._dial_for_evidence, clock=self.clock,
                                                      config=self.config.evidence)
        self.splits = SplitWatch()   # splits older than the finality window, seen from the side that keeps its chain
        # --- local control socket: `ledger lookup` asks this node without a proof (ledger/control.py) ---
        self.control = ControlServer(ledger.data_dir, self._local_lookup) if self.config.control_socket else None
        # --- pruning (ledger/prune.py): not while history assumed valid at join is still being checked ---
        self._pruner = None if self.config.prune_keep is None else Pruner(
            ledger, self.config.prune_keep,
            ready=lambda: self.assume_valid is None or self.assume_valid.state is VerifyState.DONE)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> LedgerNode:
        """Listen on ``host:port``, start mining, dial the seeds and start the maintenance threads."""
        self._server = FrameServer(self.host, self.requested_port, LEDGER_PROTOCOL, self._serve_inbound,
                                   name=f"ledger-{self.host}", max_connections=self._server_connections,
                                   max_per_ip=MAX_CONNECTIONS_PER_IP, timeout=self.config.send_timeout)
        self.port = self._server.port
        self._book.own.add((self.host, self.port))
        now = time.monotonic()
        self._started_at = now
        for seed in self._seeds:
            self._book.add(seed, now, seed=True)
        # The control socket first: whoever got an answer on the port finds the socket too (ledger/control.py).
        if self.control is not None and not self.control.start():
            log.info("%s", self.control.problem)
        self._server.start()
        if self.config.mine:
            self.ledger.start_mining()
        for worker in self._workers:
            worker.start()
        self.disputes.start()
        if self.config.register:
            self.watch.attach()
        if self._verifier is not None:
            self._verifier.start()
        if self._pruner is not None:
            self._pruner.start()
        self._maintainer.start()
        self._applier.start()
        if self._host_follower is not None:
            self._host_follower.start()
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
        if self.control is not None:
            self.control.close()
        if self._host_follower is not None:
            self._host_follower.close()
        self.ledger.remove_listener(on_block=self._on_block, on_record=self._on_record)
        self.watch.detach()
        self.ledger.stop_mining()
        if self._maintainer.is_alive():
            self._maintainer.join()
        with self._lock:
            self._bodies_ready.notify_all()
        if self._applier.is_alive():
            self._applier.join()
        if self._verifier is not None:
            self._verifier.close()
        if self._pruner is not None:
            self._pruner.close()
        self.disputes.close()
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

    def move_to(self, old: str, new: str) -> None:
        """--host auto: this machine's address changed from ``old`` to ``new``. Listen there (same port), drop the
        connections of the old address (the peers are dialled again from the new one) and publish the updated
        record at once, so callers looking up this key or nickname find the new address."""
        server = FrameServer(new, self.port, LEDGER_PROTOCOL, self._serve_inbound, name=f"ledger-{new}",
                             max_connections=self._server_connections, max_per_ip=MAX_CONNECTIONS_PER_IP,
                             timeout=self.config.send_timeout).start()
        with self._lock:
            if self._closing.is_set():
                server.close()
                return
            previous, self._server = self._server, server
            self.host = new
            self._book.own.add((new, self.port))
            peers = list(self._peers)
            self._next_register = 0.0
        self.disputes.host = new
        for peer in peers:
            peer.abort()
        if previous is not None:
            previous.close()    # joins the threads of its inbound connections, ended just above
        log.warning("ledger node now at %s (was %s); publishing the updated record", self.address,
                    format_address(old, self.port))

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
            own_info = {"id": own.id.hex(),
                        "seq": own.seq, "kind": own.kind, "nickname": own.nickname, "ip": own.ip, "port": own.port,
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
            "nickname_problem": self.nickname_problem,
            "network_id": self.params.id_text, "orphan_blocks": len(self._orphans),
            "orphan_bytes": self._orphans.bytes, "side_blocks_refused": self.stats["side_blocks_refused"],
            "stalls": self.stats["stalls"],
            "clock": self.nettime.status(),   # network-adjusted time: offset to the peers' median, warning
        })
        status["background_verification"] = None if self.assume_valid is None else self.assume_valid.status()
        status["pruned"]["keep"] = self.config.prune_keep   # None: this node does not prune
        splits = self._open_splits()
        status["splits"] = [{"peer": s.peer, "fork_height": s.fork_height, "tip": s.tip_hash.hex(),
                             "tip_height": s.tip_height} for s in splits]
        status["alerts"] = list(status.get("alerts") or []) + [s.describe() for s in splits]
        clock_warning = self.nettime.warning()
        if own_info is not None and clock_warning is not None and (self.nettime.warned_offset() or 0) < 0:
            own_info["warning"] = (f"{clock_warning}: peers refuse records and blocks dated more than "
                                   f"{self.params.max_future_seconds} s in the future, so they may not have this "
                                   "record although this node shows it")
        # --- owner watch and disputes ---
        status["binding_alerts"] = [alert.to_status() for alert in self.watch.alerts()]
        status.update(self.disputes.status())
        status["checkpoint_evidence"] = self.checkpoint_evidence.status()
        return status

    # --- connections ---------------------------------------------------------------------------------------

    def _our_hello(self, role: str) -> dict[str, Any]:
        height, tip, work = self.ledger.tip_info()
        return hello_fields(role=role, nonce=self.node_id, network=self.params.name,
                            genesis=self.params.genesis_hash, params=self.params.to_wire(), height=height, tip=tip,
                            work=work, listen_port=None if self.no_inbound else self.port,
                            time=int(self._raw_clock()),   # our own clock, so peers measure it (not corrected)
                            pruned=self.ledger.pruned.height or None)

    @property
    def max_connections(self) -> int:
        """Inbound connections served at once (gossip peers, light clients, handshakes under way)."""
        return self.max_peers + self.config.extra_connections

    @property
    def _server_connections(self) -> int:
        # The server accepts a few more than we serve, so a newcomer can be judged against who holds the slots.
        return self.max_connections + MAX_CONNECTIONS_PER_IP

    def _serve_inbound(self, conn: FramedSocket) -> None:
        """FrameServer handler: make room (or refuse), then handshake and serve the connection until it ends."""
        victim = self._admit_inbound(conn)
        if victim is conn:
            conn.send_error(f"this node is at its limit of {self.max_connections} connections and {conn.peer[0]} "
                            "holds as many of them as any address; try again later")
            return
        if victim is not None:
            log.info("at the connection limit: closed the newest connection of %s, the address holding most, "
                     "for %s", victim.peer[0], conn.peer[0])
            victim.close()     # wakes its reading thread, which ends it
        try:
            self._serve_admitted(conn)
        finally:
            with self._lock:
                self._inbound.pop(conn, None)

    def _admit_inbound(self, conn: FramedSocket) -> FramedSocket | None:
        """Count ``conn`` among the inbound connections. Past :attr:`max_connections`, the connection to drop:
        ``conn`` itself when its address holds as many as any other address, else the newest of an address that
        holds most — so addresses that filled every slot cannot keep one more address out (docs/ledger-protocol.md
        §6). None when there was room."""
        with self._lock:
            self._inbound[conn] = None
            if len(self._inbound) <= self.max_connections:
                return None
            counts: dict[str, int] = {}
            for c in self._inbound:
                counts[c.peer[0]] = counts.get(c.peer[0], 0) + 1
            most = max(counts.values())
            if counts[conn.peer[0]] >= most:
                del self._inbound[conn]
                return conn
            victim = next(c for c in reversed(self._inbound) if counts[c.peer[0]] == most)
            del self._inbound[victim]    # no longer counted, though its thread takes a moment to end
            return victim

    def _serve_admitted(self, conn: FramedSocket) -> None:
        now = time.monotonic()
        with self._lock:
            reason = self._standing.ban_reason(conn.peer[0], now)
        if reason is not None:
            conn.send_error(f"this node does not talk to {conn.peer[0]} for a while: {reason}")
            return
        # A handshake costs us several times what connecting costs the stranger: new connections have a budget
        # per address (waited for briefly, refused past that; a refusal costs no standing).
        wait = self._handshakes.try_take(conn.peer[0], now, within=self.config.handshake_wait)
        if wait is None:
            self.stats["connections_refused"] += 1
            conn.send_error(f"too many new connections from {conn.peer[0]} (this node takes "
                            f"{self.config.handshake_rate:g} a second from one address); try again later")
            return
        if wait and self._closing.wait(wait):
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
        check_compatible(hello, network=self.params.name, genesis=self.params.genesis_hash,
                         difficulty_bits=self.params.difficulty_bits)
        if hello.nonce == self.node_id:
            conn.send_error("this is a connection to the node itself")
            return
        offset = self._clock_sample(conn.peer[0], hello, outbound=False)
        listen_addr = (conn.peer[0], hello.listen_port) if hello.role == ROLE_PEER and hello.listen_port else None
        if hello.role == ROLE_PEER:
            with self._lock:
                refusal = self._inbound_refusal(conn.peer[0])
            if refusal is not None:
                # Full: hand out other addresses so the newcomer can find room elsewhere.
                conn.send("peers", addrs=self._share_addresses(exclude=listen_addr))
                conn.send_error(refusal)
                return
        peer = Peer(conn, hello, inbound=True, listen_addr=listen_addr, config=self.config, now=time.monotonic())
        peer.clock_offset = offset
        peer.send("hello_ack", **self._our_hello(ROLE_PEER))
        self._run_peer(peer)

    def _clock_sample(self, ip: str, hello: PeerHello, *, outbound: bool) -> float | None:
        """Measure a gossiping peer's clock against ours; warn once per new verdict. Only peers this node chose to
        dial count towards its network-adjusted time: anyone may connect, so three strangers' addresses connecting
        in could otherwise move this node's clock by up to MAX_ADJUST (docs/ledger-protocol.md §2.2); nor do the
        ledger nodes a stranger's checkpoint report had it dial. The others inform the warning while too few
        peers were dialled (ledger/nettime.py)."""
        if hello.role != ROLE_PEER or hello.time is None:
            return None
        local = self._raw_clock()
        self.nettime.add_sample(ip, hello.time, local, chosen=outbound)   # not chosen: for the warning only
        warning = self.nettime.warning()
        if warning != self._clock_warned:
            self._clock_warned = warning
            if warning is not None:
                log.warning("%s", warning)
            else:
                log.info("this node's clock agrees with its peers' again")
        return hello.time - local

    def _peer_clock_excuses(self, peer: Peer, timestamp: int) -> bool:
        """True if ``timestamp``, dated in the future by our clock, is explained by our clock being behind: the
        peers' median says so, or the sender's own clock is ahead of ours by enough. Such a block or header is
        refused for now, never held against its sender."""
        tolerance = self.params.max_future_seconds
        if self.nettime.behind(tolerance):
            return True
        offset = peer.clock_offset
        return offset is not None and timestamp <= self._raw_clock() + offset + tolerance

    def _dial(self, addr: Address) -> None:
        """Thread body of an outgoing connection: connect, handshake, serve, then schedule a reconnect."""
        peer: Peer | None = None
        try:
            conn = connect(addr[0], addr[1], LEDGER_PROTOCOL, source_ip=self.host,
                           timeout=self.config.connect_timeout)
        except PeerUnreachable as exc:
            log.info("%s", exc)
            if self._host_follower is not None:   # perhaps our address is gone: look now, not in 5 s
                self._host_follower.watch.suspect()
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
                self._learn_addresses(first["addrs"], conn.peer[0])
                first = conn.recv(self.config.handshake_timeout)
            if first.type == "error":
                raise PeerUnreachable(f"{format_address(*addr)} refused: {first['reason']}")
            hello = PeerHello.from_message(first)
            check_compatible(hello, network=self.params.name, genesis=self.params.genesis_hash,
                             difficulty_bits=self.params.difficulty_bits)
            if hello.nonce == self.node_id:
                with self._lock:
                    self._book.own.add(addr)  # never dial it again
                raise ProtocolError("that address is this node itself")
            with self._lock:
                chosen = addr not in self._unmeasured
            offset = self._clock_sample(conn.peer[0], hello, outbound=chosen)
            peer = Peer(conn, hello, inbound=False, listen_addr=addr, config=self.config, now=time.monotonic())
            peer.clock_offset = offset
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
            self._unmeasured.discard(addr)
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
                evidence = self.watch.resend_due()   # an owner whose binding was taken tells every new peer
                if evidence is not None:
                    peer.send("binding_alert", **evidence.to_wire())
                self._maybe_sync()
            self._read_loop(peer)
        finally:
            self._unregister_peer(peer)
            peer.close()
            peer.join()
            peer.conn.close()

    @property
    def outbound_target(self) -> int:
        """How many outbound gossip peers the node keeps dialling for."""
        return min(self.config.outbound_peers, self.max_peers)

    @property
    def max_inbound(self) -> int:
        """Inbound gossip peers accepted: ``max_peers`` minus the outbound slots reserved for our own dials."""
        return self.max_peers - min(self.outbound_target, self.max_peers // 2)

    def _inbound_refusal(self, ip: str) -> str | None:
        """Why an inbound gossip peer from ``ip`` cannot have a slot now (call with ``self._lock`` held)."""
        inbound = [p for p in self._peers if p.is_peer and p.inbound and not p.closed.is_set()]
        if len(inbound) >= self.max_inbound or len(self.peers()) >= self.max_peers:
            return (f"this node has all its {self.max_inbound} inbound peer slots taken; try the addresses it "
                    "sent")
        if sum(1 for p in inbound if p.ip == ip) >= self.config.max_inbound_per_ip:
            return (f"this node takes at most {self.config.max_inbound_per_ip} peer connections from one address "
                    f"and already has them from {ip}")
        return None

    def _register_peer(self, peer: Peer) -> bool:
        with self._lock:
            if self._closing.is_set():
                peer.abort()
                return False
            if peer.is_peer and peer.inbound:
                refusal = self._inbound_refusal(peer.ip)
                if refusal is not None:  # checked again here: handshakes run in parallel
                    peer.close(refusal)
                    return False
            if peer.is_peer:
                for other in self._peers:
                    if other.is_peer and other.node_id == peer.node_id and not other.closed.is_set():
                        # Two connections between the same pair of nodes (both dialled at once): both sides keep
                        # the one dialled by the node with the smaller id.
                        # One from a new address means the node moved (--host auto): the old path is dead.
                        keep_new = (peer.inbound == other.inbound) or other.ip != peer.ip or (
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
            if not any(p.ip == peer.ip for p in self._peers):
                self._orphans.drop_owner(peer.ip)  # its orphans go with its last connection
            self._download.remove_peer(peer)   # what it was asked for goes to the others
            if self._sync_peer is peer:
                # The download goes on with the others' bodies; the next sync peer keeps it if its branch holds it.
                self._sync_peer = None
                height = self.ledger.height
                self._report_progress(SyncProgress(peer.text, "interrupted", height, max(peer.height, height)))
        if peer.is_peer:
            log.info("disconnected from %s", peer.text)
            self._maybe_sync()
            self._pump_download()

    def _read_loop(self, peer: Peer) -> None:
        timeout = self.config.idle_timeout if peer.is_peer else self.config.client_idle_timeout
        while not peer.closed.is_set():
            if not peer.wait_answers_sent():
                return
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
            before = peer.queued_total
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
            # What the answer cost us to make is about its size: big answers spend the sender IP's byte budget,
            # and past it its connections are read more slowly (never counted as flooding: honest syncs do it).
            answered = peer.queued_total - before
            if answered and self._closing.wait(self._answers.take(peer.ip, time.monotonic(), answered)):
                return

    def _throttle(self, peer: Peer, type_: str, now: float) -> bool:
        """Apply the sender address's rate limit (shared by its connections); False if this connection was dropped
        for flooding."""
        wait = self._rates.take(peer.ip, now, _MESSAGE_COST.get(type_, 1.0))
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
            peer.pongs += 1
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
            refusal = self._proof_refusal(peer.ip)
            if refusal is not None:   # an RSA signature costs us far more than the frame cost its sender
                self.stats["proofs_refused"] += 1
                peer.close(refusal)
                return
            peer.send("proof", **sign_reachability(self.identity, f["nonce"], peer.conn.local[0], self.params.name))
        elif type_ == "submit":
            self._handle_submit(peer, f["record"])
        elif type_ == "get_checkpoint":  # finality survey (docs/ledger-protocol.md)
            peer.send("checkpoint", **self.ledger.checkpoint_answer(f.get("height"), self.clock()))
        elif type_ == "checkpoint_evidence":  # a chat node's peer disagrees with our final history
            verdict, detail = self.checkpoint_evidence.receive(f, sender_ip=peer.ip)
            peer.send("evidence_result", verdict=verdict, detail=detail[:1000])
        elif not peer.is_peer:
            raise ProtocolError(f"a light client cannot send {type_}")
        elif type_ == "get_blocks":
            self._handle_get_blocks(peer, f["hashes"])
        elif type_ == "headers":
            self._handle_headers(peer, f["headers"])
        elif type_ == "blocks":
            if f.get("pruned") is not None:   # pruning: the peer no longer serves bodies up to this height
                peer.pruned = f["pruned"]
            self._handle_blocks(peer, f["blocks"])
        elif type_ == "block":
            self._handle_block_announcement(peer, f["block"])
        elif type_ == "record":
            self._handle_record_announcement(peer, f["record"])
        elif type_ == "binding_alert":
            self._handle_binding_alert(peer, f)
        elif type_ == "get_peers":
            peer.send("peers", addrs=self._share_addresses(exclude=peer.listen_addr))
        elif type_ == "peers":
            self._learn_addresses(f["addrs"], peer.ip)
        else:
            raise ProtocolError(f"{type_} is not expected after the handshake")

    def _proof_refusal(self, ip: str) -> str | None:
        """Why a reachability proof asked from ``ip`` is refused now (over its address's or everyone's budget)."""
        now = time.monotonic()
        if self._proofs_per_ip.try_take(ip, now) is None:
            return (f"too many reachability proofs asked from {ip}; this node signs at most "
                    f"{self.config.proof_burst_per_ip:g} at once for one address, then one every "
                    f"{1 / self.config.proof_rate_per_ip:g} s; try again later")
        with self._lock:
            busy = self._proofs.try_take(now) is None
        if busy:
            return ("this node is asked for more reachability proofs than it signs "
                    f"({self.config.proof_rate:g} a second); try again later")
        return None

    def _handle_lookup(self, peer: Peer, by: str, value: str) -> None:
        if self.assume_valid is not None and self.assume_valid.failed:
            # The binding state may rest on a forged record: no answer from it (ledger/assume_valid.py).
            peer.send("lookup_result", found=False, reason="this node's background verification found a forged "
                                                          "record in the history it assumed valid; ask another node")
            return
        try:
            answer = answer_lookup(self.ledger, parse_lookup_kind(by), value, self.clock())
        except AmbiguousLookup as exc:
            peer.send("lookup_result", found=False, reason=str(exc))
            return
        if answer is None:
            peer.send("lookup_result", found=False, reason=f"no live binding for {by} {value[:64]}")
            return
        fields = answer.to_wire()
        if by == "ip" and answer.record.ip is not None:   # a binding disputed here says so (ledger/disputes.py)
            mark = self.disputes.disputed(answer.record.ip, answer.record.id)
            if mark is not None:
                fields["disputed"] = mark.to_wire()
        peer.send("lookup_result", found=True, **fields)

    def _local_lookup(self, query: str, by: str | None) -> dict[str, Any]:
        """A lookup over the local control socket (ledger/control.py): the answer this node's own validation
        stands behind, ``checked`` only for blocks whose signatures it checked itself."""
        av = self.assume_valid
        refuse = None
        if av is not None and av.failed:
            refuse = ("this node's background verification found a forged record in the history it assumed "
                      "valid; ask another node")

        def checked(height: int) -> bool:
            return av is None or av.state is VerifyState.DONE or height > av.height or height <= av.verified

        return local_answer(self.ledger, query, by, self.clock(), node=self.address, network=self.params.name,
                            checked=checked, dispute=self.disputes.disputed, refuse=refuse)

    # --- owner watch and disputes (ledger/watch.py, ledger/disputes.py) --------------------------------------

    def _handle_binding_alert(self, peer: Peer, fields: dict[str, Any]) -> None:
        try:
            verdict = self.disputes.receive(fields, sender_ip=peer.ip, source=peer)
        except LedgerError as exc:
            self.stats["invalid_records"] += 1
            log.info("refused a binding alert from %s: %s", peer.text, exc)
            self._penalize(peer.ip, PENALTY_BAD_RECORD, f"bad binding alert: {exc}")
            return
        log.debug("binding alert from %s: %s", peer.text, verdict)

    def _relay_evidence(self, evidence: Evidence, source: object) -> None:
        self._broadcast("binding_alert", evidence.to_wire(), exclude=source if isinstance(source, Peer) else None)

    def _own_alert(self, evidence: Evidence) -> None:
        """The owner watch found our binding taken: check the evidence like anyone's, keep it, gossip it."""
        try:
            verdict = self.disputes.handle(evidence, source=None, source_text="this node")
        except LedgerError as exc:   # our own evidence should always check out: a local fault
            log.error("this node's binding evidence does not check out: %s", exc)
            return
        if verdict == "duplicate":   # handled here before: the watch's repeat still goes to every peer
            self._relay_evidence(evidence, None)

    def _watched_binding(self) -> Desired:
        desired = self._desired_binding()
        return Desired(desired["ip"], desired["nickname"])

    def _sign_claim(self) -> Record:
        """A signed record of what our binding should be, for evidence when none of ours was mined."""
        now = self.clock()
        seq, prev = self.ledger.next_sequence(self.identity.fingerprint, now)
        lifetime = self.config.record_lifetime or self.params.default_record_lifetime
        return make_register(self.identity, network=self.params.name, seq=seq, prev=prev, issued=int(now),
                             lifetime=lifetime, **self._desired_binding())

    # --- end owner watch and disputes ------------------------------------------------------------------------

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
        blocks = self.ledger.get_blocks(hashes)
        for block in blocks:
            wire = block.to_wire()
            size = len(msgpack.packb(wire, use_bin_type=True))
            if out and size > budget:
                break  # the asker re-requests what is missing
            out.append(wire)
            budget -= size
        pruned = self.ledger.pruned.height
        if pruned and len(blocks) < len(hashes):
            # --- pruning: say why asked blocks are missing, so the asker syncs them from another peer ---
            peer.send("blocks", blocks=out, pruned=pruned, reason=not_served(pruned))
            return
        peer.send("blocks", blocks=out)

    def _learn_addresses(self, addrs: list[str], source: str) -> None:
        now = time.monotonic()
        for text in addrs[:MAX_PEERS_SHARED]:
            try:
                addr = parse_address(text, LEDGER_PORT)
            except UserError:
                continue
            with self._lock:
                if not self._standing.is_banned(addr[0], now):
                    self._book.add(addr, now, source=source)

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
    #
    # Every peer that may have more than we do (its hello claims more work, or it announced a block we could not
    # connect) is asked for the headers after our locator: a probe. Its answer is checked (proof of work,
    # linkage, time) and gives the peer's validated work. The sync peer is the one whose validated chain is
    # preferred most (what a hello claims is only a reason to ask, never a ranking); its headers are followed,
    # and their bodies are fetched from every connected peer at once (ledger/block_download.py) and applied in
    # height order by the sync applier thread. A sync request left unanswered past ``request_timeout`` is a
    # stall: the peer is penalised, disconnected and not chosen again for ``stall_cooldown`` seconds, its heights
    # go to the others, and when it was the sync peer the next best peer takes over.

    def _our_preference(self) -> tuple[int, int]:
        _, tip, work = self.ledger.tip_info()
        return chain_preference(work, tip)

    def _is_stalled(self, ip: str, now: float) -> bool:
        until = self._stalled.get(ip)
        if until is None:
            return False
        if until <= now:
            del self._stalled[ip]
            return False
        return True

    def _maybe_sync(self, candidate: Peer | None = None) -> None:
        """Probe the peers that may have more than us, and start downloading from the peer whose validated chain
        is preferred most (``candidate`` is a hint kept for callers; every peer is considered)."""
        now = time.monotonic()
        ours = self._our_preference()
        our_height = self.ledger.height   # pruning: a peer that pruned above it cannot serve our next bodies
        chosen: Peer | None = None
        with self._lock:
            if self._closing.is_set():
                return
            peers = [p for p in self._peers if p.is_peer and not p.closed.is_set()]
            # A peer whose checked chain is already ahead of ours is a sync candidate, not probed again: probing it
            # on would fetch (and re-check) its whole chain's headers before a single body is downloaded.
            probes = [p for p in peers if p is not self._sync_peer and p.awaiting is None
                      and (p.wants_sync or (p.claims_more and p.claimed_preference > ours))
                      and not (p.validated_preference > ours and p.validated_preference > p.spent)
                      and now >= p.probe_after and not self._is_stalled(p.ip, now)]
            for p in probes:
                p.wants_sync = False
                p.awaiting = "headers"  # reserved here, so that a concurrent call does not probe it twice
            if self._sync_peer is None or self._sync_peer.closed.is_set():
                self._sync_peer = None
                better = [p for p in peers if p.validated_preference > ours and p.validated_preference > p.spent
                          and p.awaiting is None and now >= p.probe_after and not self._is_stalled(p.ip, now)
                          and p.pruned <= our_height]
                if better:
                    chosen = max(better, key=lambda p: p.validated_preference)
                    self._sync_peer = chosen
                    self._sync_start_tip = self.ledger.tip_info()[1]
                    self._download_mark = (now, self.ledger.height)   # the rate shown is over the whole sync
                elif peers and not probes and not any(p.awaiting for p in peers):
                    self._ever_synced = True  # every peer told us what it has: nobody has more
                    self._download.reset()    # what a sync peer that went away left, nobody continues
                # --- pruning: say once per peer that its history is there but its bodies are not ---
                for p in peers:
                    if p.validated_preference > ours and p.pruned > our_height and not p.pruned_noted:
                        p.pruned_noted = True
                        log.warning("%s has more blocks but pruned their bodies up to height %d (ours: %d); syncing "
                                    "needs a peer that keeps every block (add one with ledger join ADDRESS)",
                                    p.text, p.pruned, our_height)
        for p in probes:
            if p is not chosen:
                self._request_headers(p)
        if chosen is not None:
            log.info("syncing from %s (its checked height %d, ours %d)", chosen.text, chosen.height,
                     self.ledger.height)
            self._continue_sync(chosen)

    def _continue_sync(self, peer: Peer) -> None:
        """The sync peer's next step: download the bodies of the checked headers it gave, or ask for more
        headers."""
        if peer.pending:
            peer.sync_last = peer.pending[-1].hash
            pending, peer.pending = peer.pending, []
            skip = 0   # the blocks we got meanwhile (from announcements or an earlier sync) are not fetched again
            while skip < len(pending) and self.ledger.has_block(pending[skip].hash):
                skip += 1
            pending = pending[skip:]
            if not pending:
                self._request_headers(peer)
                return
            with self._lock:
                if self._sync_peer is not peer:
                    return
                dl = self._download
                if dl.active:
                    # A download left by a sync peer that went away: kept when this branch holds its last block.
                    first = pending[0].height
                    end = dl.end_height
                    if first <= end < first + len(pending) and pending[end - first].hash == dl.hash_at(end):
                        pending = pending[end - first + 1:]
                    elif first != end + 1 or pending[0].prev_hash != dl.hash_at(end):
                        dl.reset()
                dl.want(pending)
            self._pump_download()
        elif peer.awaiting is None:
            self._request_headers(peer)

    def _pump_download(self) -> None:
        """Hand every connected peer the block requests the download scheduler has room for, and end the sync
        with the sync peer when nobody left can serve the next body."""
        now = time.monotonic()
        with self._lock:
            leader, dl = self._sync_peer, self._download
            if leader is None or not dl.active or self._closing.is_set():
                return
            for p in dl.peers():
                if p.closed.is_set():
                    dl.remove_peer(p)
            end = dl.end_height
            helpers = [p for p in self._peers if p.is_peer and p is not leader and not p.closed.is_set()
                       and not self._is_stalled(p.ip, now)]
            served = {p: self._served_height(p) for p in helpers}
            # it gave the headers, so it should hold their bodies (all but those it pruned: ledger.md "Pruning")
            dl.add_peer(leader, highest=end, lowest=leader.pruned + 1)
            for p, height in served.items():
                if height >= dl.next_height and p.pruned < dl.next_height:
                    dl.add_peer(p, highest=height, lowest=p.pruned + 1)
            requests = dl.assign(now)
            stuck = dl.stuck
            unsure = [p for p, height in served.items()
                      if height < end and p.awaiting is None and p.helper_probed < end]
        for peer, hashes in requests:
            peer.send("get_blocks", hashes=hashes)
        # A peer whose checked headers stop short of the download may hold more: ask it (a probe), unless what it
        # showed us is another branch (kept for the choice of the next sync peer).
        probes = [p for p in unsure if served[p] >= 0 or self._behind_us(p)]
        with self._lock:
            probes = [p for p in probes if p.awaiting is None and p.helper_probed < end]
            for p in probes:
                p.helper_probed, p.awaiting = end, "headers"   # reserved here, as _maybe_sync does
        for peer in probes:
            self._request_headers(peer)
        if stuck:
            log.info("%s does not have the blocks it announced, nor does any other peer; syncing elsewhere",
                     leader.text)
            self._finish_sync(leader)

    def _served_height(self, peer: Peer) -> int:
        """The highest height of the download whose body ``peer`` should hold: the last of the download's headers
        it showed us in its own headers answer (-1: none). Lock held."""
        dl, pending = self._download, peer.pending
        height = dl.height_of(peer.validated_tip) if peer.validated_tip else None
        if height is not None:
            return height
        if pending:
            at = min(dl.end_height, pending[-1].height)
            if at >= pending[0].height and pending[at - pending[0].height].hash == dl.hash_at(at):
                return at
        return -1

    def _behind_us(self, peer: Peer) -> bool:
        """True if every header ``peer`` showed us is on our main chain; they are then dropped from its pending
        branch (so that the next probe's answer is checked on its own, not with all of them again)."""
        pending = peer.pending
        if pending:
            with self.ledger.lock:
                if not self.ledger.chain.is_main(pending[-1].hash):
                    return False
            if peer.pending is pending:
                peer.pending = []
        return True

    def _request_headers(self, peer: Peer) -> None:
        locator = self.ledger.locator()
        last = peer.pending[-1].hash if peer.pending else peer.sync_last
        if last is not None:
            locator = [last, *locator][:64]
        peer.awaiting = "headers"
        peer.deadline = time.monotonic() + self.config.request_timeout
        if peer is self._sync_peer:
            self._report_progress(SyncProgress(peer.text, "headers", self.ledger.height,
                                               max(peer.height, self.ledger.height)))
        peer.send("get_headers", locator=locator, limit=MAX_HEADERS)

    def _handle_headers(self, peer: Peer, packed: list[bytes]) -> None:
        if peer.awaiting != "headers":
            raise ProtocolError("headers were sent without being asked for")
        # Not None yet: until its pending headers are updated, the maintenance thread must neither probe this
        # peer again (the probe's locator would start at headers being replaced) nor make it the sync peer.
        peer.awaiting, peer.deadline = "checking", None
        full = len(packed) >= MAX_HEADERS
        try:
            headers = [BlockHeader.unpack(h) for h in packed]
            if peer.pending and headers and headers[0].prev_hash == peer.pending[-1].hash:
                branch = peer.pending + headers       # the rest of a branch we are still checking
            else:
                branch = self._unknown_suffix(headers)
            now = self.clock()
            future = [h for h in branch if h.timestamp > now + self.params.max_future_seconds]
            if future:
                self._future_headers(peer, future[0], now)
                return
            work = self._downloaded_work(branch) if branch else None
            if branch and work is None:
                work = self.ledger.check_headers(branch, now)
        except LedgerError as exc:
            self.stats["invalid_blocks"] += 1
            log.warning("invalid headers from %s: %s", peer.text, exc)
            self._penalize(peer.ip, PENALTY_INVALID_HEADERS, f"invalid headers: {exc}")
            peer.close(f"invalid headers: {exc}")
            return
        if headers:
            peer.sync_last = headers[-1].hash
            peer.height = max(peer.height, headers[-1].height)
        if branch and work is not None:
            self._check_split(peer, branch, work)
            peer.note_validated(work, branch[-1].hash)
            peer.pending = branch
        else:
            peer.pending = []
            if headers:
                with self.ledger.lock:
                    known = self.ledger.chain.chain_work(headers[-1].hash)
                if known is not None:
                    peer.note_validated(known, headers[-1].hash)
        better = peer.validated_preference > self._our_preference()
        if len(peer.pending) > self.config.max_pending_headers and not better:
            log.info("%s offers a branch of over %d headers with no more work than ours; not following it",
                     peer.text, self.config.max_pending_headers)
            peer.pending, full = [], False
        if not full:
            peer.claims_more = False  # it sent everything it has after our locator
        with self._lock:
            # Together: once it is no longer "checking", another thread may make it the sync peer and take its
            # pending headers; what we do next must follow from the role it had at that moment.
            peer.awaiting = None
            is_sync_peer = peer is self._sync_peer
        if is_sync_peer:
            if better and peer.pending:
                self._continue_sync(peer)
            elif full:
                self._request_headers(peer)           # more headers follow: the branch may still get ahead
            else:
                peer.pending = []
                self._finish_sync(peer)
            return
        if full and not better:
            self._request_headers(peer)               # keep probing: its branch continues
        else:
            self._maybe_sync()
            self._pump_download()                     # it may hold bodies the download wants

    def _downloaded_work(self, branch: list[BlockHeader]) -> int | None:
        """The work at the end of ``branch`` if its last header is one of the block download's (so all of them
        are, by their hash links, and were checked when the sync peer sent them): a peer probed while helping the
        download is not checked again. None otherwise."""
        with self._lock:
            held = self._download.hash_at(branch[-1].height) == branch[-1].hash
        if not held:
            return None
        with self.ledger.lock:
            parent = self.ledger.chain.chain_work(branch[0].prev_hash)
        return None if parent is None else parent + sum(h.work for h in branch)

    def _check_split(self, peer: Peer, branch: list[BlockHeader], work: int) -> None:
        """Note (ledger/splits.py) a checked branch from ``peer`` that forks from our main chain below our final
        height with at least half our work since the fork: the network was split for longer than the finality
        window. Logged once per fork point; shown in ``status`` until settled."""
        first, tip = branch[0], branch[-1]
        with self.ledger.lock:
            chain = self.ledger.chain
            final = chain.final_height
            fork_work = chain.chain_work(first.prev_hash)
            if (first.height - 1 >= final or fork_work is None or not chain.is_main(first.prev_hash)
                    or chain.is_main(tip.hash) or not significant(work - fork_work, chain.tip_work - fork_work)):
                return
        report = SplitReport(peer=peer.text, fork_height=first.height - 1, fork_hash=first.prev_hash,
                             tip_hash=tip.hash, tip_height=tip.height, final_height=final)
        if self.splits.note(report):
            log.warning("SPLIT %s", report.describe())

    def _open_splits(self) -> list[SplitReport]:
        """Splits still to report: not those whose branch became ours or is parked here as heavier (the ledger's
        own ALERT names it then)."""
        def settled(report: SplitReport) -> bool:
            with self.ledger.lock:
                chain = self.ledger.chain
                if chain.is_main(report.tip_hash):
                    return True
                parked = chain.parked_branch_of(report.tip_hash)
            return parked is not None and parked.heavier
        return self.splits.open(settled)

    def _future_headers(self, peer: Peer, header: BlockHeader, now: float) -> None:
        """Headers dated in the future by our clock: refused for now, asked again after ``future_retry``; held
        against the peer (as a future-dated block is) only when our clock is not the one behind."""
        excused = self._peer_clock_excuses(peer, header.timestamp)
        log.info("not following headers from %s for now: %s is dated %d s in the future by this node's clock%s",
                 peer.text, header.describe(), int(header.timestamp - now),
                 " (this node's clock is behind; not held against the peer)" if excused else "")
        if not excused:
            self._penalize(peer.ip, PENALTY_PROTOCOL, f"{header.describe()} is dated in the future")
        peer.pending = []
        peer.probe_after = time.monotonic() + self.config.future_retry
        if peer is self._sync_peer:
            self._finish_sync(peer)
            peer.spent = (-1, 0)
        peer.claims_more = True   # after _finish_sync, which takes it for "has nothing more"
        with self._lock:
            # The answer is dealt with: it was "checking", and a peer left so was never probed again, so a node
            # whose clock was corrected after refusing every peer's headers never synced.
            peer.awaiting = None

    def _unknown_suffix(self, headers: list[BlockHeader]) -> list[BlockHeader]:
        """The headers after the last one we already have (they must build on it)."""
        with self.ledger.lock:
            chain = self.ledger.chain
            for i in range(len(headers) - 1, -1, -1):
                if headers[i].hash in chain:  # accepted blocks only: an orphan's header still needs checking
                    return headers[i + 1:]
        return headers

    def _handle_blocks(self, peer: Peer, wires: list[dict[str, Any]]) -> None:
        """An answer to one of our ``get_blocks``: each body is checked against its header (hash and Merkle root)
        and held until the ones below it are in; the sync applier applies them in height order."""
        if peer.closed.is_set():
            return   # cut off (a stall) while this answer was on its way: its heights went to the others
        try:
            blocks = [Block.from_wire(w) for w in wires]
        except LedgerError as exc:
            self._invalid_block_from(peer, str(exc))
            return
        with self._lock:
            receipt = self._download.received(peer, blocks, sum(b.size for b in blocks), time.monotonic())
            if receipt.accepted and self._download.ready:
                self._bodies_ready.notify()
        if receipt.unexpected is not None:
            raise ProtocolError(receipt.unexpected)
        if receipt.wrong is not None:
            self._invalid_block_from(peer, receipt.wrong)   # its heights go to the others when it is gone
            return
        peer.bodies_delivered += receipt.accepted
        if receipt.refused:
            log.info("%s does not have %d of the blocks asked; asking the other peers", peer.text, receipt.refused)
        self._pump_download()

    def _apply_loop(self) -> None:
        """Thread body of the sync applier: apply downloaded bodies in height order as they become ready."""
        while True:
            with self._lock:
                while not self._closing.is_set() and not self._download.ready:
                    self._bodies_ready.wait()
                if self._closing.is_set():
                    return
                batch = self._download.take_ready(self.config.apply_batch)
                leader = self._sync_peer
            try:
                self._apply_bodies(batch, leader)
            except StoreError as exc:
                # Our own database failed (e.g. the disk is full): not a peer's fault. The sync stops here.
                log.error("%s", exc)
                if leader is not None:
                    self._finish_sync(leader)

    def _apply_bodies(self, batch: list[tuple[Block, Peer]], leader: Peer | None) -> None:
        """Hand downloaded bodies (consecutive, each with its sender) to the ledger, several a transaction."""
        self._ctx.bulk = True
        try:
            with self.ledger.batched():
                for block, source in batch:
                    self._ctx.source = source
                    status = self._receive(source, block, requested=True)
                    if status == "invalid":   # the sender was penalised; the headers naming it were the leader's
                        if leader is not None and leader is not source:
                            self._invalid_block_from(leader, f"its headers name {block.header.describe()}, which "
                                                             "is invalid")
                        with self._lock:
                            self._download.reset()
                        if leader is not None:
                            self._finish_sync(leader)
                        return
                    if status == "future":   # clocks disagree: stop this sync for now and try again later
                        with self._lock:
                            self._download.reset()
                        if leader is not None:
                            leader.probe_after = time.monotonic() + self.config.future_retry
                            self._finish_sync(leader)
                            leader.spent, leader.claims_more = (-1, 0), True
                        return
        finally:
            self._ctx.bulk = False
            self._ctx.source = None
        with self._lock:
            done = not self._download.active and leader is not None and self._sync_peer is leader
            serving = self._download.serving()
            target = max(self._download.end_height, leader.height if leader is not None else 0)
            started, start_height = self._download_mark
        height = self.ledger.height
        if leader is not None:
            elapsed = time.monotonic() - started
            rate = (height - start_height) / elapsed if elapsed > 0 else 0.0
            self._report_progress(SyncProgress(leader.text, "blocks", height, max(target, height),
                                               peers=max(1, serving), rate=rate))
        if done and leader is not None and leader.awaiting is None:
            self._request_headers(leader)   # bodies done: ask whether there is more
        else:
            self._pump_download()           # the window moved on

    def _stall(self, peer: Peer, now: float, why: str = "late") -> None:
        """``peer`` left a sync request unanswered past its deadline (``late``), or held the lowest missing body
        back while the download window was used up and other peers waited (``window``)."""
        self.stats["stalls"] += 1
        with self._lock:
            if len(self._stalled) >= 10_000:
                self._stalled = {ip: t for ip, t in self._stalled.items() if t > now}
            self._stalled[peer.ip] = now + self.config.stall_cooldown
            syncing = self._sync_peer is peer
            self._download.remove_peer(peer)   # its heights go to the others at once
        if why == "window":
            log.warning("%s stalled: it held back the block download (the lowest missing block, asked of it, "
                        "was late while the other peers waited)%s", peer.text,
                        "; syncing from another peer" if syncing else "")
            reason = "too slow: held back the block download"
        else:
            log.warning("%s stalled: no answer to a sync request within %g s%s", peer.text,
                        self.config.request_timeout, "; syncing from another peer" if syncing else "")
            reason = "no answer to a sync request in time"
        self._penalize(peer.ip, PENALTY_STALL, reason)
        peer.close(reason)
        self._pump_download()

    def _receive(self, peer: Peer, block: Block, *, requested: bool = False) -> str:
        """Hand a block from ``peer`` to the ledger when it may join our chain; returns "added", "known",
        "orphan" (held in memory until its parent arrives), "side" (a branch with no more work than ours, not
        stored) or "invalid" (the peer was penalised). ``requested``: asked for in a sync, after its branch's
        headers were checked and found preferred over ours."""
        now = self.clock()
        if block.header.timestamp > now + self.params.max_future_seconds:
            # Possibly only our clocks disagree: refuse without banning, and without any cost when our own clock
            # is the one behind. The sender's next tip announcement (§5.1) brings it again.
            excused = self._peer_clock_excuses(peer, block.header.timestamp)
            log.info("ignoring %s from %s: dated %d s in the future by this node's clock%s", block.header.describe(),
                     peer.text, int(block.header.timestamp - now),
                     " (this node's clock is behind; not held against the peer)" if excused else "")
            if not excused:
                self._penalize(peer.ip, PENALTY_PROTOCOL, f"{block.header.describe()} is dated in the future")
            return "future"
        with self.ledger.lock:
            chain = self.ledger.chain
            if block.hash in chain:
                return "known"
            parent_work = chain.chain_work(block.header.prev_hash)
            tip = chain_preference(chain.tip_work, chain.tip_hash)
        if parent_work is None:
            return self._hold_orphan(peer, block)
        work = parent_work + block.header.work
        if not requested and chain_preference(work, block.hash) <= tip:
            return self._refuse_side_block(peer, block, work, tip[0])
        assumed = requested and self.assume_valid is not None and self.assume_valid.covers(block)
        result = self.ledger.receive_block(block, now, source=peer.text,  # names the peer of a parked branch
                                           assume_valid=assumed)
        if result.status == "invalid":
            self._invalid_block_from(peer, result.reason)
            return "invalid"
        if result.status == "added":
            with self.ledger.lock:
                accepted = self.ledger.chain.chain_work(block.hash)
            if accepted is not None:
                peer.note_validated(accepted, block.hash)
                peer.height = max(peer.height, block.height)
            self._release_orphans(block.hash)
            return "added"
        return "known"

    def _hold_orphan(self, peer: Peer, block: Block) -> str:
        """Keep a block whose parent we lack in the sender's bounded share of the orphan buffer."""
        p = self.params
        header = block.header
        problem = None
        if header.network_id != p.network_id or header.version != p.version or header.target_bits != p.difficulty_bits:
            problem = f"{header.describe()} does not follow this network's parameters"
        elif header.height < 1 or not header.meets_target():
            problem = f"{header.describe()} has too little proof of work"
        elif len(block.records) > p.max_block_records or block.size > p.max_block_bytes:
            problem = f"{header.describe()} is over the block size limits"
        if problem is not None:
            self._invalid_block_from(peer, problem)
            return "invalid"
        with self._lock:
            pushed = self._orphans.add(block, block.size, peer.ip)
        # A peer whose checked chain is ahead of ours may honestly announce more new blocks than its share while
        # we catch up: only a sender with nothing better to show pays for the orphans it pushes out.
        ahead = peer.validated_preference > self._our_preference()
        for old in pushed:
            self.stats["orphans_dropped"] += 1
            log.info("dropped orphan %s from %s: its share of the orphan buffer is full", old.header.describe(),
                     peer.text)
            if not ahead:
                self._penalize(peer.ip, PENALTY_ORPHAN, "blocks that build on nothing this node knows")
        return "orphan"

    def _release_orphans(self, parent_hash: bytes) -> None:
        """Hand the orphans that build on a block just added to the ledger (the same rules apply again)."""
        with self._lock:
            waiting = self._orphans.children(parent_hash)
            senders = {p.ip: p for p in self._peers if p.is_peer}
        for owner, block in waiting:
            sender = senders.get(owner)
            if sender is not None:
                self._receive(sender, block)

    def _refuse_side_block(self, peer: Peer, block: Block, work: int, tip_work: int) -> str:
        """A block whose branch would not be preferred over our tip: not stored; counted against its sender
        when its branch has less work than ours (an equal-work competitor is an honest race)."""
        with self._lock:
            self._side_seen[block.hash] = None
            while len(self._side_seen) > 4096:
                self._side_seen.popitem(last=False)
        self.stats["side_blocks_refused"] += 1
        log.info("not storing %s from %s: its branch has %s work than ours", block.header.describe(), peer.text,
                 "less" if work < tip_work else "no more")
        if work < tip_work:
            self._penalize(peer.ip, PENALTY_SIDE_BLOCK, "blocks of branches with less work than ours")
        return "side"

    def _invalid_block_from(self, peer: Peer, reason: str) -> None:
        self.stats["invalid_blocks"] += 1
        log.warning("invalid block from %s: %s", peer.text, reason)
        self._penalize(peer.ip, PENALTY_INVALID_BLOCK, f"invalid block: {reason}")
        peer.close(f"invalid block: {reason}")

    def _finish_sync(self, peer: Peer) -> None:
        with self._lock:
            if self._sync_peer is peer:
                self._sync_peer = None
                self._download.reset()
            self._ever_synced = True
        height, tip, _ = self.ledger.tip_info()
        # It has nothing more after our locator: its main chain ends in ours (or it lied in its hello).
        peer.claims_more = False
        peer.spent = peer.validated_preference
        self._report_progress(SyncProgress(peer.text, "done", height, height))
        tip_block = self.ledger.get_block(tip)
        if tip_block is not None and tip != self._sync_start_tip:
            # Peers that are behind learn of the new tip (and fetch the rest) from one announcement.
            self._announce_block(tip_block, exclude=peer)
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
        peer.known_tip = block.hash   # nodes announce only their main-chain tips
        # Parsing cost us ~16 ms a MB whatever the block turns out to be; a repeat, or one dated in the future by a
        # sender whose clock says so, costs the sender nothing else: its address's byte budget slows its reading.
        wait = self._announced.take(peer.ip, time.monotonic(), block.size)
        if wait:
            self.stats["announcements_slowed"] += 1
            if self._closing.wait(wait):
                return
        with self._lock:
            seen = block.hash in self._orphans or block.hash in self._side_seen
        if seen or self.ledger.has_block(block.hash):
            return  # repeats cost nothing, and are not checked again
        peer.height = max(peer.height, block.height)
        self._ctx.source = peer
        try:
            status = self._receive(peer, block)
        finally:
            self._ctx.source = None
        if status == "orphan":
            # Its parent is unknown to us: the peer is ahead on some branch; ask it for headers.
            peer.wants_sync = True
            self._maybe_sync()

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

    def _announce_block(self, block: Block, exclude: Peer | None) -> None:
        frame = LEDGER_PROTOCOL.encode("block", block=block.to_wire())
        for peer in self.peers():
            if peer is not exclude:
                peer.known_tip = block.hash
                peer.send_frame(frame)

    def _on_block(self, block: Block, result: AddResult) -> None:
        """Ledger listener: push each new main-chain block to the peers (not during bulk sync)."""
        if getattr(self._ctx, "bulk", False) or not result.became_tip:
            return
        if any(b.hash == block.hash for b in result.connected):
            self._announce_block(block, exclude=getattr(self._ctx, "source", None))

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
        """Rule check against the tip and the pool; None if already known, else whether it needs a reachability
        proof: a new IP claim, or any record for an IP whose binding is disputed here."""
        ledger = self.ledger
        with ledger.lock:
            if record.id in ledger.pool or ledger.chain.has_record(record.id):
                return None
            state = ledger.pool.state(ledger.chain, now)
            state.check(record, int(now))
            if record.ip is None:
                return False
            holder = state.lookup_ip(record.ip, now)
        if holder is not None and self.disputes.disputed(record.ip, holder.record.id) is not None:
            return True   # renewing a binding disputed here needs a fresh reachability proof (ledger/disputes.py)
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

        When the nickname clashes with another key's (ledger.nicknames), the record is published without a
        nickname, so the address binding never waits on a nickname, and :attr:`nickname_problem` says so; the
        nickname is tried again at every check. Raises :class:`LedgerError` when the ledger refuses the record
        for another reason (e.g. the IP is taken)."""
        self._follow_own_records()
        desired = self._desired_binding()
        try:
            record = self._publish_own(desired)
        except NicknameTaken as exc:
            problem = (f"the nickname '{self.nickname}' is taken by another key, so this machine's address is "
                       "registered without a nickname; choose another with 'ledger update --nickname NAME' "
                       f"({exc})")
            if problem != self.nickname_problem:
                log.warning("%s", problem)
            self.nickname_problem = problem
            return self._publish_own({**desired, "nickname": ""})
        self.nickname_problem = None
        return record

    def _publish_own(self, desired: dict[str, Any]) -> Record | None:
        now = self._raw_clock() + self.nettime.issue_offset()   # never in the future of the peers measured so far
        fp = self.identity.fingerprint
        latest = self.ledger.latest_record(fp, now)
        lifetime = self.config.record_lifetime or self.params.default_record_lifetime
        same = False
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
        if self._own_seen is not None:
            self._own_seen.add(record.id)
        self.admit_record(record)
        return record

    def _follow_own_records(self) -> None:
        """Adopt what was published by hand for this identity: a nickname set by ``ledger update`` is kept by
        later renewals, and once a rotation is mined the node loads the new key (``reload_identity``) and goes
        on under it. At the first check a node started without ``--nickname`` keeps its record's nickname."""
        now = self.clock()
        fp = self.identity.fingerprint
        latest = self.ledger.latest_record(fp, now)
        if latest is None:
            self._own_seen = self._own_seen if self._own_seen is not None else set()
            return
        if latest.kind == "rotate" and latest.signer_fingerprint == fp:
            mined = self.ledger.mined_record(fp)
            if mined is not None and mined.id == latest.id and self._reload_identity is not None:
                new = self._reload_identity(latest.fingerprint)
                if new is not None and new.fingerprint == latest.fingerprint:
                    log.warning("this machine's key was rotated: the node now uses key %s", new.short_fingerprint)
                    self.identity = new
            return
        if self._own_seen is None:
            self._own_seen = {latest.id}
            if not self._nickname_given and latest.kind != "revoke" and latest.nickname:
                self.nickname = latest.nickname
            return
        if latest.id not in self._own_seen and latest.kind in ("register", "rotate"):
            self._own_seen.add(latest.id)
            if latest.nickname != self.nickname and (latest.nickname or self.nickname_problem is None):
                log.info("adopting the nickname '%s' published for this key", latest.nickname)
                self.nickname = latest.nickname
                self.nickname_problem = None

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
                correction = self.nettime.offset()
                try:
                    self.ensure_registered()
                    self.registration_error = None
                    self._next_register = now + self.config.register_check
                except LedgerError as exc:
                    if self.registration_error != str(exc):
                        log.warning("cannot register this machine's record: %s", exc)
                    self.registration_error = str(exc)
                    # A peer's clock measured meanwhile changed our time (nettime): the record was dated by the
                    # old one, so it is made again at once rather than after register_retry.
                    again = 0.0 if self.nettime.offset() != correction else self.config.register_retry
                    self._next_register = now + again
            if self.config.register and now >= self._next_watch and not self.syncing:   # owner watch (watch.py)
                self._next_watch = now + self.config.register_check
                self.watch.check()
            if now >= self._next_revalidate:
                self._next_revalidate = now + 60.0
                self.ledger.revalidate_pool(self.clock())
            if now >= self._next_tip_announce and not self.syncing:
                self._next_tip_announce = now + self.config.tip_announce_interval
                self._announce_tip()
            if not self.syncing:
                self._maybe_sync()

    def _announce_tip(self) -> None:
        """Announce our tip block again to every peer whose known tip differs from it (§5.1 of
        docs/ledger-protocol.md). A peer that prefers its own tip answers with it in its next round, so an
        equal-work fork settles on the lower tip hash without a new block; one that lacks the parent probes us."""
        _, tip, _ = self.ledger.tip_info()
        targets = [p for p in self.peers() if p.is_peer and not p.closed.is_set() and p.known_tip != tip]
        if not targets:
            return
        block = self.ledger.get_block(tip)
        if block is None or block.height == 0:
            return
        frame = LEDGER_PROTOCOL.encode("block", block=block.to_wire())
        for peer in targets:
            peer.known_tip = tip
            if peer.send_frame(frame):
                self.stats["tip_announcements"] += 1

    def _dial_more(self, now: float) -> None:
        """Dial known addresses (seeds first, with backoff) while below the outbound target. Inbound peers never
        hold the slots reserved for outbound ones, so a node whose inbound slots are full still dials out."""
        with self._lock:
            if self._closing.is_set():
                return
            peers = [p for p in self._peers if p.is_peer and not p.closed.is_set()]
            outbound = sum(1 for p in peers if not p.inbound) + len(self._dialing)
            want = min(self.outbound_target - outbound, self.max_peers - len(peers) - len(self._dialing))
            if want <= 0:
                return
            connected = {p.listen_addr for p in peers if p.listen_addr is not None}
            candidates = [a for a in self._book.due(now, exclude=connected | self._dialing)
                          if not self._standing.is_banned(a[0], now)][:want]
            if not candidates and self.nettime.samples < MIN_SAMPLES:
                self._probe_clocks([p.listen_addr for p in peers if p.inbound and p.listen_addr is not None])
            for addr in candidates:
                self._book.attempted(addr, now)
                self._dialing.add(addr)
                thread = threading.Thread(target=self._dial, args=(addr,), name=f"ledger-dial-{addr[0]}")
                self._threads.add(thread)
                thread.start()

    def _probe_clocks(self, inbound: list[Address]) -> None:
        """Too few dialled peers to measure this node's clock and no other address to dial (a small network whose
        other nodes connected in first): dial the listening address of one peer that connected in, once, as a
        client, and read its clock from the ``hello_ack`` — a peer this node chose to dial (docs/ledger-protocol.md
        §2.2). Called with ``self._lock`` held."""
        if len(self._clock_probed) >= 4 * MIN_SAMPLES:      # bounded: a few peers, once each, for the node's life
            return
        for addr in inbound:
            if addr not in self._clock_probed and addr not in self._dialing:
                self._clock_probed.add(addr)
                thread = threading.Thread(target=self._probe_clock, args=(addr,), name=f"ledger-clock-{addr[0]}")
                self._threads.add(thread)
                thread.start()
                return

    def _probe_clock(self, addr: Address) -> None:
        """Thread body of :meth:`_probe_clocks`: hello as a client, the peer's clock sampled, closed."""
        try:
            conn = connect(addr[0], addr[1], LEDGER_PROTOCOL, source_ip=self.host,
                           timeout=self.config.connect_timeout)
            with self._lock:
                if self._closing.is_set():
                    conn.close()
                    return
                self._handshaking.add(conn)     # close() shuts it instead of waiting out the answer
            try:
                conn.send("hello", **hello_fields(role=ROLE_CLIENT, nonce=crypto.random_bytes(8),
                                                  network=self.params.name, genesis=self.params.genesis_hash))
                first = conn.recv(self.config.handshake_timeout)
                if first.type == "hello_ack":
                    hello = PeerHello.from_message(first)
                    check_compatible(hello, network=self.params.name, genesis=self.params.genesis_hash,
                                     difficulty_bits=self.params.difficulty_bits)
                    if hello.nonce != self.node_id:
                        self._clock_sample(addr[0], hello, outbound=True)
            finally:
                conn.close()
                with self._lock:
                    self._handshaking.discard(conn)
        except UserError as exc:
            log.info("could not read the clock of %s: %s", format_address(*addr), exc)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _dial_for_evidence(self, ip: str, port: int) -> str | None:
        """Dial the ledger node a checkpoint report points at (its address is from our own ledger), outside the
        outbound target: one connection, as an ordinary gossip peer, so that a heavier branch it holds is synced
        and parked by the usual rules. Returns the address, or None when it is us, banned or already connected."""
        addr = (ip, port)
        now = time.monotonic()
        with self._lock:
            if self._closing.is_set() or addr in self._book.own or self._standing.is_banned(ip, now):
                return None
            connected = {p.listen_addr for p in self._peers if p.is_peer and not p.closed.is_set()}
            text = format_address(ip, port)
            if addr in connected or addr in self._dialing:
                return text
            self._book.add(addr, now)
            self._book.attempted(addr, now)
            self._dialing.add(addr)
            self._unmeasured.add(addr)    # a stranger chose when it is dialled: its clock is not this node's sample
            thread = threading.Thread(target=self._dial, args=(addr,), name=f"ledger-evidence-{ip}")
            self._threads.add(thread)
            thread.start()
        return text

    def _check_peers(self, now: float) -> None:
        with self._lock:
            peers = list(self._peers)
        with self._lock:
            stalled = self._download.expired(now)
        for peer, why in stalled:
            self._stall(peer, now, why)
        for peer in peers:
            if peer.deadline is not None and now > peer.deadline and not peer.closed.is_set():
                self._stall(peer, now)
            elif peer.is_peer and min(now - peer.last_recv, now - peer.last_ping) > self.config.ping_interval:
                peer.last_ping = now
                peer.send("ping", nonce=int(now * 1000) & _MAX_WIRE_INT)


def default_nickname(fingerprint: bytes) -> str:
    """``user-`` and the key fingerprint's first 8 hex digits: unique per key and, unlike a host name or address,
    not known to anyone before the key exists (so nobody can squat it in advance)."""
    return f"user-{fingerprint.hex()[:8]}"
