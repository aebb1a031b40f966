"""Drives a session's sans-IO :class:`~p2pchat.handshake.Handshake`: starts steps, feeds it frames, the user's
answer and ledger lookups, and acts on the events it returns (dispatched on their types).

A ledger lookup never runs while ``session.lock`` is held: the core's ``NeedLookup`` is noted under the lock and
the lookup runs on a pool thread afterwards, so a slow ledger delays only this session's step 2.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.chat_protocol import Send
from p2pchat.continuity import Changed, KeyContinuity, Refused, Verdict
from p2pchat.events import (
    Event,
    IncomingChat,
    KeyChangeStopped,
    NodeError,
    Notice,
    SessionUpdated,
    StepRefused,
    StepResult,
)
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import UserError
from p2pchat.handshake import (
    Background,
    ChainPosition,
    Established,
    Failed,
    Handshake,
    HsEvent,
    KeysResult,
    LedgerBinding,
    LedgersDisagree,
    LedgerView,
    NeedAccept,
    NeedLookup,
    Ready,
    StepDone,
    StepOrderError,
)
from p2pchat.peer_directory import PeerDirectory, PeerNotFound
from p2pchat.safety import safety_number
from p2pchat.session import Phase
from p2pchat.steps import Step

if TYPE_CHECKING:
    from p2pchat.foundation.identity import Identity
    from p2pchat.links import Binding
    from p2pchat.session import Session

log = logging.getLogger("p2pchat.node")

LOOKUP_BY = {"address": "ip", "fingerprint": "fp", "query": None}   # handshake lookup kinds → ledger kinds

CoreCall = Callable[[Handshake], list[HsEvent]]


class LedgerCrossCheck(LedgerView, Protocol):
    """The ledger cross-check's seam (p2pchat.peer_directory.LedgerDirectory): our verified headers, and our
    ledger node to report a disagreeing peer's position to."""

    def report(self, peer: bytes, position: ChainPosition) -> str:
        """Send ``checkpoint_evidence`` to our ledger node; returns its verdict (network IO)."""
        ...


def disagreement_text(peer: str, ev: LedgersDisagree) -> str:
    """The warning both users see when their ledgers disagree (docs/security.md §3.7)."""
    what = []
    if ev.ours == "conflict":
        what.append(f"{peer}'s ledger holds block {ev.peer.final_height} ({ev.peer.final_hash.hex()[:16]}) as final, "
                    "but your ledger has another block at that height")
    if ev.theirs == "conflict":
        what.append(f"{peer}'s node reports that your ledger's final block {ev.own.final_height} "
                    f"({ev.own.final_hash.hex()[:16]}) is not on its chain")
    return (f"Your ledger and {peer}'s disagree about final history: {'; and '.join(what)}. One of you may be cut off "
            "from the network (a ledger node that sees only an attacker's nodes), or the ledger was rewritten. "
            "This chat goes on: both ledgers name the same keys for both of you and both signatures verified. But "
            "one of the two ledgers may name wrong keys for other people: until this is resolved, compare safety "
            "numbers before trusting a new contact, and check 'ledger status' on your ledger node, which was sent "
            f"{peer}'s checkpoint as evidence.")


class HandshakeHost(Protocol):
    identity: Identity
    auto_accept: bool
    directory: PeerDirectory
    continuity: KeyContinuity | None      # the data directory's pins (None: no contact store, nothing pinned)
    ledger_check: LedgerCrossCheck | None  # our ledger headers for the step-2 cross-check (None: no ledger view)

    def emit(self, event: Event) -> None: ...

    def emit_info(self, session: Session, **changes: Any) -> None: ...

    def submit(self, fn: Callable[..., None], *args: Any) -> None: ...

    def ahead(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` soon on another thread, or never (the handshake then makes what it needs itself)."""
        ...

    def step_failed(self, session: Session, step: Step, reason: str) -> None: ...

    def prompt_allowed(self, session: Session) -> str | None:
        """Why the user must not be asked about this incoming chat (e.g. too many prompts from its address)."""
        ...

    def peer_at_limit(self, session: Session) -> bool:
        """Before step 3's signatures: True if the key the peer claimed already holds its chats (the host then
        ended the session at step 3, telling both sides)."""
        ...

    def authenticated(self, session: Session) -> bool:
        """Step 3 verified the peer: lift the limits that apply to strangers; False if its key holds its chats
        already (the host then ended the session at step 3, telling both sides)."""
        ...

    def answered(self, session: Session) -> None:
        """The user answered this session's chat request: its prompt no longer counts against its address."""
        ...

    def ready(self, session: Session, established: Established) -> None: ...

    def wake_readers(self) -> None: ...


class HandshakeDriver:
    """One instance serves every session of a node; all per-session state lives on the session."""

    def __init__(self, host: HandshakeHost) -> None:
        self.host = host

    # --- what the user asks (pool threads) --------------------------------------------------------------

    def start_step(self, session: Session, step: Step) -> None:
        with session.writer.deferred():
            if session.ended:
                self.host.emit(StepRefused(session.id, step, "this chat has ended; open a new one"))
            elif session.handshake is None:
                reason = (f"step {Step.CONNECT.label} is still under way" if session.connecting else
                          "the keys are already agreed; the chat is ready" if session.channel is not None else
                          f"do step {int(Step.CONNECT)} ({Step.CONNECT.title}) first")
                self.host.emit(StepRefused(session.id, step, reason))
            else:
                self.call(session, lambda hs: hs.start(step), refusing=step)
        self.settle(session)

    def continue_all(self, session: Session) -> None:
        """run_all on a session already connected: start the next step if none is under way."""
        with session.writer.deferred():
            hs = session.handshake
            if hs is not None and not session.ended and hs.in_progress is None and hs.next_step is not None:
                nxt = hs.next_step
                self.call(session, lambda h: h.start(nxt), refusing=nxt)
        self.settle(session)

    def answer_prompt(self, session: Session, yes: bool) -> None:
        with session.writer.deferred():
            if session.ended or session.handshake is None:
                self.host.emit(StepRefused(session.id, Step.CONNECT, "this chat has already ended"))
                return
            self.call(session, lambda hs: hs.accept(yes), refusing=Step.CONNECT)
            self.host.answered(session)
        self.settle(session)

    # --- frames from the peer (the reader thread, session.lock held) ------------------------------------

    def receive(self, session: Session, msg: Message) -> None:
        if msg.type == "auth" and self.host.peer_at_limit(session):
            return      # refused before verifying or signing anything
        self.call(session, lambda hs: hs.receive(msg))

    # --- the core ---------------------------------------------------------------------------------------

    def call(self, session: Session, call: CoreCall, refusing: Step | None = None) -> None:
        """Call the handshake core (``session.lock`` held) and act on the events it returns, in order."""
        hs = session.handshake
        if hs is None:
            return
        try:
            out = call(hs)
        except StepOrderError as exc:
            if refusing is None:
                raise
            self.host.emit(StepRefused(session.id, refusing, str(exc)))
            return
        if hs.in_progress != session.progress[0]:
            session.progress = (hs.in_progress, time.monotonic())
        for ev in out:
            if session.ended:
                return
            self._on_event(session, ev)
        session.writer.schedule_flush()
        nxt, session.auto_next = session.auto_next, None
        if nxt is not None and not session.ended and session.handshake is not None:
            # run_all: the next step starts once the events of the one that finished are all handled
            self.call(session, lambda h: h.start(nxt), refusing=nxt)

    def prepare_ahead(self, session: Session) -> None:
        """Once the frames of a handshake call are written, let the core make ahead what its next step needs (it
        says when via ``prepare_due``: the initiator's X25519 half and its signature, either side's step-4 keys —
        the responder's only after the initiator's signature verified), overlapping the peer's work and the
        frames' travel; never called with the lock held."""
        if session.handshake is None:       # the usual case once the chat runs: not even the lock
            return
        with session.lock:
            hs = session.handshake
            if hs is not None and not session.ended and hs.prepare_due:
                hs.prepare()

    def _on_event(self, session: Session, ev: HsEvent) -> None:
        match ev:
            case Send(frame=frame):
                session.writer.queue(frame)
            case NeedAccept():
                self._on_need_accept(session, ev)
            case NeedLookup(query=query, by=by):
                # Not here: the lookup is network IO and session.lock is held; the caller runs it once it let go
                # of the lock (settle).
                session.lookup_pending = True
                session.lookup_request = (query, LOOKUP_BY.get(by))
            case StepDone(step=step, detail=detail):
                self._on_step_done(session, step, detail)
            case Failed(step=step, reason=reason):
                self.host.step_failed(session, step, reason)
            case Ready(established=established):
                self.host.ready(session, established)
            case LedgersDisagree():
                self._on_ledgers_disagree(session, ev)
            case _:
                raise TypeError(f"unexpected handshake event {ev!r}")

    def _on_ledgers_disagree(self, session: Session, ev: LedgersDisagree) -> None:
        """Step 3 verified a peer whose ledger disagrees with ours: warn (the chat goes on) and report the peer's
        position to our ledger node as evidence, from a pool thread (network IO; the session lock is held here)."""
        hs = session.handshake
        peer = (hs.peer_nickname if hs is not None else None) or session.info.peer_nickname or "the peer"
        log.warning("session %s: ledgers disagree with %s: ours %s, theirs %s", session.id, peer, ev.own.describe(),
                    ev.peer.describe())
        self.host.emit(Notice(session.id, "ledgers", disagreement_text(peer, ev)))
        check = self.host.ledger_check
        der = hs.peer_public_der if hs is not None else None
        if check is not None and der is not None:
            self.host.submit(self._report_evidence, check, crypto.fingerprint(der), ev.peer)

    @staticmethod
    def _report_evidence(check: LedgerCrossCheck, peer: bytes, position: ChainPosition) -> None:
        try:
            verdict = check.report(peer, position)
        except UserError as exc:
            log.warning("could not report the peer's ledger checkpoint to the ledger node: %s", exc)
            return
        log.info("ledger node's verdict on the peer's checkpoint: %s", verdict)

    def _on_need_accept(self, session: Session, ev: NeedAccept) -> None:
        self.host.emit_info(session, peer_nickname=ev.nickname or None)
        if self.host.auto_accept:
            self.call(session, lambda hs: hs.accept(True))
            return
        refusal = self.host.prompt_allowed(session)
        if refusal is not None:        # declined without asking: the user is not flooded with questions
            log.info("session %s: declined without asking: %s", session.id, refusal)
            self.call(session, lambda hs: hs.accept(False))
            return
        self.host.emit(IncomingChat(session.id, ev.address, ev.nickname))

    def settle(self, session: Session) -> None:
        """After a core call, on the same thread with no lock held: run the ledger lookup the core asked for (if
        any), then let the core prepare ahead."""
        while True:
            with session.lock:
                request, session.lookup_request = session.lookup_request, None
            if request is None:
                break
            try:
                self._lookup(session, *request)
            finally:
                with session.lock:
                    session.lookup_pending = session.lookup_request is not None
                self.host.wake_readers()
        self.prepare_ahead(session)

    def _lookup(self, session: Session, query: str, by: str | None) -> None:
        binding: Binding | None = None
        why: str | None = None
        verdict: Verdict | None = None
        try:
            binding = self.host.directory.lookup(query, by)
        except PeerNotFound as exc:
            why = str(exc)
        if binding is not None and binding.disputed is None and self.host.continuity is not None:
            # Key continuity (issue 13), before the answer reaches the core and so before anything is signed; it
            # may ask the ledger again (about the pinned key), so it runs here, with no lock held.
            try:
                verdict = self.host.continuity.check(query, by, binding)
            except UserError as exc:
                verdict = Refused(f"the contact store could not be checked, so the key is not trusted: {exc}",
                                  hard=False)
        with session.writer.deferred():
            if session.ended or session.handshake is None:
                return
            if binding is None:
                self.call(session, lambda hs: hs.ledger_answer(None, why))
                return
            self.host.emit_info(session, ledger_block=binding.height, confirmations=binding.confirmations)
            if binding.disputed is not None:
                # The key bound to this address does not answer there (ledger/disputes.py): never treat it as
                # the address's owner, whoever is on the line.
                disputed = binding.disputed.describe()
                self.call(session, lambda hs: hs.ledger_answer(None, disputed, disputed=True))
                return
            if isinstance(verdict, Refused):
                reason = verdict.reason
                if verdict.new_fp:      # the window asks the user about it (gui/key_change.py)
                    self.host.emit(KeyChangeStopped(session.id, reason, verdict.new_fp, verdict.old_fp,
                                                    verdict.hard, verdict.who))
                self.call(session, lambda hs: hs.key_refused(reason))
                return
            if isinstance(verdict, Changed):
                session.pin_change = verdict.change
                self.host.emit(Notice(session.id, "key-change", verdict.notice))
            answer = LedgerBinding(public_der=binding.public_der, nickname=binding.nickname, ip=binding.ip,
                                   port=binding.port, relay=binding.relay, height=binding.height,
                                   confirmations=binding.confirmations)
            self.call(session, lambda hs: hs.ledger_answer(answer, None))

    def _pin(self, session: Session, established: Established) -> bool | None:
        """Step 4 succeeded (so step 3 verified the peer): pin the peer's key. A local write of a few rows
        (SQLite, waiting at most its busy timeout for another process); a store that fails is reported, and the
        chat goes on unpinned."""
        continuity = self.host.continuity
        if continuity is None:
            return None
        b = established.peer_binding
        fp = crypto.fingerprint(established.peer_public_der)
        try:
            continuity.record(established.peer_public_der, established.peer_nickname, b.ip, b.port,
                              session.pin_change)
            contact = continuity.store.get(fp)
        except UserError as exc:
            self.host.emit(NodeError(text=f"the contact store could not pin this key: {exc}", session=session.id))
            return None
        session.pinned_fp = fp.hex()
        return contact.verified if contact is not None else None     # the window's verified mark

    def _on_step_done(self, session: Session, step: Step, detail: str) -> None:
        hs = session.handshake
        info = session.mark_done(step)
        if step == Step.SWAP_KEYS and hs is not None and hs.peer_public_der:
            der = hs.peer_public_der
            info = session.update(peer_fingerprint=crypto.format_fingerprint(crypto.fingerprint(der)),
                                  peer_nickname=hs.peer_nickname or info.peer_nickname,
                                  safety_number=safety_number(self.host.identity.public_der, der))
        if step == Step.AUTHENTICATE and not self.host.authenticated(session):
            return
        if step == Step.AGREE_KEY and hs is not None and hs.established is not None:
            verified = self._pin(session, hs.established)   # before the UI hears of step 4: /verify yes may follow
            if verified is not None:
                info = session.update(peer_verified=verified)
        self.host.emit(StepResult(session.id, step, True, detail))
        self.host.emit(SessionUpdated(info))
        if session.auto_steps and not session.incoming and step < Step.AGREE_KEY:
            session.auto_next = Step(step + 1)


class Once:
    """A function run at most once, by whichever thread calls first; a thread calling while it runs waits for it
    and gets the same result (the handshake's :class:`~p2pchat.handshake.KeySchedule` started ahead)."""

    def __init__(self, fn: Callable[[], KeysResult]) -> None:
        self._fn: Callable[[], KeysResult] | None = fn
        self._lock = threading.Lock()
        self._result: KeysResult | None = None
        self._error: BaseException | None = None

    def __call__(self) -> KeysResult:
        with self._lock:
            if self._fn is not None:
                fn, self._fn = self._fn, None
                try:
                    self._result = fn()
                except BaseException as exc:
                    self._error = exc
                    raise
            if self._result is None:
                # a programming error where it first ran (logged there): it fails this session too, as our fault
                raise RuntimeError("the handshake's key agreement failed on another thread") from self._error
            return self._result

    def ahead(self) -> None:
        self()


def in_background(host: HandshakeHost) -> Background:
    """The handshake's ``background``: start ``fn`` on the node's work-ahead thread, collect it with :class:`Once`."""
    def start(fn: Callable[[], KeysResult]) -> Callable[[], KeysResult]:
        once = Once(fn)
        host.ahead(once.ahead)
        return once
    return start


def new_handshake(host: HandshakeHost, session: Session, *, initiator: bool, nickname: str, network: str,
                  local_address: str, peer_address: str, via_relay: bool, peer_query: str | None) -> None:
    """Attach a fresh core to ``session`` (``session.lock`` held) and enter the handshake phase."""
    session.handshake = Handshake(initiator=initiator, identity=host.identity, nickname=nickname, network=network,
                                  local_address=local_address, peer_address=peer_address, via_relay=via_relay,
                                  peer_query=peer_query, ledger_view=host.ledger_check, background=in_background(host))
    session.move(Phase.HANDSHAKE)
