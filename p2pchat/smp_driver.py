"""Drives the shared-secret check (:mod:`p2pchat.smp`) inside a chat session: the user's question and answer go
in, the check's sealed messages go out through the session's channel, and its outcome comes back as
:class:`~p2pchat.events.SecretQuestion` / :class:`~p2pchat.events.SecretResult` events. A match marks the
contact verified in the contact store (as ``/verify yes`` does).

Threads: the modular exponentiations (tens of milliseconds each, a few dozen per message) run on the node's pool,
never on the reader thread and never under ``session.lock``. One run at a time per session: a task that computes
holds the run (``busy``); whatever arrives meanwhile is out of turn and ends the run.

Bounded work for the peer: an ``smp1`` costs only its parsing until this user answers (the proofs are checked
then); ``smp2``..``smp4`` are computed only when the run waits for exactly that message (anything else ends it
at the cost of a table look-up); and a peer gets at most :data:`MAX_PEER_RUNS` questions per session.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.events import Event, Notice, SecretQuestion, SecretResult
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.session import Phase
from p2pchat.smp import LIVE, TRANSITIONS, Failed, Finished, Reply, Smp, SmpEvent, SmpState, check_inputs
from p2pchat.steps import Step

if TYPE_CHECKING:
    from p2pchat.foundation.identity import Identity
    from p2pchat.session import Session

MAX_PEER_RUNS = 10        # questions a peer may ask in one session (each costs this side an answer's work)


class SmpHost(Protocol):
    identity: Identity

    def emit(self, event: Event) -> None: ...

    def emit_info(self, session: Session, **changes: Any) -> None: ...

    def submit(self, fn: Callable[..., None], *args: Any) -> None: ...


@dataclass
class _Slot:
    """One session's check: the run, whether a pool task holds it, and how many runs the peer started."""

    run: Smp | None = None
    busy: bool = False
    generation: int = 0      # bumped when a run is dropped: a task finishing for an older run changes nothing
    peer_runs: int = 0


class SmpDriver:
    """One instance serves every session of a node; each session's state is a :class:`_Slot`."""

    def __init__(self, host: SmpHost) -> None:
        self.host = host
        # marks a contact (hex fingerprint) verified; set by the node when it has a contact store
        self.mark_verified: Callable[[str], None] | None = None
        self._slots: weakref.WeakKeyDictionary[Session, _Slot] = weakref.WeakKeyDictionary()
        self._slots_lock = threading.Lock()

    def _slot(self, session: Session) -> _Slot:
        with self._slots_lock:
            return self._slots.setdefault(session, _Slot())

    # --- the user's side (any thread) ---------------------------------------------------------------------

    def ask(self, session: Session, question: str, answer: str) -> None:
        """Start a check with ``question``; this user's ``answer`` is compared with the peer's."""
        _check(question, answer)
        question = question.strip()
        with session.lock:
            slot = self._ready(session)
            if slot.run is not None and slot.run.state is SmpState.ANSWER:
                raise UsageError("the other side asked you a question first: answer it (/answer) or stop it")
            slot.busy, slot.run = True, None
            generation = slot.generation
            ids = self._ids(session)
        self.host.submit(self._ask, session, generation, ids, question, answer)

    def answer(self, session: Session, answer: str) -> None:
        """Answer the peer's question (a :class:`SecretQuestion` came)."""
        _check("", answer)
        with session.lock:
            slot = self._slot(session)
            run = slot.run
            if run is None or run.state is not SmpState.ANSWER or slot.busy:
                raise UsageError("there is no question to answer in this chat")
            slot.busy = True
            generation = slot.generation
        self.host.submit(self._compute, session, generation, run, lambda: run.answer(answer))

    def abort(self, session: Session, reason: str = "you stopped the check") -> None:
        """This user stops the check under way (nothing happens when none is)."""
        with session.lock:
            slot = self._slot(session)
            run = slot.run
            if run is None and not slot.busy:
                return
            self._drop(slot)
            if session.channel is not None and not session.ended:
                self._send(session, Reply("smp_abort", {}))
            self.host.emit(SecretResult(session.id, False, reason))

    # --- the peer's side (reader thread, session.lock held) ------------------------------------------------

    def received(self, session: Session, kind: str, fields: dict[str, Any]) -> None:
        slot = self._slot(session)
        run = slot.run
        if kind == "smp1":
            self._on_question(session, slot, fields)
            return
        if run is None and not slot.busy:
            return        # a late message of a run that is over (or was stopped): nothing to do
        if kind == "smp_abort":
            self._drop(slot)
            self.host.emit(SecretResult(session.id, False, f"{self._peer(session)} stopped the check"))
            return
        if slot.busy or run is None or (run.state, kind) not in TRANSITIONS:
            self._drop(slot)
            self._send(session, Reply("smp_abort", {}))
            self.host.emit(SecretResult(session.id, False, f"{self._peer(session)} sent {kind} out of turn (a "
                                                           "replayed or out-of-order message); the check was "
                                                           "stopped"))
            return
        slot.busy = True      # only the message the run waits for costs exponentiations
        self.host.submit(self._compute, session, slot.generation, run, lambda: run.receive(kind, fields))

    def _on_question(self, session: Session, slot: _Slot, fields: dict[str, Any]) -> None:
        if slot.busy or (slot.run is not None and slot.run.state in LIVE):
            self._drop(slot)
            self._send(session, Reply("smp_abort", {}))
            self.host.emit(SecretResult(session.id, False, "you both asked a question at once (or a question came "
                                                           "in the middle of a check); ask again"))
            return
        slot.peer_runs += 1
        if slot.peer_runs > MAX_PEER_RUNS:
            self._send(session, Reply("smp_abort", {}))
            if slot.peer_runs == MAX_PEER_RUNS + 1:
                self.host.emit(Notice(session.id, "refused", f"{self._peer(session)} asked more than "
                                      f"{MAX_PEER_RUNS} questions in this chat; further questions are refused"))
            return
        my_fp, peer_fp, session_id = self._ids(session)
        slot.run = Smp.asked(my_fp, peer_fp, session_id, fields)
        self.host.emit(SecretQuestion(session.id, slot.run.question))

    # --- pool tasks ----------------------------------------------------------------------------------------

    def _ask(self, session: Session, generation: int, ids: tuple[bytes, bytes, bytes], question: str,
             answer: str) -> None:
        run, reply = Smp.ask(*ids, question, answer)
        with session.lock:
            slot = self._slot(session)
            if slot.generation != generation or session.ended:
                return
            slot.run, slot.busy = run, False
            self._send(session, reply)
            self.host.emit(Notice(session.id, "info", f"you asked {self._peer(session)}: “{run.question}” — "
                                                      "waiting for their answer"))

    def _compute(self, session: Session, generation: int, run: Smp,
                 work: Callable[[], list[SmpEvent]]) -> None:
        out = work()           # the exponentiations: no lock held
        with session.lock:
            slot = self._slot(session)
            if slot.generation != generation or session.ended:
                return
            slot.busy = False
            matched = self._apply(session, slot, out)
        if matched:
            self._verified(session, run.initiator)

    # --- helpers (session.lock held) -----------------------------------------------------------------------

    def _apply(self, session: Session, slot: _Slot, out: list[SmpEvent]) -> bool:
        """Send the run's replies and report how it ended; True when the answers matched."""
        matched = False
        for ev in out:
            match ev:
                case Reply():
                    self._send(session, ev)
                case Finished(matched=matched):
                    slot.run = None
                    if not matched:
                        self.host.emit(SecretResult(session.id, False, f"the answers differ — this may not be "
                                                    f"{self._peer(session)}, or one of you mistyped"))
                case Failed(reason=reason, by_peer=by_peer):
                    slot.run = None
                    self.host.emit(SecretResult(session.id, False, f"{self._peer(session)} stopped the check"
                                                if by_peer else reason))
        return matched

    def _verified(self, session: Session, asked: bool) -> None:
        """A match: mark the contact verified (the store's write, outside the lock), then say so."""
        peer, fp = self._peer(session), session.pinned_fp or session.peer_fp
        what = (f"{peer} answered your question with the same secret" if asked
                else f"you answered {peer}'s question with the same secret")
        if self.mark_verified is None or fp is None:
            self.host.emit(SecretResult(session.id, True, f"{what} (no contact store here: nothing was marked)"))
            return
        try:
            self.mark_verified(fp)
        except UserError as exc:
            self.host.emit(SecretResult(session.id, True, f"{what}, but marking the contact verified failed: {exc}"))
            return
        with session.lock:
            self.host.emit_info(session, peer_verified=True)
        self.host.emit(SecretResult(session.id, True, f"{what}: marked verified"))

    def _ready(self, session: Session) -> _Slot:
        if session.ended:
            raise UsageError("this chat has ended")
        if session.phase is not Phase.CHAT or session.channel is None:
            raise UsageError(f"the chat is not ready yet: finish step {Step.AGREE_KEY.label} first")
        slot = self._slot(session)
        if slot.busy or (slot.run is not None and slot.run.state in LIVE - {SmpState.ANSWER}):
            raise UsageError("a shared-secret check is already under way in this chat; wait for it or stop it")
        return slot

    def _ids(self, session: Session) -> tuple[bytes, bytes, bytes]:
        """(our fingerprint, the peer's, the session id): what the secret is bound to."""
        ch = session.channel
        if ch is None or session.peer_fp is None:
            raise UsageError(f"the chat is not ready yet: finish step {Step.AGREE_KEY.label} first")
        return self.host.identity.fingerprint, bytes.fromhex(session.peer_fp), ch.session_id

    def _send(self, session: Session, reply: Reply) -> None:
        ch = session.channel
        if ch is None or session.ended or ch.closed or ch.peer_closed:
            return
        session.writer.queue_all(ch.send_smp(reply.kind, reply.fields))
        session.writer.schedule_flush()

    @staticmethod
    def _drop(slot: _Slot) -> None:
        slot.run, slot.busy = None, False
        slot.generation += 1

    @staticmethod
    def _peer(session: Session) -> str:
        return session.info.peer_nickname or "the other side"


def _check(question: str, answer: str) -> None:
    try:
        check_inputs(question, answer)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


__all__ = ["MAX_PEER_RUNS", "SmpDriver", "SmpHost"]
