"""``p2pchat group``: a group made without a running node goes out when the node runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.cli import main
from p2pchat.contacts import ContactStore
from p2pchat.events import GroupNotice
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.peer_directory import FixedDirectory
from p2pchat.vault import Vault
from tests.p2pchat.node_kit import make_peer

FAST = 2**10


def test_a_group_created_offline_reaches_its_member_when_the_node_runs(
        tmp_path: Path, identities: list[Identity], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = identities[:2]
    d = tmp_path / "alice"
    d.mkdir()
    monkeypatch.setenv("P2PCHAT_PASSPHRASE", "pw")
    vault = Vault.open(d, "pw", scrypt_n=FAST)
    alice.save(d / KEY_FILE, "pw")
    contacts = ContactStore.in_data_dir(d, vault)
    contacts.record_chat(bob.public_der, bob.fingerprint, nickname="bob", ip=None, address=None)
    contacts.close()

    assert main(["group", "create", "club", "bob", "--data-dir", str(d)]) == 0
    assert main(["group", "list", "--data-dir", str(d)]) == 0
    assert main(["group", "add", "club", "nobody-known", "--data-dir", str(d)]) != 0
    out, err = capsys.readouterr()
    assert "Group club created" in out and "club: " in out and "bob" in out
    assert "nobody-known" in err

    directory = FixedDirectory()
    (tmp_path / "bob").mkdir()
    b = make_peer(bob, "bob", directory, data_dir=tmp_path / "bob", outbox=True, auto_accept=True)
    a = make_peer(alice, "alice", directory, data_dir=d, outbox=True, vault=Vault.open(d, "pw"))
    try:
        b.log.wait(GroupNotice, 20, text="you were added to 'club' (2 members)")
    finally:
        a.node.close()
        b.node.close()
