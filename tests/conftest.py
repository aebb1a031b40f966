"""Shared fixtures: cached identity keys (RSA-3072 generation is the slowest part of many tests) and free
loopback addresses so that concurrent tests never collide."""

from __future__ import annotations

import itertools
import os
import socket
import threading

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
