"""What every part of a chat node shares: the session table, the worker pool and the threads, the event queue,
the admission limits, and how a session ends. It implements the host protocols of
:class:`~p2pchat.session_writer.SessionWriter`, :class:`~p2pchat.session_reader.SessionReader`,
:class:`~p2pchat.handshake_driver.HandshakeDriver` and :class:`~p2pchat.channel_driver.ChannelDriver`, which
therefore know nothing of one another.

A programming error in a pool task or a session thread is logged with its traceback and fails the session it
concerns (the user sees "internal error"), never swallowed; a :class:`~p2pchat.foundation.errors.UserError`
fails the session with its own text.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from p2pchat.admission import PRE_AUTH_FRAME, Admission, Ticket
from p2pchat.channel_driver import UNRECEIPTED_PAUSE, ChannelDriver, GroupSink
from p2pchat.chat_protocol import CHAT
from p2pchat.continuity import KeyContinuity
from p2pchat.event_queue import EventQueue
from p2pchat.events import Event, MessageReceived, NodeError, SessionEnded, SessionUpdated, StepResult
from p2pchat.file_driver import FileDriver
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import LocalFault, PeerFault, UsageError, UserError
from p2pchat.foundation.identity import Identity
from p2pchat.handshake import Established, short_fp
from p2pchat.handshake_driver import HandshakeDriver, LedgerCrossCheck
from p2pchat.history_recorder import HistoryRecorder
from p2pchat.links import close_after_error, set_frame_limit, shutdown_write
from p2pchat.peer_directory import PeerDirectory
from p2pchat.session import Farewell, Phase, Session
from p2pchat.session_reader import Deadlines, SessionReader
from p2pchat.smp_driver import SmpDriver
from p2pchat.steps import Step

log = logging.getLogger("p2pchat.node")

ENDED_SESSIONS_KEPT = 32      # finished sessions still answered by session_info()/sessions()


class SessionWatcher(Protocol):
    """Told when a session's four steps are done and when it ends (the node's outbox, :mod:`p2pchat.outbox`).
    Called with the session's lock possibly held: bookkeeping only, no IO."""

    def chat_ready(self, fp: str, session: str) -> None: ...

    def chat_ended(self, fp: str | None, session: str, *, dropped: bool, ours: bool) -> None: ...


class NodeRuntime:
    """Shared machinery of a :class:`~p2pchat.node.ChatNode` (see the module docstring)."""

    def __init__(self, identity: Identity, *, directory: PeerDirectory, auto_accept: bool, rotate_every: int,
                 deadlines: Deadlines, workers: int, admission: Admission | None = None) -> None:
        self.identity = identity
        self.directory = directory
        self.continuity: KeyContinuity | None = None     # set by the node when it has a contact store
        self.ledger_check: LedgerCrossCheck | None = None   # set by the node when it asks a ledger node
        self.history: HistoryRecorder | None = None       # set by the node when it keeps a history
        self.watcher: SessionWatcher | None = None        # told when chats open and end (the node's outbox)
        self.groups: GroupSink | None = None              # [groups, issue 18] takes group frames from peers
        self.auto_accept = auto_accept
        self.rotate_every = rotate_every
        self.events = EventQueue(on_taken=self._on_taken)
        self.admission = admission or Admission()
        self.reader = SessionReader(self, deadlines)
        self.handshakes = HandshakeDriver(self)
        self.channels = ChannelDriver(self)
        self.files = FileDriver(self, None)       # the node gives it a downloads folder (issue 16)
        self.smp = SmpDriver(self)           # the shared-secret check inside the channel
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chatnode-work")
        # Handshake work made ahead on another core (Handshake(background=...)): one thread for the node's life,
        # not the pool, so the node's thread count does not grow with it; a job it has not run in time is made by
        # the handshake that needs it.
        self._ahead: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._ahead_thread: threading.Thread | None = None
        self.closed = False

    # --- the session table ------------------------------------------------------------------------------

    def new_session(self, peer_query: str, *, incoming: bool, ticket: Ticket | None = None,
                    automatic: bool = False) -> Session:
        with self._lock:
            if self.closed:
                raise UsageError("the chat node is shut down")
            session = Session(f"s{next(self._ids)}", peer_query, incoming=incoming, writer_host=self)
            session.ticket = ticket
            if automatic:
                session.update(automatic=True)
            self._forget_finished_sessions()
            self._sessions[session.id] = session
        return session

    def _forget_finished_sessions(self) -> None:
        """Drop ended sessions whose reader is done, keeping the latest :data:`ENDED_SESSIONS_KEPT` for the UI:
        otherwise every connection a peer opens and drops would stay in memory for the life of the node.
        Called with ``self._lock`` held."""
        finished = [sid for sid, s in self._sessions.items()
                    if s.ended and (s.reader_done is None or s.reader_done.is_set())]
        for sid in finished[:max(0, len(finished) - ENDED_SESSIONS_KEPT)]:
            del self._sessions[sid]

    def get(self, sid: str) -> Session:
        with self._lock:
            session = self._sessions.get(sid)
        if session is None:
            raise UsageError(f"there is no chat session {sid}")
        return session

    def all_sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    # --- events -----------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.events.put(event)

    def emit_info(self, session: Session, **changes: Any) -> None:
        self.emit(SessionUpdated(session.update(**changes)))

    def _on_taken(self, event: Event) -> None:
        """The UI took ``event`` from the queue (its own thread, no lock held)."""
        if not isinstance(event, MessageReceived):
            return
        with self._lock:
            session = self._sessions.get(event.session)
        if session is None:
            return
        with session.writer.deferred():
            self.channels.taken(session)
        self.events.wake()

    def wait_for_room(self, session: Session, timeout: float) -> bool:
        """Reader: wait until the UI has taken enough of this session's events (back-pressure)."""
        return self.events.wait_for_room(
            session.id, timeout,
            also=lambda: session.ended or (not session.lookup_pending and session.unreceipted < UNRECEIPTED_PAUSE))

    def wake_readers(self) -> None:
        self.events.wake()

    # --- the pool and the threads -----------------------------------------------------------------------

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self.closed:
            return
        try:
            self._executor.submit(self._guarded, fn, *args)
        except RuntimeError:
            log.debug("dropped a task submitted while the node was closing")

    def start_ahead(self) -> None:
        """Start the work-ahead thread (with the node; :meth:`join_threads` stops and joins it)."""
        if self._ahead_thread is None:
            self._ahead_thread = threading.Thread(target=self._run_ahead, name="chatnode-ahead", daemon=True)
            self._ahead_thread.start()

    def ahead(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` soon on the work-ahead thread; never once the node closes (whoever needs its result then
        makes it itself)."""
        if self._ahead_thread is not None and not self.closed:
            self._ahead.put(fn)

    def _run_ahead(self) -> None:
        while (fn := self._ahead.get()) is not None:
            try:
                fn()
            except Exception as exc:
                self.internal_error(None, fn, exc)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a pool task: a user-level error ends the session it concerns; a programming error is logged with
        its traceback and fails that session too; the worker survives both."""
        session = next((a for a in args if isinstance(a, Session)), None)
        try:
            fn(*args)
        except UsageError as exc:           # refused; nothing ends because of it
            self.emit(NodeError(text=str(exc), session=session.id if session else None))
        except LocalFault as exc:           # our machine failed: the peer is not blamed
            log.warning("local fault%s: %s", f" in session {session.id}" if session else "", exc)
            if session is None:
                self.emit(NodeError(text=str(exc)))
            else:
                self.fail(session, f"this computer could not go on: {exc}",
                          peer_reason="the other side had a problem of its own and closed the chat")
        except PeerFault as exc:            # the peer's doing: its session ends and it is told why
            if session is None:
                self.emit(NodeError(text=str(exc)))
            else:
                self.fail(session, str(exc), peer_reason=str(exc))
        except UserError as exc:            # the network (PeerUnreachable): nobody to blame
            if session is None:
                self.emit(NodeError(text=str(exc)))
            else:
                self.fail(session, str(exc))
        except Exception as exc:
            self.internal_error(session, fn, exc)
        if session is not None and session.ended:
            self.close_io(session)

    def internal_error(self, session: Session | None, where: object, exc: BaseException) -> None:
        log.error("internal error in %r%s", where, f" (session {session.id})" if session else "",
                  exc_info=(type(exc), exc, exc.__traceback__))
        text = f"internal error ({type(exc).__name__}: {exc}); see the log"
        if session is None:
            self.emit(NodeError(text=text))
        else:
            self.fail(session, text, peer_reason="the other side had an internal error")

    def start_thread(self, session: Session, target: Callable[..., None], *args: Any) -> bool:
        thread = threading.Thread(target=self._thread_main, args=(session, target, *args), name=f"chat-{session.id}")
        with self._lock:
            if self.closed:
                return False
            self._threads.add(thread)
        thread.start()
        return True

    def _thread_main(self, session: Session, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception as exc:
            self.internal_error(session, target, exc)
            self.close_io(session)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def join_threads(self) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
        if self._ahead_thread is not None:
            self._ahead.put(None)
            self._ahead_thread.join()
        self._executor.shutdown(wait=True)

    def serve(self, session: Session) -> None:
        """Run ``session``'s reader on this thread; a programming error fails the session (and is logged)."""
        try:
            self.reader.run(session)
        except Exception as exc:
            self.internal_error(session, self.reader.run, exc)
            self.close_io(session)

    # --- frames from the peer ---------------------------------------------------------------------------

    def poll_channel(self, session: Session) -> None:
        if session.channel is None:       # the usual case before step 4: not even the lock
            return
        with session.writer.deferred():
            self.channels.poll(session)
            self.files.poll(session)

    def on_frame(self, session: Session, msg: Message) -> None:
        # Answers go out on this thread if the socket takes them at once, and before the UI is woken for the
        # events of this frame (EventQueue.answering).
        with self.events.answering(), session.writer.deferred():
            if session.ended:
                return
            if session.channel is not None:
                self.channels.receive(session, msg)
            elif session.handshake is not None:
                self.handshakes.receive(session, msg)
        self.handshakes.settle(session)

    # --- handshake host ---------------------------------------------------------------------------------

    def prompt_allowed(self, session: Session) -> str | None:
        ticket = session.ticket
        if ticket is None or self.admission.ask_user(ticket):
            return None
        return f"too many chat requests from {ticket.address} are waiting for an answer"

    def peer_at_limit(self, session: Session) -> bool:
        """Before step 3's signatures (``session.lock`` held): if the key the peer claimed in step 2 already
        holds its incoming chats (:data:`~p2pchat.admission.CHATS_PER_PEER`), refuse this one now, at no RSA
        cost. Only a check; :meth:`authenticated` counts the chat once the key is proved."""
        ticket, hs = session.ticket, session.handshake
        if ticket is None or hs is None or hs.peer_public_der is None:
            return False
        refusal = self.admission.peer_full(crypto.fingerprint(hs.peer_public_der))
        if refusal is not None:
            self._refuse_peer(session, hs.peer_public_der, refusal)
        return refusal is not None

    def authenticated(self, session: Session) -> bool:
        ticket, hs = session.ticket, session.handshake
        if ticket is not None and hs is not None and hs.peer_public_der is not None:
            refusal = self.admission.authenticated(ticket, crypto.fingerprint(hs.peer_public_der))
            if refusal is not None:
                self._refuse_peer(session, hs.peer_public_der, refusal)
                return False
        if session.link is not None:
            set_frame_limit(session.link, CHAT.max_frame)
        return True

    def _refuse_peer(self, session: Session, peer_der: bytes, refusal: str) -> None:
        """End an incoming chat at step 3 because its key holds its limit; the peer gets ``refusal``."""
        log.info("session %s: refused at step 3: %s", session.id, refusal)
        session.writer.queue(CHAT.encode("error", reason=refusal))
        self.step_failed(session, Step.AUTHENTICATE,
                         f"refused: the key {short_fp(peer_der)} already has {self.admission.per_peer} chats "
                         f"open with you, the most one key may hold at once (it was told so)")

    def answered(self, session: Session) -> None:
        if session.ticket is not None:
            self.admission.answered(session.ticket)

    def ready(self, session: Session, established: Established) -> None:
        self.channels.start(session, established)
        self.files.session_ready(session, established.peer_features)     # [file digest] roots from the first file
        if self.watcher is not None and session.peer_fp is not None:
            self.watcher.chat_ready(session.peer_fp, session.id)

    def refresh_channel_info(self, session: Session) -> None:
        self.channels.refresh_info(session)

    # --- ending -----------------------------------------------------------------------------------------

    def link_failed(self, session: Session, reason: str) -> None:
        self.fail(session, reason)

    def fail(self, session: Session, reason: str, peer_reason: str | None = None) -> None:
        """End a session because of an error; during the handshake it is the current step's failure."""
        with session.lock:
            if session.ended:
                return
            if peer_reason is not None and session.link is not None:
                if session.channel is not None:
                    # After step 4 only sealed frames speak (an unsealed error reads as a lost connection).
                    session.writer.queue_all(session.channel.send_goodbye(peer_reason[:1000]))
                    session.farewell = Farewell.GOODBYE
                else:
                    session.writer.queue(CHAT.encode("error", reason=peer_reason[:1000]))
            hs = session.handshake
            if session.phase in (Phase.CONNECTING, Phase.HANDSHAKE):
                step = (hs.in_progress or hs.next_step or Step.AGREE_KEY) if hs is not None else Step.CONNECT
                self.step_failed(session, step, reason)
            else:
                self.end(session, reason, clean=False)

    def step_failed(self, session: Session, step: Step, reason: str) -> None:
        """The handshake failed at ``step`` (``session.lock`` held): report it and end the session."""
        if session.ended:
            return
        self.emit(StepResult(session.id, step, False, reason))
        self.end(session, reason, clean=False)

    def end(self, session: Session, reason: str, *, clean: bool, goodbye: str | None = None) -> None:
        """Mark ``session`` ended once (state only, safe with ``session.lock`` held): queue ``goodbye`` for the
        peer when given, erase the keys, give back its admission allowances, tell the UI (``reason`` is for our
        user). The socket work is :meth:`close_io`, done by whoever releases the lock."""
        with session.lock:
            if session.ended:
                return
            # A chat past step 4 that ends without a goodbye from either side dropped (issue 16: it reconnects).
            dropped = session.phase is Phase.CHAT and not clean and goodbye is None
            if goodbye is not None and not session.peer_left:
                if session.channel is not None:
                    session.writer.queue_all(session.channel.send_goodbye(goodbye))
                elif session.link is not None:
                    session.writer.queue(CHAT.encode("error", reason=goodbye or "the other side closed the chat"))
                session.farewell = Farewell.GOODBYE
            session.move(Phase.ENDED)
            self.files.session_ended(session, reason)    # partial downloads stay for a resume
            session.writer.text_marker = None
            if session.channel is not None:
                session.channel.close()     # erase the session keys
            session.channel = None
            if session.handshake is not None:
                session.handshake.close()   # erase a prepared X25519 half
            session.handshake = None
            session.sent_ids.clear()
            if session.ticket is not None:
                self.admission.release(session.ticket)
        if dropped and self.history is not None:
            self.history.dropped(session.id)
        if self.watcher is not None:
            self.watcher.chat_ended(session.peer_fp, session.id, dropped=dropped, ours=not session.incoming)
        self.emit(SessionEnded(session.id, reason, clean))
        self.events.wake()

    def end_and_close(self, session: Session, reason: str) -> None:
        self.end(session, reason, clean=True, goodbye="")
        self.close_io(session)

    def close_io(self, session: Session) -> None:
        """Send what is queued (a goodbye or error), then half-close after a goodbye or close outright; the
        session's buffers are released. Idempotent; never called with ``session.lock`` held."""
        with session.lock:
            if session.phase is not Phase.ENDED:
                return
            session.move(Phase.CLOSED)
            link = session.link
        session.writer.send_all()
        with session.lock:
            session.writer.discard()
        if link is None:
            return
        if session.farewell is not Farewell.PEER_GONE and session.reading:
            # Half-close: our last frame (goodbye or error) then FIN; the reader lingers until the peer closes,
            # so a frame of the peer's crossing ours does not make our kernel reset the connection and destroy it.
            shutdown_write(link)
        else:
            close_after_error(link)

    def close_all(self) -> list[Session]:
        """Stop taking sessions; returns those there are."""
        with self._lock:
            if self.closed:
                return []
            self.closed = True
            return list(self._sessions.values())


def limit_strangers(session: Session) -> None:
    """Before step 3 verified the peer, a link takes only small frames."""
    if session.link is not None:
        set_frame_limit(session.link, PRE_AUTH_FRAME)
