"""The one crypto module: every signature, key agreement, KDF and AEAD call of the project goes through here.

All primitives come from pycryptodome; randomness from the OS. Signatures are RSA-PSS-SHA256 over a
domain-separated message (``p2pchat/<context>\\x00<data>``), so a signature made for one purpose (a ledger
record, a handshake transcript, a relay login) never verifies for another.
"""

from __future__ import annotations

import hashlib
import hmac

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC, RSA
from Crypto.Random import get_random_bytes
from Crypto.Signature import pss

from p2pchat.foundation.errors import CryptoError

RSA_BITS = 3072
MIN_RSA_BITS = 3072
MAX_RSA_BITS = 8192
RSA_EXPONENT = 65537
AES_KEY_LEN = 32
GCM_NONCE_LEN = 12
GCM_TAG_LEN = 16
X25519_LEN = 32
DOMAIN = b"p2pchat/"

RsaKey = RSA.RsaKey


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return get_random_bytes(n)


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- RSA identity keys -------------------------------------------------------------------------------

def generate_rsa(bits: int = RSA_BITS) -> RsaKey:
    """A fresh RSA private key (e = 65537)."""
    if bits < MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    return RSA.generate(bits, e=RSA_EXPONENT)


def public_der(key: RsaKey) -> bytes:
    """SubjectPublicKeyInfo DER of a key's public half: the form stored in the ledger and sent on the wire."""
    return key.public_key().export_key(format="DER")


def load_public(der: bytes) -> RsaKey:
    """Parse a DER public key from a peer; refuses private keys, small or odd keys."""
    try:
        key = RSA.import_key(der)
    except (ValueError, IndexError, TypeError):
        raise CryptoError("the public key is not a valid RSA key") from None
    if key.has_private():
        raise CryptoError("a private key was sent where a public key belongs")
    if not MIN_RSA_BITS <= key.size_in_bits() <= MAX_RSA_BITS:
        raise CryptoError(f"RSA key of {key.size_in_bits()} bits is refused "
                          f"(between {MIN_RSA_BITS} and {MAX_RSA_BITS} bits required)")
    if key.e != RSA_EXPONENT:
        raise CryptoError("RSA keys must use the public exponent 65537")
    if key.export_key(format="DER") != der:
        raise CryptoError("the public key is not in canonical DER form")
    return key


def fingerprint(pub_der: bytes) -> bytes:
    """SHA-256 of the DER public key: the identity's fingerprint."""
    return sha256(pub_der)


def format_fingerprint(fp: bytes, groups: int = 8) -> str:
    """Fingerprint as short hex groups for people, e.g. ``3f2a 9c01 …`` (first ``groups`` groups)."""
    text = fp.hex()
    return " ".join(text[i:i + 4] for i in range(0, min(len(text), groups * 4), 4))


def _signed_message(context: str, data: bytes) -> SHA256.SHA256Hash:
    return SHA256.new(DOMAIN + context.encode() + b"\x00" + data)


def sign(key: RsaKey, context: str, data: bytes) -> bytes:
    """RSA-PSS-SHA256 signature of ``data`` under the domain-separation label ``context``."""
    return pss.new(key).sign(_signed_message(context, data))


def verify(public: RsaKey | bytes, context: str, data: bytes, signature: bytes) -> None:
    """Raise :class:`CryptoError` unless ``signature`` is valid for ``data`` under ``context``."""
    key = load_public(public) if isinstance(public, bytes) else public
    try:
        pss.new(key).verify(_signed_message(context, data), signature)
    except (ValueError, TypeError):
        raise CryptoError(f"{context} signature does not verify") from None


def is_valid_signature(public: RsaKey | bytes, context: str, data: bytes, signature: bytes) -> bool:
    try:
        verify(public, context, data, signature)
    except CryptoError:
        return False
    return True


# --- X25519 ephemeral key agreement --------------------------------------------------------------------

class EphemeralKey:
    """An X25519 key pair used once; :meth:`agree` returns the raw shared secret.

    ``private`` (32 raw bytes) fixes the key instead of drawing a fresh one: only for test vectors.
    """

    def __init__(self, private: bytes | None = None) -> None:
        if private is None:
            self._key: ECC.EccKey | None = ECC.generate(curve="curve25519")
        else:
            try:
                self._key = import_x25519_private_key(private)
            except ValueError:
                raise CryptoError("an X25519 private key is 32 bytes") from None
        self.public = self._key.public_key().export_key(format="raw")

    def agree(self, peer_public: bytes) -> bytes:
        if self._key is None:
            raise RuntimeError("ephemeral key already erased")
        if not isinstance(peer_public, bytes) or len(peer_public) != X25519_LEN:
            raise CryptoError("the peer's ephemeral key is not a 32-byte X25519 key")
        try:
            peer = import_x25519_public_key(peer_public)
            secret = key_agreement(static_priv=self._key, static_pub=peer, kdf=lambda z: z)
        except ValueError:
            raise CryptoError("the peer's ephemeral key is invalid") from None
        if not any(secret):
            raise CryptoError("the peer's ephemeral key is a low-order point")
        return secret

    def erase(self) -> None:
        """Drop the private half (forward secrecy)."""
        self._key = None


def hkdf(secret: bytes, salt: bytes, info: bytes, length: int = AES_KEY_LEN, count: int = 1) -> list[bytes]:
    """HKDF-SHA256: ``count`` keys of ``length`` bytes."""
    keys = HKDF(secret, length, salt, SHA256, num_keys=count, context=info)
    if isinstance(keys, bytes):
        return [keys]
    return list(keys)


# --- AES-256-GCM ---------------------------------------------------------------------------------------

def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption; returns ciphertext followed by the 16-byte tag."""
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_LEN)
    cipher.update(aad)
    ct, tag = cipher.encrypt_and_digest(plaintext)
    return ct + tag


def open_sealed(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decryption; raises :class:`CryptoError` if the ciphertext or header was altered."""
    if len(sealed) < GCM_TAG_LEN:
        raise CryptoError("ciphertext is shorter than its authentication tag")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_LEN)
    cipher.update(aad)
    try:   # a view of the ciphertext: a large message is not copied once more before decryption
        return cipher.decrypt_and_verify(memoryview(sealed)[:-GCM_TAG_LEN], sealed[-GCM_TAG_LEN:])
    except ValueError:
        raise CryptoError("message failed authentication (altered, replayed or under the wrong key)") from None


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()
