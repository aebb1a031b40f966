"""Key files of a rotation and the records of the own-record commands (no network: see
tests/integration/test_ledger_own_commands.py for the commands against a running node)."""

import stat

import pytest
from ledger_kit import PARAMS

from ledger.own_record import (
    NEXT_KEY_FILE,
    OwnRecordError,
    build_rotation,
    build_update,
    next_key,
    own_record,
    retired_key_file,
    switch_to_rotated_key,
)
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import make_identities


def status_for(identity, **own):
    base = {"id": "11" * 32, "seq": 3, "kind": "register", "nickname": "carol", "ip": "10.0.0.1", "port": 8471,
            "ledger_port": 8470, "relay": None, "state": "mined"}
    return {"fingerprint": identity.fingerprint.hex(), "address": "10.0.0.1:8470", "own_record": {**base, **own}}


def test_the_switch_happens_once_keeps_the_old_key_and_refuses_a_foreign_next_key(tmp_path):
    old, new, other = make_identities(3)
    old.save(tmp_path / KEY_FILE)
    assert switch_to_rotated_key(tmp_path, new.fingerprint, None) is None      # no next key yet: nothing moves
    other.save(tmp_path / NEXT_KEY_FILE)
    assert switch_to_rotated_key(tmp_path, new.fingerprint, None) is None      # not the key rotated to
    assert Identity.load(tmp_path / KEY_FILE).fingerprint == old.fingerprint
    new.save(tmp_path / NEXT_KEY_FILE)
    for _ in range(2):                                                           # idempotent
        assert switch_to_rotated_key(tmp_path, new.fingerprint, None).fingerprint == new.fingerprint
    retired = tmp_path / retired_key_file(old.fingerprint)
    assert Identity.load(retired).fingerprint == old.fingerprint
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600 and not (tmp_path / NEXT_KEY_FILE).exists()


def test_an_unfinished_rotation_reuses_its_new_key(tmp_path):
    old, new = make_identities(2)
    new.save(tmp_path / NEXT_KEY_FILE)
    own = own_record(status_for(old), old)
    assert next_key(tmp_path, None, own).fingerprint == new.fingerprint
    rotation = build_rotation(old, new, own, PARAMS, 1_700_000_000)
    assert rotation.kind == "rotate" and rotation.seq == 4 and rotation.prev == bytes.fromhex("11" * 32)
    assert rotation.nickname == "carol" and rotation.ip == "10.0.0.1" and rotation.holder_key == new.public_der
    rotation.verify_signatures(PARAMS.name)


def test_the_records_build_on_the_latest_one_and_refuse_what_cannot_be_done():
    me, other = make_identities(2)
    own = own_record(status_for(me), me)
    update = build_update(me, own, PARAMS, 1_700_000_000, nickname="")
    assert update.nickname == "" and update.ip == "10.0.0.1" and update.seq == 4
    with pytest.raises(OwnRecordError, match="nothing to change"):
        build_update(me, own, PARAMS, 1_700_000_000)
    with pytest.raises(OwnRecordError, match="runs another key"):
        own_record(status_for(other), me)
    with pytest.raises(OwnRecordError, match="revoked"):
        own_record(status_for(me, kind="revoke"), me)
    with pytest.raises(OwnRecordError, match="no record in the ledger yet"):
        own_record({**status_for(me), "own_record": None}, me)
