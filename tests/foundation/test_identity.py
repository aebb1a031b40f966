import os
import stat

import pytest

from p2pchat.foundation.errors import IdentityError
from p2pchat.foundation.identity import KEY_FILE, Identity


def test_key_is_created_once_with_mode_0600_and_reloaded(tmp_path):
    first = Identity.load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert b"BEGIN PRIVATE KEY" in (tmp_path / KEY_FILE).read_bytes()  # PKCS#8
    assert Identity.load_or_create(tmp_path).fingerprint == first.fingerprint


def test_passphrase_protected_key_needs_the_right_passphrase(tmp_path, identities):
    path = tmp_path / KEY_FILE
    identities[0].save(path, passphrase="correct horse")
    assert Identity.load(path, "correct horse").fingerprint == identities[0].fingerprint
    with pytest.raises(IdentityError, match="wrong passphrase"):
        Identity.load(path, "wrong")
    with pytest.raises(IdentityError, match="protected by a passphrase"):
        Identity.load(path)


def test_key_readable_by_others_is_refused_with_the_fix(tmp_path, identities):
    path = tmp_path / KEY_FILE
    identities[0].save(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)


def test_corrupt_key_file_gives_a_clear_error(tmp_path):
    path = tmp_path / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(IdentityError, match="not a readable RSA private key"):
        Identity.load(path)


def test_repr_never_shows_private_material(identities):
    text = repr(identities[0]) + str(identities[0])
    assert "PRIVATE" not in text and str(identities[0]._key.d) not in text
