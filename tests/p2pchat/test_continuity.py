"""Key continuity at step 2 (p2pchat/continuity.py) against a real contact store and real ledger records."""

from __future__ import annotations

import pytest

from ledger.client import VerifiedBinding
from ledger.records import ZERO_HASH, make_register, make_rotation
from p2pchat.contacts import ContactStore
from p2pchat.continuity import ACCEPT_FLAG, OVERRIDE_FLAG, Changed, KeyContinuity, Refused, Unchanged
from p2pchat.foundation.errors import UsageError
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory

CAROL_IP = "127.0.0.5"


@pytest.fixture
def world(tmp_path, identities):
    store = ContactStore.in_data_dir(tmp_path)
    directory = FixedDirectory()
    yield store, directory, KeyContinuity(store, directory), identities
    store.close()


def pin(continuity: KeyContinuity, der: bytes, nickname: str = "carol", ip: str = CAROL_IP) -> None:
    continuity.record(der, nickname, ip, 8471, None)


def test_a_peer_met_for_the_first_time_or_with_the_same_key_goes_on(world):
    _store, _directory, continuity, ids = world
    carol = DirectoryEntry(ids[0].public_der, "carol", CAROL_IP, 8471, height=3)
    assert continuity.check(CAROL_IP, "ip", carol) == Unchanged()
    pin(continuity, ids[0].public_der)
    assert continuity.check(CAROL_IP, "ip", carol) == Unchanged()
    assert continuity.check("carol", None, carol) == Unchanged()


def test_an_unexplained_key_change_is_refused_with_what_was_expected_and_what_to_do(world):
    _store, _directory, continuity, ids = world
    pin(continuity, ids[0].public_der)
    impostor = DirectoryEntry(ids[1].public_der, "carol", CAROL_IP, 8471, height=42, confirmations=7)
    for query, by in ((CAROL_IP, "ip"), ("carol", None)):
        verdict = continuity.check(query, by, impostor)
        assert isinstance(verdict, Refused) and not verdict.hard
        text = verdict.reason
        assert "THE KEY FOR" in text and "HAS CHANGED" in text and "nothing was signed" in text
        assert ids[0].short_fingerprint[:9] in text                 # expected
        assert ids[1].short_fingerprint[:9] in text and "block 42" in text   # what the ledger says now
        assert "reinstalled or lost" in text and "rewrote the ledger" in text
        assert f"{ACCEPT_FLAG} {ids[1].fingerprint.hex()}" in text and OVERRIDE_FLAG not in text


def test_a_verified_contacts_change_is_a_hard_stop_that_the_accept_flag_alone_does_not_lift(world):
    store, _directory, continuity, ids = world
    pin(continuity, ids[0].public_der)
    store.set_verified(ids[0].fingerprint.hex(), True)
    impostor = DirectoryEntry(ids[1].public_der, "carol", CAROL_IP, 8471)
    verdict = continuity.check(CAROL_IP, "ip", impostor)
    assert isinstance(verdict, Refused) and verdict.hard and "VERIFIED" in verdict.reason
    assert OVERRIDE_FLAG in verdict.reason
    continuity.accept_new_key(ids[1].fingerprint.hex())
    verdict = continuity.check(CAROL_IP, "ip", impostor)
    assert isinstance(verdict, Refused) and "without the override" in verdict.reason
    continuity.accept_new_key(ids[1].fingerprint.hex(), override_verified=True)
    verdict = continuity.check(CAROL_IP, "ip", impostor)
    assert isinstance(verdict, Changed) and verdict.change.decision == "accepted"
    assert store.pinned_for("ip", CAROL_IP).fp == ids[0].fingerprint.hex()   # nothing pinned before step 4
    continuity.record(ids[1].public_der, "carol", CAROL_IP, 8471, verdict.change)
    pinned = store.pinned_for("ip", CAROL_IP)
    assert pinned.fp == ids[1].fingerprint.hex() and not pinned.verified
    assert [d.decision for d in store.decisions(ids[1].fingerprint.hex())] == ["accepted"]


def test_an_accepted_key_must_be_given_in_full(world):
    _store, _directory, continuity, ids = world
    with pytest.raises(UsageError, match="full fingerprint"):
        continuity.accept_new_key(ids[1].fingerprint.hex()[:16])


def test_a_rotation_signed_by_the_pinned_key_moves_the_pin_and_keeps_the_verified_mark(world):
    store, _directory, continuity, ids = world
    old, new = ids[0], ids[1]
    pin(continuity, old.public_der)
    store.set_verified(old.fingerprint.hex(), True)
    first = make_register(old, network="p2pchat", seq=0, prev=ZERO_HASH, nickname="carol", ip=CAROL_IP, port=8471,
                          issued=1000, lifetime=86400)
    rotation = make_rotation(old, new, network="p2pchat", seq=1, prev=first.id, nickname="carol", ip=CAROL_IP,
                             port=8471, issued=2000, lifetime=86400)
    binding = VerifiedBinding(record=rotation, public_der=new.public_der, fingerprint=new.fingerprint, ip=CAROL_IP,
                              port=8471, ledger_port=None, nickname="carol", relay=None, issued=2000,
                              expires=2000 + 86400, seq=1, height=9, block_hash=bytes(32), confirmations=2,
                              node="test")
    verdict = continuity.check(CAROL_IP, "ip", binding)
    assert isinstance(verdict, Changed) and verdict.change.decision == "rotated"
    assert "the ledger proves it" in verdict.notice and "block 9" in verdict.notice
    continuity.record(new.public_der, "carol", CAROL_IP, 8471, verdict.change)
    pinned = store.pinned_for("ip", CAROL_IP)
    assert pinned.fp == new.fingerprint.hex() and pinned.verified


def test_a_rotation_signed_by_another_key_proves_nothing(world):
    _store, _directory, continuity, ids = world
    pin(continuity, ids[0].public_der)
    rotation = make_rotation(ids[2], ids[1], network="p2pchat", seq=1, prev=bytes(range(32)), nickname="carol",
                             ip=CAROL_IP, port=8471, issued=2000, lifetime=86400)
    binding = VerifiedBinding(record=rotation, public_der=ids[1].public_der, fingerprint=ids[1].fingerprint,
                              ip=CAROL_IP, port=8471, ledger_port=None, nickname="carol", relay=None, issued=2000,
                              expires=2000 + 86400, seq=1, height=9, block_hash=bytes(32), confirmations=2,
                              node="test")
    assert isinstance(continuity.check(CAROL_IP, "ip", binding), Refused)


def test_an_address_whose_pinned_key_moved_elsewhere_is_a_new_contact_not_an_alarm(world):
    store, directory, continuity, ids = world
    pin(continuity, ids[0].public_der)
    directory.add(DirectoryEntry(ids[0].public_der, "carol", "127.0.0.9", 8471))     # carol's own record moved
    dave = DirectoryEntry(ids[1].public_der, "dave", CAROL_IP, 8471)
    verdict = continuity.check(CAROL_IP, "ip", dave)
    assert isinstance(verdict, Changed) and verdict.change.decision == "moved"
    assert "a new contact" in verdict.notice and "127.0.0.9" in verdict.notice
    continuity.record(ids[1].public_der, "dave", CAROL_IP, 8471, verdict.change)
    assert store.pinned_for("ip", CAROL_IP).fp == ids[1].fingerprint.hex()
    assert store.pinned_for("nick", "carol").fp == ids[0].fingerprint.hex()      # carol is still carol
    assert continuity.check(CAROL_IP, "ip", dave) == Unchanged()


def test_a_name_from_the_ledger_is_shown_escaped(world):
    _store, _directory, continuity, ids = world
    pin(continuity, ids[0].public_der, nickname="carol\x1b[2J")
    verdict = continuity.check(CAROL_IP, "ip", DirectoryEntry(ids[1].public_der, "x\x1b]0;owned\x07", CAROL_IP))
    assert isinstance(verdict, Refused) and "\x1b" not in verdict.reason and "\x07" not in verdict.reason
