"""A relay client from docs/relay.md: the link handshake, link records, login, and pair/box records."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from typing import Any

from Crypto.Cipher import AES
from Crypto.PublicKey import RSA

from . import chatcrypto as cc
from .wire import SpecError, Stream, pack, unpack_body

LINK_LABEL = b"p2pchat/relay-link/2"
MAX_RECORD = 262_160
PAIR_BIT = 0x80000000
BOX_BITS = 0xC0000000


def link_keys(es: bytes, ee: bytes, s: bytes, e_c: bytes, e_r: bytes) -> tuple[bytes, bytes, bytes]:
    h = hashlib.sha256(LINK_LABEL + b"\x00" + s + e_c + e_r).digest()
    out = cc.hkdf(es + ee, h, LINK_LABEL + b"\x00keys", 64)
    return h, out[:32], out[32:]


def pair_keys(pair_key: bytes) -> tuple[bytes, bytes]:
    out = cc.hkdf(pair_key, b"", LINK_LABEL + b"\x00pair", 64)
    return out[:32], out[32:]


def seal_record(key: bytes, number: int, plaintext: bytes, flags: int = 0) -> bytes:
    word = struct.pack(">I", flags | (len(plaintext) + 16))
    cipher = AES.new(key, AES.MODE_GCM, nonce=cc.nonce(number), mac_len=16)
    cipher.update(word)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return word + ciphertext + tag


def open_record(key: bytes, number: int, word: bytes, body: bytes, aad_extra: bytes = b"") -> bytes:
    cipher = AES.new(key, AES.MODE_GCM, nonce=cc.nonce(number), mac_len=16)
    cipher.update(word + aad_extra)
    try:
        return cipher.decrypt_and_verify(body[:-16], body[-16:])
    except ValueError:
        raise SpecError("a link record failed authentication") from None


def seal_box_record(key: bytes, number: int, head: bytes, box: bytes) -> bytes:
    length = 2 + len(head) + 16 + len(box)
    prefix = struct.pack(">IH", BOX_BITS | length, len(head))
    cipher = AES.new(key, AES.MODE_GCM, nonce=cc.nonce(number), mac_len=16)
    cipher.update(prefix + box)
    ciphertext, tag = cipher.encrypt_and_digest(head)
    return prefix + ciphertext + tag + box


def login_proof_data(nonce: bytes, relay_address: str, fingerprint: bytes, network: str) -> bytes:
    a, n = relay_address.encode(), network.encode()
    return nonce + struct.pack(">H", len(a)) + a + fingerprint + struct.pack(">H", len(n)) + n


class RelayLink:
    """One connection to a relay: link frames both ways, then (once paired) the chat stream in pair records."""

    def __init__(self, host: str, port: int, source: str, timeout: float = 20.0,
                 ephemeral_seed: bytes | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout, (source, 0))
        self.sock.settimeout(timeout)
        self.address = f"{host}:{port}"
        e_c = cc.x25519_private(ephemeral_seed or os.urandom(32))
        self.sock.sendall(b"P2PC\x02" + cc.x25519_public(e_c))
        first = self._exact(37)
        if first[:5] != b"P2PR\x02":
            raise SpecError(f"the relay refused in clear: {first!r}")
        self.relay_key = first[5:]
        e_r = self._exact(32)
        es, ee = cc.x25519(e_c, self.relay_key), cc.x25519(e_c, e_r)
        _, self.send_key, self.recv_key = link_keys(es, ee, self.relay_key, cc.x25519_public(e_c), e_r)
        self.sent = self.received = 0
        self.link_frames = Stream(self._link_bytes, 1 << 20)
        self.chat_stream = Stream(self._chat_bytes, 2 * 1024 * 1024)
        self.pair_send = self.pair_recv = b""
        self.pair_sent = self.pair_received = 0
        self.max_payload = 0
        self.box_max: int | None = None
        self.boxes_sent = self.boxes_received = 0

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SpecError("the relay closed the connection")
            data += chunk
        return data

    def send_frame(self, t: str, **fields: Any) -> None:
        self.sock.sendall(seal_record(self.send_key, self.sent, pack(t, **fields)))
        self.sent += 1

    def _read_record(self) -> None:
        """Read one record: link plaintext goes to the link stream, pair/box plaintext to the chat stream."""
        word = self._exact(4)
        (value,) = struct.unpack(">I", word)
        if value & BOX_BITS == BOX_BITS:
            length = value & ~BOX_BITS
            (head_length,) = struct.unpack(">H", self._exact(2))
            rest = self._exact(length - 2)
            sealed_head, box = rest[:head_length + 16], rest[head_length + 16:]
            if self.box_max is None or length > self.box_max or head_length < 1 or 2 + head_length + 16 >= length:
                raise SpecError("a box record that was not agreed or is out of bounds")
            head = open_record(self.pair_recv, self.pair_received, word + struct.pack(">H", head_length),
                               sealed_head, box)
            self.pair_received += 1
            if not _one_frame_ending_with_box(head, len(box)):
                raise SpecError("a box record that is not one whole frame ended by its box")
            self.boxes_received += 1
            self.chat_stream.feed(head + box)
        elif value & PAIR_BIT:
            length = value & ~PAIR_BIT
            self.chat_stream.feed(open_record(self.pair_recv, self.pair_received, word, self._exact(length)))
            self.pair_received += 1
        else:
            if not 17 <= value <= MAX_RECORD:
                raise SpecError(f"link record length {value} out of bounds")
            self.link_frames.feed(open_record(self.recv_key, self.received, word, self._exact(value)))
            self.received += 1

    def _link_bytes(self) -> None:
        self._read_record()

    def _chat_bytes(self) -> None:
        self._read_record()
        while (frame := self.link_frames.buffered_frame()) is not None:     # link frames: pings, or the end
            message = unpack_body(frame[4:])
            if message["t"] == "ping":
                self.send_frame("pong")
            elif message["t"] == "error":
                raise SpecError(f"the relay ended the session: {message['reason']}")

    def login(self, identity: RSA.RsaKey, network: str, role: str, **fields: Any) -> dict[str, Any]:
        challenge = self.link_frames.read()
        if challenge["t"] != "challenge" or challenge["version"] != 2 or len(challenge["nonce"]) != 32:
            raise SpecError(f"expected a challenge, got {challenge!r:.200}")
        der = identity.public_key().export_key(format="DER")
        data = login_proof_data(challenge["nonce"], self.address, hashlib.sha256(der).digest(), network)
        self.send_frame("login", version=2, network=network, role=role, key=der,
                        sig=cc.sign(identity, "relay-login", data), **fields)
        answer = self.link_frames.read()
        while answer["t"] == "ping":
            self.send_frame("pong")
            answer = self.link_frames.read()
        if answer["t"] == "error":
            raise SpecError(f"the relay refused: {answer['reason']}")
        if answer["t"] == "paired":
            caller_key, callee_key = pair_keys(answer["pair_key"])
            self.pair_send, self.pair_recv = (caller_key, callee_key) if role == "call" else (callee_key, caller_key)
            self.max_payload = answer["max_payload"]
            self.box_max = answer.get("box_max")
        return answer

    def send_chat(self, data: bytes) -> None:
        """Chat bytes in pair records of at most ``max_payload`` bytes each; one whole sealed frame whose box is
        16 KiB or more as a box record, when the session agreed on them."""
        head_length = _boxed_head_length(data)
        if self.box_max is not None and head_length is not None and 2 + len(data) + 16 <= self.box_max:
            self.sock.sendall(seal_box_record(self.pair_send, self.pair_sent, data[:head_length], data[head_length:]))
            self.pair_sent += 1
            self.boxes_sent += 1
            return
        for start in range(0, len(data), self.max_payload):
            self.sock.sendall(seal_record(self.pair_send, self.pair_sent, data[start:start + self.max_payload],
                                          PAIR_BIT))
            self.pair_sent += 1

    def close(self) -> None:
        self.sock.close()


def _one_frame_ending_with_box(head: bytes, box_length: int) -> bool:
    """relay.md: the head's length prefix is H - 4 + T, and the head ends with a bin header of length T."""
    if len(head) < 4 or struct.unpack(">I", head[:4])[0] != len(head) - 4 + box_length:
        return False
    for marker, width in ((0xC4, 1), (0xC5, 2), (0xC6, 4)):
        if len(head) > width and head[-1 - width] == marker:
            if int.from_bytes(head[len(head) - width:], "big") == box_length:
                return True
    return False


def _boxed_head_length(data: bytes) -> int | None:
    """Where the box starts, for one whole ``sealed`` frame whose box (its last field) is 16 KiB or more."""
    if len(data) < 4 or struct.unpack(">I", data[:4])[0] != len(data) - 4:
        return None
    try:
        frame = unpack_body(data[4:])
    except (SpecError, ValueError):
        return None
    box = frame.get("box")
    if frame.get("t") != "sealed" or not isinstance(box, bytes) or len(box) < 16384 or not data.endswith(box):
        return None
    head_length = len(data) - len(box)
    return head_length if head_length < 65536 else None
