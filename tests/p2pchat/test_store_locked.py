"""[redstate] A store another process keeps locked (a long transaction, a tool holding it open): the write waits
for the busy timeout, then is refused in plain words, and nothing is changed; once the other lets go it works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2pchat import store_file
from p2pchat.contacts import ContactStore, ContactStoreError
from p2pchat.vault import Vault
from tests.conftest import make_identities
from tests.helpers import wait_until

HOLDER = ("import sqlite3, sys\n"
          "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
          "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline()\n")


def test_a_store_locked_by_another_process_is_refused_in_plain_words_and_left_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(store_file, "BUSY_TIMEOUT_MS", 300)
    peer = make_identities(2)[1]
    store = ContactStore.in_data_dir(tmp_path, Vault.open(tmp_path, None))
    store.record_chat(peer.public_der, peer.fingerprint, nickname="bob", ip="127.0.0.3", address="127.0.0.3:8471")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        wait_until(lambda: holder.stdout.readline().strip() == "locked", timeout=10)  # type: ignore[union-attr]
        with pytest.raises(ContactStoreError, match=r"is busy: another process kept it locked .* nothing was changed"):
            store.rename(peer.fingerprint.hex(), "carol")
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=10)
    store.rename(peer.fingerprint.hex(), "carol")
    assert [c.local_name for c in store.all()] == ["carol"]
    store.close()
