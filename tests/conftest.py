"""Shared fixtures: stored identity keys (RSA-3072 generation is the slowest part of many tests), free loopback
addresses so that concurrent tests (and pytest-xdist workers) never collide, and the xdist grouping."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from p2pchat.foundation import crypto
from p2pchat.foundation.identity import Identity

# Property and fuzz tests draw the same examples on every run (CI results are reproducible and a red run is a
# real regression); HYPOTHESIS_EXPLORE=1 (or FUZZ_SCALE > 1, see tests/fuzz/fuzz_kit.py) draws fresh random
# examples each run to look for new bugs.
EXPLORE = os.environ.get("HYPOTHESIS_EXPLORE") == "1" or int(os.environ.get("FUZZ_SCALE", "1") or "1") > 1
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile("explore" if EXPLORE else "reproducible")

# RSA-3072 test keys made once (tests/identities.pem, the key of each a PKCS#8 PEM block): generating one costs a
# second or more, and the lab's class of sixteen alone needs 22. They are public, so they identify test nodes only.
# Tests that need more than the file holds get fresh ones.
TEST_KEYS = Path(__file__).with_name("identities.pem")
_KEYS: list[Identity] = []
_KEYS_LOCK = threading.Lock()


def _stored_identities() -> list[Identity]:
    text = TEST_KEYS.read_text(encoding="ascii")
    end = "-----END PRIVATE KEY-----"
    return [Identity(crypto.RSA.import_key(block + end)) for block in text.split(end) if block.strip()]


def make_identities(n: int) -> list[Identity]:
    """``n`` distinct identities, the same ones for every test (see TEST_KEYS)."""
    with _KEYS_LOCK:
        if not _KEYS:
            _KEYS.extend(_stored_identities())
        while len(_KEYS) < n:
            _KEYS.append(Identity.generate())
        return list(_KEYS[:n])


@pytest.fixture(scope="session")
def identities() -> list[Identity]:
    return make_identities(6)


_ip_counter = itertools.count(2)


WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")     # "gw0", "gw1", … under pytest-xdist, "" without it
_WORKER_INDEX = int(WORKER[2:]) if WORKER[2:].isdigit() else 0
_WORKER_COUNT = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1"))


def _loopback_block() -> int:
    # Separate pytest runs (two checkouts) pick different /16 blocks of 127/8. The workers of one xdist run share
    # one block, named by the run's id (the same in every worker), and take turns inside it (free_loopback_ip),
    # so they never collide however their pids fall.
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return 10 + (int(run[:8], 16) if run else os.getpid()) % 200


def free_loopback_ip() -> str:
    """A 127.x.y.z address no other test in this session uses (Linux routes all of 127/8 to lo)."""
    m = next(_ip_counter) * _WORKER_COUNT + _WORKER_INDEX
    return f"127.{_loopback_block()}.{m // 250}.{m % 250 + 2}"


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


def _work_unit(nodeid: str) -> str:
    """What one pytest-xdist worker runs whole: a test module, or all of the netns lab."""
    path = nodeid.split("::", 1)[0]
    return "netns-lab" if path.startswith("tests/lab/") else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (scripts/run-tests.sh) every module runs whole on one worker, so its module fixtures (a
    served ledger, a premined chain, a window) are built once, and all the netns lab tests run on one worker, one
    after another: two labs at once would compete for the machine their timing was set for."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the xdist workers the longest work comes first (the lab, then multi-process and window modules) and the
    many short modules last, so that no long module starts when the other worker is nearly done (run with
    ``--no-loadscope-reorder``, which keeps this order)."""
    if not WORKER:
        return
    rank: dict[str, int] = {}
    for item in items:
        unit = _work_unit(item.nodeid)
        kind = 0 if unit == "netns-lab" else 1 if item.get_closest_marker("slow") else \
            2 if item.get_closest_marker("gui") else 3
        rank[unit] = min(kind, rank.get(unit, kind))
    items.sort(key=lambda item: rank[_work_unit(item.nodeid)])     # stable: each module keeps its own order


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
