"""``ledger update``, ``ledger rotate-key`` and ``ledger revoke`` against a running ``ledger serve`` (real
processes on 127.x): each shows the record it publishes and when it is mined, the running node adopts the
change, and mistakes get one clear line."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from ledger.own_record import NEXT_KEY_FILE, retired_key_file
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.procs import ROOT, Cluster, _env, run_ledger, wait_until

pytestmark = pytest.mark.slow


def ledger(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=_env())


def own(node) -> dict:
    status = node.quick_status() or {}
    return status.get("own_record") or {}


def test_update_rotate_and_revoke_through_the_running_node(tmp_path):
    a, b = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        owner = cluster.serve(a, "--nickname", "carol")
        owner.wait_ready()
        other = cluster.join(b, a, extra=("--nickname", "dave"))
        other.wait_ready()
        wait_until(lambda: own(owner).get("state") == "mined", 60, what="the owner's registration")
        wait_until(lambda: other.client().find("dave"), 60, what="the other node's registration")
        data = cluster.data_dir(a)
        mine = ("--node", a, "--data-dir", str(data), "--wait", "60")

        # update: the nickname changes, the record is shown, mined, and the node keeps it on renewals.
        result = ledger("update", "--nickname", "carol2", *mine)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "publishing an update" in result.stdout and "nickname    'carol2'" in result.stdout
        assert "mined in block" in result.stdout
        wait_until(lambda: (owner.quick_status() or {}).get("nickname") == "carol2", 30, what="node adopts it")
        assert other.client().lookup("carol2").ip == a
        assert own(owner)["nickname"] == "carol2"

        # Mistakes: one line each, exit 2, nothing published.
        for args, words in ((("update",), "nothing to change"),
                            (("update", "--nickname", "d\u0430ve"), "mixes letters of several scripts"),
                            (("update", "--nickname", "DAVE"), "taken by another key")):
            result = ledger(*args, *mine)
            assert result.returncode == 2 and words in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
        result = ledger("update", "--nickname", "x", "--node", b, "--data-dir", str(data))
        assert result.returncode == 2 and "runs another key" in result.stderr

        # rotate-key: new key beside the old one (0600), rotation mined, files switched, node uses the new key.
        old = Identity.load(data / KEY_FILE)
        result = ledger("rotate-key", *mine)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "a key rotation signed by both keys" in result.stdout and "new key" in result.stdout
        assert "mined in block" in result.stdout
        new = Identity.load(data / KEY_FILE)
        assert new.fingerprint != old.fingerprint and not (data / NEXT_KEY_FILE).exists()
        retired = data / retired_key_file(old.fingerprint)
        assert Identity.load(retired).fingerprint == old.fingerprint
        assert stat.S_IMODE(retired.stat().st_mode) == 0o600 and stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600
        wait_until(lambda: (owner.quick_status() or {}).get("fingerprint") == new.fingerprint.hex(), 30,
                   what="the node to switch to the new key")
        binding = other.client().lookup(a)
        assert binding.fingerprint == new.fingerprint and binding.nickname == "carol2"

        # revoke: asks first; "no" keeps the identity, --yes revokes and the address is free.
        result = ledger("revoke", *mine, stdin="no\n")
        assert result.returncode == 1 and "not revoked" in result.stderr
        assert other.client().find(a) is not None
        result = ledger("revoke", "--yes", *mine)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "a revocation" in result.stdout and "mined in block" in result.stdout
        wait_until(lambda: other.client().find(a) is None, 30, what="the revoked binding to disappear")
        result = ledger("update", "--nickname", "again", *mine)
        assert result.returncode == 2 and "revoked" in result.stderr


def test_the_commands_say_what_to_do_without_a_running_node(tmp_path):
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    make_identities(1)[0].save(data / KEY_FILE)
    result = run_ledger("update", "--nickname", "x", "--node", f"{free_loopback_ip()}:9", "--data-dir", str(data))
    assert result.returncode == 2 and "is a ledger node running there?" in result.stderr
    result = run_ledger("rotate-key", "--data-dir", str(tmp_path / "empty"), "--node", f"{free_loopback_ip()}:9")
    assert result.returncode == 2 and "no identity key" in result.stderr


def test_a_confusable_nickname_is_refused_and_a_clash_leaves_the_address_bound(tmp_path):
    a, b = free_loopback_ip(), free_loopback_ip()
    result = run_ledger("serve", "--host", a, "--data-dir", str(tmp_path / "x"), "--nickname", "\u0441arol")
    assert result.returncode == 2 and "mixes letters of several scripts (Cyrillic, Latin)" in result.stderr
    with Cluster(tmp_path, make_identities(2)) as cluster:
        carol = cluster.serve(a, "--nickname", "carol")
        carol.wait_ready()
        wait_until(lambda: own(carol).get("state") == "mined", 60, what="carol's registration")
        rival = cluster.join(b, a, extra=("--nickname", "\u1d04arol"))   # small capital c
        rival.wait_ready()
        status = wait_until(lambda: (s := rival.quick_status()) and s.get("nickname_problem") and s, 60,
                            what="the clash reported")
        assert "is taken by another key" in status["nickname_problem"]
        binding = wait_until(lambda: carol.client().find(b), 60, what="the rival's address binding")
        assert binding.nickname == "" and binding.ip == b
        assert carol.client().lookup("CAROL").ip == a
        result = run_ledger("status", "--node", b)
        assert "nickname" in result.stdout and "ledger update --nickname" in result.stdout
