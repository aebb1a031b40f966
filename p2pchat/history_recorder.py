"""Keeps a chat node's conversations in its :class:`~p2pchat.history.HistoryStore`, on a thread of its own.

The session code hands each text sent and received (after step 4, with the peer's key fingerprint) and each
delivery receipt to :class:`HistoryRecorder`, which only queues it: a slow disk or a store busy in another process
never holds a session's lock or its reader. The queue is bounded in bytes; past the bound a record is dropped and
the user told once, so a peer sending faster than the disk writes cannot grow memory without end.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.foundation.errors import UserError
from p2pchat.history import HistoryStore

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 64 * 1024 * 1024     # texts queued for the disk at most
MAX_TRACKED = 10_000                     # sent texts whose receipt may still come (their row ids)


@dataclass(frozen=True)
class _Text:
    session: str
    msg_id: int
    fp: str
    direction: str
    text: str
    ts: float


@dataclass(frozen=True)
class _Delivered:
    session: str
    msg_id: int


@dataclass(frozen=True)
class _SentRow:
    """A waiting text (already a history row) went out in ``session`` as ``msg_id``."""

    session: str
    msg_id: int
    fp: str
    row: int


@dataclass(frozen=True)
class _Dropped:
    """``session`` dropped: its texts still without a receipt wait again."""

    session: str


_Item = _Text | _Delivered | _SentRow | _Dropped | None


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
        # (session, msg_id) -> (row, fp) of sent texts whose receipt may still come (thread-owned)
        self._rows: OrderedDict[tuple[str, int], tuple[int, str]] = OrderedDict()
        self._requeued = requeued       # told of each contact whose texts wait again after a drop
        self._thread = threading.Thread(target=self._run, name="history-recorder", daemon=True)
        self._thread.start()

    # --- called by the sessions (any thread, possibly with a session lock held): queue only ---------------

    def received(self, session: str, msg_id: int, fp: str, text: str, ts: float) -> None:
        self._put(_Text(session, msg_id, fp, "in", text, ts), len(text))

    def sent(self, session: str, msg_id: int, fp: str, text: str, ts: float) -> None:
        self._put(_Text(session, msg_id, fp, "out", text, ts), len(text))

    def delivered(self, session: str, msg_id: int) -> None:
        self._put(_Delivered(session, msg_id), 0)

    def sent_row(self, session: str, msg_id: int, fp: str, row: int) -> None:
        self._put(_SentRow(session, msg_id, fp, row), 0)

    def dropped(self, session: str) -> None:
        self._put(_Dropped(session), 0)

    def _put(self, item: _Text | _Delivered | _SentRow | _Dropped, size: int) -> None:
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
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(item)
            except UserError as exc:
                if not self._failed:
                    self._failed = True
                    self._report(f"the chat history could not be saved: {exc}")
                log.warning("history write failed: %s", exc)
            except Exception:
                log.exception("internal error writing the chat history")
                if not self._failed:
                    self._failed = True
                    self._report("the chat history could not be saved (internal error; see the log)")
            finally:
                if isinstance(item, _Text):
                    with self._lock:
                        self._pending -= len(item.text)

    def _write(self, item: _Text | _Delivered | _SentRow | _Dropped) -> None:
        if isinstance(item, _Delivered):
            found = self._rows.pop((item.session, item.msg_id), None)
            if found is not None:
                self.store.update_status(found[0], "delivered")
            return
        if isinstance(item, _SentRow):
            self._track(item.session, item.msg_id, item.row, item.fp)
            return
        if isinstance(item, _Dropped):
            lost = [key for key in self._rows if key[0] == item.session]
            contacts = set()
            for key in lost:
                row, fp = self._rows.pop(key)
                self.store.update_status(row, "waiting")
                contacts.add(fp)
            if self._requeued is not None:
                for fp in sorted(contacts):
                    self._requeued(fp)
            return
        status = "delivered" if item.direction == "in" else "sent"
        row = self.store.append(item.fp, "in" if item.direction == "in" else "out", item.text, ts=item.ts,
                                status=status, msg_id=f"{item.session}:{item.msg_id}")
        if item.direction == "out":
            self._track(item.session, item.msg_id, row, item.fp)

    def _track(self, session: str, msg_id: int, row: int, fp: str) -> None:
        self._rows[(session, msg_id)] = (row, fp)
        while len(self._rows) > MAX_TRACKED:
            self._rows.popitem(last=False)


__all__ = ["HistoryRecorder"]
