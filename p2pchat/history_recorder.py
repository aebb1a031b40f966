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
from p2pchat.history import HistoryStore, NewMessage

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 64 * 1024 * 1024     # texts queued for the disk at most
MAX_TRACKED = 10_000                     # sent texts whose receipt may still come (their row ids)
BATCH = 500                              # texts and receipts written in one transaction at most


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


_Item = _Text | _Delivered | None


class HistoryRecorder:
    """Writes texts and receipts into ``store`` in the order they were reported; ``report`` tells the user of a
    failure (once per kind of failure, not per message)."""

    def __init__(self, store: HistoryStore, report: Callable[[str], None]) -> None:
        self.store = store
        self._report = report
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._dropped = False
        self._failed = False
        self._rows: OrderedDict[tuple[str, int], int] = OrderedDict()   # (session, msg_id) -> row (thread-owned)
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

    def _put(self, item: _Text | _Delivered, size: int) -> None:
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
            batch: list[_Text | _Delivered] = []
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

    def _fail(self, text: str) -> None:
        if not self._failed:
            self._failed = True
            self._report(text)

    def _write(self, batch: list[_Text | _Delivered]) -> None:
        """One burst: its texts in one transaction, then the receipts that came for earlier texts in another (a
        receipt for a text of the same burst makes it ``delivered`` before it is written)."""
        texts: list[_Text] = []
        sent: dict[tuple[str, int], str] = {}     # our texts of this burst (a peer's ids are another series)
        updates: list[tuple[int, str]] = []
        for item in batch:
            key = (item.session, item.msg_id)
            if isinstance(item, _Text):
                if item.row is None:
                    texts.append(item)
                else:
                    self._rows[key] = item.row
                    updates.append((item.row, "sent"))
                if item.direction == "out":
                    sent[key] = "sent"
            elif key in sent and key not in self._rows:
                sent[key] = "delivered"
            elif (row := self._rows.pop(key, None)) is not None:
                updates.append((row, "delivered"))
        rows = self.store.append_many([
            NewMessage(t.fp, "out" if t.direction == "out" else "in", t.text, t.ts,
                       sent[(t.session, t.msg_id)] if t.direction == "out" else "delivered",
                       f"{t.session}:{t.msg_id}") for t in texts])
        for t, row in zip(texts, rows, strict=True):
            if t.direction == "out" and sent[(t.session, t.msg_id)] == "sent":
                self._rows[(t.session, t.msg_id)] = row
        while len(self._rows) > MAX_TRACKED:
            self._rows.popitem(last=False)
        if updates:
            self.store.update_statuses(updates, missing_ok=True)     # the user may have deleted the chat


__all__ = ["HistoryRecorder"]
