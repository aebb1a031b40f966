"""The chat node keeps every text of a chat past step 4 in the data directory's history, per peer key, with its
delivery status; with a passphrase nothing said can be read in the files (issue 15)."""

from __future__ import annotations

from pathlib import Path

from p2pchat.contacts import ContactStore
from p2pchat.events import DeliveryReceipt, MessageReceived
from p2pchat.history import HistoryStore
from p2pchat.peer_directory import FixedDirectory
from p2pchat.vault import Vault
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until
from tests.p2pchat.node_kit import connect_all, make_peer

FAST = 1 << 12


def test_texts_both_ways_are_kept_per_peer_key_and_receipts_mark_them_delivered(tmp_path, identities):
    alice_id, bob_id = identities[:2]
    dirs = {name: tmp_path / name for name in ("alice", "bob")}
    for d in dirs.values():
        d.mkdir()
    vaults = {name: Vault.open(d, f"{name}'s passphrase", scrypt_n=FAST) for name, d in dirs.items()}
    directory = FixedDirectory()
    contacts = {name: ContactStore.in_data_dir(d, vaults[name]) for name, d in dirs.items()}
    alice = make_peer(alice_id, "alice-wonder", directory, ip=free_loopback_ip(), data_dir=dirs["alice"],
                      vault=vaults["alice"], contacts=contacts["alice"])
    bob = make_peer(bob_id, "bob-builder", directory, ip=free_loopback_ip(), data_dir=dirs["bob"],
                    vault=vaults["bob"], contacts=contacts["bob"], auto_accept=True)
    try:
        sid, bob_sid = connect_all(alice, bob)
        first = alice.node.send_text(sid, "the quokka smiles at noon")
        bob.log.wait(MessageReceived, text="the quokka smiles at noon")
        alice.log.wait(DeliveryReceipt, session=sid, msg_id=first)
        bob.node.send_text(bob_sid, "Quokka noted")
        alice.log.wait(MessageReceived, text="Quokka noted")
        assert alice.node.history is not None
        history = alice.node.history

        def kept() -> list[tuple[str, str, str]] | None:
            got = [(m.direction, m.text, m.status) for m in history.messages(bob_id.fingerprint.hex())]
            return got if len(got) == 2 and got[0][2] == "delivered" else None
        assert wait_until(kept, 10, what="alice's history") == [
            ("out", "the quokka smiles at noon", "delivered"), ("in", "Quokka noted", "delivered")]
    finally:
        alice.node.close()
        bob.node.close()
    # with a passphrase, no file of either data directory holds a word said, a nickname, an address or a key
    needles = [b"quokka", b"alice-wonder", b"bob-builder", alice.ip.encode(), bob.ip.encode()]
    for ident in (alice_id, bob_id):
        needles += [ident.fingerprint, ident.fingerprint.hex().encode(), ident.public_der]
    for d in dirs.values():
        for path in d.iterdir():
            data = path.read_bytes().lower()
            assert [n for n in needles if n.lower() in data] == [], path
    alice_contacts = ContactStore.in_data_dir(dirs["alice"], Vault.open(dirs["alice"], "alice's passphrase"))
    try:
        assert alice_contacts.pinned_for("nick", "bob-builder").fp == bob_id.fingerprint.hex()
    finally:
        alice_contacts.close()
    bob_history = HistoryStore.in_data_dir(dirs["bob"], Vault.open(dirs["bob"], "bob's passphrase"))
    try:
        (conv,) = bob_history.conversations()
        assert (conv.fp, conv.last_text, conv.unread, conv.count) == (alice_id.fingerprint.hex(), "Quokka noted", 1, 2)
        assert [m.text for m in bob_history.search("QUOKKA")] == ["Quokka noted", "the quokka smiles at noon"]
    finally:
        bob_history.close()


def test_a_node_without_a_data_directory_keeps_no_history(identities):
    node_peer = make_peer(identities[0], "alice", FixedDirectory(), ip=free_loopback_ip())
    try:
        assert node_peer.node.history is None
    finally:
        node_peer.node.close()


def test_a_node_refuses_to_start_on_a_protected_directory_without_the_passphrase(tmp_path: Path, identities):
    import pytest

    from p2pchat.vault import PassphraseNeeded

    Vault.open(tmp_path, "secret", scrypt_n=FAST)
    with pytest.raises(PassphraseNeeded):
        make_peer(identities[0], "alice", FixedDirectory(), ip=free_loopback_ip(), data_dir=tmp_path)
