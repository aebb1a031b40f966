"""Issue 13 with real processes: bob's data directory remembers carol's key. A rotation signed by her key moves
the pin with a notice; a key that replaced hers without one (revoked, new data directory, registered again)
stops bob's next chat at step 2 with the warning — a hard stop once he verified her — until he accepts the new
key deliberately, which the contact store records."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pchat.contacts import ContactStore
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, _env, ledger_network
from tests.integration.procs import ROOT, Cluster, wait_until

pytestmark = pytest.mark.slow


def ledger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], input="", capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=_env())


def p2pchat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pchat", *args], input="", capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=_env())


def chat(carol: str, bob: str, bob_dir: str, *extra: str, lines: tuple[str, ...] = ("hello carol",)) -> ChatProcess:
    proc = ChatProcess("chat", carol, "--host", bob, "--data-dir", bob_dir, *extra)
    proc.write(*lines)
    proc.close_input()
    return proc


def test_bob_notices_carols_key_changes_at_step_2(tmp_path):
    c, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(3)) as cluster:
        ledger_network(cluster, [c, b])
        carol_node, bob_node = cluster.procs
        carol_dir, bob_dir = cluster.data_dir(c), str(cluster.data_dir(b))
        k1 = Identity.load(carol_dir / KEY_FILE).fingerprint
        procs: list[ChatProcess] = []

        def listen(data_dir: str) -> ChatProcess:
            proc = ChatProcess("listen", "--host", c, "--accept-all", "--data-dir", data_dir)
            procs.append(proc)
            proc.wait_for("Waiting for chats")
            return proc

        def bob_chat(*extra: str) -> ChatProcess:
            proc = chat(c, b, bob_dir, *extra)
            procs.append(proc)
            return proc

        try:
            # 1. First chat: carol's key is pinned for her address once all four steps passed.
            carol = listen(str(carol_dir))
            first = bob_chat()
            assert first.wait_exit() == 0, first.output()
            store = ContactStore.in_data_dir(cluster.data_dir(b))
            pinned = store.pinned_for("ip", c)
            store.close()
            assert pinned is not None and pinned.fingerprint == k1

            # 2. carol rotates her key (a rotation signed by both keys): the pin follows, with a notice.
            carol.stop()
            result = ledger("rotate-key", "--node", c, "--data-dir", str(carol_dir), "--wait", "60")
            assert result.returncode == 0, result.stdout + result.stderr
            k2 = Identity.load(carol_dir / KEY_FILE).fingerprint
            wait_until(lambda: (carol_node.quick_status() or {}).get("fingerprint") == k2.hex(), 60,
                       what="carol's ledger node to switch to the new key")
            bob_node.wait_lookup(c, 60, what="bob's ledger node to hold the rotation",
                                 until=lambda answer: (answer or {}).get("fingerprint") == k2.hex())
            carol = listen(str(carol_dir))
            second = ChatProcess("chat", c, "--host", b, "--data-dir", bob_dir)
            procs.append(second)
            second.wait_for("Chat ready with")
            second.write("/verify", "/verify yes")
            second.wait_for("is now a verified contact")
            second.close_input()
            assert second.wait_exit() == 0, second.output()
            out = second.output()
            assert "replaced their key: the ledger proves it" in out and "signed by the old key" in out
            assert "is now a verified contact" in out
            renamed = p2pchat("contacts", "rename", k2.hex()[:10], "carol", "--data-dir", bob_dir)
            assert renamed.returncode == 0, renamed.stdout + renamed.stderr
            listed = p2pchat("contacts", "--data-dir", bob_dir)
            assert listed.returncode == 0 and any(line.startswith("✓ carol ") and c in line
                                                  for line in listed.stdout.splitlines()), listed.stdout

            # 3. carol revokes that key and registers a new one from a new data directory: no signed rotation.
            carol.stop()
            result = ledger("revoke", "--yes", "--node", c, "--data-dir", str(carol_dir), "--wait", "60")
            assert result.returncode == 0, result.stdout + result.stderr
            bob_node.wait_lookup(c, 60, what="the revoked binding to disappear at bob's",
                                 until=lambda answer: answer is None)
            carol_node.stop()
            new_node = cluster.join(c, b, name="carol-reinstalled")
            new_node.wait_ready()
            k3 = Identity.load(cluster.data_dir(c, "carol-reinstalled") / KEY_FILE).fingerprint
            bob_node.wait_lookup(c, 60, what="carol's new registration at bob's",
                                 until=lambda answer: (answer or {}).get("fingerprint") == k3.hex())
            carol = listen(str(cluster.data_dir(c, "carol-reinstalled")))

            # a verified contact: a hard stop, which the accept flag alone does not lift
            stopped = bob_chat()
            assert stopped.wait_exit() == 1, stopped.output()
            out = stopped.output()
            assert "✗ 2 Swap public keys" in out and "HAS CHANGED" in out and "nothing was signed" in out
            assert "VERIFIED" in out and "hard stop" in out and "--override-verified" in out
            assert "✓ 3" not in out
            still = bob_chat("--accept-new-key", k3.hex())
            assert still.wait_exit() == 1 and "without the override" in still.output(), still.output()

            # unverified: still a stop, with the warning and the way to accept
            result = p2pchat("contacts", "unverify", "carol", "--data-dir", bob_dir)
            assert result.returncode == 0, result.stdout + result.stderr
            warned = bob_chat()
            assert warned.wait_exit() == 1, warned.output()
            out = warned.output()
            assert "HAS CHANGED" in out and "reinstalled or lost" in out and f"--accept-new-key {k3.hex()}" in out
            assert "hard stop" not in out

            # accepted deliberately: the chat goes on, the pin moves, the decision is recorded
            accepted = bob_chat("--accept-new-key", k3.hex())
            assert accepted.wait_exit() == 0, accepted.output()
            assert "you accepted the new key" in accepted.output()
            shown = p2pchat("contacts", "show", k3.hex()[:12], "--data-dir", bob_dir)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            for word in ("accepted", "rotated", "verified"):
                assert word in shown.stdout, shown.stdout
            again = bob_chat()
            assert again.wait_exit() == 0 and "HAS CHANGED" not in again.output(), again.output()
        finally:
            for proc in procs:
                proc.stop()
