"""The load benchmark (bench/load_bench.py) at CI size, checking correctness rather than timings: concurrent chats
and handshakes in a row against one responder process end without a single error and leave the responder with
the threads it had when idle; a small ledger network under a stream of registrations mines every record on every
node, agrees on one tip and stops cleanly. The full figures (200 sessions, 1,000 handshakes, 16 nodes) come from
``python3 bench/load_bench.py`` and are in docs/security.md."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import free_loopback_ip, make_identities

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[2] / "bench" / "load_bench.py"


def load_bench() -> ModuleType:
    # On sys.path (not only loaded from its file) so that the responder child started with "spawn" can import it.
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    return importlib.import_module("load_bench")


def test_concurrent_chats_and_handshakes_in_a_row_make_no_errors_and_leave_no_threads(tmp_path):
    bench = load_bench()
    out = bench.chat_load(24, 40, make_identities(2), tmp_path, server_ip=free_loopback_ip(),
                          client_ip=free_loopback_ip())
    assert out["errors"] == 0, out
    assert out["peak"]["threads"] >= out["idle"]["threads"] + 24 // 2      # the sessions really were concurrent
    assert out["after_concurrent"]["threads"] == out["idle"]["threads"]
    assert out["after_handshakes"]["threads"] == out["idle"]["threads"]
    assert out["after_handshakes"]["messages"] == 24 and out["after_handshakes"]["failed"] == 0


def test_a_small_ledger_network_under_a_registration_stream_mines_everything_and_agrees(tmp_path):
    bench = load_bench()
    ids = make_identities(6)
    out = bench.ledger_load(4, 12, 6.0, ids, tmp_path, ips=[free_loopback_ip() for _ in range(4)])
    assert out["errors"] == 0, out["error_samples"]
    assert out["tips_agree"], out
    assert set(out["exit_codes"]) == {0}, out
    assert all(end["threads"] <= idle["threads"] + 4 for idle, end in zip(out["idle"], out["end"], strict=True))
