"""Messages that wait for an offline contact, and chats that reconnect by themselves (issue 16).

A text for a contact with no chat open is kept in the history with status ``waiting`` (so it survives a restart,
encrypted like every other message) and handed to :class:`Outbox`. The outbox's thread opens a chat to the contact
(the same four steps, run one after the other) and, once step 4 is done, sends every waiting text in the order it
was typed; the history then marks each ``sent``, and ``delivered`` when its receipt arrives. A contact that calls in
gets its waiting texts at once. A chat this node opened that drops without a goodbye is opened again the same way.

When to try is :class:`RetrySchedule`'s job, a pure function of the clock: an attempt right away when a text is
queued or a chat drops, then with doubling delays; never a contact more often than once a minute after the first
retries (``MIN_PROBE_INTERVAL``).

Texts that went out in a chat that then dropped before their receipt came back are queued again (status
``waiting``), so nothing typed is lost; the price is that the peer may see such a text twice when only the receipt
was lost (docs/node.md "Messages that wait").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from p2pchat.events import OutboxChanged, Presence
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.history import HistoryMessage, HistoryStore

log = logging.getLogger(__name__)

FIRST_RETRY = 2.0                # a dropped chat is redialled this soon, then with doubling delays
MIN_PROBE_INTERVAL = 60.0        # once past the first quick retries, a contact is tried at most once a minute
MAX_RETRY = 15 * 60.0            # the longest wait between two attempts
QUICK_RETRIES = 3                # attempts before the once-a-minute floor applies (2 s, 4 s, 8 s)
RECONNECT_FOR = 10 * 60.0        # a dropped chat with nothing waiting is redialled for this long, then left
MAX_WAITING_PER_CONTACT = 1000   # texts that may wait for one contact
MAX_WAITING_TEXT = 64 * 1024     # characters of one waiting text
# [redrelay] Calls to strangers (keys that are not contacts: group members someone else added, called to pass the
# group's log on) are bounded over all of them, whatever their number, so a hostile member cannot make this node
# dial many keys; calls to contacts (the user's) are not held back by them.
MAX_DIALING = 8                  # strangers' calls under way at once (each holds a connection and a handshake)
DIAL_BURST = 16                  # strangers' calls started at once, then ...
DIALS_PER_MINUTE = 60            # ... at most this many a minute


@dataclass
class _Contact:
    """The schedule of one contact: when to try next and how many attempts failed in a row."""

    due: float | None = None           # monotonic time of the next attempt (None: nothing to do)
    failures: int = 0
    reconnect_until: float | None = None
    last_attempt: float | None = None
    stranger: bool = False             # not a contact: its calls are paced (MAX_DIALING, DIALS_PER_MINUTE)


@dataclass
class RetrySchedule:
    """When to try each contact (sans IO: every method takes the monotonic time)."""

    contacts: dict[str, _Contact] = field(default_factory=dict)
    # [redrelay] one token bucket over every stranger's calls: DIAL_BURST at once, then DIALS_PER_MINUTE a minute
    _tokens: float = DIAL_BURST
    _refilled: float | None = None

    def _get(self, fp: str) -> _Contact:
        return self.contacts.setdefault(fp, _Contact())

    def mark(self, fp: str, stranger: bool) -> None:
        """Whether ``fp`` is a stranger (not a contact): its calls are then paced."""
        self._get(fp).stranger = stranger

    def _tokens_at(self, now: float) -> float:
        if self._refilled is None:
            return self._tokens
        return min(DIAL_BURST, self._tokens + max(0.0, now - self._refilled) * DIALS_PER_MINUTE / 60.0)

    def _token_time(self) -> float:
        """The earliest time a call may start (any time, -inf, while a token is left)."""
        if self._refilled is None or self._tokens >= 1:
            return float("-inf")
        return self._refilled + (1 - self._tokens) * 60.0 / DIALS_PER_MINUTE

    def now_please(self, fp: str, now: float) -> None:
        """The user queued a text or the contact dropped: try at once, unless an attempt was made under a minute
        ago after several failures (then at the floor)."""
        c = self._get(fp)
        floor = (c.last_attempt + MIN_PROBE_INTERVAL) if (c.failures >= QUICK_RETRIES and
                                                           c.last_attempt is not None) else now
        c.due = max(now, floor) if c.due is None else min(c.due, max(now, floor))

    def reconnect(self, fp: str, now: float) -> None:
        """A chat this node opened dropped: redial now and for :data:`RECONNECT_FOR` after."""
        c = self._get(fp)
        c.failures = 0
        c.reconnect_until = now + RECONNECT_FOR
        c.due = now

    def attempt_started(self, fp: str, now: float) -> None:
        c = self._get(fp)
        c.last_attempt = now
        c.due = None
        if c.stranger:
            self._tokens, self._refilled = self._tokens_at(now) - 1, now

    def succeeded(self, fp: str) -> None:
        c = self._get(fp)
        c.failures = 0
        c.due = None
        c.reconnect_until = None

    def failed(self, fp: str, now: float, *, still_wanted: bool) -> float | None:
        """The attempt failed; returns the delay until the next one (None: give up — nothing waits)."""
        c = self._get(fp)
        c.failures += 1
        reconnecting = c.reconnect_until is not None and now < c.reconnect_until
        if not still_wanted and not reconnecting:
            c.due = None
            c.reconnect_until = None
            return None
        delay = min(MAX_RETRY, FIRST_RETRY * (2 ** (c.failures - 1)))
        if c.failures > QUICK_RETRIES:
            delay = max(delay, MIN_PROBE_INTERVAL)
        c.due = now + delay
        return delay

    def forget(self, fp: str) -> None:
        self.contacts.pop(fp, None)

    def next_due(self, *, strangers: bool = True) -> tuple[str, float] | None:
        """The contact to try first and when (None: nothing scheduled); a stranger never before the pace allows,
        and not at all unless ``strangers`` (False: MAX_DIALING strangers' calls are under way)."""
        paced = self._token_time()
        best: tuple[str, float] | None = None
        for fp, c in self.contacts.items():
            if c.due is None or (c.stranger and not strangers):
                continue
            when = max(c.due, paced) if c.stranger else c.due
            if best is None or when < best[1]:
                best = (fp, when)
        return best


class OutboxHost(Protocol):
    """What the outbox needs of the chat node (:class:`p2pchat.node.ChatNode` provides it)."""

    def live_session_with(self, fp: str) -> str | None:
        """The id of a session with ``fp`` whose four steps are done and that has not ended."""

    def open_contact_session(self, fp: str) -> str:
        """A new session to ``fp`` (its full fingerprint), marked automatic; no IO yet."""

    def run_all(self, session: str) -> None:
        """Run the four steps of ``session``, one after the other."""

    def send_waiting(self, session: str, text: str, row: int) -> None:
        """Send ``text`` in ``session`` as history row ``row`` (the history marks it sent and delivered)."""


class Outbox:
    """Owns the waiting texts of one node and the thread that delivers them (joined by :meth:`close`)."""

    def __init__(self, host: OutboxHost, history: HistoryStore, notify: Callable[[OutboxChanged], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 stranger: Callable[[str], bool] = lambda fp: False) -> None:
        self._host = host
        self._history = history
        self._notify = notify
        self._clock = clock
        self._cond = threading.Condition()
        self._schedule = RetrySchedule()
        self._is_stranger = stranger
        self._attempts: dict[str, str] = {}            # fp -> session id of the attempt under way
        self._online: dict[str, str] = {}              # fp -> session id of the open chat
        self._flush: set[str] = set()                  # contacts whose waiting texts go out now
        self._cancelled: set[int] = set()              # rows taken back (checked before each send)
        self._closed = False
        self.also_waiting: Callable[[str], bool] = lambda fp: False   # [groups, issue 18] frames for a member
        now = clock()
        for m in history.waiting():                    # texts an earlier run could not deliver
            self._schedule.now_please(m.fp, now)
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        """Start delivering (and calling contacts). The node calls it once every watcher is wired, so no call
        made by the thread can end before the node would tell this outbox about it."""
        self._thread.start()

    # --- the user's side --------------------------------------------------------------------------------

    def queue(self, fp: str, text: str) -> int:
        """Keep ``text`` for ``fp`` as waiting and try to deliver it; returns its history row."""
        if not text:
            raise UsageError("there is nothing to send")
        if len(text) > MAX_WAITING_TEXT:
            raise UsageError(f"a message that waits for its reader may be at most {MAX_WAITING_TEXT} characters")
        if len(self._history.waiting(fp)) >= MAX_WAITING_PER_CONTACT:
            raise UsageError(f"{MAX_WAITING_PER_CONTACT} messages are already waiting for this contact; cancel "
                             "some or wait until they are delivered")
        row = self._history.append(fp, "out", text, ts=time.time(), status="waiting")
        self._deliver_soon(fp)
        self._notify(OutboxChanged(fp, row, "waiting", self.presence(fp)))
        return row

    def cancel(self, row: int) -> None:
        """Take a waiting text back; refused once it has gone out."""
        with self._cond:        # the thread sends under this lock's protection too: no race with a send
            for m in self._history.waiting():
                if m.id == row:
                    self._history.update_status(row, "cancelled")
                    self._cancelled.add(row)
                    fp = m.fp
                    break
            else:
                raise UsageError(f"message {row} is not waiting any more (it was sent, cancelled, or never existed)")
        self._notify(OutboxChanged(fp, row, "cancelled", self.presence(fp)))

    def waiting(self, fp: str | None = None) -> list[HistoryMessage]:
        return self._history.waiting(fp)

    def presence(self, fp: str) -> Presence:
        with self._cond:
            if fp in self._online:
                return Presence.ONLINE
            if fp in self._attempts:
                return Presence.CONNECTING
            c = self._schedule.contacts.get(fp)
            if c is not None and c.failures:
                return Presence.OFFLINE
            return Presence.UNKNOWN

    # --- the node's hooks (any thread, possibly with a session lock held: bookkeeping only) ----------------

    def chat_ready(self, fp: str, session: str) -> None:
        """A session with ``fp`` finished step 4 (ours or the contact's call): its waiting texts go out now."""
        with self._cond:
            self._online[fp] = session
            if self._attempts.get(fp) == session:
                del self._attempts[fp]
            self._schedule.succeeded(fp)
            self._flush.add(fp)
            self._cond.notify()

    def chat_ended(self, fp: str | None, session: str, *, dropped: bool, ours: bool) -> None:
        """A session ended; ``dropped``: without a goodbye after step 4; ``ours``: this node had opened it."""
        offline: list[str] = []
        with self._cond:
            if fp is not None and self._online.get(fp) == session:
                del self._online[fp]
                if dropped and ours:
                    self._schedule.reconnect(fp, self._clock())
            for afp, sid in list(self._attempts.items()):
                if sid == session:
                    del self._attempts[afp]
                    if fp is None or fp != afp or not dropped:
                        still = bool(self._history.waiting(afp)) or self.also_waiting(afp)
                        self._schedule.failed(afp, self._clock(), still_wanted=still)
                        offline.append(afp)
            self._cond.notify()
        for afp in offline:
            self._notify(OutboxChanged(afp, None, None, Presence.OFFLINE))

    def requeued(self, fp: str) -> None:
        """Texts to ``fp`` sent in a chat that dropped before their receipts came back wait again (the history
        recorder marked them): deliver them like any waiting text."""
        self._deliver_soon(fp)

    def _deliver_soon(self, fp: str) -> None:
        """``fp`` has texts waiting: send them in its open chat now, else call it as the schedule allows."""
        stranger = self._is_stranger(fp)        # before the lock: it may read the contact store
        with self._cond:
            self._schedule.mark(fp, stranger)
            if fp in self._online:
                self._flush.add(fp)
            else:
                self._schedule.now_please(fp, self._clock())
            self._cond.notify()

    # --- the thread --------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
                while job is None and not self._closed:
                    # with MAX_DIALING strangers' calls under way, the end of one (chat_ready, chat_ended) wakes this
                    nxt = self._schedule.next_due(strangers=self._strangers_dialing() < MAX_DIALING)
                    self._cond.wait(None if nxt is None else max(0.0, nxt[1] - self._clock()))
                    job = self._next_job()
                if self._closed:
                    return
            assert job is not None
            try:
                job()
            except UserError as exc:
                log.info("outbox: %s", exc)
            except Exception:
                log.exception("internal error in the outbox")
                raise

    def _next_job(self) -> Callable[[], None] | None:
        """The next thing to do (``_cond`` held): flush a contact's texts, or dial one that is due."""
        if self._flush:
            fp = self._flush.pop()
            session = self._online.get(fp)
            if session is not None:
                return lambda: self._send_all(fp, session)
        nxt = self._schedule.next_due(strangers=self._strangers_dialing() < MAX_DIALING)
        if nxt is not None and nxt[1] <= self._clock():
            fp = nxt[0]
            self._schedule.attempt_started(fp, self._clock())
            if fp in self._online or fp in self._attempts:
                return None
            return lambda: self._dial(fp)
        return None

    def _strangers_dialing(self) -> int:
        return sum(self._schedule.contacts[fp].stranger for fp in self._attempts if fp in self._schedule.contacts)

    def _dial(self, fp: str) -> None:
        live = self._host.live_session_with(fp)
        if live is not None:
            self.chat_ready(fp, live)
            return
        session = self._host.open_contact_session(fp)
        with self._cond:
            self._attempts[fp] = session        # before any IO: a failure at once finds it (chat_ended)
        self._notify(OutboxChanged(fp, None, None, Presence.CONNECTING))
        self._host.run_all(session)

    def _send_all(self, fp: str, session: str) -> None:
        self._notify(OutboxChanged(fp, None, None, Presence.ONLINE))
        for m in self._history.waiting(fp):
            with self._cond:
                if self._online.get(fp) != session:
                    return                       # the chat ended meanwhile: the rest waits for the next one
                if m.id in self._cancelled:
                    continue                     # cancelled meanwhile
                self._history.update_status(m.id, "sent")
            try:
                self._host.send_waiting(session, m.text, m.id)
            except UserError as exc:             # the chat ended or its outbox is full: wait for the next one
                self._history.update_status(m.id, "waiting")
                log.info("outbox: %s", exc)
                return
            self._notify(OutboxChanged(fp, m.id, "sent", Presence.ONLINE))


__all__ = ["Outbox", "OutboxChanged", "OutboxHost", "Presence", "RetrySchedule"]
