"""Issue 15's history, end to end with real processes: two hosts chat through `p2pchat listen` and `p2pchat chat`
with a passphrase, both exit, and afterwards `p2pchat history` prints the conversation on each side, while no file
of either data directory (the public ledger copy aside) holds a word said, the peer's nickname or address."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pchat.vault import Vault
from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, ledger_network
from tests.integration.procs import ROOT, Cluster

pytestmark = pytest.mark.slow

PASSPHRASE = "integration passphrase"
LEDGER_FILES = ("ledger",)        # the ledger copy: public records of everyone, not whom you talked to


def history(data_dir, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pchat", "history", *args, "--data-dir", str(data_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_chat_is_kept_encrypted_and_shown_again_after_both_processes_exit(tmp_path, monkeypatch):
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", PASSPHRASE)
    a, b = free_loopback_ip(), free_loopback_ip()
    ids = make_identities(2)
    with Cluster(tmp_path, list(ids)) as cluster:
        ledger_network(cluster, [a, b])
        dirs = {a: cluster.data_dir(a), b: cluster.data_dir(b)}
        for d in dirs.values():
            Vault.open(d, PASSPHRASE, scrypt_n=1 << 12)     # the record a first run makes, at a test's cost
        listen = ChatProcess("listen", "--host", a, "--accept-all", "--once", "--nickname", "lighthouse-keeper",
                             "--data-dir", str(dirs[a]))
        chat = None
        try:
            listen.wait_for("Waiting for chats")
            chat = ChatProcess("chat", a, "--host", b, "--nickname", "ferry-captain", "--data-dir", str(dirs[b]))
            chat.write("the albatross lands at dawn")
            listen.choose_chat()
            listen.write("Albatross seen, over")
            listen.wait_for("the albatross lands at dawn")
            chat.wait_for("Albatross seen, over")
            chat.close_input()
            assert chat.wait_exit() == 0, chat.output()
            assert listen.wait_exit() == 0, listen.output()
        finally:
            listen.stop()
            if chat is not None:
                chat.stop()

        nick = {host: cluster.procs[n].lookup(host)["nickname"] for n, host in enumerate((a, b))}
        shown_b = history(dirs[b], ids[0].fingerprint.hex()[:8])      # a contact, by its fingerprint's start
        assert shown_b.returncode == 0, shown_b.stderr
        assert "you: the albatross lands at dawn" in shown_b.stdout
        assert f"{nick[a]}: Albatross seen, over" in shown_b.stdout
        listing_a = history(dirs[a])
        assert listing_a.returncode == 0 and nick[b] in listing_a.stdout, listing_a.stderr
        found = history(dirs[a], "--search", "ALBATROSS")
        assert found.stdout.count(f"{nick[b]} · ") == 2, found.stdout

        monkeypatch.setenv("P2PCHAT_PASSPHRASE", "not the passphrase")
        refused = history(dirs[a])
        assert refused.returncode == 1 and "wrong passphrase" in refused.stderr and "Traceback" not in refused.stderr

        for host, d in dirs.items():
            other = b if host == a else a
            for path in d.rglob("*"):
                if not path.is_file() or path.name.startswith(LEDGER_FILES):
                    continue
                data = path.read_bytes().lower()
                for needle in (b"albatross", b"lighthouse-keeper", b"ferry-captain", nick[other].encode(),
                               other.encode(), ids[0 if other == a else 1].fingerprint.hex().encode()):
                    assert needle not in data, (path, needle)
