"""Fixtures of the relay tests: an environment that closes everything it started, and a check that no relay
thread outlives its test (every ``close()`` joins its threads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.p2pchat.relay.relay_helpers import RelayEnv, relay_threads


@pytest.fixture(autouse=True)
def no_relay_threads_left() -> Iterator[None]:
    yield
    assert relay_threads() == []


@pytest.fixture
def env() -> Iterator[RelayEnv]:
    e = RelayEnv()
    yield e
    e.close()
