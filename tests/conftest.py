"""Shared fixtures: cached identity keys (RSA-3072 generation is the slowest part of many tests) and free
loopback addresses so that concurrent tests never collide."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import traceback

import pytest
from hypothesis import settings

from p2pchat.foundation.identity import Identity

# Property and fuzz tests draw the same examples on every run (CI results are reproducible and a red run is a
# real regression); HYPOTHESIS_EXPLORE=1 (or FUZZ_SCALE > 1, see tests/fuzz/fuzz_kit.py) draws fresh random
# examples each run to look for new bugs.
EXPLORE = os.environ.get("HYPOTHESIS_EXPLORE") == "1" or int(os.environ.get("FUZZ_SCALE", "1") or "1") > 1
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile("explore" if EXPLORE else "reproducible")

_KEYS: list[Identity] = []
_KEYS_LOCK = threading.Lock()


def make_identities(n: int) -> list[Identity]:
    """``n`` distinct identities, generated once per test session and reused."""
    with _KEYS_LOCK:
        while len(_KEYS) < n:
            _KEYS.append(Identity.generate())
        return list(_KEYS[:n])


@pytest.fixture(scope="session")
def identities() -> list[Identity]:
    return make_identities(6)


_ip_counter = itertools.count(2)


def _loopback_block() -> int:
    # Separate pytest processes (xdist workers, or two checkouts) pick different /16 blocks of 127/8.
    return 10 + (os.getpid() % 200)


def free_loopback_ip() -> str:
    """A 127.x.y.z address no other test in this session uses (Linux routes all of 127/8 to lo)."""
    n = next(_ip_counter)
    return f"127.{_loopback_block()}.{n // 250}.{n % 250 + 2}"


@pytest.fixture
def loopback_ip() -> str:
    return free_loopback_ip()


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


# --- an exception that escapes a thread fails the test it happened in ---------------------------------------
# (pytest's own threadexception plugin only warns; it is disabled in pyproject.toml so this hook stays installed)

_THREAD_ERRORS: list[str] = []
_THREAD_ERRORS_LOCK = threading.Lock()
_default_excepthook = threading.excepthook


def _record_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    with _THREAD_ERRORS_LOCK:
        _THREAD_ERRORS.append(f"in thread {name}:\n{text}")
    _default_excepthook(args)


def pytest_configure(config: pytest.Config) -> None:
    threading.excepthook = _record_thread_exception


def pytest_unconfigure(config: pytest.Config) -> None:
    threading.excepthook = _default_excepthook


def take_thread_errors() -> list[str]:
    """The exceptions that escaped threads since the last call (and forgets them)."""
    with _THREAD_ERRORS_LOCK:
        errors = list(_THREAD_ERRORS)
        _THREAD_ERRORS.clear()
    return errors


@pytest.fixture(autouse=True)
def _fail_on_thread_exceptions() -> object:
    take_thread_errors()     # one that escaped between tests belongs to no test: it was reported already
    yield
    errors = take_thread_errors()
    if errors:
        pytest.fail(f"{len(errors)} exception(s) escaped a thread during this test:\n" + "\n".join(errors),
                    pytrace=False)
