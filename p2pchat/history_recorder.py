"""Keeps a chat node's conversations in its :class:`~p2pchat.history.HistoryStore`, on a thread of its own.

The session code hands each text sent and received (after step 4, with the peer's key fingerprint) and each
delivery receipt to :class:`HistoryRecorder`, which only queues it: a slow disk or a store busy in another process
never holds a session's lock or its reader. The queue is bounded in bytes; past the bound a record is dropped and
the user told once, so a peer sending faster than the disk writes cannot grow memory without end. What one peer
can make it keep on disk is bounded too (:data:`MAX_KEPT_PER_PEER` of received messages per key): past it, that
key's messages are still shown, not saved, and the user is told once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.foundation.errors import UserError
from p2pchat.foundation.fingerprint_text import format_fingerprint
from p2pchat.history import HistoryStore, NewMessage

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 64 * 1024 * 1024     # texts queued for the disk at most
MAX_TRACKED = 10_000                     # sent texts whose receipt may still come (their row ids)
BATCH = 500                              # texts and receipts written in one transaction at most
MAX_KEPT_PER_PEER = 256 * 1024 * 1024    # bytes of received messages kept per peer key; newer ones are shown only
RECHECK_AFTER = 30.0                     # seconds before a peer over it is measured again (its history deleted?)


@dataclass(frozen=True)
class _Text:
    session: str
    msg_id: int
    fp: str
    direction: str
    text: str
    ts: float
    row: int | None = None          # a history row that holds the text already (an outbox's waiting text)


@dataclass(frozen=True)
class _Delivered:
    session: str
    msg_id: int


@dataclass(frozen=True)
class _Dropped:
    """``session`` dropped without a goodbye: its texts still without a receipt wait again (issue 16)."""

    session: str


_Item = _Text | _Delivered | _Dropped | None


class HistoryRecorder:
    """Writes texts and receipts into ``store`` in the order they were reported; ``report`` tells the user of a
    failure (once per kind of failure, not per message)."""

    def __init__(self, store: HistoryStore, report: Callable[[str], None],
                 requeued: Callable[[str], None] | None = None) -> None:
        self.store = store
        self._report = report
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._dropped = False
        self._failed = False
        # (session, msg_id) -> (row, peer fp) of our texts whose receipt may still come (thread-owned)
        self._rows: OrderedDict[tuple[str, int], tuple[int, str]] = OrderedDict()
        self._requeued = requeued       # told of each contact whose texts wait again after a drop
        # peer fp -> (bytes of its received messages in the store, when over the limit: when to measure again)
        self._kept: dict[str, tuple[int, float | None]] = {}
        self._told: set[str] = set()     # peers over the limit the user was told of
        self._thread = threading.Thread(target=self._run, name="history-recorder", daemon=True)
        self._thread.start()

    # --- called by the sessions (any thread, possibly with a session lock held): queue only ---------------

    def received(self, session: str, msg_id: int, fp: str, text: str, ts: float) -> None:
        self._put(_Text(session, msg_id, fp, "in", text, ts), len(text))

    def sent(self, session: str, msg_id: int, fp: str, text: str, ts: float, *, row: int | None = None) -> None:
        """Our text ``msg_id`` was queued in ``session``: kept as a new row, or ``row`` (kept already) is now
        ``sent``."""
        self._put(_Text(session, msg_id, fp, "out", text, ts, row), 0 if row is not None else len(text))

    def delivered(self, session: str, msg_id: int) -> None:
        self._put(_Delivered(session, msg_id), 0)

    def dropped(self, session: str) -> None:
        """``session`` dropped: its texts without a receipt become ``waiting`` and ``requeued`` is told."""
        self._put(_Dropped(session), 0)

    def _put(self, item: _Text | _Delivered | _Dropped, size: int) -> None:
        with self._lock:
            if self._pending + size > MAX_PENDING_BYTES:
                first = not self._dropped
                self._dropped = True
                if first:
                    self._report("the chat history is not keeping up (the disk is slow or busy): some messages "
                                 "were shown but not saved")
                return
            self._pending += size
        self._queue.put(item)

    # --- the thread -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, then stop the thread (the store stays open: its owner closes it)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[_Text | _Delivered | _Dropped] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stop = item is None
            try:
                self._write(batch)
            except UserError as exc:
                self._fail(f"the chat history could not be saved: {exc}")
                log.warning("history write failed: %s", exc)
            except Exception:
                log.exception("internal error writing the chat history")
                self._fail("the chat history could not be saved (internal error; see the log)")
            finally:
                with self._lock:
                    self._pending -= sum(len(i.text) for i in batch if isinstance(i, _Text) and i.row is None)

    def _room_for(self, fp: str, size: int, unwritten: list[_Text]) -> bool:
        """Whether a received text of about ``size`` bytes in the file from ``fp`` may be kept: what one peer can
        make this computer store is bounded (:data:`MAX_KEPT_PER_PEER`); the user is told once each time a peer
        reaches it. ``unwritten``: the texts of this burst not in the store yet."""
        kept, recheck = self._kept.get(fp, (-1, None))
        if kept < 0 or (recheck is not None and time.monotonic() >= recheck):
            kept = self.store.received_bytes(fp) + sum(len(json.dumps(t.text)) for t in unwritten
                                                       if t.fp == fp and t.direction == "in")
        if kept + size <= MAX_KEPT_PER_PEER:
            self._kept[fp] = (kept + size, None)
            self._told.discard(fp)
            return True
        if fp not in self._told:
            self._told.add(fp)
            self._report(f"the history already keeps {MAX_KEPT_PER_PEER // 2**20} MiB of messages from "
                         f"{format_fingerprint(bytes.fromhex(fp), groups=4)} …; newer messages from that key are "
                         "shown but not saved (`p2pchat history CONTACT --delete` makes room)")
        self._kept[fp] = (kept, time.monotonic() + RECHECK_AFTER)
        return False

    def _fail(self, text: str) -> None:
        if not self._failed:
            self._failed = True
            self._report(text)

    def _write(self, batch: list[_Text | _Delivered | _Dropped]) -> None:
        """One burst: its texts in one transaction, then the receipts that came for earlier texts in another (a
        receipt for a text of the same burst makes it ``delivered`` before it is written); the chats that dropped
        in the burst last (every text of theirs was reported before their drop)."""
        texts: list[_Text] = []
        sent: dict[tuple[str, int], str] = {}     # our texts of this burst (a peer's ids are another series)
        updates: list[tuple[int, str]] = []
        dropped: set[str] = set()
        for item in batch:
            if isinstance(item, _Dropped):
                dropped.add(item.session)
                continue
            key = (item.session, item.msg_id)
            if isinstance(item, _Text):
                if item.direction == "in" and not self._room_for(item.fp, len(json.dumps(item.text)), texts):
                    continue
                if item.row is None:
                    texts.append(item)
                else:
                    self._rows[key] = (item.row, item.fp)
                    updates.append((item.row, "sent"))
                if item.direction == "out":
                    sent[key] = "sent"
            elif key in sent and key not in self._rows:
                sent[key] = "delivered"
            elif (found := self._rows.pop(key, None)) is not None:
                updates.append((found[0], "delivered"))
        rows = self.store.append_many([
            NewMessage(t.fp, "out" if t.direction == "out" else "in", t.text, t.ts,
                       sent[(t.session, t.msg_id)] if t.direction == "out" else "delivered",
                       f"{t.session}:{t.msg_id}") for t in texts])
        for t, row in zip(texts, rows, strict=True):
            if t.direction == "out" and sent[(t.session, t.msg_id)] == "sent":
                self._rows[(t.session, t.msg_id)] = (row, t.fp)
        while len(self._rows) > MAX_TRACKED:
            self._rows.popitem(last=False)
        contacts: set[str] = set()
        for key in [k for k in self._rows if k[0] in dropped]:
            row, fp = self._rows.pop(key)
            updates.append((row, "waiting"))
            contacts.add(fp)
        if updates:
            self.store.update_statuses(updates, missing_ok=True)     # the user may have deleted the chat
        if self._requeued is not None:
            for fp in sorted(contacts):
                self._requeued(fp)


__all__ = ["HistoryRecorder"]
