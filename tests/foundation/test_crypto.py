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
    with pytest.raises(CryptoError, match="not a valid RSA key"):
        crypto.load_public(small.export_key(format="DER"))
    with pytest.raises(CryptoError, match="not a valid RSA key"):
        crypto.load_public(b"garbage")


def test_strict_key_parse_gives_exactly_what_pycryptodome_exports(identities):
    for ident in identities[:3]:
        key = crypto.load_public(ident.public_der)
        assert (key.n, key.e) == (ident.public_key.n, ident.public_key.e)
        assert crypto.spki_der(key.n, key.e) == ident.public_der == key.export_key(format="DER")


def test_strict_key_parse_refuses_every_non_canonical_or_foreign_form(identities):
    der = identities[0].public_der
    pub = identities[0].public_key
    n_body = pub.n.to_bytes(385, "big")  # with its sign byte
    variants = {
        "trailing byte": der + b"\x00",
        "truncated": der[:-1],
        "PKCS#1 RSAPublicKey": der[24:],
        "PEM": pub.export_key(format="PEM"),
        "private key": identities[0]._key.export_key(format="DER"),
        "long-form length of a short value": der.replace(b"\x02\x03\x01\x00\x01", b"\x02\x81\x03\x01\x00\x01"),
        "integer with a redundant zero": der.replace(b"\x02\x82\x01\x81" + n_body, b"\x02\x82\x01\x82\x00" + n_body),
        "other algorithm": der.replace(bytes.fromhex("2a864886f70d010101"), bytes.fromhex("2a864886f70d01010a")),
        "empty": b"",
    }
    for name, blob in variants.items():
        assert blob != der, name
        with pytest.raises(CryptoError):
            crypto.load_public(blob)
    with pytest.raises(CryptoError, match="65537"):
        crypto.load_public(crypto.spki_der(pub.n, 3))
    with pytest.raises(CryptoError, match="even modulus"):
        crypto.load_public(crypto.spki_der(pub.n + 1, 65537))


def test_signatures_made_with_the_hashlib_mgf1_verify_with_pycryptodomes_own(identities):
    from Crypto.Hash import SHA256
    from Crypto.Signature import pss
    a = identities[0]
    sig = a.sign("ledger-record", b"data")
    message = SHA256.new(crypto.DOMAIN + b"ledger-record\x00data")
    pss.new(a.public_key).verify(message, sig)
    standard = pss.new(a._key).sign(message)
    crypto.verify(a.public_der, "ledger-record", b"data", standard)


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


def test_sealing_into_a_buffer_gives_the_same_bytes_and_checks_its_length():
    key, nonce, aad = bytes(32), bytes(12), b"aad"
    plain = bytes(range(256)) * 1000
    out = bytearray(len(plain) + crypto.GCM_TAG_LEN + 3)
    crypto.seal_into(key, nonce, [plain[:5], plain[5:70_001], plain[70_001:]], aad, memoryview(out)[3:])
    assert bytes(out[3:]) == crypto.seal(key, nonce, plain, aad)
    assert crypto.open_sealed(key, nonce, bytes(out[3:]), aad) == plain
    with pytest.raises(ValueError):
        crypto.seal_into(key, nonce, [plain], aad, memoryview(out))


def test_opening_in_place_gives_the_plaintext_where_the_ciphertext_was_and_refuses_any_change():
    key, nonce, aad = crypto.random_bytes(32), crypto.random_bytes(12), b"hdr"
    plain = bytes(range(256)) * 4097
    sealed = crypto.seal(key, nonce, plain, aad)
    buffer = bytearray(b"head" + sealed)
    opened = crypto.open_in_place(key, nonce, memoryview(buffer)[4:], aad)
    assert opened == plain and opened.obj is buffer and buffer[4:4 + len(plain)] == plain
    for changed, header in [(bytes([sealed[0] ^ 1]) + sealed[1:], aad), (sealed, b"hdX"), (sealed[:15], aad)]:
        with pytest.raises(CryptoError):
            crypto.open_in_place(key, nonce, memoryview(bytearray(changed)), header)
