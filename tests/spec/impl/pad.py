"""One-time-pad mode from protocol.md §5.9: a pad directory as `p2pchat pad new` writes it, and pad frames."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from Crypto.Hash import Poly1305

LABEL = b"p2pchat/pad-text/v1\x00"


def write_pad(directory: Path, fp_one: bytes, fp_other: bytes, half_size: int) -> tuple[bytes, bytes, bytes]:
    """``directory`` with a.bin, b.bin and pad.json; returns (pad_id, a, b)."""
    a, b, pad_id = os.urandom(half_size), os.urandom(half_size), os.urandom(16)
    low, high = sorted((fp_one, fp_other))
    directory.mkdir(parents=True)
    (directory / "a.bin").write_bytes(a)
    (directory / "b.bin").write_bytes(b)
    description = {"format": 1, "pad_id": pad_id.hex(), "fingerprints": [low.hex(), high.hex()],
                   "half_size": half_size, "sha256": {"a": hashlib.sha256(a).hexdigest(),
                                                      "b": hashlib.sha256(b).hexdigest()}}
    (directory / "pad.json").write_text(json.dumps(description), encoding="utf-8")
    return pad_id, a, b


def _tag(key: bytes, index: int, ciphertext: bytes) -> bytes:
    mac = Poly1305.Poly1305_MAC(key[:16], key[16:], LABEL + index.to_bytes(8, "big") + ciphertext)
    return mac.digest()


@dataclass
class PadHalves:
    """One side's view: it sends with ``send`` and receives with ``recv`` (low fingerprint: a, then b)."""

    send: bytes
    recv: bytes
    sent: int = 0          # S
    received: int = 0      # R

    def seal(self, text: str) -> bytes:
        data = text.encode()
        index = self.sent
        if index + 32 + len(data) > len(self.send):
            raise ValueError("the pad cannot hold this text")
        key = self.send[index:index + 32]
        ciphertext = bytes(x ^ y for x, y in zip(data, self.send[index + 32:index + 32 + len(data)], strict=True))
        self.sent = index + 32 + len(data)
        return index.to_bytes(8, "big") + ciphertext + _tag(key, index, ciphertext)

    def forge_at(self, index: int, text: str) -> bytes:
        """A frame at any ``index`` (past the half's end: a zero key and key stream), without spending."""
        data = text.encode()
        key = self.send[index:index + 32].ljust(32, b"\0")
        stream = self.send[index + 32:index + 32 + len(data)].ljust(len(data), b"\0")
        ciphertext = bytes(x ^ y for x, y in zip(data, stream, strict=True))
        return index.to_bytes(8, "big") + ciphertext + _tag(key, index, ciphertext)

    def open(self, frame: bytes) -> str:
        if len(frame) < 24:
            raise ValueError("a pad frame shorter than 24 bytes")
        index, ciphertext, tag = int.from_bytes(frame[:8], "big"), frame[8:-16], frame[-16:]
        n = len(ciphertext)
        if index < self.received or index + 32 + n > len(self.recv):
            raise ValueError(f"pad bytes {index}..{index + 32 + n} are spent or past the half")
        key = self.recv[index:index + 32]
        if not hmac.compare_digest(_tag(key, index, ciphertext), tag):
            raise ValueError("the pad tag does not match")
        text = bytes(x ^ y for x, y in zip(ciphertext, self.recv[index + 32:index + 32 + n], strict=True)).decode()
        self.received = index + 32 + n
        return text
