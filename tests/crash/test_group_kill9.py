"""kill -9 while a group's messages are written (alice says texts, bob receives and acknowledges them, carol is
added and removed, all through the real group stores; tests/crash/group_kill_child.py), at random instants, four
times on the same data directories. After every kill both stores open, alice's transcript is exactly her numbers
1..N (none twice, none missing, every text she was told was said among them) and bob's is a prefix of it; after a
last clean start that delivers what waited, bob has every text once, in order, and nothing waits for him."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p2pchat.events import GroupMessage
from p2pchat.group_service import GroupService
from tests.conftest import make_identities
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _service

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CRASH_SEED", "20261207"))
KILLS = 4


def child(root: Path, tag: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "tests.crash.group_kill_child", str(root), tag, str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def texts(svc: GroupService, gid: bytes) -> list[tuple[int, str]]:
    return [(t.counter, t.text) for t in svc.conversation(gid)]


def test_kill_9_during_group_writes_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    alice, bob = make_identities(2)
    said: list[tuple[int, str]] = []
    gid = b""
    for k in range(KILLS):
        p = child(tmp_path, f"r{k}", 400)
        assert p.stdout is not None
        ready = p.stdout.readline().split()
        assert ready and ready[0] == "ready", p.stderr.read() if p.stderr else ""
        gid = bytes.fromhex(ready[1])
        for _ in range(rng.randint(1, 60)):          # then killed without warning, mid-write or between
            line = p.stdout.readline().split()
            assert line and line[0] == "said", (line, p.stderr.read() if p.stderr else "")
            said.append((int(line[1]), line[2]))
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
        wire = Wire()
        sa, sb = _service(wire, alice, tmp_path / "alice"), _service(wire, bob, tmp_path / "bob")
        try:
            mine, his = texts(sa, gid), texts(sb, gid)
        finally:
            sa.close()
            sb.close()
        assert [c for c, _t in mine] == list(range(1, len(mine) + 1)), f"kill {k}: {mine}"
        assert len({t for _c, t in mine}) == len(mine), f"kill {k}: a text kept twice"
        assert set(said) <= set(mine), f"kill {k}: said but not kept: {set(said) - set(mine)}"
        assert his == mine[:len(his)], f"kill {k}: bob {his} against alice {mine}"
    p = child(tmp_path, "last", 1)                   # a clean start: what waited is delivered
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-3000:]
    wire = Wire()
    sa, sb = _service(wire, alice, tmp_path / "alice"), _service(wire, bob, tmp_path / "bob")
    try:
        sa.chat_ready(bob.fingerprint.hex(), f"{alice.fingerprint.hex()}>{bob.fingerprint.hex()}")
        wait_until(lambda: not sa.has_pending(bob.fingerprint.hex()), 10, what="nothing left waiting for bob")
        mine, his = texts(sa, gid), texts(sb, gid)
        assert his == mine and set(said) <= set(mine)
        assert [c for c, _t in mine] == list(range(1, len(mine) + 1))
        assert not [e for e in wire.events[bob.fingerprint.hex()] if isinstance(e, GroupMessage)]  # none again
    finally:
        sa.close()
        sb.close()
