"""The chat node: a threaded TCP server and outgoing connections around the sans-IO handshake and channel cores.

A :class:`ChatNode` serves many sessions at once. Each connected session has exactly one reader thread (the
server's connection thread for an incoming chat, a thread of its own for an outgoing or relayed one). User
commands and outgoing frames run on a small shared worker pool, so a UI call never blocks on the network and a
reader never blocks on a slow peer's receive window (two nodes whose readers both wait to write could deadlock).
Everything the user should see goes to :attr:`ChatNode.events` (types in :mod:`p2pchat.events`).

Timeouts: a step under way must finish within ``step_timeout``; a caller waits up to ``accept_timeout`` for the
callee's user (who has as long to answer); a handshake left idle between steps (the GUI runs one step per click)
ends after ``handshake_timeout``. An established chat may stay quiet for ever; TCP keepalive notices a vanished
peer. Whatever a peer does, only its own session ends.
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2pchat.channel import Channel
from p2pchat.chat_protocol import CHAT, MAX_ROTATE_EVERY, Send
from p2pchat.dialing import DIRECT, PeerTarget, dial, resolve_target
from p2pchat.events import (
    DeliveryReceipt,
    Event,
    IncomingChat,
    MessageReceived,
    NodeError,
    Notice,
    PeerTyping,
    SessionEnded,
    SessionInfo,
    SessionUpdated,
    StepRefused,
    StepResult,
)
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address, parse_address
from p2pchat.foundation.errors import FrameError, UserError
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, FrameServer
from p2pchat.handshake import Handshake, StepOrderError
from p2pchat.peer_directory import LedgerDirectory, PeerDirectory, PeerNotFound
from p2pchat.relay.link import RelayRegistration, open_relay_link, parse_relay
from p2pchat.safety import safety_number
from p2pchat.session import QueuedTexts, Session
from p2pchat.steps import Step

log = logging.getLogger(__name__)

ENDED_SESSIONS_KEPT = 32      # finished sessions still answered by session_info()/sessions()
COALESCE_BYTES = 256 * 1024   # queued frames joined into one write up to this size
CHANNEL_POLL = 2.0          # an established chat's reader wakes this often (to notice a finished linger)
LINGER_SECONDS = 2.0        # after our goodbye, how long we wait for the peer to close first
KEEPALIVE = (30, 10, 3)     # TCP keepalive: idle seconds, probe interval, probes
LOOKUP_BY = {"address": "ip", "fingerprint": "fp", "query": None}   # handshake lookup kinds → ledger kinds


class ChatNode:
    """A chat peer: listens for chats (unless ``no_inbound``), dials peers, runs the four steps and the channel.

    Keyword arguments beyond the node contract: ``listen`` (False: no listening socket, e.g. for the one-chat
    terminal command), ``accept_timeout``, ``handshake_timeout``, ``directory`` (a
    :class:`~p2pchat.peer_directory.PeerDirectory` to use instead of asking the ledger node), ``workers``
    (size of the shared pool), ``max_sessions`` (incoming connections at once) and ``data_dir`` (whose pinned
    ledger network id, :mod:`ledger.network_pin`, the ledger answers must be on).
    """

    def __init__(self, identity: Identity, *, host: str, port: int = CHAT_PORT, network: str = "p2pchat",
                 nickname: str, ledger: str | None = None, relay: str | None = None, no_inbound: bool = False,
                 direct_timeout: float = 3.0, rotate_every: int = 10, step_timeout: float = 10.0,
                 auto_accept: bool = False, listen: bool = True, accept_timeout: float = 120.0,
                 handshake_timeout: float = 300.0, directory: PeerDirectory | None = None, workers: int = 8,
                 max_sessions: int = 512, data_dir: Path | None = None) -> None:
        if not 1 <= rotate_every <= MAX_ROTATE_EVERY:      # issue 11: the protocol fixes the maximum
            raise ValueError(f"rotate_every must be between 1 and {MAX_ROTATE_EVERY}")
        self.identity = identity
        self.host = host
        self.port = port
        self.network = network
        self.nickname = nickname
        self.relay = relay
        self.no_inbound = no_inbound
        self.listen = listen and not no_inbound
        self.direct_timeout = direct_timeout
        self.rotate_every = rotate_every
        self.step_timeout = step_timeout
        self.accept_timeout = accept_timeout
        self.handshake_timeout = handshake_timeout
        self.auto_accept = auto_accept
        self.max_sessions = max_sessions
        self.events: queue.Queue[Event] = queue.Queue()
        if directory is None:
            ledger_ip, ledger_port = parse_address(ledger, LEDGER_PORT) if ledger else (host, LEDGER_PORT)
            directory = LedgerDirectory(ledger_ip, ledger_port, source_ip=host, network=network,
                                        timeout=step_timeout, pin_dir=data_dir)  # the network pinned there
        self.directory: PeerDirectory = directory
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chatnode-work")
        self._server: FrameServer | None = None
        self._registration: Any = None
        self._relay_registered = True     # so that a first failure is reported too
        self._closed = False
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address this node claims in its hello: where it listens (the chat port when it does not)."""
        return format_address(self.host, self.port or CHAT_PORT)

    @property
    def relay_state(self) -> str | None:
        """What the relay registration is doing (``None`` without a relay)."""
        return self._registration.state_text if self._registration is not None else None

    def start(self) -> None:
        """Listen for chats (unless ``no_inbound`` / ``listen=False``); register at the relay if one is set and
        this node takes incoming chats at all."""
        if self._started:
            return
        self._started = True
        if self.listen:
            try:
                self._server = FrameServer(self.host, self.port, CHAT, self._serve_incoming, name="chat",
                                           max_connections=self.max_sessions, timeout=self.step_timeout).start()
            except UserError as exc:
                self._emit(NodeError(text=str(exc)))
                raise
            self.port = self._server.port
        if self.relay and (self.listen or self.no_inbound):
            self._start_relay_registration()

    def close(self) -> None:
        """Say goodbye in every session, stop listening, and stop and join every thread the node started."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions.values())
        if self._registration is not None:
            self._registration.close()
        for session in sessions:
            self._end(session, "this node shut down", clean=True, goodbye="shutting down")
            self._close_io(session)
        # Let readers see the peers close after our goodbye, then cut whatever is left.
        deadline = time.monotonic() + LINGER_SECONDS + 0.5
        for session in sessions:
            if session.reading:
                session.reader_done.wait(max(0.0, deadline - time.monotonic()))
        for session in sessions:
            _close_link(session.link)
        if self._server is not None:
            self._server.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
        self._executor.shutdown(wait=True)
        self.directory.close()

    def __enter__(self) -> ChatNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the contract's commands (none of them waits for the network) ----------------------------------------

    def open_session(self, peer_query: str) -> str:
        """A new outgoing session to ``peer_query`` (IP, ip:port, nickname or fingerprint); no IO yet."""
        query = peer_query.strip()
        if not query:
            raise UserError("say whom to chat with: an IP address, a nickname or a fingerprint")
        return self._new_session(query, incoming=False).id

    def run_step(self, session: str, step: Step) -> None:
        """Begin ``step``; a :class:`StepResult` or :class:`StepRefused` event follows."""
        s = self._get(session)
        step = Step(step)
        if step == Step.CONNECT:
            self._start_connect(s)
        else:
            self._submit(self._start_step, s, step)

    def run_all(self, session: str) -> None:
        """The four steps in order, each as soon as the one before has succeeded."""
        s = self._get(session)
        with s.lock:
            s.auto_steps = True
            connected = s.link is not None or s.connecting
        if connected:
            self._submit(self._continue_all, s)
        else:
            self._start_connect(s)

    def accept(self, session: str, accept: bool) -> None:
        """Answer an :class:`IncomingChat`."""
        s = self._get(session)
        self._submit(self._core_call, s, lambda hs: hs.accept(accept), Step.CONNECT)

    def send_text(self, session: str, text: str) -> int:
        """Queue a message for encryption and sending; returns its id at once (a :class:`DeliveryReceipt` follows
        on arrival). The texts queued while earlier ones are still being written share sealed frames."""
        s = self._get(session)
        with s.lock:
            if s.ended:
                raise UserError("this chat has ended")
            ch = s.channel
            if ch is None:
                raise UserError(f"the chat is not ready yet: finish step {Step.AGREE_KEY.label} first")
            if s.text_marker is not None and not ch.queued:
                s.text_marker = None      # another frame sealed the queued texts first; that placeholder is spent
            msg_id = ch.queue_text(text, time.time())
            s.sent_ids.add(msg_id)
            s.typing_sent = False
            if s.text_marker is None:
                s.text_marker = QueuedTexts()
                s.outbox.append(s.text_marker)
            self._refresh_channel_info(s)
            # A message with none of ours in flight goes out on this thread at once (latency). With earlier ones
            # still unreceipted the user is ahead of the wire: a pool writer seals what has queued up meanwhile,
            # several texts per frame, while this thread returns to queue more.
            at_once = len(s.sent_ids) <= 1
            if not at_once:
                self._schedule_flush(s)
        if at_once:
            self._kick(s)
        return msg_id

    def set_typing(self, session: str, typing: bool) -> None:
        """Tell the peer whether the user is typing; only changes of state make a frame."""
        s = self._get(session)
        with s.lock:
            if s.channel is None or s.ended or s.typing_sent == typing:
                return
            s.typing_sent = typing
            s.outbox.extend(s.channel.send_typing(typing))
            self._schedule_flush(s)

    def end_session(self, session: str) -> None:
        """Say goodbye and close the session."""
        s = self._get(session)
        self._submit(self._end_and_close, s, "you ended the chat")

    def session_info(self, session: str) -> SessionInfo:
        return self._get(session).info

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            return [s.info for s in self._sessions.values()]

    def pending_receipts(self, session: str) -> int:
        """Messages sent in ``session`` whose delivery receipt has not arrived yet."""
        s = self._get(session)
        with s.lock:
            return len(s.sent_ids)

    # --- hooks for the demo and the attack tests: what an attacker on the wire could do ------------------------

    def set_wire_hook(self, session: str, hook: Callable[[bytes], bytes | None] | None) -> None:
        """Pass every frame ``session`` sends through ``hook`` (it returns the bytes to send, or ``None`` to drop
        the frame); ``None`` removes the hook. Lets the demo show a frame altered or lost on the way."""
        s = self._get(session)
        with s.lock:
            s.wire_hook = hook

    def inject_frame(self, session: str, frame: bytes) -> None:
        """Write raw bytes on ``session``'s connection, after whatever is queued (e.g. a replayed frame)."""
        s = self._get(session)
        with s.lock:
            if s.channel is not None:
                s.outbox.extend(s.channel.seal_queued())    # the texts queued so far go before it
            s.text_marker = None
            s.outbox.append(frame)
            s.raw_frames += 1
            self._schedule_flush(s)

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def _new_session(self, peer_query: str, *, incoming: bool) -> Session:
        with self._lock:
            if self._closed:
                raise UserError("the chat node is shut down")
            session = Session(f"s{next(self._ids)}", peer_query, incoming=incoming)
            self._forget_finished_sessions()
            self._sessions[session.id] = session
        return session

    def _forget_finished_sessions(self) -> None:
        """Drop ended sessions whose reader is done, keeping the latest :data:`ENDED_SESSIONS_KEPT` for the UI:
        otherwise every connection a peer opens and drops would stay in memory for the life of the node.
        Called with ``self._lock`` held."""
        finished = [sid for sid, s in self._sessions.items()
                    if s.ended and (not s.reading or s.reader_done.is_set())]
        for sid in finished[:max(0, len(finished) - ENDED_SESSIONS_KEPT)]:
            del self._sessions[sid]

    def _get(self, sid: str) -> Session:
        with self._lock:
            session = self._sessions.get(sid)
        if session is None:
            raise UserError(f"there is no chat session {sid}")
        return session

    def _emit(self, event: Event) -> None:
        self.events.put(event)

    def _emit_info(self, session: Session, **changes: Any) -> None:
        self._emit(SessionUpdated(session.update(**changes)))

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._closed:
            return
        try:
            self._executor.submit(self._guarded, fn, *args)
        except RuntimeError:
            log.debug("dropped a task submitted while the node was closing")

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a pool task; a user-level error ends the session it concerns, never the worker."""
        session = next((a for a in args if isinstance(a, Session)), None)
        try:
            fn(*args)
        except UserError as exc:
            if session is None:
                self._emit(NodeError(text=str(exc)))
            else:
                self._fail(session, str(exc))
        if session is not None and session.ended:
            self._close_io(session)

    def _start_thread(self, session: Session, target: Callable[..., None], *args: Any) -> bool:
        thread = threading.Thread(target=self._thread_main, args=(target, *args), name=f"chat-{session.id}")
        with self._lock:
            if self._closed:
                return False
            self._threads.add(thread)
        thread.start()
        return True

    def _thread_main(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    # --- step 1 (the caller dials) -------------------------------------------------------------------------

    def _start_connect(self, session: Session) -> None:
        with session.lock:
            refusal = None
            if session.incoming:
                refusal = "the side that opened the chat drives the steps; this side answers them"
            elif session.ended:
                refusal = "this chat has ended; open a new one"
            elif Step.CONNECT in session.info.steps_done:
                refusal = f"step {Step.CONNECT.label} is already done"
            elif session.link is not None or session.connecting:
                refusal = f"step {Step.CONNECT.label} is already under way"
            if refusal is None:
                session.connecting = True
                session.progress = (Step.CONNECT, time.monotonic())
        if refusal is not None:
            self._emit(StepRefused(session.id, Step.CONNECT, refusal))
            return
        if not self._start_thread(session, self._connect_and_serve, session):
            with session.lock:
                session.connecting = False

    def _connect_and_serve(self, session: Session) -> None:
        """Caller side of step 1: resolve the peer, dial (direct, then relay), say hello; then read frames."""
        try:
            target = self._resolve(session)
            dialed = dial(target, source_ip=self.host, direct_timeout=self.direct_timeout,
                          io_timeout=self.step_timeout, own_relay=self.relay,
                          open_relay=self._open_relay, direct_allowed=not self.no_inbound)
        except UserError as exc:
            with session.lock:
                session.connecting = False
                self._step_failed(session, Step.CONNECT, str(exc))
            return
        link = dialed.link
        _enable_keepalive(link)
        via_relay = dialed.path != DIRECT
        with session.lock:
            session.connecting = False
            if session.ended or self._closed:
                _close_link(link)
                return
            session.link = link
            session.reading = True
            peer_address = dialed.peer_address if not via_relay else format_address(*link.peer)
            session.handshake = Handshake(
                initiator=True, identity=self.identity, nickname=self.nickname, network=self.network,
                local_address=self.address, peer_address=peer_address, via_relay=via_relay,
                peer_query=session.info.peer_query)
            self._emit_info(session, path=dialed.path, peer_address=dialed.peer_address or peer_address)
            if via_relay:
                why = f" because {dialed.fallback_reason}" if dialed.fallback_reason else ""
                self._emit(Notice(session.id, "path", f"connected through {dialed.path}{why}"))
            else:
                self._emit(Notice(session.id, "path", f"connected directly to {dialed.peer_address}"))
        with self._sending(session):
            self._core_locked(session, lambda hs: hs.start(Step.CONNECT))
        self._read_loop(session)

    def _resolve(self, session: Session) -> PeerTarget:
        try:
            return resolve_target(session.info.peer_query, self.directory)
        except PeerNotFound as exc:
            raise UserError(f"cannot find {session.info.peer_query} in the ledger: {exc}") from None

    # --- steps 2-4 and the handshake core -------------------------------------------------------------------

    def _start_step(self, session: Session, step: Step) -> None:
        with self._sending(session):
            if session.ended:
                self._emit(StepRefused(session.id, step, "this chat has ended; open a new one"))
            elif session.handshake is None:
                reason = (f"step {Step.CONNECT.label} is still under way" if session.connecting else
                          "the keys are already agreed; the chat is ready" if session.channel is not None else
                          f"do step {int(Step.CONNECT)} ({Step.CONNECT.title}) first")
                self._emit(StepRefused(session.id, step, reason))
            else:
                self._core_locked(session, lambda hs: hs.start(step), refusing=step)

    def _continue_all(self, session: Session) -> None:
        """run_all on a session already connected: start the next step if none is under way."""
        with self._sending(session):
            hs = session.handshake
            if hs is None or session.ended or hs.in_progress is not None or hs.next_step is None:
                return
            nxt = hs.next_step
            self._core_locked(session, lambda h: h.start(nxt), refusing=nxt)

    def _core_call(self, session: Session, call: Callable[[Handshake], list[Any]], refusing: Step) -> None:
        with self._sending(session):
            if session.ended or session.handshake is None:
                self._emit(StepRefused(session.id, refusing, "this chat has already ended"))
                return
            self._core_locked(session, call, refusing=refusing)

    def _core_locked(self, session: Session, call: Callable[[Handshake], list[Any]],
                     refusing: Step | None = None) -> None:
        """Call the handshake core (``session.lock`` held) and act on the events it returns, in order."""
        hs = session.handshake
        try:
            out = call(hs)
        except StepOrderError as exc:
            if refusing is None:
                raise
            self._emit(StepRefused(session.id, refusing, str(exc)))
            return
        self._note_progress(session)
        for ev in out:
            if session.ended:
                return
            self._on_handshake_event(session, ev)
        self._schedule_flush(session)
        nxt, session.auto_next = session.auto_next, None
        if nxt is not None and not session.ended and session.handshake is not None:
            # run_all: the next step starts once the events of the one that finished are all handled
            self._core_locked(session, lambda h: h.start(nxt), refusing=nxt)

    def _prepare_ahead(self, session: Session) -> None:
        """Once the frames of a handshake call are written, let the core precompute its step-3/4 signatures and
        X25519 half (it says when via ``prepare_due``), in parallel with the peer doing the same; never called
        with ``session.lock`` held."""
        if session.handshake is None:       # the usual case once the chat runs: not even the lock
            return
        with session.lock:
            hs = session.handshake
            if hs is not None and not session.ended and hs.prepare_due:
                hs.prepare()

    def _note_progress(self, session: Session) -> None:
        hs = session.handshake
        if hs is not None and hs.in_progress != session.progress[0]:
            session.progress = (hs.in_progress, time.monotonic())

    def _on_handshake_event(self, session: Session, ev: Any) -> None:
        kind = type(ev).__name__
        if isinstance(ev, Send):
            session.outbox.append(ev.frame)
        elif kind == "NeedAccept":
            self._emit_info(session, peer_nickname=ev.nickname or None)
            if self.auto_accept:
                self._core_locked(session, lambda hs: hs.accept(True))
            else:
                self._emit(IncomingChat(session.id, ev.address, ev.nickname))
        elif kind == "NeedLookup":
            self._lookup_for(session, ev.query, LOOKUP_BY.get(ev.by))
        elif kind == "StepDone":
            self._on_step_done(session, ev.step, ev.detail)
        elif kind == "Failed":
            self._step_failed(session, ev.step, ev.reason)
        elif kind == "Ready":
            self._on_ready(session, ev.established)
        else:
            raise TypeError(f"unexpected handshake event {ev!r}")

    def _lookup_for(self, session: Session, query: str, by: str | None) -> None:
        try:
            binding = self.directory.lookup(query, by)
        except PeerNotFound as exc:
            why = str(exc)
            self._core_locked(session, lambda hs: hs.ledger_answer(None, why))
            return
        self._emit_info(session, ledger_block=binding.height, confirmations=binding.confirmations)
        if binding.disputed is not None:
            # The key bound to this address does not answer there (ledger/disputes.py): never treat it as the
            # address's owner, whoever is on the line.
            why = binding.disputed.describe()
            self._core_locked(session, lambda hs: hs.ledger_answer(None, why, disputed=True))
            return
        self._core_locked(session, lambda hs: hs.ledger_answer(binding, None))

    def _on_step_done(self, session: Session, step: Step, detail: str) -> None:
        hs = session.handshake
        info = session.mark_done(step)
        if step == Step.SWAP_KEYS and hs is not None and hs.peer_public_der:
            der = hs.peer_public_der
            info = session.update(peer_fingerprint=crypto.format_fingerprint(crypto.fingerprint(der)),
                                  peer_nickname=hs.peer_nickname or info.peer_nickname,
                                  safety_number=safety_number(self.identity.public_der, der))
        self._emit(StepResult(session.id, step, True, detail))
        self._emit(SessionUpdated(info))
        if session.auto_steps and not session.incoming and step < Step.AGREE_KEY:
            session.auto_next = Step(step + 1)

    def _on_ready(self, session: Session, established: Any) -> None:
        session.channel = Channel(established, rotate_every=self.rotate_every)
        session.handshake = None      # its secrets now live in the channel only
        session.progress = (None, time.monotonic())
        session.update(peer_nickname=established.peer_nickname or session.info.peer_nickname,
                       safety_number=established.safety_number)
        self._refresh_channel_info(session, force=True)

    def _refresh_channel_info(self, session: Session, force: bool = False) -> None:
        ch = session.channel
        if ch is None:
            return
        info = session.info
        if force or info.key_epoch != ch.epoch or info.until_rotation != ch.until_rotation:
            self._emit_info(session, key_epoch=ch.epoch, until_rotation=ch.until_rotation)

    def _step_failed(self, session: Session, step: Step, reason: str) -> None:
        """The handshake failed at ``step`` (``session.lock`` held): report it and end the session."""
        if session.ended:
            return
        self._emit(StepResult(session.id, step, False, reason))
        self._end(session, reason, clean=False)

    # --- the channel -------------------------------------------------------------------------------------------

    def _on_channel_events(self, session: Session, out: Iterable[Any]) -> None:
        for ev in out:
            kind = type(ev).__name__
            if isinstance(ev, Send):
                session.outbox.append(ev.frame)
            elif kind == "Text":
                self._emit(MessageReceived(session.id, ev.msg_id, ev.text, session.info.peer_nickname or "peer",
                                           ev.sent_at, time.time()))
            elif kind == "Receipt":
                session.sent_ids.discard(ev.msg_id)
                self._emit(DeliveryReceipt(session.id, ev.msg_id))
            elif kind == "Typing":
                self._emit(PeerTyping(session.id, ev.typing))
            elif kind == "Rotated":
                whose = "our sending key" if ev.direction == "send" else "the peer's sending key"
                self._emit(Notice(session.id, "rotation",
                                  f"key rotated: {whose} is now epoch {ev.epoch}; the old key is erased"))
            elif kind == "Refused":
                self._emit(Notice(session.id, "refused", ev.reason))
            elif kind == "Goodbye":
                session.peer_left = True
                peer = session.info.peer_nickname or "the peer"
                self._end(session, f"{peer} left the chat" + (f" ({ev.reason})" if ev.reason else ""),
                          clean=True)
                return
            elif kind == "Abort":     # issue 11: the channel ended the session (its own words, never the peer's)
                session.peer_left = session.peer_left or ev.connection_lost
                self._end(session, ev.reason, clean=False)
                return
            else:
                raise TypeError(f"unexpected channel event {ev!r}")
        self._schedule_flush(session)
        self._refresh_channel_info(session)

    # --- reading ---------------------------------------------------------------------------------------------------

    def _serve_incoming(self, conn: FramedSocket) -> None:
        """FrameServer handler: one incoming TCP chat, served on the server's connection thread."""
        try:
            session = self._new_session(conn.peer_text, incoming=True)
        except UserError:
            return   # shutting down
        _enable_keepalive(conn)
        with session.lock:
            session.link = conn
            session.reading = True
            session.handshake = Handshake(
                initiator=False, identity=self.identity, nickname=self.nickname, network=self.network,
                local_address=self.address, peer_address=conn.peer_text, via_relay=False, peer_query=None)
            session.update(peer_address=conn.peer_text, path=DIRECT)
        self._read_loop(session)

    def _read_deadline(self, session: Session) -> tuple[float | None, str, str | None]:
        """When the next frame is due (``None``: no deadline), what to tell the user if it is late, and what to
        tell the peer (``None``: nothing)."""
        with session.lock:
            hs = session.handshake
            if session.channel is not None or hs is None:
                return None, "", None
            step, since = session.progress
            if not hs.initiator and Step.CONNECT not in hs.done:
                if hs.in_progress is None:
                    return (session.started_at + self.step_timeout,
                            f"sent no hello within {self.step_timeout:g} s", None)
                return (since + self.accept_timeout,
                        f"you did not accept or reject the chat within {self.accept_timeout:g} s",
                        "the other side did not answer the chat request in time")
            if step == Step.CONNECT:
                return since + self.accept_timeout, (f"did not accept or reject the chat within "
                                                     f"{self.accept_timeout:g} s"), None
            if step is not None:
                return since + self.step_timeout, (f"went silent during step {step.label} "
                                                   f"(no answer within {self.step_timeout:g} s)"), None
            return session.started_at + self.handshake_timeout, (
                f"left the handshake unfinished for {self.handshake_timeout:g} s"), "the handshake took too long"

    def _read_loop(self, session: Session) -> None:
        link = session.link
        try:
            while not session.ended:
                self._poll_channel(session)     # issue 11: the channel's timer (rotation retries)
                if session.ended:
                    break
                deadline, what, tell_peer = self._read_deadline(session)
                wait = CHANNEL_POLL if deadline is None else max(0.001, deadline - time.monotonic())
                started = time.monotonic()
                try:
                    msg = link.recv(timeout=wait)
                except FrameError as exc:      # the stream is unusable after a bad frame
                    if not session.ended:
                        self._fail(session, f"{link.peer_text} sent a bad frame: {exc}", peer_reason=str(exc))
                    break
                except UserError as exc:
                    if session.ended:
                        break
                    # A concurrent send resets the socket's timeout to the link's own, so a read may give up
                    # after whichever of the two is shorter; anything that fast is a closed connection.
                    limit = min(wait, getattr(link, "timeout", wait) or wait)
                    timed_out = time.monotonic() - started >= limit * 0.9
                    if timed_out and deadline is None:
                        continue          # a quiet chat is fine
                    if timed_out and deadline is not None and time.monotonic() < deadline:
                        continue
                    if timed_out:
                        peer = session.info.peer_nickname or link.peer_text
                        reason = what if what.startswith("you ") else f"{peer} {what}"
                        self._fail(session, reason, peer_reason=tell_peer)
                    else:
                        with session.lock:
                            session.peer_left = True
                        self._fail(session, str(exc))
                    break
                self._on_frame(session, msg)
            self._close_io(session)
            self._linger(session, link)
        finally:
            _close_link(link)
            session.reader_done.set()

    def _on_frame(self, session: Session, msg: Any) -> None:
        with self._sending(session):      # answers go out on this thread if the socket takes them at once
            if session.ended:
                return
            if session.channel is not None:
                # Frames already read but not handled yet: the receipt for this burst of texts waits for them.
                more = getattr(session.link, "buffered_messages", 0) > 0
                self._on_channel_events(session, session.channel.receive(msg, more_buffered=more))
            elif session.handshake is not None:
                self._core_locked(session, lambda hs: hs.receive(msg))

    def _poll_channel(self, session: Session) -> None:
        """Issue 11: give the channel its timer (a rotation not acknowledged is retried, then ends the session);
        called by the reader after every frame and every ``CHANNEL_POLL`` seconds."""
        if session.channel is None:
            return
        with self._sending(session):
            if session.channel is not None and not session.ended:
                self._on_channel_events(session, session.channel.poll(time.monotonic()))

    def _linger(self, session: Session, link: Any) -> None:
        """After our goodbye, read (and drop) until the peer closes, so our last frames are not reset away."""
        if not session.graceful or session.peer_left:
            return
        deadline = time.monotonic() + LINGER_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                link.recv(timeout=remaining)
            except UserError:
                return

    # --- sending and ending ------------------------------------------------------------------------------------------

    def _schedule_flush(self, session: Session) -> None:
        """Have the pool send the outbox (``session.lock`` held); one flush per session at a time keeps order.
        Deferred while the lock holder will try to send on its own thread (:meth:`_kick`)."""
        if session.defer_flush:
            return
        if (session.outbox or session.partial) and not session.flush_scheduled and not session.ended:
            session.flush_scheduled = True
            self._submit(self._flush, session)

    def _flush(self, session: Session) -> None:
        try:
            self._send_outbox(session)
        finally:
            with session.lock:
                session.flush_scheduled = False
                again = bool(session.outbox or session.partial) and not session.ended
        if again:   # frames queued after the last pop but before the flag was cleared
            with session.lock:
                self._schedule_flush(session)

    def _next_chunk(self, session: Session) -> bytes | memoryview | None:
        """The next bytes to write (``session.lock`` held): the rest of a partly sent frame, else the queued
        frames (a :class:`QueuedTexts` placeholder sealed on the spot; each frame through the wire hook) joined up
        to :data:`COALESCE_BYTES`, so a burst costs one system call; None when nothing is queued."""
        if session.partial:
            data, session.partial = session.partial, b""
            return data
        parts: list[bytes] = []
        size = 0
        outbox, hook = session.outbox, session.wire_hook
        while outbox and size < COALESCE_BYTES:
            frame = outbox.popleft()
            if isinstance(frame, QueuedTexts):
                self._seal_queued(session, frame)
                continue
            if hook is not None:
                frame = hook(frame)
            if frame is not None:
                parts.append(frame)
                size += len(frame)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _seal_queued(self, session: Session, marker: QueuedTexts) -> None:
        """Replace the placeholder just taken from the outbox by the sealed frames of the queued texts
        (``session.lock`` held). A placeholder whose texts another frame already sealed is dropped: any frame the
        channel seals carries the queued texts ahead of it, so counters still increase along the wire."""
        if marker is not session.text_marker:
            return
        session.text_marker = None
        if session.channel is not None:
            session.outbox.extendleft(reversed(session.channel.seal_queued()))
            self._refresh_channel_info(session)

    @contextmanager
    def _sending(self, session: Session) -> Iterator[None]:
        """Hold ``session.lock`` to feed a core; the frames it queues are then written by this thread
        (:meth:`_kick`) instead of waiting for a pool thread."""
        with session.lock:
            session.defer_flush = True
            try:
                yield
            finally:
                session.defer_flush = False
        self._kick(session)
        self._prepare_ahead(session)

    def _kick(self, session: Session) -> None:
        """Send what is queued right here if the socket takes it without waiting (the common case: no thread
        hand-off, lower latency); whatever is left goes to the pool. Never blocks; never called with
        ``session.lock`` held."""
        # Nothing queued is the usual case after a frame that needs no answer. Checked without the lock on
        # purpose: whoever queues a frame after this check kicks or schedules a flush itself.
        if not session.outbox and not session.partial:
            return
        write = getattr(session.link, "send_nowait", None)    # FramedSocket and RelayLink have it
        done = False
        if write is not None and session.send_lock.acquire(blocking=False):
            try:
                done = self._send_without_waiting(session, write)
            finally:
                session.send_lock.release()
        if not done:
            with session.lock:
                self._schedule_flush(session)

    def _send_without_waiting(self, session: Session, write: Callable[[bytes | memoryview], int]) -> bool:
        """True when everything queued was written (``send_lock`` held); what ``write`` did not take stays first
        in line for the pool."""
        while True:
            with session.lock:
                if session.ended:
                    return False
                data = self._next_chunk(session)
            if data is None:
                return True
            try:
                sent = write(data)
            except UserError as exc:
                with session.lock:
                    session.outbox.clear()
                    session.peer_left = True
                self._fail(session, str(exc))
                return True
            if sent < len(data):
                with session.lock:
                    session.partial = memoryview(data)[sent:]     # the rest, not a copy of it
                return False

    def _send_outbox(self, session: Session) -> None:
        """Send queued frames in order on this thread, waiting for the socket if need be (never called with
        ``session.lock`` held)."""
        with session.send_lock:
            while True:
                with session.lock:
                    link = session.link
                    data = self._next_chunk(session) if link is not None else None
                if data is None:
                    return
                try:
                    link.send_frame(data)
                except UserError as exc:
                    with session.lock:
                        session.outbox.clear()
                        session.partial = b""
                        session.peer_left = True
                    self._fail(session, str(exc))
                    return

    def _fail(self, session: Session, reason: str, peer_reason: str | None = None) -> None:
        """End a session because of an error; during the handshake it is the current step's failure."""
        with session.lock:
            if session.ended:
                return
            if peer_reason is not None and session.link is not None:
                session.outbox.append(CHAT.encode("error", reason=peer_reason[:1000]))
            hs = session.handshake
            if session.channel is None and (hs is not None or session.connecting):
                step = (hs.in_progress or hs.next_step or Step.AGREE_KEY) if hs is not None else Step.CONNECT
                self._step_failed(session, step, reason)
            else:
                self._end(session, reason, clean=False)

    def _end(self, session: Session, reason: str, *, clean: bool, goodbye: str | None = None) -> None:
        """Mark ``session`` ended once (state only, safe with ``session.lock`` held): queue ``goodbye`` for the
        peer when given, erase the keys, tell the UI (``reason`` is for our user). The socket work is
        :meth:`_close_io`, done by whoever releases the lock."""
        with session.lock:
            if session.ended:
                return
            if goodbye is not None and not session.peer_left:
                if session.channel is not None:
                    session.outbox.extend(session.channel.send_goodbye(goodbye))
                elif session.link is not None:
                    session.outbox.append(CHAT.encode("error", reason=goodbye or "the other side closed the chat"))
                session.graceful = True
            session.ended = True
            session.text_marker = None
            if session.channel is not None:
                session.channel.close()     # erase the session keys
            session.channel = None
            if session.handshake is not None:
                session.handshake.close()   # erase a prepared X25519 half
            session.handshake = None
            session.sent_ids.clear()
        self._emit(SessionEnded(session.id, reason, clean))

    def _end_and_close(self, session: Session, reason: str) -> None:
        self._end(session, reason, clean=True, goodbye="")
        self._close_io(session)

    def _close_io(self, session: Session) -> None:
        """Send what is queued (a goodbye or error), then half-close after a goodbye or close outright.
        Idempotent; never called with ``session.lock`` held."""
        with session.lock:
            if not session.ended or session.io_closed:
                return
            session.io_closed = True
            link = session.link
        self._send_outbox(session)
        if link is None:
            return
        if session.graceful and not session.peer_left and session.reading:
            _shutdown_write(link)     # the reader lingers until the peer closes, then closes
        else:
            _close_link(link)

    # --- relay -----------------------------------------------------------------------------------------------------

    def _open_relay(self, relay: str, peer_fingerprint: bytes, timeout: float) -> Any:
        # [relay link, issue 11] "IP:PORT#KEY" pins the relay's link key; a ledger hint naming our own relay
        # uses our pin for it. Without a pin the key seen first in this process is kept (docs/relay.md).
        ip, port, key = parse_relay(relay)
        if key is None and self.relay:
            own_ip, own_port, own_key = parse_relay(self.relay)
            key = own_key if (own_ip, own_port) == (ip, port) else None
        return open_relay_link(self.identity, ip, port, peer_fingerprint, inner_protocol=CHAT,
                               source_ip=self.host, timeout=max(timeout, 20.0), network=self.network,
                               relay_key=key)

    def _start_relay_registration(self) -> None:
        ip, port, key = parse_relay(self.relay or "")      # [relay link, issue 11] optional #KEY pin
        self._registration = RelayRegistration(
            self.identity, ip, port, on_invite=self._on_relay_invite, inner_protocol=CHAT, source_ip=self.host,
            network=self.network, timeout=self.step_timeout, on_state=self._on_relay_state, relay_key=key)
        self._registration.start()

    def _on_relay_state(self, registered: bool, text: str) -> None:
        # Tell the UI when the registration is lost (once per loss), not on every retry.
        was, self._relay_registered = self._relay_registered, registered
        if was and not registered and not self._closed:
            self._emit(NodeError(text=text))

    def _on_relay_invite(self, link: Any) -> None:
        """A caller reached us through the relay: serve it like an incoming TCP chat, on a thread of its own."""
        try:
            session = self._new_session(f"fingerprint {link.peer_fingerprint.hex()}", incoming=True)
        except UserError:
            link.close()
            return
        path = link.peer_text
        with session.lock:
            session.link = link
            session.reading = True
            session.handshake = Handshake(
                initiator=False, identity=self.identity, nickname=self.nickname, network=self.network,
                local_address=self.address, peer_address=format_address(*link.peer), via_relay=True,
                peer_query=None)
            session.update(path=path, peer_address=path)
        self._emit(Notice(session.id, "path", f"incoming chat through {path}"))
        if not self._start_thread(session, self._read_loop, session):
            link.close()


def _enable_keepalive(link: Any) -> None:
    sock = getattr(link, "sock", None)
    if not isinstance(sock, socket.socket):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            idle, interval, count = KEEPALIVE
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    except OSError:
        log.debug("could not enable TCP keepalive")


def _shutdown_write(link: Any) -> None:
    """Half-close: our FIN follows the last frame; the reader keeps reading until the peer closes too."""
    sock = getattr(link, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_WR)
            return
        except OSError:
            pass
    _close_link(link)


def _close_link(link: Any) -> None:
    if link is not None:
        link.close()
