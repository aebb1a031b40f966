"""The one crypto module: every signature, key agreement, KDF and AEAD call of the project goes through here.

All primitives come from pycryptodome; randomness from the OS. Signatures are RSA-PSS-SHA256 over a
domain-separated message (``p2pchat/<context>\\x00<data>``), so a signature made for one purpose (a ledger
record, a handshake transcript, a relay login) never verifies for another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from p2pchat.foundation import _lazy_pycryptodome as _lazy
from p2pchat.foundation.errors import CryptoError
from p2pchat.foundation.fingerprint_text import format_fingerprint as format_fingerprint  # crypto.format_fingerprint

# --- pycryptodome, imported on first use (startup time: bench/startup_bench.py) ---------------------------------
# Importing pycryptodome costs 40–170 ms on this machine, which `--help`, argument errors and the window's first
# frame should not pay. Each name below is a placeholder that imports its module on first use and then puts the
# real object in this module's namespace, so later calls pay nothing.
if TYPE_CHECKING:
    from Crypto.Cipher import AES
    from Crypto.Hash import SHA256
    from Crypto.IO._PBES import ProtParams
    from Crypto.Math.Numbers import Integer
    from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
    from Crypto.Protocol.KDF import HKDF
    from Crypto.PublicKey import ECC, RSA
    from Crypto.Signature import pss
else:
    AES = _lazy.Module(globals(), "AES", "Crypto.Cipher.AES")
    SHA256 = _lazy.Module(globals(), "SHA256", "Crypto.Hash.SHA256")
    ECC = _lazy.Module(globals(), "ECC", "Crypto.PublicKey.ECC")
    RSA = _lazy.Module(globals(), "RSA", "Crypto.PublicKey.RSA")
    pss = _lazy.Module(globals(), "pss", "Crypto.Signature.pss")
    HKDF = _lazy.Function(globals(), "HKDF", "Crypto.Protocol.KDF")
    Integer = _lazy.Function(globals(), "Integer", "Crypto.Math.Numbers")
    import_x25519_private_key = _lazy.Function(globals(), "import_x25519_private_key", "Crypto.Protocol.DH")
    import_x25519_public_key = _lazy.Function(globals(), "import_x25519_public_key", "Crypto.Protocol.DH")
    key_agreement = _lazy.Function(globals(), "key_agreement", "Crypto.Protocol.DH")
# --- end of the lazy pycryptodome names -------------------------------------------------------------------------

RSA_BITS = 3072
MIN_RSA_BITS = 3072
MAX_RSA_BITS = 8192
RSA_EXPONENT = 65537
AES_KEY_LEN = 32
GCM_NONCE_LEN = 12
GCM_TAG_LEN = 16
X25519_LEN = 32
DOMAIN = b"p2pchat/"
# Every signature context of the protocols (docs/security.md, "Crypto review"): one per purpose, so a signature
# made for one never verifies for another. Contexts are lower-case ASCII words: no NUL, so the ``\x00`` after the
# context ends it and no context plus data can read as another context plus other data.
SIGNATURE_CONTEXTS = frozenset({"ledger-record", "ledger-reachability", "chat-auth", "relay-login", "group-change"})
_CONTEXT_FORM = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_CONTEXT_LEN = 64
# scrypt cost of everything a passphrase protects (the vault and the identity key file alike: an attacker
# attacks the cheaper of the two): 2^17 · 8 · 128 B = 128 MiB, about 0.3 s here.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
SCRYPT_SALT_LEN = 16
PKCS8_PROTECTION = "scryptAndAES256-GCM"

if TYPE_CHECKING:
    RsaKey = RSA.RsaKey
else:
    def __getattr__(name: str) -> object:
        """``crypto.RsaKey`` (pycryptodome's key class), imported when first asked for."""
        if name == "RsaKey":
            return RSA.RsaKey
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_core_dumps_off = False


def keep_keys_out_of_core_dumps() -> None:
    """Make this process write no core dump (RLIMIT_CORE 0, soft and hard), once: Python cannot overwrite the
    ``bytes`` a key lives in, so a crash of a process holding a private key or session keys would otherwise put
    them on disk (systemd-coredump and apport honour the limit too). Called when a process first holds a long-lived
    key (:func:`generate_rsa`, :class:`p2pchat.foundation.identity.Identity`, a relay's static key, an unlocked
    vault)."""
    global _core_dumps_off
    if _core_dumps_off:
        return
    _core_dumps_off = True
    try:
        import resource
    except ImportError:         # not a POSIX system
        return
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):    # a sandbox that refuses; the process goes on as before
        pass


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG (``os.urandom``, which is what pycryptodome's
    ``get_random_bytes`` is: calling it directly spares a nonce the import of pycryptodome's ctypes back end)."""
    return os.urandom(n)


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
    keep_keys_out_of_core_dumps()       # e.g. a keygen worker, which holds the key before any Identity does
    return RSA.generate(bits, e=RSA_EXPONENT)


def public_der(key: RsaKey) -> bytes:
    """SubjectPublicKeyInfo DER of a key's public half: the form stored in the ledger and sent on the wire."""
    return key.public_key().export_key(format="DER")


# SubjectPublicKeyInfo's AlgorithmIdentifier for rsaEncryption (OID 1.2.840.113549.1.1.1) with NULL parameters.
_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101010500")


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _der_uint(value: int) -> bytes:
    # Minimal two's-complement form of a non-negative INTEGER: a leading 0x00 only when the top bit is set.
    return _der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def spki_der(n: int, e: int) -> bytes:
    """The canonical SubjectPublicKeyInfo DER of the RSA public key ``(n, e)`` (what :func:`public_der` makes)."""
    rsa_public_key = _der_tlv(0x30, _der_uint(n) + _der_uint(e))
    return _der_tlv(0x30, _RSA_ALGORITHM + _der_tlv(0x03, b"\x00" + rsa_public_key))


def _der_read(data: bytes, pos: int, tag: int) -> tuple[int, int]:
    """(start, end) of the body of the TLV with ``tag`` at ``pos``; ValueError when it is not one."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise ValueError("unexpected DER tag")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("DER value runs past the end")
    return pos, pos + length


def _parse_spki(der: bytes) -> tuple[int, int]:
    """``(n, e)`` of an RSA SubjectPublicKeyInfo; ValueError when the bytes are not one in canonical form.

    The parse only locates the two integers; canonical form is then checked by encoding ``(n, e)`` again and
    comparing every byte, so no lax DER (long lengths, leading zeros, trailing data) gets through.
    """
    start, _ = _der_read(der, 0, 0x30)
    pos = start + len(_RSA_ALGORITHM)
    if der[start:pos] != _RSA_ALGORITHM:
        raise ValueError("not an rsaEncryption key")
    bits_start, _ = _der_read(der, pos, 0x03)
    seq_start, _ = _der_read(der, bits_start + 1, 0x30)
    n_start, n_end = _der_read(der, seq_start, 0x02)
    e_start, e_end = _der_read(der, n_end, 0x02)
    n = int.from_bytes(der[n_start:n_end], "big", signed=True)
    e = int.from_bytes(der[e_start:e_end], "big", signed=True)
    if n <= 0 or e <= 0 or spki_der(n, e) != der:
        raise ValueError("not canonical DER")
    return n, e


def load_public(der: bytes) -> RsaKey:
    """Parse a DER public key from a peer: only canonical RSA SubjectPublicKeyInfo with e = 65537 and a
    3072–8192-bit modulus. (pycryptodome's ``import_key`` accepts many more forms and costs three times as much;
    the strict parse above is what a ledger of distinct keys spends most of its validation time on.)"""
    if not isinstance(der, bytes | bytearray):
        raise CryptoError("the public key is not a valid RSA key")
    try:
        n, e = _parse_spki(bytes(der))
    except ValueError:
        raise CryptoError("the public key is not a valid RSA key in canonical DER form") from None
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise CryptoError(f"RSA key of {n.bit_length()} bits is refused "
                          f"(between {MIN_RSA_BITS} and {MAX_RSA_BITS} bits required)")
    if e != RSA_EXPONENT:
        raise CryptoError("RSA keys must use the public exponent 65537")
    if n % 2 == 0:
        raise CryptoError("the public key is not a valid RSA key (even modulus)")
    # The checks above are what construct's consistency check does for a public key (odd e with 1 < e < n,
    # odd n), at half the cost.
    return RSA.construct((n, e), consistency_check=False)


def import_private(data: bytes, passphrase: str | None = None) -> RsaKey:
    """An RSA private key from PKCS#8 (or PKCS#1) PEM/DER, decrypted with ``passphrase`` when it is encrypted.
    Its public half must pass :func:`load_public`'s rules, so a key file never holds a key every peer would
    refuse (e = 3, 2048 bits, 16384 bits). ValueError: not a readable key (or a wrong passphrase);
    :class:`CryptoError`: a key, but one the protocols refuse."""
    try:
        key = RSA.import_key(data, passphrase=passphrase)
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError("not a readable RSA private key") from exc
    if not key.has_private():
        raise CryptoError("the key holds a public key only; an identity needs the private key")
    load_public(public_der(key))
    return key


def export_private(key: RsaKey, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM of a private key; with ``passphrase``, PBES2 with scrypt (:data:`SCRYPT_N`, r = 8, p = 1, a
    16-byte salt: pinned here, not left to the library's defaults) and AES-256-GCM."""
    if not passphrase:
        return bytes(key.export_key(format="PEM", pkcs=8))
    params: ProtParams = {"iteration_count": SCRYPT_N, "block_size": SCRYPT_R, "parallelization": SCRYPT_P,
                          "salt_size": SCRYPT_SALT_LEN}
    return bytes(key.export_key(format="PEM", pkcs=8, passphrase=passphrase, protection=PKCS8_PROTECTION,
                                prot_params=params))


_PBES2_OID, _SCRYPT_OID = "1.2.840.113549.1.5.13", "1.3.6.1.4.1.11591.4.11"


def private_pem_weaker_than_policy(pem: bytes) -> bool:
    """Whether an encrypted PKCS#8 PEM was protected below :func:`export_private`'s parameters (another KDF, a
    smaller scrypt N or r, a shorter salt): e.g. a key file written with an older pycryptodome's defaults (N = 2^14,
    an 8-byte salt), which the same passphrase's attacker would attack instead of the vault. False for a file that
    is not an encrypted PKCS#8 PEM (nothing to strengthen)."""
    from Crypto.IO import PEM
    from Crypto.Util.asn1 import DerObjectId, DerOctetString, DerSequence

    try:
        der, marker, _ = PEM.decode(pem.decode("ascii"))
        if marker != "ENCRYPTED PRIVATE KEY":
            return False
        pbes2 = DerSequence().decode(DerSequence().decode(der)[0])      # EncryptedPrivateKeyInfo.algorithm
        if DerObjectId().decode(pbes2[0]).value != _PBES2_OID:
            return True
        kdf = DerSequence().decode(DerSequence().decode(pbes2[1])[0])   # PBES2-params.keyDerivationFunc
        if DerObjectId().decode(kdf[0]).value != _SCRYPT_OID:
            return True
        salt, n, r = DerSequence().decode(kdf[1])[:3]                   # scrypt-params (RFC 7914 §7)
        return len(DerOctetString().decode(salt).payload) < SCRYPT_SALT_LEN or int(n) < SCRYPT_N or int(r) < SCRYPT_R
    except (ValueError, IndexError, TypeError, UnicodeDecodeError):
        return False


def fingerprint(pub_der: bytes) -> bytes:
    """SHA-256 of the DER public key: the identity's fingerprint."""
    return sha256(pub_der)


def _mgf1_sha256(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-256 (RFC 8017 B.2.1) on hashlib: the same bytes as pycryptodome's MGF1, at about a third of
    its cost per verify, which matters when a ledger of distinct keys is validated."""
    out = b"".join(hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
                   for counter in range((length + 31) // 32))
    return out[:length]


def check_context(context: str) -> None:
    """ValueError unless ``context`` is a well-formed signature context: lower-case ASCII words joined by ``-``,
    at most 64 characters (no NUL: the separator after it must be the first NUL of the signed message)."""
    if not (isinstance(context, str) and len(context) <= MAX_CONTEXT_LEN and _CONTEXT_FORM.fullmatch(context)):
        raise ValueError(f"signature context {context!r} is not lower-case ASCII words joined by '-' "
                         f"(at most {MAX_CONTEXT_LEN} characters)")


def _signed_message(context: str, data: bytes) -> SHA256.SHA256Hash:
    check_context(context)
    return SHA256.new(DOMAIN + context.encode() + b"\x00" + data)


def sign(key: RsaKey, context: str, data: bytes) -> bytes:
    """RSA-PSS-SHA256 signature of ``data`` under the domain-separation label ``context``."""
    return pss.new(key, mask_func=_mgf1_sha256).sign(_signed_message(context, data))


def verify(public: RsaKey | bytes, context: str, data: bytes, signature: bytes) -> None:
    """Raise :class:`CryptoError` unless ``signature`` is valid for ``data`` under ``context``."""
    key = load_public(public) if isinstance(public, bytes) else public
    message = _signed_message(context, data)      # a malformed context is a programming error, not a bad signature
    try:
        pss.new(key, mask_func=_mgf1_sha256).verify(message, signature)
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


def scrypt(password: bytes, salt: bytes, *, n: int, r: int, p: int, length: int = AES_KEY_LEN) -> bytes:
    """scrypt (RFC 7914) of ``password``: a key that costs ``128 · n · r`` bytes of memory to derive."""
    if n < 2 or n & (n - 1):
        raise ValueError("scrypt's N must be a power of two")
    key = _lazy.load("Crypto.Protocol.KDF", "scrypt")(password, salt, length, N=n, r=r, p=p)
    assert isinstance(key, bytes)
    return key


# --- AES-256-GCM ---------------------------------------------------------------------------------------

def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption; returns ciphertext followed by the 16-byte tag."""
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_LEN)
    cipher.update(aad)
    ct, tag = cipher.encrypt_and_digest(plaintext)
    return ct + tag


def seal_into(key: bytes, nonce: bytes, plaintext: Sequence[bytes | memoryview], aad: bytes,
              out: memoryview, *, aad_tail: bytes | memoryview = b"") -> None:
    """:func:`seal` of the concatenated ``plaintext`` parts, written into ``out`` (exactly their length + 16
    bytes): a large message is sealed straight into the frame that carries it, from its parts, instead of being
    joined and copied into it. ``aad_tail`` continues the associated data after ``aad`` (not copied: a relay box
    record authenticates a whole chat box this way, docs/relay.md)."""
    if len(out) != sum(len(part) for part in plaintext) + GCM_TAG_LEN:
        raise ValueError("the output must hold the ciphertext and its tag exactly")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_LEN)
    cipher.update(aad)
    if len(aad_tail):
        cipher.update(aad_tail)
    at = 0
    for part in plaintext:
        cipher.encrypt(part, output=out[at:at + len(part)])
        at += len(part)
    out[at:] = cipher.digest()


def open_sealed(key: bytes, nonce: bytes, sealed: bytes | memoryview, aad: bytes, *,
                aad_tail: bytes | memoryview = b"") -> bytes:
    """AES-256-GCM decryption; raises :class:`CryptoError` if the ciphertext or header was altered.
    ``aad_tail`` continues the associated data after ``aad``, as in :func:`seal_into`."""
    if len(sealed) < GCM_TAG_LEN:
        raise CryptoError("ciphertext is shorter than its authentication tag")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_LEN)
    cipher.update(aad)
    if len(aad_tail):
        cipher.update(aad_tail)
    try:   # a view of the ciphertext: a large message is not copied once more before decryption
        return cipher.decrypt_and_verify(memoryview(sealed)[:-GCM_TAG_LEN], bytes(sealed[-GCM_TAG_LEN:]))
    except ValueError:
        raise CryptoError("message failed authentication (altered, replayed or under the wrong key)") from None


def open_in_place(key: bytes, nonce: bytes, sealed: memoryview, aad: bytes) -> memoryview:
    """:func:`open_sealed` that writes the plaintext over the ciphertext (``sealed`` must be writable) and returns
    it as a view of ``sealed``: a large received message is decrypted where it arrived, with no buffer of its
    own. Raises :class:`CryptoError` like :func:`open_sealed`; ``sealed`` then holds unauthenticated bytes that
    must not be used."""
    if len(sealed) < GCM_TAG_LEN:
        raise CryptoError("ciphertext is shorter than its authentication tag")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=GCM_TAG_LEN)
    cipher.update(aad)
    body = sealed[:-GCM_TAG_LEN]
    try:
        cipher.decrypt_and_verify(body, bytes(sealed[-GCM_TAG_LEN:]), output=body)
    except ValueError:
        raise CryptoError("message failed authentication (altered, replayed or under the wrong key)") from None
    return body


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


# --- relay link (Noise-NK-like: the client knows the relay's static X25519 key) ------------------------------

RELAY_LINK_CONTEXT = b"p2pchat/relay-link/2\x00"


def x25519_private() -> bytes:
    """32 fresh random bytes: an X25519 private key (clamped when used), e.g. a relay's static key."""
    return random_bytes(X25519_LEN)


def relay_link_keys(static_public: bytes, client_ephemeral: bytes, relay_ephemeral: bytes,
                    es: bytes, ee: bytes) -> tuple[bytes, bytes]:
    """The two AES-256-GCM keys of a client↔relay link: ``(client→relay, relay→client)``.

    ``h = SHA-256("p2pchat/relay-link/2\\0" ‖ s ‖ e_c ‖ e_r)`` binds the relay's static key and both ephemeral
    keys; the keys are ``HKDF-SHA256(ikm = es ‖ ee, salt = h, info = "p2pchat/relay-link/2\\0keys", 2 × 32 B)``.
    Only the holder of the static key's private half (``es``) and of the relay's ephemeral (``ee``) gets them.
    """
    for part in (static_public, client_ephemeral, relay_ephemeral, es, ee):
        if len(part) != X25519_LEN:
            raise CryptoError("relay link keys need 32-byte X25519 values")
    h = sha256(RELAY_LINK_CONTEXT, static_public, client_ephemeral, relay_ephemeral)
    to_relay, to_client = hkdf(es + ee, h, RELAY_LINK_CONTEXT + b"keys", AES_KEY_LEN, 2)
    return to_relay, to_client


def gcm_counter_nonce(counter: int) -> bytes:
    """The 12-byte GCM nonce of record number ``counter``: 4 zero bytes ‖ u64 big-endian counter."""
    if not 0 <= counter < 1 << 64:
        raise CryptoError("record counter exhausted")
    return counter.to_bytes(GCM_NONCE_LEN, "big")


def relay_pair_keys(pair_key: bytes) -> tuple[bytes, bytes]:
    """The keys of a relay session's pair records: ``(caller→callee, callee→caller)``.

    ``HKDF-SHA256(ikm = pair_key, salt = "", info = "p2pchat/relay-link/2\\0pair", 2 × 32 B)``; ``pair_key`` is the
    32 random bytes the relay sends both sides in ``paired`` (inside their links).
    """
    if len(pair_key) != AES_KEY_LEN:
        raise CryptoError("a relay pair key is 32 bytes")
    forward, backward = hkdf(pair_key, b"", RELAY_LINK_CONTEXT + b"pair", AES_KEY_LEN, 2)
    return forward, backward


# --- modular arithmetic in a prime-order group (the shared-secret check, p2pchat/smp.py) ------------------------
# Python ints at the boundary, pycryptodome's Integer inside (its Montgomery pow is about ten times faster than
# ``pow`` on ints at 3072 bits: 13 ms against 136 ms here).

def mod_pow(base: int, exponent: int, modulus: int) -> int:
    """``base ** exponent mod modulus`` (``exponent`` >= 0)."""
    return int(pow(Integer(base), Integer(exponent), Integer(modulus)))


def mod_mul(a: int, b: int, modulus: int) -> int:
    """``a · b mod modulus``."""
    return int((Integer(a) * Integer(b)) % Integer(modulus))


def mod_div(a: int, b: int, modulus: int) -> int:
    """``a · b⁻¹ mod modulus`` (``modulus`` prime, ``b`` not a multiple of it)."""
    return int((Integer(a) * Integer(b).inverse(Integer(modulus))) % Integer(modulus))


def mod_sub(a: int, b: int, modulus: int) -> int:
    """``a − b mod modulus`` in ``0 .. modulus−1``."""
    m = Integer(modulus)
    return int((Integer(a) % m + m - Integer(b) % m) % m)     # Integer is unsigned: never below zero


RANDOM_EXPONENT_BYTES = 400     # 3200 bits reduced mod a 3071-bit order: a bias below 2^-128


def random_exponent(order: int, randfunc: Callable[[int], bytes] | None = None) -> int:
    """A uniform exponent in ``1 .. order−1``: ``int(randfunc(400)) mod (order − 1) + 1`` (big-endian).
    ``randfunc`` (default: the OS's CSPRNG) is replaced only by test vectors."""
    raw = (randfunc or random_bytes)(RANDOM_EXPONENT_BYTES)
    return int(Integer(int.from_bytes(raw, "big")) % Integer(order - 1)) + 1
# --- one-time pads (issue 17) ------------------------------------------------------------------------------

def sha256_stream() -> hashlib._Hash:
    """An incremental SHA-256 (for files too large to hold in memory, e.g. pad halves)."""
    return hashlib.sha256()


def poly1305_one_time(key: bytes, data: bytes) -> bytes:
    """Poly1305 (RFC 8439 §2.5) with the 32-byte one-time key ``r || s`` taken as is (``r`` clamped by the
    algorithm). With ``key`` fresh uniform bytes used once, forging a tag succeeds with probability at most
    8·ceil(len/16)/2^106 whatever the attacker's computing power."""
    from Crypto.Hash.Poly1305 import Poly1305_MAC

    if len(key) != 32:
        raise ValueError("a one-time Poly1305 key is 32 bytes (r || s)")
    return bytes(Poly1305_MAC(key[:16], key[16:], data).digest())
