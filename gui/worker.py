"""A worker thread that runs calls into the chat node off the Tk thread and hands their outcome back.

The node's methods are meant not to block, but a slow or dead peer must never be able to freeze the window, so
the GUI makes every node call here. Outcomes wait in a queue until the Tk thread collects them with
:meth:`CommandWorker.drain` (from the same ``after()`` tick that drains node events), so callbacks run on the
Tk thread only.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from p2pchat.foundation.errors import UserError

log = logging.getLogger(__name__)

Done = Callable[[Any], None]
Failed = Callable[[UserError], None]


class CommandWorker:
    """One thread, one queue of calls; :meth:`close` stops and joins it."""

    def __init__(self, name: str = "gui-commands", join_timeout: float = 15.0) -> None:
        self._calls: queue.Queue[tuple[Callable[[], Any], Done | None, Failed | None] | None] = queue.Queue()
        self._outcomes: queue.Queue[tuple[Callable[..., None] | None, Any]] = queue.Queue()
        self._join_timeout = join_timeout
        self._closed = False
        self._busy = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name)
        self._thread.start()

    def submit(self, call: Callable[[], Any], done: Done | None = None, failed: Failed | None = None) -> None:
        """Run ``call`` on the worker; later ``done(result)`` or ``failed(user_error)`` runs in :meth:`drain`.
        Other exceptions are programming errors: they are re-raised in :meth:`drain` on the Tk thread."""
        if self._closed:
            return
        with self._lock:
            self._busy += 1
        self._calls.put((call, done, failed))

    @property
    def idle(self) -> bool:
        """No call queued or running and no outcome waiting to be drained."""
        with self._lock:
            return self._busy == 0 and self._outcomes.empty()

    def drain(self, limit: int = 100) -> int:
        """Run up to ``limit`` waiting callbacks on the calling (Tk) thread; returns how many ran."""
        ran = 0
        while ran < limit:
            try:
                callback, value = self._outcomes.get_nowait()
            except queue.Empty:
                break
            ran += 1
            if isinstance(value, _Crash):
                raise RuntimeError(f"a call into the chat node failed: {value.exc!r}") from value.exc
            if callback is not None:
                callback(value)
        return ran

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            call, done, failed = item
            try:
                result = call()
            except UserError as exc:
                self._outcomes.put((failed, exc))
            except Exception as exc:  # a bug: keep the worker alive and re-raise it on the Tk thread
                log.exception("call into the chat node failed")
                self._outcomes.put((None, _Crash(exc)))
            else:
                self._outcomes.put((done, result))
            finally:
                with self._lock:
                    self._busy -= 1

    def close(self) -> None:
        """Stop taking calls, let the running one finish, and join the thread."""
        if self._closed:
            return
        self._closed = True
        # Calls still queued are dropped: the node is about to close and would refuse them anyway.
        while True:
            try:
                if self._calls.get_nowait() is not None:
                    with self._lock:
                        self._busy -= 1
            except queue.Empty:
                break
        self._calls.put(None)
        self._thread.join(self._join_timeout)
        if self._thread.is_alive():
            log.error("a call into the chat node did not return within %.0f s", self._join_timeout)


class _Crash:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
