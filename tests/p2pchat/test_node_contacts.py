"""The chat node's step-2 pin check on both sides, with real sockets and real contact stores: a key that replaced a
pinned one without proof stops step 2 for the caller and for the callee, nothing is pinned by a failed handshake,
and an accepted key goes on with a notice."""

from __future__ import annotations

from pathlib import Path

from p2pchat.contacts import ContactStore
from p2pchat.events import Notice, StepResult
from p2pchat.peer_directory import FixedDirectory
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.p2pchat.node_kit import Peer, connect_all, entry, make_peer


def start(identity, nickname: str, data_dir: Path, directory: FixedDirectory, ip: str, **kw) -> Peer:
    data_dir.mkdir(exist_ok=True)
    return make_peer(identity, nickname, directory, ip=ip, data_dir=data_dir, **kw)


def pinned(data_dir: Path, ip: str) -> str | None:
    store = ContactStore.in_data_dir(data_dir)
    try:
        contact = store.pinned_for("ip", ip)
        return contact.fp if contact is not None else None
    finally:
        store.close()


def test_a_replaced_key_stops_step_2_for_the_caller_until_accepted(tmp_path, identities, loopback_ip):
    alice_id, bob_id, mallory_id = identities[:3]
    bob_ip = loopback_ip
    alice_ip = free_loopback_ip()
    d1 = FixedDirectory()
    alice = start(alice_id, "alice", tmp_path / "alice", d1, alice_ip)
    bob = start(bob_id, "bob", tmp_path / "bob", d1, bob_ip, auto_accept=True)
    try:
        sid, _ = connect_all(alice, bob)
        assert alice.node.verify_contact(sid) == bob_id.fingerprint.hex()
    finally:
        alice.node.close()
        bob.node.close()
    assert pinned(tmp_path / "alice", bob_ip) == bob_id.fingerprint.hex()
    assert pinned(tmp_path / "bob", alice_ip) == alice_id.fingerprint.hex()

    # mallory now holds bob's address in the ledger, with another key and no rotation
    d2 = FixedDirectory([entry(alice_id, "alice", alice_ip)])
    mallory = start(mallory_id, "bob", tmp_path / "mallory", d2, bob_ip, auto_accept=True)
    alice = start(alice_id, "alice", tmp_path / "alice", d2, alice_ip, register=False)
    try:
        sid = alice.node.open_session(f"{bob_ip}:{mallory.node.port}")
        alice.node.run_all(sid)
        failed = alice.log.wait(StepResult, session=sid, step=Step.SWAP_KEYS, ok=False)
        assert "HAS CHANGED" in failed.detail and "VERIFIED" in failed.detail and "hard stop" in failed.detail
        told = mallory.log.wait(StepResult, ok=False)
        assert "did not accept the key" in told.detail
        assert not alice.log.all(StepResult, step=Step.AUTHENTICATE)
        assert pinned(tmp_path / "alice", bob_ip) == bob_id.fingerprint.hex()       # the pin did not move
        assert pinned(tmp_path / "mallory", alice_ip) is None                      # nor did mallory get one

        alice.node.accept_new_key(mallory_id.fingerprint.hex(), override_verified=True)
        sid = alice.node.open_session(f"{bob_ip}:{mallory.node.port}")
        alice.node.run_all(sid)
        alice.log.wait(StepResult, session=sid, step=Step.AGREE_KEY, ok=True)
        notice = alice.log.wait(Notice, session=sid, kind="key-change")
        assert "you accepted the new key" in notice.text
    finally:
        alice.node.close()
        mallory.node.close()
    assert pinned(tmp_path / "alice", bob_ip) == mallory_id.fingerprint.hex()
    store = ContactStore.in_data_dir(tmp_path / "alice")
    try:
        assert [d.decision for d in store.decisions(mallory_id.fingerprint.hex())] == ["accepted"]
        assert not store.get(mallory_id.fingerprint).verified
    finally:
        store.close()


def test_the_callee_checks_the_callers_key_against_its_pin_too(tmp_path, identities, loopback_ip):
    alice_id, bob_id, mallory_id = identities[:3]
    alice_ip, bob_ip = loopback_ip, free_loopback_ip()
    d1 = FixedDirectory()
    alice = start(alice_id, "alice", tmp_path / "alice", d1, alice_ip)
    bob = start(bob_id, "bob", tmp_path / "bob", d1, bob_ip, auto_accept=True)
    try:
        connect_all(alice, bob)
    finally:
        alice.node.close()
        bob.node.close()
    d2 = FixedDirectory([entry(mallory_id, "alice", alice_ip)])   # mallory's key at alice's address
    bob = start(bob_id, "bob", tmp_path / "bob", d2, bob_ip, auto_accept=True)
    mallory = start(mallory_id, "alice", tmp_path / "mallory", d2, alice_ip, register=False)
    try:
        sid = mallory.node.open_session(f"{bob_ip}:{bob.node.port}")
        mallory.node.run_all(sid)
        failed = bob.log.wait(StepResult, step=Step.SWAP_KEYS, ok=False)
        assert "HAS CHANGED" in failed.detail and alice_ip in failed.detail and "VERIFIED" not in failed.detail
        mallory.log.wait(StepResult, session=sid, ok=False)
    finally:
        bob.node.close()
        mallory.node.close()
    assert pinned(tmp_path / "bob", alice_ip) == alice_id.fingerprint.hex()
