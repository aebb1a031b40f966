import pytest

from p2pchat.foundation import crypto
from p2pchat.foundation.errors import CryptoError


def test_signature_does_not_verify_under_another_context(identities):
    a = identities[0]
    sig = a.sign("ledger-record", b"data")
    crypto.verify(a.public_der, "ledger-record", b"data", sig)
    with pytest.raises(CryptoError):
        crypto.verify(a.public_der, "handshake-auth", b"data", sig)
    with pytest.raises(CryptoError):
        crypto.verify(identities[1].public_der, "ledger-record", b"data", sig)


def test_load_public_refuses_small_and_private_keys():
    from Crypto.PublicKey import RSA
    small = RSA.generate(1024)
    with pytest.raises(CryptoError, match="1024 bits is refused"):
        crypto.load_public(small.public_key().export_key(format="DER"))
    with pytest.raises(CryptoError, match="private key"):
        crypto.load_public(small.export_key(format="DER"))
    with pytest.raises(CryptoError, match="not a valid RSA key"):
        crypto.load_public(b"garbage")


def test_x25519_agreement_matches_and_refuses_bad_points():
    a, b = crypto.EphemeralKey(), crypto.EphemeralKey()
    assert a.agree(b.public) == b.agree(a.public)
    with pytest.raises(CryptoError):
        a.agree(b"\x00" * 32)
    with pytest.raises(CryptoError):
        a.agree(b"short")
    a.erase()
    with pytest.raises(RuntimeError):
        a.agree(b.public)


def test_gcm_detects_any_change_to_ciphertext_or_header():
    key, nonce = crypto.random_bytes(32), crypto.random_bytes(12)
    sealed = crypto.seal(key, nonce, b"hello", b"hdr")
    assert crypto.open_sealed(key, nonce, sealed, b"hdr") == b"hello"
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    for args in [(flipped, b"hdr"), (sealed, b"hdX"), (sealed[:-1], b"hdr")]:
        with pytest.raises(CryptoError):
            crypto.open_sealed(key, nonce, *args)


def test_hkdf_gives_distinct_keys_per_info():
    k1 = crypto.hkdf(b"s" * 32, b"salt", b"a")[0]
    k2 = crypto.hkdf(b"s" * 32, b"salt", b"b")[0]
    assert len(k1) == 32 and k1 != k2
    assert len(crypto.hkdf(b"s" * 32, b"salt", b"a", count=3)) == 3


def test_fingerprint_is_formatted_in_groups(identities):
    text = crypto.format_fingerprint(identities[0].fingerprint)
    assert len(text.split()) == 8 and all(len(g) == 4 for g in text.split())
