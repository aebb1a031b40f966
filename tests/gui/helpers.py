"""Small tools for the GUI tests: polling with a deadline, and settling the command worker."""

from __future__ import annotations

from gui.worker import CommandWorker
from tests.helpers import wait_until


def settle(worker: CommandWorker, timeout: float = 5.0) -> None:
    """Wait until every submitted call has run and its callback has run on this thread."""
    wait_until(lambda: worker.drain() == 0 and worker.idle, timeout, what="the command worker to settle")


class Clock:
    """A clock the tests move by hand (``now`` in seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now
