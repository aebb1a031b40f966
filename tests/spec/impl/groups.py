"""Group chats built from docs/groups.md and protocol.md §5.10: signed membership changes, their order and the
members they make, and the group frames carried in the channel's `group` inner message."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack
from Crypto.PublicKey import RSA

from . import chatcrypto as cc
from .wire import SpecError

MAX_MEMBERS = 64
CHANGE_FIELDS = ("group", "op", "target", "target_key", "name", "parents", "version", "author", "ts")


def packed(t: str, **fields: Any) -> bytes:
    """A body of the chat codec: ``t`` first, then the fields in table order, absent ones left out."""
    return msgpack.packb({"t": t, **{k: v for k, v in fields.items() if v is not None}}, use_bin_type=True)


@dataclass(frozen=True)
class Change:
    group: bytes
    op: str
    target: bytes
    target_key: bytes | None
    name: str | None
    parents: tuple[bytes, ...]
    version: int
    author: bytes
    ts: float
    sig: bytes = b""

    def signed_body(self) -> bytes:
        return packed("change", **{name: self._value(name) for name in CHANGE_FIELDS})

    def encoded(self) -> bytes:
        return packed("change", **{name: self._value(name) for name in CHANGE_FIELDS}, sig=self.sig)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.encoded()).digest()

    def _value(self, name: str) -> Any:
        value = getattr(self, name)
        return list(value) if name == "parents" else value

    @classmethod
    def decode(cls, data: bytes) -> Change:
        m = msgpack.unpackb(data, raw=False)
        if not isinstance(m, dict) or m.get("t") != "change":
            raise SpecError(f"not a change: {m!r:.80}")
        return cls(m["group"], m["op"], m["target"], m.get("target_key"), m.get("name"), tuple(m["parents"]),
                   m["version"], m["author"], m["ts"], m["sig"])


def sign_change(key: RSA.RsaKey, change: Change) -> Change:
    from dataclasses import replace
    return replace(change, sig=cc.sign(key, "group-change", change.signed_body()))


def fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


@dataclass
class GroupState:
    """A member's view: the log, and the members computed from it in (version, author, hash) order."""

    gid: bytes
    changes: dict[bytes, Change] = field(default_factory=dict)

    def add(self, change: Change) -> None:
        if change.group != self.gid:
            raise SpecError("a change of another group")
        missing = [p for p in change.parents if p not in self.changes]
        if missing:
            raise SpecError("a change whose parents are unknown")
        self.changes[change.hash] = change

    @property
    def heads(self) -> list[bytes]:
        parents = {p for c in self.changes.values() for p in c.parents}
        return sorted(h for h in self.changes if h not in parents)

    @property
    def version(self) -> int:
        return max((c.version for c in self.changes.values()), default=0)

    def members(self) -> dict[bytes, bytes]:
        """fingerprint -> DER of the current members; a change failing a rule stays in the log without effect."""
        members: dict[bytes, bytes] = {}
        keys: dict[bytes, bytes] = {}
        creator = b""
        for change in sorted(self.changes.values(), key=lambda c: (c.version, c.author, c.hash)):
            if change.op == "create":
                if creator or change.parents or change.version != 1 or change.target != change.author:
                    continue
                if change.target_key is None or fingerprint(change.target_key) != change.target:
                    continue
                if not self._verifies(change.target_key, change):
                    continue
                creator = change.author
                members[change.target] = keys[change.target] = change.target_key
                continue
            if change.author not in members or not self._verifies(members[change.author], change):
                continue
            if change.version != 1 + max(self.changes[p].version for p in change.parents):
                continue
            if change.op == "add" and change.target not in members and len(members) < MAX_MEMBERS \
                    and change.target_key is not None and fingerprint(change.target_key) == change.target:
                members[change.target] = keys[change.target] = change.target_key
            elif change.op == "remove" and change.target in members and change.target != creator \
                    and (change.author == creator or change.author == change.target):
                del members[change.target]
        return members

    @staticmethod
    def _verifies(der: bytes, change: Change) -> bool:
        return cc.verify(cc.parse_identity_key(der), "group-change", change.signed_body(), change.sig)


def group_inner(body: bytes) -> bytes:
    """The sealed content carrying a group frame (protocol.md §5.10)."""
    return cc.inner("group", body=body)


def decode_frame(body: bytes) -> dict[str, Any]:
    frame = msgpack.unpackb(body, raw=False)
    if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
        raise SpecError(f"a group body must be a map with 't': {frame!r:.80}")
    return frame
