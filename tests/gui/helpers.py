"""Small tools for the GUI tests: polling with a deadline, and settling the command worker."""

from __future__ import annotations

import time
from collections.abc import Callable

from gui.worker import CommandWorker


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005,
               step: Callable[[], object] | None = None, what: str = "condition") -> None:
    """Poll ``predicate`` (calling ``step`` between polls, e.g. to pump Tk) until it is true or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def settle(worker: CommandWorker, timeout: float = 5.0) -> None:
    """Wait until every submitted call has run and its callback has run on this thread."""
    wait_until(lambda: worker.drain() == 0 and worker.idle, timeout, what="the command worker to settle")
