"""The data directory's at-rest key: passphrase record, wrong passphrases, sealing and index tags (issue 15)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from p2pchat.foundation.errors import CryptoError, UsageError
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.vault import FILE_NAME, PassphraseNeeded, Vault, VaultError, WrongPassphrase

FAST = 1 << 12     # a cheap scrypt for tests; real records use SCRYPT_N


def test_a_passphrase_makes_a_private_record_and_the_same_passphrase_opens_it(tmp_path):
    v = Vault.open(tmp_path, "correct horse", scrypt_n=FAST)
    assert v.encrypted
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(path.read_text())
    assert record["protection"] == "scrypt" and record["scrypt"] == {"n": FAST, "r": 8, "p": 1}
    assert "correct horse" not in path.read_text()
    again = Vault.open(tmp_path, "correct horse")
    blob = v.seal(b"row 1", b"secret words")
    assert again.open_sealed(b"row 1", blob) == b"secret words"
    assert again.index_tag("carol") == v.index_tag("carol") != v.index_tag("dave")
    assert again.key_check == v.key_check != b""


def test_a_wrong_or_missing_passphrase_is_refused_plainly(tmp_path):
    Vault.open(tmp_path, "right", scrypt_n=FAST)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Vault.open(tmp_path, "wrong")
    with pytest.raises(PassphraseNeeded, match="--passphrase-file"):
        Vault.open(tmp_path, None)
    assert issubclass(WrongPassphrase, UsageError) and issubclass(PassphraseNeeded, UsageError)


def test_a_sealed_entry_is_bound_to_its_associated_data_and_detects_changes(tmp_path):
    v = Vault.open(tmp_path, "pw", scrypt_n=FAST)
    blob = v.seal(b"peer A row 1", b"hello")
    assert b"hello" not in blob and blob != v.seal(b"peer A row 1", b"hello")   # a fresh nonce every time
    with pytest.raises(CryptoError):
        v.open_sealed(b"peer B row 1", blob)
    altered = bytearray(blob)
    altered[-1] ^= 1
    with pytest.raises(CryptoError):
        v.open_sealed(b"peer A row 1", bytes(altered))
    with pytest.raises(CryptoError):
        v.open_sealed(b"peer A row 1", b"\x01short")


def test_without_a_passphrase_nothing_is_encrypted_and_nothing_is_written(tmp_path):
    v = Vault.open(tmp_path, None)
    assert not v.encrypted and v.key_check == b""
    assert v.seal(b"aad", b"text") == b"text" and v.index_tag("carol") == b"carol"
    assert not (tmp_path / FILE_NAME).exists() and not Vault.asked(tmp_path)
    Vault.remember_no_passphrase(tmp_path)
    assert Vault.asked(tmp_path) and not Vault.open(tmp_path, None).encrypted


def test_a_passphrase_given_later_protects_the_directory_and_its_plain_identity_key(tmp_path, identities):
    identities[0].save(tmp_path / KEY_FILE)
    Vault.remember_no_passphrase(tmp_path)
    v = Vault.open(tmp_path, "later", scrypt_n=FAST)
    assert v.encrypted
    assert b"ENCRYPTED" in (tmp_path / KEY_FILE).read_bytes()
    Identity.load(tmp_path / KEY_FILE, "later")
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("content, words", [
    (b"{not json", "is damaged"),
    (json.dumps({"format": 9, "protection": "scrypt"}).encode(), "newer p2pchat"),
    (json.dumps({"format": 1, "protection": "scrypt", "scrypt": {"n": 1 << 30, "r": 8, "p": 1},
                 "salt": "00" * 16, "check": "00" * 32}).encode(), "bad scrypt parameters"),
    (json.dumps({"format": 1, "protection": "rot13"}).encode(), "is damaged"),
])
def test_a_damaged_or_newer_record_is_refused_and_left_alone(tmp_path, content, words):
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(VaultError, match=words):
        Vault.open(tmp_path, "pw")
    assert (tmp_path / FILE_NAME).read_bytes() == content


def test_a_first_passphrase_must_open_an_identity_key_that_is_protected_already(tmp_path, identities):
    identities[0].save(tmp_path / KEY_FILE, "old key passphrase")
    with pytest.raises(WrongPassphrase, match="identity key"):
        Vault.open(tmp_path, "something else", scrypt_n=FAST)
    assert not (tmp_path / FILE_NAME).exists()
    assert Vault.open(tmp_path, "old key passphrase", scrypt_n=FAST).encrypted


def test_the_vectors_of_docs_history_md_hold():
    from p2pchat import vault
    from p2pchat.foundation import crypto
    from p2pchat.history import message_aad

    salt = bytes(range(16))
    assert crypto.scrypt(b"correct horse battery staple", salt, n=4096, r=8, p=1).hex() == (
        "d2400971930332823a34756e83e986c8ac26765b8b5fd2aaa6e6c7f0e2f179cb")
    keys = vault._derive("correct horse battery staple", salt, {"n": 4096, "r": 8, "p": 1})
    assert [k.hex() for k in keys] == [
        "3a67d897e250ada42a3bae81cc4edafc4c39db30e99bad4d57ad0e84a34ec93b",
        "e6451a88be17ae0c9aba9e6eff2cee9bb3307c7983e127c58046558a6867f9a8",
        "78e5e24a60d93ffa7930f27083e81f5327655ec4c0f3156f4bdd1b00760cee34"]
    v = Vault(Path("."), keys)
    assert v.key_check.hex() == "edfbbf253a88f6939cae742291be4cbac8664b1c871a4f7481d2de3947e135dc"
    assert v.index_tag("fp:" + "ab" * 32).hex() == "d9ecf9b01717e354d94a1ed17e8144f58b732c58bdf341c44fbe3b3d5d31fc30"
    aad = message_aad("ab" * 32, bytes(16), "out")
    assert aad == b"p2pchat/history/1\x00message\x00" + b"ab" * 32 + b"\x00" + bytes(16) + b"\x00out"
    body = b'{"text": "hi", "msg_id": null}'
    sealed = b"\x01" + bytes(12) + crypto.seal(keys[0], bytes(12), body, aad)
    assert sealed.hex() == ("01000000000000000000000000"
                            "82dadb9c2f7aae426891e2923a29e0726d6cb11a7275c824fa75889ea38856393bc3dad0651d1e0abe90f95500ca")
    assert v.open_sealed(aad, sealed) == body


def test_a_plain_key_left_beside_a_passphrase_record_is_protected_at_the_next_open(tmp_path, identities):
    """[redstate] A process stopped (kill -9, a full disk) between writing the passphrase record and saving the
    key again under it left the key plain; the next open with the passphrase finishes the job."""
    Vault.open(tmp_path, "set now", scrypt_n=FAST)          # the record, no key yet
    identities[0].save(tmp_path / KEY_FILE)                  # the key as the stopped process left it: plain
    assert Vault.open(tmp_path, "set now", scrypt_n=FAST).encrypted
    assert b"ENCRYPTED" in (tmp_path / KEY_FILE).read_bytes()
    assert Identity.load(tmp_path / KEY_FILE, "set now").fingerprint == identities[0].fingerprint
    with pytest.raises(WrongPassphrase):
        Vault.open(tmp_path, "another one", scrypt_n=FAST)    # a wrong passphrase touches nothing
    assert Identity.load(tmp_path / KEY_FILE, "set now").fingerprint == identities[0].fingerprint


def test_a_directory_or_a_link_to_nothing_in_place_of_the_record_is_refused_and_left(tmp_path):
    (tmp_path / FILE_NAME).mkdir()
    with pytest.raises(VaultError, match="is a directory"):
        Vault.open(tmp_path, "pw", scrypt_n=FAST)
    (tmp_path / FILE_NAME).rmdir()
    (tmp_path / FILE_NAME).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(VaultError, match="does not exist"):
        Vault.open(tmp_path, None)
    assert (tmp_path / FILE_NAME).is_symlink() and not (tmp_path / "elsewhere.json").exists()
