"""One-time-pad mode with real processes (issue 17): a pad made and carried with `p2pchat pad`, then a `chat`
and a `listen` on a real ledger network agree to switch to it, and a text goes under the pad."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, _env, ledger_network
from tests.integration.procs import ROOT, Cluster

pytestmark = pytest.mark.slow


def pad(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pchat", "pad", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=_env())


def test_a_chat_and_a_listener_switch_to_a_carried_pad_and_talk_under_it(tmp_path):
    c, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [c, b])
        carol_dir, bob_dir = cluster.data_dir(c), cluster.data_dir(b)
        carol_fp = Identity.load(carol_dir / KEY_FILE).fingerprint.hex()
        bob_fp = Identity.load(bob_dir / KEY_FILE).fingerprint.hex()
        usb = tmp_path / "usb"
        made = pad("new", carol_fp, "--size", "16k", "--out", str(usb), "--data-dir", str(bob_dir))
        assert made.returncode == 0, made.stderr
        assert pad("import", str(usb / "mine"), "--data-dir", str(bob_dir)).returncode == 0
        imported = pad("import", str(usb / "peer"), "--data-dir", str(carol_dir))
        assert imported.returncode == 0, imported.stderr
        procs: list[ChatProcess] = []
        try:
            carol = ChatProcess("listen", "--host", c, "--accept-all", "--data-dir", str(carol_dir))
            procs.append(carol)
            carol.wait_for("Waiting for chats")
            bob = ChatProcess("chat", c, "--host", b, "--data-dir", str(bob_dir))
            procs.append(bob)
            bob.wait_for("Chat ready with")
            carol.choose_chat()
            bob.write("/pad on")
            carol.wait_for("◆")                          # carol is asked
            carol.write("/pad yes")
            bob.wait_for("◆ pad mode is on")
            bob.write("under the pad", "/pad")
            carol.wait_for("under the pad")
            bob.wait_for("pad mode: on; pad left:")
            bob.close_input()
            assert bob.wait_exit() == 0, bob.output()
            status = pad("status", bob_fp, "--data-dir", str(carol_dir))
            assert status.returncode == 0 and "left to receive" in status.stdout, status.stdout + status.stderr
            assert "8,192 bytes left to receive" not in status.stdout     # carol's receive half was spent
        finally:
            for proc in procs:
                proc.stop()
