"""`p2pchat demo --headless` as a user runs it (a real process), and the demo world it is built on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from p2pchat.demo_world import DemoWorld
from p2pchat.events import StepResult
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.p2pchat.node_kit import EventLog

ROOT = Path(__file__).resolve().parents[2]


def test_headless_demo_narrates_the_whole_flow_and_exits_zero():
    hosts = f"{free_loopback_ip()},{free_loopback_ip()}"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "p2pchat", "demo", "--headless", "--hosts", hosts],
                            capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for step in Step:
        assert f"✓ {step.label} — " in out
    assert "mined in block" in out
    assert "alice's sending key rotated to epoch 2" in out and "bob's sending key rotated to epoch 2" in out
    assert "refused it: a message was replayed" in out
    assert "refused the altered frame too, without a second notice" in out
    assert "Nothing replayed or altered was shown" in out
    assert "every thread joined" in out
    assert "Traceback" not in out + result.stderr


def test_demo_world_starts_a_ledger_network_and_two_chat_nodes_and_stops_every_thread():
    before = set(threading.enumerate())
    hosts = (free_loopback_ip(), free_loopback_ip())
    port = free_port(hosts[0])
    with DemoWorld(hosts=hosts, identities=make_identities(2), chat_port=port, ledger_port=free_port(hosts[1]),
                   auto_accept=True) as world:
        alice, bob = world.users
        assert alice.record is not None and bob.record is not None
        assert {alice.record.height, bob.record.height} <= {1, 2}
        assert world.chat_address("bob") == f"{bob.host}:{port}"
        sid = alice.chat.open_session("bob")            # by nickname, through alice's own ledger node
        alice.chat.run_all(sid)
        assert EventLog(alice.chat).wait(StepResult, 20, step=Step.AGREE_KEY, ok=True)
        assert alice.chat.session_info(sid).peer_nickname == "bob"
    assert set(threading.enumerate()) <= before
