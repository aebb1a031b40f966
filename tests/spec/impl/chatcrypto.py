"""The chat handshake's transcript, signatures and key schedule, and the channel (protocol.md §3–§5)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC, RSA
from Crypto.Signature import pss

from .wire import SpecError, unpack_body

TRANSCRIPT_LABEL = b"p2pchat/chat-transcript/v1"
KEYS_INFO = b"p2pchat/chat-keys/v1"
RATCHET_INFO = b"p2pchat/chat-ratchet/v1"
SEALED_LABEL = b"p2pchat/sealed/v1"
BUCKETS = (256, 1024, 4096, 16384, 65536)
MAX_REFUSED = 3


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- transcript (§3.5) -------------------------------------------------------------------------------------

def item(label: str, value: bytes | str | int) -> bytes:
    if isinstance(value, bool):
        raise TypeError("no booleans in the transcript")
    if isinstance(value, int):
        raw = struct.pack(">I", value)
    elif isinstance(value, str):
        raw = value.encode()
    else:
        raw = bytes(value)
    name = label.encode()
    return bytes([len(name)]) + name + struct.pack(">I", len(raw)) + raw


HELLO_ITEMS = ("version", "network", "nickname", "address")
KEY_ITEMS = ("final_height", "final_hash", "tip_height", "tip_hash")


def t1_encoding(i_hello: dict[str, Any], r_hello: dict[str, Any]) -> bytes:
    out = TRANSCRIPT_LABEL
    for role, hello in (("i", i_hello), ("r", r_hello)):
        for name in HELLO_ITEMS:
            out += item(f"{role}.{name}", hello[name])
    return out


def t2_encoding(i_hello: dict[str, Any], r_hello: dict[str, Any], i_key: dict[str, Any],
                r_key: dict[str, Any], i_fp: bytes, r_fp: bytes) -> bytes:
    out = t1_encoding(i_hello, r_hello)
    out += item("i.key", i_fp) + item("r.key", r_fp)
    out += item("i.challenge", i_key["nonce"]) + item("r.challenge", r_key["nonce"])
    out += item("i.ephemeral", i_key["ephemeral"]) + item("r.ephemeral", r_key["ephemeral"])
    for role, key in (("i", i_key), ("r", r_key)):
        for name in KEY_ITEMS:
            out += item(f"{role}.{name}", key[name])
    return out


# --- signatures (§3.3) -------------------------------------------------------------------------------------

def signed_message(context: str, data: bytes) -> bytes:
    return b"p2pchat/" + context.encode() + b"\x00" + data


def auth_data(role: str, t2: bytes, ledgers: str) -> bytes:
    return role.encode() + b"\x00" + t2 + b"\x00" + ledgers.encode("ascii")


def sign(key: RSA.RsaKey, context: str, data: bytes) -> bytes:
    return pss.new(key, salt_bytes=32).sign(SHA256.new(signed_message(context, data)))


def verify(public: RSA.RsaKey, context: str, data: bytes, sig: bytes) -> bool:
    try:
        pss.new(public, salt_bytes=32).verify(SHA256.new(signed_message(context, data)), sig)
        return True
    except (ValueError, TypeError):
        return False


def parse_identity_key(der: bytes) -> RSA.RsaKey:
    """§2: RSA 3072–8192 bits, e = 65537, canonical DER."""
    try:
        key = RSA.import_key(der)
    except (ValueError, IndexError, TypeError) as exc:
        raise SpecError(f"not an RSA public key: {exc}") from None
    if key.has_private() or not 3072 <= key.size_in_bits() <= 8192 or key.e != 65537:
        raise SpecError("RSA key out of the allowed sizes or exponent")
    if key.export_key(format="DER") != der:
        raise SpecError("RSA key not in canonical DER")
    return key


# --- X25519 and the key schedule (§3.4) ----------------------------------------------------------------------

def x25519_private(seed: bytes) -> ECC.EccKey:
    return ECC.construct(curve="Curve25519", seed=seed)


def x25519_public(private: ECC.EccKey) -> bytes:
    return private.public_key().export_key(format="raw")


def x25519(private: ECC.EccKey, peer_public: bytes) -> bytes:
    try:
        peer = import_x25519_public_key(peer_public)
        shared = key_agreement(static_priv=private, static_pub=peer, kdf=lambda z: z)
    except ValueError as exc:
        raise SpecError(f"X25519 half refused: {exc}") from None
    if shared == bytes(32):
        raise SpecError("all-zero X25519 secret")
    return shared


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(ikm, length, salt, SHA256, 1, info)


@dataclass
class SessionKeys:
    i2r_key: bytes
    r2i_key: bytes
    i2r_chain: bytes
    r2i_chain: bytes
    confirm_key: bytes


def key_schedule(shared: bytes, t2: bytes) -> SessionKeys:
    out = hkdf(shared, t2, KEYS_INFO, 160)
    return SessionKeys(*(out[i:i + 32] for i in range(0, 160, 32)))


def confirm_tag(confirm_key: bytes, role: str, t2: bytes) -> bytes:
    return hmac.new(confirm_key, role.encode() + b"\x00" + t2, hashlib.sha256).digest()


# --- safety number (§4) ------------------------------------------------------------------------------------

def safety_half(fp: bytes) -> str:
    h = H(b"p2pchat/safety-number/v2\x00" + fp)
    for _ in range(2, 5201):
        h = H(h + fp)
    return "".join(f"{int.from_bytes(h[5 * i:5 * i + 5], 'big') % 100000:05d}" for i in range(6))


def safety_number(fp_a: bytes, fp_b: bytes) -> str:
    digits = "".join(sorted((safety_half(fp_a), safety_half(fp_b))))
    return " ".join(digits[i:i + 5] for i in range(0, 60, 5))


# --- padding and sealing (§5.1, §5.4) ------------------------------------------------------------------------

def bucket(n: int) -> int:
    for size in BUCKETS:
        if n <= size:
            return size
    return -(-n // 65536) * 65536


def pad(body: bytes) -> bytes:
    raw = struct.pack(">I", len(body)) + body
    return raw + bytes(bucket(len(raw)) - len(raw))


def unpad(padded: bytes) -> bytes:
    if len(padded) < 4:
        raise SpecError("padded plaintext too short")
    (n,) = struct.unpack(">I", padded[:4])
    if 4 + n > len(padded) or any(padded[4 + n:]) or len(padded) != bucket(4 + n):
        raise SpecError("bad padding")
    return padded[4:4 + n]


def inner(t: str, **fields: Any) -> bytes:
    return msgpack.packb({"t": t, **fields}, use_bin_type=True)


def sealed_aad(t2: bytes, direction: str, epoch: int, counter: int) -> bytes:
    return SEALED_LABEL + b"\x00" + t2 + direction.encode() + struct.pack(">IQ", epoch, counter)


def nonce(counter: int) -> bytes:
    return bytes(4) + struct.pack(">Q", counter)


def seal_box(key: bytes, t2: bytes, direction: str, epoch: int, counter: int, body: bytes) -> bytes:
    return seal_plaintext(key, t2, direction, epoch, counter, pad(body))


def seal_plaintext(key: bytes, t2: bytes, direction: str, epoch: int, counter: int, padded: bytes) -> bytes:
    """The box of an already padded plaintext (tests seal bad padding with it)."""
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce(counter), mac_len=16)
    cipher.update(sealed_aad(t2, direction, epoch, counter))
    ciphertext, tag = cipher.encrypt_and_digest(padded)
    return ciphertext + tag


def open_box(key: bytes, t2: bytes, direction: str, epoch: int, counter: int, box: bytes) -> bytes:
    if len(box) < 16:
        raise SpecError("box shorter than its tag")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce(counter), mac_len=16)
    cipher.update(sealed_aad(t2, direction, epoch, counter))
    try:
        return unpad(cipher.decrypt_and_verify(box[:-16], box[-16:]))
    except ValueError:
        raise SpecError("tampered") from None


def ratchet(shared: bytes, chain: bytes, direction: str, epoch: int) -> tuple[bytes, bytes]:
    out = hkdf(shared, chain, RATCHET_INFO + direction.encode() + struct.pack(">I", epoch), 64)
    return out[:32], out[32:]


@dataclass
class Sender:
    """One sending direction: counters never reset, epochs move by rotation (§5.2, §5.5)."""

    t2: bytes
    direction: str
    key: bytes
    chain: bytes
    epoch: int = 0
    counter: int = 0
    pending_rotation: ECC.EccKey | None = None

    def seal(self, body: bytes) -> dict[str, Any]:
        box = seal_box(self.key, self.t2, self.direction, self.epoch, self.counter, body)
        frame = {"epoch": self.epoch, "counter": self.counter, "box": box}
        self.counter += 1
        return frame

    def start_rotation(self, seed: bytes) -> bytes:
        """The ``rotate`` inner body (sealed under the current key by the caller)."""
        self.pending_rotation = x25519_private(seed)
        return inner("rotate", epoch=self.epoch + 1, pub=x25519_public(self.pending_rotation))

    def finish_rotation(self, ack: dict[str, Any]) -> None:
        if self.pending_rotation is None or ack.get("epoch") != self.epoch + 1:
            raise SpecError(f"rotate_ack out of turn: {ack!r:.80}")
        shared = x25519(self.pending_rotation, ack["pub"])
        self.key, self.chain = ratchet(shared, self.chain, self.direction, self.epoch + 1)
        self.epoch += 1
        self.pending_rotation = None


@dataclass
class Receiver:
    """One receiving direction: the counter check before decryption, at most two keys (§5.2, §5.5)."""

    t2: bytes
    direction: str
    keys: dict[int, bytes]
    chain: bytes
    epoch: int = 0
    last: int = -1
    refused: list[str] = field(default_factory=list)

    def open(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        """The inner message, or None for a refused frame (state unchanged, the refusal counted)."""
        epoch, counter = frame["epoch"], frame["counter"]
        if counter <= self.last:
            self._refuse(f"replayed or reordered counter {counter}")
            return None
        key = self.keys.get(epoch)
        if key is None:
            self._refuse(f"epoch {epoch} never agreed or erased")
            return None
        try:
            body = open_box(key, self.t2, self.direction, epoch, counter, frame["box"])
        except SpecError as exc:
            self._refuse(str(exc))
            return None
        self.last = counter
        if epoch > self.epoch:                  # the switch counter: the old key is erased here
            del self.keys[self.epoch]
            self.epoch = epoch
        return unpack_body(body)

    def answer_rotation(self, message: dict[str, Any], seed: bytes) -> bytes:
        """R's side of a rotation: the ``rotate_ack`` inner body."""
        if message["epoch"] != self.epoch + 1 or len(self.keys) != 1:
            raise SpecError("rotate out of turn")
        private = x25519_private(seed)
        shared = x25519(private, message["pub"])
        key, self.chain = ratchet(shared, self.chain, self.direction, self.epoch + 1)
        self.keys[self.epoch + 1] = key
        return inner("rotate_ack", epoch=self.epoch + 1, pub=x25519_public(private))

    def _refuse(self, why: str) -> None:
        self.refused.append(why)
        return None
