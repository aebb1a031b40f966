"""The chat node: a threaded TCP server and outgoing connections around the sans-IO handshake and channel cores.

:class:`ChatNode` is the facade the UIs use (terminal, GUI, demo). The parts behind it, each with one concern:

- :mod:`p2pchat.node_runtime` — the session table, worker pool, threads, event queue and how a session ends;
- :mod:`p2pchat.session` — one session's state, its :class:`~p2pchat.session.Phase` and transitions;
- :mod:`p2pchat.session_writer` — the outbox and non-blocking writes;
- :mod:`p2pchat.session_reader` — the read loop, its deadlines and back-pressure;
- :mod:`p2pchat.handshake_driver` / :mod:`p2pchat.channel_driver` — feeding the protocol cores;
- :mod:`p2pchat.admission` — what strangers may make the node do before they authenticated;
- :mod:`p2pchat.event_queue` — the bounded queue of UI events;
- :mod:`p2pchat.relay_presence` — the registration at a relay and the chats it brings in.

Each connected session has exactly one reader thread (the server's connection thread for an incoming chat, a
thread of its own for an outgoing or relayed one). User commands and outgoing frames run on a small shared worker
pool, so a UI call never blocks on the network and a reader never blocks on a slow peer's receive window.
Everything the user should see goes to :attr:`ChatNode.events` (types in :mod:`p2pchat.events`). Whatever a
peer does, only its own session ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from p2pchat.admission import Admission
from p2pchat.chat_protocol import CHAT, MAX_ROTATE_EVERY
from p2pchat.contacts import ContactStore
from p2pchat.continuity import KeyContinuity
from p2pchat.dialing import DIRECT, PeerTarget, dial, resolve_target
from p2pchat.downloads import Downloads
from p2pchat.events import Event, NodeError, Notice, PadModeChanged, Presence, SessionInfo, StepRefused
from p2pchat.file_resume import FileResume, PendingFile
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address, parse_address
from p2pchat.foundation.datadir import DataDirLock
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.foundation.host_address import HostFollower, HostWatch
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket, FrameServer
from p2pchat.group_service import GroupService, WatcherPair
from p2pchat.group_store import GroupStore
from p2pchat.handshake_driver import new_handshake
from p2pchat.history import HistoryStore
from p2pchat.history_recorder import HistoryRecorder
from p2pchat.links import Link, enable_keepalive
from p2pchat.node_runtime import NodeRuntime, limit_strangers
from p2pchat.outbox import Outbox
from p2pchat.peer_directory import LedgerDirectory, PeerDirectory, PeerNotFound
from p2pchat.relay.link import RelayLink, RelayRegistration, open_relay_link, parse_relay
from p2pchat.relay_presence import RelayPresence
from p2pchat.session import Phase, Session
from p2pchat.session_reader import LINGER_SECONDS, Deadlines
from p2pchat.steps import Step
from p2pchat.transfer import DEFAULT_MAX_SIZE
from p2pchat.vault import Vault

log = logging.getLogger(__name__)
OUTBOX_LOCK = "outbox.lock"     # held by the one process that delivers what waits in a data directory (below)


class ChatNode:
    """A chat peer: listens for chats (unless ``no_inbound``), dials peers, runs the four steps and the channel.

    Keyword arguments beyond the node contract: ``listen`` (False: no listening socket, e.g. for the one-chat
    terminal command), ``accept_timeout``, ``handshake_timeout``, ``directory`` (a
    :class:`~p2pchat.peer_directory.PeerDirectory` to use instead of asking the ledger node), ``workers``
    (size of the shared pool), ``max_sessions`` (incoming connections at once), ``admission`` (the limits on
    strangers, :class:`~p2pchat.admission.Admission`) and ``data_dir`` (whose pinned ledger network id,
    :mod:`ledger.network_pin`, the ledger answers must be on, and whose contact store,
    :mod:`p2pchat.contacts`, holds the keys pinned for addresses and nicknames; ``contacts`` gives the store
    directly, ``contacts=False`` runs without one: nothing pinned, nothing checked). ``vault`` is the data
    directory's at-rest key (:mod:`p2pchat.vault`; default: the directory's, which must then have no passphrase);
    ``history`` the store every text of a chat past step 4 is kept in (:mod:`p2pchat.history`; default: the data
    directory's; ``False``: none). The UIs read the history through :attr:`history`. ``outbox`` (needs a
    history): texts for a contact with no chat open wait and go out when it can be reached, and chats this node
    opened reconnect after a drop (:mod:`p2pchat.outbox`; for long-running nodes: ``listen`` and the window).
    """

    def __init__(self, identity: Identity, *, host: str, port: int = CHAT_PORT, network: str = "p2pchat",
                 nickname: str, ledger: str | None = None, relay: str | None = None, no_inbound: bool = False,
                 direct_timeout: float = 3.0, rotate_every: int = 10, step_timeout: float = 10.0,
                 auto_accept: bool = False, listen: bool = True, accept_timeout: float = 120.0,
                 handshake_timeout: float = 300.0, directory: PeerDirectory | None = None, workers: int = 8,
                 max_sessions: int = 512, admission: Admission | None = None, data_dir: Path | None = None,
                 contacts: ContactStore | bool = True, vault: Vault | None = None,
                 history: HistoryStore | bool = True, outbox: bool = False, downloads: Path | None = None,
                 max_file_size: int = DEFAULT_MAX_SIZE, accept_files: bool = False,
                 host_watch: HostWatch | None = None) -> None:
        if not 1 <= rotate_every <= MAX_ROTATE_EVERY:      # issue 11: the protocol fixes the maximum
            raise ValueError(f"rotate_every must be between 1 and {MAX_ROTATE_EVERY}")
        self.identity = identity
        # --host auto: ``host_watch`` follows this machine's address; the node moves with it (move_to)
        self.host = host_watch.current if host_watch is not None else host
        host = self.host
        self._host_follower = (None if host_watch is None else
                               HostFollower(host_watch, self.move_to, name="chat-host-watch"))
        # The ledger node on this machine (at --host) moves with it; one elsewhere stays where it is.
        self._ledger_follows_host = directory is None and (
            ledger is None or parse_address(ledger, LEDGER_PORT)[0] == host)
        self.port = port
        self.network = network
        self.nickname = nickname
        self.relay = relay
        self.no_inbound = no_inbound
        self.listen = listen and not no_inbound
        self.takes_calls = listen      # registers at its relay; a caller only (`p2pchat chat`) does not, so its
                                       # calls never replace the registration of this key's listener
        self.direct_timeout = direct_timeout
        self.rotate_every = rotate_every
        self.step_timeout = step_timeout
        self.accept_timeout = accept_timeout
        self.handshake_timeout = handshake_timeout
        self.auto_accept = auto_accept
        self.max_sessions = max_sessions
        if directory is None:
            ledger_ip, ledger_port = parse_address(ledger, LEDGER_PORT) if ledger else (host, LEDGER_PORT)
            directory = LedgerDirectory(ledger_ip, ledger_port, source_ip=host, network=network,
                                        timeout=step_timeout, pin_dir=data_dir)  # the network pinned there
        self.directory: PeerDirectory = directory
        self._rt = NodeRuntime(identity, directory=directory, auto_accept=auto_accept, rotate_every=rotate_every,
                               deadlines=Deadlines(step_timeout, accept_timeout, handshake_timeout),
                               workers=workers, admission=admission)
        if vault is None and data_dir is not None and (contacts is True or history is True):
            vault = Vault.open(data_dir, None)      # refused when the directory has a passphrase
        # Key continuity (issue 13): the data directory's contact store, checked at step 2, written after step 4.
        self.contacts: ContactStore | None = (contacts if isinstance(contacts, ContactStore) else
                                              ContactStore.in_data_dir(data_dir, vault)
                                              if contacts and data_dir is not None else None)
        if self.contacts is not None:
            self._rt.continuity = KeyContinuity(self.contacts, directory)
            self._rt.smp.mark_verified = self._secret_matched
        if isinstance(directory, LedgerDirectory):     # the step-2 ledger cross-check reads its verified headers
            self._rt.ledger_check = directory
        # The chat history (issue 15): written on a thread of its own as texts pass the channel.
        self.history: HistoryStore | None = None
        if isinstance(history, HistoryStore):
            self.history = history
        elif history and data_dir is not None and vault is not None:
            try:
                self.history = HistoryStore.in_data_dir(data_dir, vault)
            except UserError:
                if self.contacts is not None:
                    self.contacts.close()
                raise
        if data_dir is not None:     # issue 17: one-time-pad mode uses the data directory's pads
            from p2pchat.pad_mode import PadModes

            self._rt.channels.pads = PadModes(data_dir, identity.fingerprint, self._rt.emit)
        self.outbox: Outbox | None = None
        if self.history is not None:
            self._rt.history = HistoryRecorder(self.history, lambda text: self._rt.emit(NodeError(text=text)),
                                               requeued=self._requeued)
        self._outbox_wanted = outbox and self.history is not None
        # Files (issue 16): received into ``downloads`` (default: the data directory's downloads folder).
        folder = downloads if downloads is not None else data_dir / "downloads" if data_dir is not None else None
        self._rt.files.downloads = Downloads(folder, max_size=max_file_size) if folder is not None else None
        self._rt.files.auto_accept = accept_files
        self.groups: GroupService | None = None        # [groups, issue 18] with the outbox, in a data directory
        self.resume: FileResume | None = None          # [file resume, issue 16] with the outbox, in a data directory
        self._group_dir = (data_dir, vault) if data_dir is not None and vault is not None else None
        # [redstate] One process per data directory keeps its waiting texts, files and group frames: two would
        # both send a waiting text, and each rewrite the list of waiting files over the other's.
        self._outbox_lock: DataDirLock | None = None
        if self._outbox_wanted and self._group_dir is not None:     # [file resume, issue 16] files kept for contacts
            try:
                self._outbox_lock = DataDirLock(
                    self._group_dir[0] / OUTBOX_LOCK,
                    f"another p2pchat (listen, bot or the window) is already running with the data directory "
                    f"{self._group_dir[0]}: it delivers the messages and files waiting there. Use that one, or stop it "
                    f"first ('p2pchat chat' and 'p2pchat send' may run beside it)")
                self.resume = FileResume.in_data_dir(self, *self._group_dir, submit=self._rt.submit,
                                                     emit=self._rt.emit)
            except UserError:
                if self._outbox_lock is not None:
                    self._outbox_lock.release()
                for store in (self.contacts, self.history):
                    if store is not None:
                        store.close()
                raise
        # Everything the user should see, in order (bounded per session: see p2pchat.event_queue).
        self.events: queue.Queue[Event] = self._rt.events
        self._server: FrameServer | None = None
        self._relay_presence: RelayPresence | None = None
        self._registration: RelayRegistration | None = None     # the presence's registration (tests wait on it)
        self._started = False

    @property
    def admission(self) -> Admission:
        return self._rt.admission

    # --- lifecycle ------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address this node claims in its hello: where it listens (the chat port when it does not)."""
        return format_address(self.host, self.port or CHAT_PORT)

    @property
    def hello_address(self) -> str:
        """The address our hello claims: none on a ``--no-inbound`` host (the ledger binds it no address), which
        tells a peer we dial directly to look us up by our key (docs/protocol.md §3.2)."""
        return "" if self.no_inbound else self.address

    @property
    def relay_state(self) -> str | None:
        """What the relay registration is doing (``None`` without a relay)."""
        return self._relay_presence.state_text if self._relay_presence is not None else None

    def start(self) -> None:
        """Listen for chats (unless ``no_inbound`` / ``listen=False``); register at the relay if one is set and
        this node takes incoming chats at all (``listen``: a caller-only node never registers, so a chat from a
        host never knocks the same key's listener off the relay)."""
        if self._started:
            return
        self._started = True
        self._rt.start_ahead()
        if self.listen:
            try:
                self._server = FrameServer(self.host, self.port, CHAT, self._serve_incoming, name="chat",
                                           max_connections=self.max_sessions, timeout=self.step_timeout).start()
            except UserError as exc:
                self._rt.emit(NodeError(text=str(exc)))
                raise
            self.port = self._server.port
        if self.relay and self.takes_calls:
            self._start_relay_presence()
        if self._outbox_wanted and self.history is not None:
            self.outbox = Outbox(self, self.history, self._rt.emit, stranger=self._stranger)   # [redrelay]
            self._rt.watcher = self.outbox
            if self._group_dir is not None:           # [groups, issue 18]
                store = GroupStore.in_data_dir(*self._group_dir)
                self.groups = GroupService(self, store, self.identity, self._rt.emit)
                self.outbox.also_waiting = self.groups.has_pending
                self._rt.groups = self.groups
                self._rt.files.tags = self.groups
                self._rt.watcher = WatcherPair(self.outbox, self.groups)
            if self.resume is not None:               # [file resume, issue 16]
                self._start_resume(self.outbox, self.resume)
            self.outbox.start()                       # last: every chat it opens is watched
        if self._host_follower is not None:
            self._host_follower.start()

    def _start_resume(self, outbox: Outbox, resume: FileResume) -> None:
        """Files kept for contacts are offered again whenever a chat with them is ready; their contacts are
        dialled like those with waiting texts."""
        self._rt.files.outgoing_ended = resume.transfer_ended
        others = outbox.also_waiting
        outbox.also_waiting = lambda fp: resume.has_pending(fp) or others(fp)
        assert self._rt.watcher is not None
        self._rt.watcher = WatcherPair(self._rt.watcher, resume)
        resume.start()

    def _start_relay_presence(self) -> None:
        assert self.relay is not None
        ip, port, key = parse_relay(self.relay)      # [relay link, issue 11] optional #KEY pin
        self._relay_presence = RelayPresence(self._rt.emit, self.identity, ip, port, source_ip=self.host,
                                             network=self.network, timeout=self.step_timeout,
                                             on_invite=self._on_relay_invite, relay_key=key)
        self._registration = self._relay_presence.registration
        self._relay_presence.start()

    def move_to(self, old: str, new: str) -> None:
        """--host auto: this machine's address changed from ``old`` to ``new``. Listen there (same port), ask
        the ledger node that moved with us, and register at the relay from the new address. The ledger node
        (``ledger serve/join --host auto``) publishes the updated record."""
        if self._server is not None:
            server = FrameServer(new, self.port, CHAT, self._serve_incoming, name="chat",
                                 max_connections=self.max_sessions, timeout=self.step_timeout).start()
            previous, self._server = self._server, server
            previous.close()
        self.host = new
        if isinstance(self.directory, LedgerDirectory):
            self.directory.move(new if self._ledger_follows_host else None, source_ip=new)
        if self._relay_presence is not None:
            self._relay_presence.close()
            self._start_relay_presence()
        was = format_address(old, self.port or CHAT_PORT)
        log.info("chat node now at %s (was %s)", self.address, was)
        self._rt.emit(Notice("", "path", f"this machine's address changed: now listening on {self.address} "
                                         f"(was {was})"))

    def close(self) -> None:
        """Say goodbye in every session, stop listening, and stop and join every thread the node started."""
        if self._rt.closed:
            return
        if self._host_follower is not None:
            self._host_follower.close()
        sessions = self._rt.close_all()
        if self.resume is not None:
            self.resume.close()         # no new offers from here on
        if self.outbox is not None:
            self.outbox.close()         # no new calls from here on
        if self.groups is not None:
            self.groups.close()         # [groups, issue 18] its store closes with it
        if self._relay_presence is not None:
            self._relay_presence.close()
        for session in sessions:
            self._rt.end(session, "this node shut down", clean=True, goodbye="shutting down")
            self._rt.close_io(session)
        # Let readers see the peers close after our goodbye, then cut whatever is left.
        deadline = time.monotonic() + LINGER_SECONDS + 0.5
        for session in sessions:
            if session.reader_done is not None:
                session.reader_done.wait(max(0.0, deadline - time.monotonic()))
        for session in sessions:
            if session.link is not None:
                session.link.close()
        if self._server is not None:
            self._server.close()
        self._rt.join_threads()
        self.directory.close()
        if self.contacts is not None:
            self.contacts.close()
        if self._rt.history is not None:
            self._rt.history.close()          # after every session thread: nothing more is recorded
        if self.history is not None:
            self.history.close()
        if self._outbox_lock is not None:
            self._outbox_lock.release()

    def __enter__(self) -> ChatNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the contract's commands (none of them waits for the network) ----------------------------------------

    def accept_new_key(self, fingerprint: str, *, override_verified: bool = False) -> None:
        """The user accepts ``fingerprint`` (full, 64 hex digits) as the new key of a contact whose pinned key the
        ledger no longer names; ``override_verified`` also for a contact the user had verified. The next chat
        that meets this key goes on, and the decision is logged in the contact store once it succeeded."""
        if self._rt.continuity is None:
            raise UsageError("this node has no contact store (no data directory), so no key is pinned")
        self._rt.continuity.accept_new_key(fingerprint, override_verified=override_verified)

    def verify_contact(self, session: str, verified: bool = True) -> str:
        """Mark the peer of ``session`` (step 4 done) verified after the user compared the safety number; returns
        the fingerprint (hex) marked."""
        if self.contacts is None:
            raise UsageError("this node has no contact store (no data directory): nothing to mark")
        fp = self._get(session).pinned_fp
        if fp is None:
            raise UsageError("compare the safety number once the four steps are done, then /verify yes")
        self.contacts.set_verified(fp, verified)
        return fp

    # --- the shared-secret check (issue 17; p2pchat/smp_driver.py) ---------------------------------------------

    def ask_secret(self, session: str, question: str, answer: str) -> None:
        """Ask the peer of ``session`` (step 4 done) ``question``; ``answer`` is this user's answer. A
        :class:`~p2pchat.events.SecretResult` follows (a match marks the contact verified)."""
        self._rt.smp.ask(self._get(session), question, answer)

    def answer_secret(self, session: str, answer: str) -> None:
        """Answer the peer's :class:`~p2pchat.events.SecretQuestion`; a ``SecretResult`` follows."""
        self._rt.smp.answer(self._get(session), answer)

    def abort_secret(self, session: str) -> None:
        """Stop the shared-secret check under way in ``session`` (nothing happens when there is none)."""
        self._rt.smp.abort(self._get(session))

    def _secret_matched(self, fp: str) -> None:
        if self.contacts is not None:
            self.contacts.set_verified(fp, True, how="the same answer to a shared-secret question")

    def open_session(self, peer_query: str) -> str:
        """A new outgoing session to ``peer_query`` (IP, ip:port, nickname or fingerprint); no IO yet."""
        query = peer_query.strip()
        if not query:
            raise UsageError("say whom to chat with: an IP address, a nickname or a fingerprint")
        return self._rt.new_session(query, incoming=False).id

    def run_step(self, session: str, step: Step) -> None:
        """Begin ``step``; a :class:`StepResult` or :class:`StepRefused` event follows."""
        s = self._get(session)
        step = Step(step)
        if step == Step.CONNECT:
            self._start_connect(s)
        else:
            self._rt.submit(self._rt.handshakes.start_step, s, step)

    def run_all(self, session: str) -> None:
        """The four steps in order, each as soon as the one before has succeeded."""
        s = self._get(session)
        with s.lock:
            s.auto_steps = True
            connected = s.phase in (Phase.CONNECTING, Phase.HANDSHAKE, Phase.CHAT)   # ended: refused below
        if connected:
            self._rt.submit(self._rt.handshakes.continue_all, s)
        else:
            self._start_connect(s)

    def accept(self, session: str, accept: bool) -> None:
        """Answer the :class:`~p2pchat.events.IncomingChat` of ``session`` (prompts are answered by their id)."""
        s = self._get(session)
        self._rt.submit(self._rt.handshakes.answer_prompt, s, accept)

    def send_text(self, session: str, text: str, *, history_row: int | None = None) -> int:
        """Queue a message for encryption and sending; returns its id at once (a :class:`DeliveryReceipt` follows
        once the peer's UI has taken it). The texts queued while earlier ones are still being written share sealed
        frames. Raises :class:`~p2pchat.channel_driver.OutboxFull` while the peer does not keep up.

        The text is kept in :attr:`history`; ``history_row`` names a row kept already (a ``waiting`` text of an
        outbox), which then becomes ``sent`` and ``delivered`` instead of a second row being added."""
        s = self._get(session)
        with s.lock:
            msg_id, at_once = self._rt.channels.send_text(s, text, history_row)
        if at_once:
            s.writer.kick()
        return msg_id

    # --- files (issue 16; p2pchat.file_driver) ----------------------------------------------------------

    def send_file(self, session: str, path: str) -> str:
        """Offer the file at ``path`` to the peer of ``session``; returns the transfer number. Reads the whole
        file once for its SHA-256 first (on this thread: a UI calls it from a worker for big files). With an
        outbox, the file is kept until its transfer ends for good, and offered again after a cut."""
        fp = self._get(session).peer_fp
        full, size, digest, root = self._rt.files.prepare_for(fp, path)    # [file digest] root or SHA-256
        if self.resume is not None and fp is not None:     # kept until it ends for good: it resumes by itself
            return self.resume.offered(fp, session, full, size, digest,
                                       lambda: self.offer_file(session, full, size, digest, root=root), root=root)
        return self.offer_file(session, full, size, digest, root=root)

    def offer_file(self, session: str, path: str, size: int, sha256: bytes, *, root: bool = False) -> str:
        """Offer a file already checked and hashed (:func:`p2pchat.file_driver.prepare`; ``root``: the digest is
        its root); its transfer number. Nothing is kept for a resume here: the callers that want one
        (``send_file``, the file resume, the group service) keep their own record."""
        s = self._get(session)
        with s.writer.deferred():
            return self._rt.files.offer(s, path, size, sha256, root=root)

    def send_file_to_contact(self, fp: str, path: str) -> int:
        """Send the file at ``path`` to the contact ``fp`` (64 hex digits): offered in its open chat, else kept
        waiting until it can be reached (like a text). Returns the waiting file's number (``w`` + number)."""
        if self.resume is None:
            raise UsageError("this node keeps no outbox: files for a contact that is not connected cannot wait "
                             "here (run `p2pchat listen` or the window)")
        full, size, digest, root = self._rt.files.prepare_for(fp, path)
        return self.resume.queue(fp.lower(), full, size, digest, root=root).ref

    def waiting_files(self, fp: str | None = None) -> list[PendingFile]:
        """Files kept for contacts until delivered: waiting for the contact, or on their way."""
        return self.resume.waiting(fp.lower() if fp else None) if self.resume is not None else []

    def cancel_waiting_file(self, ref: int) -> None:
        """Take back a file kept for a contact (one on its way is cancelled in its chat)."""
        if self.resume is None:
            raise UsageError("this node keeps no outbox")
        self.resume.cancel(ref)

    def answer_file(self, session: str, transfer: str, accept: bool) -> None:
        """Accept (into the downloads folder) or decline the :class:`~p2pchat.events.FileOffer` ``transfer``."""
        self._rt.files.answer(self._get(session), transfer, accept)

    def cancel_file(self, session: str, transfer: str) -> None:
        """Stop a transfer in either direction; the peer is told."""
        s = self._get(session)
        with s.writer.deferred():
            self._rt.files.cancel(s, transfer)

    def set_typing(self, session: str, typing: bool) -> None:
        """Tell the peer whether the user is typing; only changes of state make a frame."""
        s = self._get(session)
        with s.lock:
            self._rt.channels.set_typing(s, typing)

    def end_session(self, session: str) -> None:
        """Say goodbye and close the session."""
        s = self._get(session)
        self._rt.submit(self._rt.end_and_close, s, "you ended the chat")

    # --- one-time-pad mode (issue 17) --------------------------------------------------------------------------

    def pad_mode(self, session: str, action: str) -> None:
        """The user's pad-mode action in ``session``: ``ask_on`` (/pad on), ``ask_off`` (/pad off), ``accept``
        (/pad yes) or ``decline`` (/pad no). Both users must agree either way; a :class:`PadModeChanged` event
        follows each change. Raises a :class:`~p2pchat.foundation.errors.UserError` saying why it cannot."""
        if action not in ("ask_on", "ask_off", "accept", "decline"):
            raise ValueError(f"unknown pad-mode action {action!r}")
        s = self._get(session)
        with s.lock:
            self._rt.channels.pad_action(s, action)
        s.writer.kick()

    def pad_status(self, session: str) -> PadModeChanged | None:
        """The pad mode and the pad bytes left each way in ``session`` (``None``: no data directory or chat)."""
        s = self._get(session)
        pads = self._rt.channels.pads
        with s.lock:
            if pads is None or s.channel is None:
                return None
            return pads.status_event(s, "")

    def session_info(self, session: str) -> SessionInfo:
        return self._get(session).info

    def sessions(self) -> list[SessionInfo]:
        return [s.info for s in self._rt.all_sessions()]

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
            s.writer.wire_hook = hook

    def inject_frame(self, session: str, frame: bytes) -> None:
        """Write raw bytes on ``session``'s connection, after whatever is queued (e.g. a replayed frame)."""
        s = self._get(session)
        with s.lock:
            s.writer.seal_queued_now()        # the texts queued so far go before it
            s.writer.queue(frame)
            s.writer.raw_frames += 1
            s.writer.schedule_flush()

    # --- texts for a contact, whether or not a chat is open (issue 16) -------------------------------------

    def message_contact(self, fp: str, text: str) -> int:
        """Send ``text`` to the contact with key fingerprint ``fp`` (64 hex digits): in its open chat if there is
        one, else kept waiting until it can be reached. Returns the text's history row."""
        if self.outbox is None:
            raise UsageError("this node keeps no outbox: messages for a contact that is not connected cannot "
                             "wait here (run `p2pchat listen` or the window)")
        return self.outbox.queue(fp.lower(), text)

    def cancel_waiting(self, row: int) -> None:
        """Take back a text that is still waiting for its contact."""
        if self.outbox is None:
            raise UsageError("this node keeps no outbox")
        self.outbox.cancel(row)

    def presence(self, fp: str) -> Presence:
        """Whether the contact ``fp`` can be reached, as far as this node knows (a chat open, a call under way,
        the last attempt failed, or nothing tried)."""
        if self.live_session_with(fp.lower()) is not None:
            return Presence.ONLINE
        return self.outbox.presence(fp.lower()) if self.outbox is not None else Presence.UNKNOWN

    # OutboxHost (p2pchat.outbox)

    def live_session_with(self, fp: str) -> str | None:
        for s in self._rt.all_sessions():
            with s.lock:
                if s.phase is Phase.CHAT and s.peer_fp == fp:
                    return s.id
        return None

    def open_contact_session(self, fp: str) -> str:
        return self._rt.new_session(fp, incoming=False, automatic=True).id

    def send_waiting(self, session: str, text: str, row: int) -> None:
        s = self._get(session)
        with s.lock:
            if s.phase is not Phase.CHAT:
                raise UsageError("the chat ended before the waiting messages could go out")
            _, at_once = self._rt.channels.send_text(s, text, history_row=row)
        if at_once:
            s.writer.kick()

    # --- [groups, issue 18] GroupHost (p2pchat.group_service) ---------------------------------------------

    def send_group_frame(self, session: str, body: bytes) -> None:
        s = self._get(session)
        with s.lock:
            if s.phase is not Phase.CHAT:
                raise UsageError("the chat ended before the group frame could go out")
            self._rt.channels.send_group(s, body)

    def _stranger(self, fp: str) -> bool:
        """[redrelay] Not a contact (e.g. a group member someone else added): the outbox paces calls to it."""
        try:
            return self.contacts is None or self.contacts.get(fp) is None
        except UserError:
            return True

    def want_contact(self, fp: str) -> None:
        if self.outbox is not None:
            self.outbox.requeued(fp)

    def group_member(self, query: str) -> tuple[str, bytes, str]:
        """A contact to put in a group, by nickname, name or fingerprint: (fp hex, public key DER, name)."""
        if self.contacts is None:
            raise UsageError("this node has no contact store: group members are chosen among contacts")
        c = self.contacts.resolve(query)
        return c.fp, c.public_der, c.local_name or c.nickname or c.fp[:16]

    def _requeued(self, fp: str) -> None:
        if self.outbox is not None:
            self.outbox.requeued(fp)

    def _get(self, sid: str) -> Session:
        return self._rt.get(sid)

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
            elif session.phase is not Phase.NEW:
                refusal = f"step {Step.CONNECT.label} is already under way"
            if refusal is None:
                session.move(Phase.CONNECTING)
                session.progress = (Step.CONNECT, time.monotonic())
        if refusal is not None:
            self._rt.emit(StepRefused(session.id, Step.CONNECT, refusal))
            return
        if not self._rt.start_thread(session, self._connect_and_serve, session):
            with session.lock:
                if session.phase is Phase.CONNECTING:
                    session.move(Phase.NEW)

    def _connect_and_serve(self, session: Session) -> None:
        """Caller side of step 1: resolve the peer, dial (direct, then relay), say hello; then read frames."""
        try:
            target = self._resolve(session)
            dialed = dial(target, source_ip=self.host, direct_timeout=self.direct_timeout,
                          io_timeout=self.step_timeout, own_relay=self.relay,
                          open_relay=self._open_relay)
        except UserError as exc:
            with session.lock:
                self._rt.step_failed(session, Step.CONNECT, str(exc))
            return
        link: Link = dialed.link
        enable_keepalive(link)
        via_relay = dialed.path != DIRECT
        # The UI hears of the connection once the hello is written (EventQueue.answering): woken earlier, its thread
        # would take the interpreter lock from this one at the hello's write.
        with self._rt.events.answering():
            with session.lock:
                if session.ended or self._rt.closed:
                    link.close()
                    return
                session.link = link
                session.reader_done = threading.Event()
                limit_strangers(session)
                peer_address = dialed.peer_address if not via_relay and dialed.peer_address else format_address(
                    *link.peer)
                new_handshake(self._rt, session, initiator=True, nickname=self.nickname, network=self.network,
                              local_address=self.hello_address, peer_address=peer_address, via_relay=via_relay,
                              peer_query=session.info.peer_query)
                self._rt.emit_info(session, path=dialed.path, peer_address=dialed.peer_address or peer_address)
                if via_relay:
                    why = f" because {dialed.fallback_reason}" if dialed.fallback_reason else ""
                    self._rt.emit(Notice(session.id, "path", f"connected through {dialed.path}{why}"))
                else:
                    self._rt.emit(Notice(session.id, "path", f"connected directly to {dialed.peer_address}"))
            with session.writer.deferred():
                self._rt.handshakes.call(session, lambda hs: hs.start(Step.CONNECT))
        self._rt.handshakes.settle(session)
        self._rt.serve(session)

    def _resolve(self, session: Session) -> PeerTarget:
        try:
            return resolve_target(session.info.peer_query, self.directory)
        except PeerNotFound as exc:
            raise UserError(f"cannot find {session.info.peer_query} in the ledger: {exc}") from None

    # --- incoming chats ------------------------------------------------------------------------------------

    def _serve_incoming(self, conn: FramedSocket) -> None:
        """FrameServer handler: one incoming TCP chat, served on the server's connection thread. A stranger over
        its address's allowances is refused at once, before any work (see :mod:`p2pchat.admission`)."""
        ticket = self._rt.admission.admit(conn.peer[0])
        if isinstance(ticket, str):
            log.info("refused a chat connection from %s: %s", conn.peer_text, ticket)
            conn.send_error(ticket)
            return
        try:
            session = self._rt.new_session(conn.peer_text, incoming=True, ticket=ticket)
        except UserError:
            self._rt.admission.release(ticket)
            return   # shutting down
        enable_keepalive(conn)
        with session.lock:
            session.link = conn
            session.reader_done = threading.Event()
            limit_strangers(session)
            new_handshake(self._rt, session, initiator=False, nickname=self.nickname, network=self.network,
                          local_address=self.address, peer_address=conn.peer_text, via_relay=False,
                          peer_query=None)
            session.update(peer_address=conn.peer_text, path=DIRECT)
        self._rt.serve(session)

    # --- relay -----------------------------------------------------------------------------------------------------

    def _open_relay(self, relay: str, peer_fingerprint: bytes, timeout: float) -> RelayLink:
        # [relay link, issue 11] "IP:PORT#KEY" pins the relay's link key; a ledger hint naming our own relay
        # uses our pin for it. Without a pin the key seen first in this process is kept (docs/relay.md).
        ip, port, key = parse_relay(relay)
        if key is None and self.relay:
            own_ip, own_port, own_key = parse_relay(self.relay)
            key = own_key if (own_ip, own_port) == (ip, port) else None
        return open_relay_link(self.identity, ip, port, peer_fingerprint, inner_protocol=CHAT,
                               source_ip=self.host, timeout=max(timeout, 20.0), network=self.network,
                               relay_key=key)

    def _on_relay_invite(self, link: RelayLink) -> None:
        """A caller reached us through the relay: serve it like an incoming TCP chat, on a thread of its own. Its
        allowances are counted per caller fingerprint (every relayed call comes from the relay's address)."""
        ticket = self._rt.admission.admit(f"relay caller {link.peer_fingerprint.hex()[:16]}")
        if isinstance(ticket, str):
            link.send_error(ticket)
            link.close()
            return
        try:
            session = self._rt.new_session(f"fingerprint {link.peer_fingerprint.hex()}", incoming=True,
                                           ticket=ticket)
        except UserError:
            self._rt.admission.release(ticket)
            link.close()
            return
        path = link.peer_text
        with session.lock:
            session.link = link
            session.reader_done = threading.Event()
            new_handshake(self._rt, session, initiator=False, nickname=self.nickname, network=self.network,
                          local_address=self.hello_address, peer_address=format_address(*link.peer), via_relay=True,
                          peer_query=None)
            session.update(path=path, peer_address=path)
        self._rt.emit(Notice(session.id, "path", f"incoming chat through {path}"))
        if not self._rt.start_thread(session, self._rt.serve, session):
            link.close()
