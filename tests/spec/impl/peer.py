"""A chat peer built from docs/protocol.md: the four handshake steps as initiator or responder, then the channel."""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from Crypto.PublicKey import RSA

from . import chatcrypto as cc
from .wire import SpecError, Stream, pack

VERSION = 2
MAX_FRAME = 2 * 1024 * 1024


@dataclass
class LedgerView:
    """What this peer knows of the ledger: the key bound to the peer, and its own ledger position (§3.2)."""

    peer_key: Callable[[str, str], bytes]       # (by, value) of a lookup -> DER of the key the ledger binds there
    final_height: int = 0
    final_hash: bytes = bytes(32)
    tip_height: int = 0
    tip_hash: bytes = bytes(32)
    header_at: Callable[[int], bytes | None] = lambda height: None

    def verdict(self, key: dict[str, Any]) -> str:
        if key["final_hash"] == bytes(32) and key["final_height"] == 0 and key["tip_height"] == 0:
            return "unknown"
        if key["final_height"] > self.tip_height:
            return "unknown"
        ours = self.header_at(key["final_height"])
        if ours is None:
            return "unknown"
        return "agree" if ours == key["final_hash"] else "conflict"


@dataclass
class ChatPeer:
    identity: RSA.RsaKey
    nickname: str
    address: str
    ledger: LedgerView
    send_bytes: Callable[[bytes], None]
    stream: Stream
    network: str = "p2pchat"
    rotate_every: int = 1000
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.der = self.identity.public_key().export_key(format="DER")
        self.peer_verdict = self.verdict = ""
        self.texts: list[str] = []
        self.receipts: list[int] = []
        self.next_id = 1
        self.sent_under_epoch = 0
        self.waiting: list[bytes] = []          # texts held back while our rotation is unanswered past its bound
        self.goodbye: str | None = None

    # --- frames ------------------------------------------------------------------------------------------------

    def send(self, t: str, **fields: Any) -> None:
        self.send_bytes(pack(t, **fields))

    def expect(self, *types: str) -> dict[str, Any]:
        frame = self.stream.read()
        if frame["t"] == "error":
            raise SpecError(f"the peer refused: {frame['reason']}")
        if frame["t"] not in types:
            raise SpecError(f"expected {'/'.join(types)}, got {frame['t']}")
        return frame

    def _hello_fields(self) -> dict[str, Any]:
        return {"version": VERSION, "network": self.network, "nickname": self.nickname, "address": self.address}

    def _key_fields(self) -> dict[str, Any]:
        self.nonce = os.urandom(32)
        self.x_private = cc.x25519_private(os.urandom(32))
        return {"key": self.der, "nonce": self.nonce, "ephemeral": cc.x25519_public(self.x_private),
                "final_height": self.ledger.final_height, "final_hash": self.ledger.final_hash,
                "tip_height": self.ledger.tip_height, "tip_hash": self.ledger.tip_hash}

    def _check_hello(self, hello: dict[str, Any]) -> None:
        if hello["version"] != VERSION or hello["network"] != self.network:
            raise SpecError(f"version/network {hello['version']}/{hello['network']}")
        for name in ("nickname", "network", "address"):
            if not hello[name].isprintable():
                raise SpecError(f"{name} with control characters")

    def _check_key(self, key: dict[str, Any], by: str | None, value: str) -> RSA.RsaKey:
        """§3.2: the key must equal the ledger's for what was looked up; a relayed responder given nothing
        looks up the fingerprint of the key it received."""
        if by is None:
            by, value = "fp", cc.H(key["key"]).hex()
        if key["key"] != self.ledger.peer_key(by, value):
            raise SpecError(f"the key sent for {by} {value} is not the key the ledger binds there")
        if key["final_height"] > key["tip_height"]:
            raise SpecError("final height above tip height")
        return cc.parse_identity_key(key["key"])

    # --- the handshake ------------------------------------------------------------------------------------------

    def initiate(self, by: str, value: str) -> None:
        """The initiator's four steps; the peer is looked up in the ledger ``by`` ip/fp/nick ``value``."""
        self.role, self.direction, self.peer_direction = "initiator", "i2r", "r2i"
        ih = self._hello_fields()
        self.send("hello", **ih)
        rh = self.expect("welcome")
        self._check_hello(rh)
        self.log.append("1 Connect")
        ik = self._key_fields()
        self.send("key", **ik)
        rk = self.expect("key")
        peer_public = self._check_key(rk, by, value)
        self.send("key_ok")
        self.expect("key_ok")
        self.log.append("2 Swap public keys")
        self.t2 = cc.H(cc.t2_encoding(ih, rh, ik, rk, cc.H(self.der), cc.H(rk["key"])))
        verdict = self.verdict = self.ledger.verdict(rk)
        self.send("auth", ledgers=verdict,
                  sig=cc.sign(self.identity, "chat-auth", cc.auth_data("initiator", self.t2, verdict)))
        reply = self.expect("auth_reply")
        if reply["ledgers"] not in ("agree", "unknown", "conflict"):
            raise SpecError("unknown verdict")
        if not cc.verify(peer_public, "chat-auth", cc.auth_data("responder", self.t2, reply["ledgers"]), reply["sig"]):
            raise SpecError("the responder's signature does not verify")
        self.peer_verdict = reply["ledgers"]
        self.send("auth_ok")
        self.log.append("3 Authenticate")
        keys = cc.key_schedule(cc.x25519(self.x_private, rk["ephemeral"]), self.t2)
        self.send("confirm", confirm=cc.confirm_tag(keys.confirm_key, "initiator", self.t2))
        tag = self.expect("confirm_reply")["confirm"]
        if not hmac.compare_digest(tag, cc.confirm_tag(keys.confirm_key, "responder", self.t2)):
            raise SpecError("the responder's confirmation tag does not match")
        self.log.append("4 Agree AES key")
        self._open_channel(keys)

    def respond(self, by: str | None, value: str = "") -> None:
        """The responder's four steps; ``by`` None: look up the fingerprint of the key received (a relayed call)."""
        self.role, self.direction, self.peer_direction = "responder", "r2i", "i2r"
        ih = self.expect("hello")
        self._check_hello(ih)
        rh = self._hello_fields()
        self.send("welcome", **rh)
        self.log.append("1 Connect")
        ik = self.expect("key")
        rk = self._key_fields()
        peer_public = self._check_key(ik, by, value)
        self.send("key", **rk)
        self.send("key_ok")
        self.expect("key_ok")
        self.log.append("2 Swap public keys")
        self.t2 = cc.H(cc.t2_encoding(ih, rh, ik, rk, cc.H(ik["key"]), cc.H(self.der)))
        auth = self.expect("auth")
        if auth["ledgers"] not in ("agree", "unknown", "conflict"):
            raise SpecError("unknown verdict")
        if not cc.verify(peer_public, "chat-auth", cc.auth_data("initiator", self.t2, auth["ledgers"]), auth["sig"]):
            raise SpecError("the initiator's signature does not verify")
        self.peer_verdict = auth["ledgers"]
        verdict = self.verdict = self.ledger.verdict(ik)
        self.send("auth_reply", ledgers=verdict,
                  sig=cc.sign(self.identity, "chat-auth", cc.auth_data("responder", self.t2, verdict)))
        self.expect("auth_ok")
        self.log.append("3 Authenticate")
        keys = cc.key_schedule(cc.x25519(self.x_private, ik["ephemeral"]), self.t2)
        tag = self.expect("confirm")["confirm"]
        if not hmac.compare_digest(tag, cc.confirm_tag(keys.confirm_key, "initiator", self.t2)):
            raise SpecError("the initiator's confirmation tag does not match")
        self.send("confirm_reply", confirm=cc.confirm_tag(keys.confirm_key, "responder", self.t2))
        self.log.append("4 Agree AES key")
        self._open_channel(keys)

    def _open_channel(self, keys: cc.SessionKeys) -> None:
        mine = (keys.i2r_key, keys.i2r_chain) if self.role == "initiator" else (keys.r2i_key, keys.r2i_chain)
        theirs = (keys.r2i_key, keys.r2i_chain) if self.role == "initiator" else (keys.i2r_key, keys.i2r_chain)
        self.sender = cc.Sender(self.t2, self.direction, *mine)
        self.receiver = cc.Receiver(self.t2, self.peer_direction, {0: theirs[0]}, theirs[1])
        del self.x_private                      # erased after the agreement (§3.2)

    # --- the channel ---------------------------------------------------------------------------------------------

    def seal(self, body: bytes) -> None:
        self.send("sealed", **self.sender.seal(body))

    def send_text(self, text: str) -> int:
        """Seal a text (§5.3) and, after ``rotate_every`` texts under this epoch, start a rotation (§5.5)."""
        number = self.next_id
        self.next_id += 1
        body = cc.inner("text", id=number, sent_at=time.time(), text=text)
        if self.sender.pending_rotation is not None and self.sent_under_epoch >= 2 * self.rotate_every:
            self.waiting.append(body)
            return number
        self.seal(body)
        self.sent_under_epoch += 1
        if self.sender.pending_rotation is None and self.sent_under_epoch == self.rotate_every:
            self.seal(self.sender.start_rotation(os.urandom(32)))
        return number

    def pump(self, until: Callable[[], bool], timeout: float = 20.0) -> None:
        """Read sealed frames and answer them (receipts, rotations) until ``until()`` holds."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise SpecError(f"timed out; texts {self.texts}, receipts {self.receipts}, refused "
                                f"{self.receiver.refused}")
            frame = self.stream.read()
            if frame["t"] == "error":
                raise SpecError(f"error frame after the handshake: {frame.get('reason')}")
            if frame["t"] != "sealed":
                raise SpecError(f"a {frame['t']} frame after the handshake")
            message = self.receiver.open(frame)
            if message is None:
                raise SpecError(f"refused a frame of the peer: {self.receiver.refused[-1]}")
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        t = message["t"]
        if t == "text":
            self.texts.append(message["text"])
            self.seal(cc.inner("receipt", ids=[message["id"]]))
        elif t == "texts":
            self.texts.extend(entry[2] for entry in message["texts"])
            self.seal(cc.inner("receipt", ids=[entry[0] for entry in message["texts"]]))
        elif t == "receipt":
            self.receipts.extend(message["ids"])
        elif t == "rotate":
            self.seal(self.receiver.answer_rotation(message, os.urandom(32)))
            self.log.append(f"peer rotated to epoch {message['epoch']}")
        elif t == "rotate_ack":
            self.sender.finish_rotation(message)
            self.sent_under_epoch = 0
            self.log.append(f"rotated to epoch {self.sender.epoch}")
            waiting, self.waiting = self.waiting, []
            for body in waiting:
                self.seal(body)
                self.sent_under_epoch += 1
        elif t == "goodbye":
            self.goodbye = message["reason"]
        # typing and anything else: shown by a user interface, nothing to answer

    def close(self, reason: str = "done") -> None:
        self.seal(cc.inner("goodbye", reason=reason))
