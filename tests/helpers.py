"""Tiny generic test helpers shared by every test folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition", step: Callable[[], object] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), failing the test after ``timeout``
    seconds. ``step`` runs before each poll (e.g. to pump Tk's event loop)."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
