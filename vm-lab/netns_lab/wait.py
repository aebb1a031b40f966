"""Polling with a deadline (never a bare sleep to wait for a condition)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from netns_lab.shell import LabError

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, *, interval: float = 0.3,
               describe: Callable[[], str] | None = None) -> T:
    """Call ``probe`` until it returns something truthy and return that; :class:`LabError` naming ``what``
    (and ``describe()``, the state last seen) when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = f"; last seen: {describe()}" if describe else ""
            raise LabError(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(interval)
