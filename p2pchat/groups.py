"""Group chats, sans IO (issue 18; design and threat model in docs/groups.md).

- :class:`Change` — one signed membership change (create / add / remove) and its codec;
- :class:`MembershipLog` — a group's DAG of changes, merged in one deterministic order into the member set;
- :class:`Inbox` — what a receiver checks of a group message: sender, counter (replays, gaps), membership
  version (held until the changes arrive), and the causal display order;
- ``GROUP_WIRE`` — the frames that travel inside the channel's ``group`` kind (a ``file`` frame announces a file
  shared in the group; its bytes follow as an ordinary file transfer over the same pairwise channel).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from p2pchat.display import quoted
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Field, Protocol, opt
from p2pchat.foundation.errors import FrameError, ProtocolError, UsageError, UserError
from p2pchat.foundation.identity import Identity

SIGN_CONTEXT = "group-change"
GROUP_ID_LEN = 16
FP_LEN = 32
MAX_NAME = 64
MAX_PARENTS = 16
MAX_LOG = 512                  # changes one group's log may hold
MAX_MEMBERS = 64
MAX_HELD_CHANGES = 64          # changes waiting for their parents, per group
MAX_HELD_TEXTS = 256           # messages waiting for a membership version, per group
MAX_GROUP_TEXT = 64 * 1024     # characters of one group message
MAX_GROUP_BODY = 1024 * 1024   # bytes of one group frame (a whole log fits)
MAX_GROUPS = 256
MAX_INVITES_PER_CONTACT = 16
MAX_FILE_NAME = 255            # characters of a shared file's name (as in a file offer, docs/protocol.md §5.7)
OPS = ("create", "add", "remove")
_U63 = 2**63 - 1

CHANGE = Protocol("p2pchat-group-change", {
    "change": {
        "group": Field(bytes, min_len=GROUP_ID_LEN, max_len=GROUP_ID_LEN),
        "op": Field(str, min_len=1, max_len=8),
        "target": Field(bytes, min_len=FP_LEN, max_len=FP_LEN),
        "target_key": opt(bytes, max_len=2048),
        "name": Field(str, max_len=MAX_NAME),
        "parents": Field(list, max_len=MAX_PARENTS, items=Field(bytes, min_len=32, max_len=32)),
        "version": Field(int, lo=1, hi=2**32 - 1),
        "author": Field(bytes, min_len=FP_LEN, max_len=FP_LEN),
        "ts": Field(float),
        "sig": opt(bytes, max_len=1024),
    },
}, max_frame=8192, bounded_shape=True)

GROUP_WIRE = Protocol("p2pchat-group", {
    "changes": {"ref": Field(int, lo=1, hi=_U63), "group": Field(bytes, min_len=GROUP_ID_LEN, max_len=GROUP_ID_LEN),
                "changes": Field(list, min_len=1, max_len=MAX_LOG, items=Field(bytes, min_len=1, max_len=8192))},
    "text": {"ref": Field(int, lo=1, hi=_U63), "group": Field(bytes, min_len=GROUP_ID_LEN, max_len=GROUP_ID_LEN),
             "sender": Field(bytes, min_len=FP_LEN, max_len=FP_LEN), "counter": Field(int, lo=1, hi=_U63),
             "version": Field(int, lo=1, hi=2**32 - 1), "lamport": Field(int, lo=1, hi=_U63),
             "sent_at": Field(float), "text": Field(str, min_len=1, max_len=MAX_GROUP_TEXT)},
    "file": {"ref": Field(int, lo=1, hi=_U63), "group": Field(bytes, min_len=GROUP_ID_LEN, max_len=GROUP_ID_LEN),
             "sender": Field(bytes, min_len=FP_LEN, max_len=FP_LEN), "counter": Field(int, lo=1, hi=_U63),
             "version": Field(int, lo=1, hi=2**32 - 1), "lamport": Field(int, lo=1, hi=_U63),
             "sent_at": Field(float), "name": Field(str, min_len=1, max_len=MAX_FILE_NAME),
             "size": Field(int, lo=0, hi=_U63), "sha256": Field(bytes, min_len=32, max_len=32)},
    "ack": {"refs": Field(list, min_len=1, max_len=1024, items=Field(int, lo=1, hi=_U63))},
}, max_frame=MAX_GROUP_BODY, bounded_shape=True)


class GroupError(UserError):
    """A group command or frame was refused; the message says why in plain words."""


def new_group_id() -> bytes:
    return crypto.random_bytes(GROUP_ID_LEN)


def find_group(groups: Iterable[tuple[bytes, str]], text: str) -> bytes:
    """The id among ``groups`` (id, name) whose name is ``text``, else whose id starts with it (4 hex digits or
    more); a :class:`UsageError` when none or several match."""
    pairs = list(groups)
    hits = [gid for gid, name in pairs if name == text] or \
           [gid for gid, _ in pairs if len(text) >= 4 and gid.hex().startswith(text.lower())]
    if len(hits) != 1:
        raise UsageError(f"no group named {text!r}" if not hits else f"several groups are named {text!r}; give its id")
    return hits[0]


@dataclass(frozen=True)
class Change:
    """One membership change (see docs/groups.md for each field)."""

    group: bytes
    op: str
    target: bytes
    target_key: bytes | None
    name: str
    parents: tuple[bytes, ...]
    version: int
    author: bytes
    ts: float
    sig: bytes = b""

    def _fields(self, *, with_sig: bool) -> dict[str, object]:
        return {"group": self.group, "op": self.op, "target": self.target, "target_key": self.target_key,
                "name": self.name, "parents": list(self.parents), "version": self.version, "author": self.author,
                "ts": self.ts, "sig": self.sig if with_sig else None}

    def signed_body(self) -> bytes:
        return CHANGE.encode_body("change", **self._fields(with_sig=False))

    def encode(self) -> bytes:
        return CHANGE.encode_body("change", **self._fields(with_sig=True))

    @property
    def hash(self) -> bytes:
        return crypto.sha256(self.encode())

    @classmethod
    def decode(cls, raw: bytes) -> Change:
        try:
            m = CHANGE.decode(raw)
        except (FrameError, ProtocolError) as exc:
            raise GroupError(f"a malformed membership change was refused ({exc})") from None
        if m.type != "change":       # every protocol also knows `error`
            raise GroupError(f"a membership change that is a {m.type!r} message was refused")
        if m["op"] not in OPS:
            raise GroupError(f"a membership change with the unknown operation {m['op']!r} was refused")
        ts = m["ts"]
        if not isinstance(ts, float) or not 0.0 <= ts < 1e11:
            raise GroupError("a membership change with an impossible time was refused")
        return cls(m["group"], m["op"], m["target"], m.get("target_key"), m["name"], tuple(m["parents"]),
                   m["version"], m["author"], ts, m.get("sig") or b"")

    @classmethod
    def make(cls, identity: Identity, group: bytes, op: str, target: bytes, *, target_key: bytes | None = None,
             name: str = "", parents: Iterable[Change] = ()) -> Change:
        ps = sorted(parents, key=lambda c: c.hash)
        version = 1 + max((p.version for p in ps), default=0)
        unsigned = cls(group, op, target, target_key, name, tuple(p.hash for p in ps), version,
                       identity.fingerprint, time.time())
        return cls(**{**unsigned.__dict__, "sig": identity.sign(SIGN_CONTEXT, unsigned.signed_body())})


@dataclass
class Member:
    fp: bytes
    key: bytes
    name: str           # what the member that added it called it ("" for the creator): hostile text
    since: int          # version of the change that made it a member

    @property
    def label(self) -> str:
        """How a notice names this member: its key first (what it is), then the name its adder gave, quoted
        (what someone said it is), so a given name can never pass for another member or for the group."""
        key = f"key {self.fp.hex()[:16]}"
        return f"{key} {quoted(self.name, MAX_NAME)}" if self.name else key


@dataclass
class MembershipLog:
    """One group's changes; :meth:`add` checks and keeps them, :attr:`members` is their merge."""

    group: bytes
    changes: dict[bytes, Change] = field(default_factory=dict)     # hash -> change (applied or without effect)
    held: dict[bytes, Change] = field(default_factory=dict)        # hash -> change waiting for a parent
    members: dict[bytes, Member] = field(default_factory=dict)
    effective: set[bytes] = field(default_factory=set)             # hashes of changes that took effect
    name: str = ""
    creator: bytes = b""
    root: bytes = b""

    @classmethod
    def create(cls, identity: Identity, name: str) -> tuple[MembershipLog, Change]:
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise GroupError(f"a group name is 1 to {MAX_NAME} characters")
        gid = new_group_id()
        c = Change.make(identity, gid, "create", identity.fingerprint, target_key=identity.public_der, name=name)
        log = cls(gid)
        log.add(c)
        return log, c

    @property
    def version(self) -> int:
        return max((c.version for c in self.changes.values()), default=0)

    def heads(self) -> list[Change]:
        referenced = {p for c in self.changes.values() for p in c.parents}
        return [c for h, c in self.changes.items() if h not in referenced]

    def ordered(self) -> list[Change]:
        return [c for _, c in self.ordered_items()]

    def ordered_items(self) -> list[tuple[bytes, Change]]:
        """(hash, change) in the merge order (the hashes are the dictionary's: not computed again)."""
        return sorted(self.changes.items(), key=lambda hc: (hc[1].version, hc[1].author, hc[0]))

    def is_member(self, fp: bytes) -> bool:
        return fp in self.members

    def add(self, change: Change) -> list[Change]:
        """Check and keep ``change`` (and any held change it unblocks); returns the changes newly kept. A change
        already kept is ignored (a replay); one whose parents are missing is held (bounded)."""
        h = change.hash
        if h in self.changes or h in self.held:
            return []
        if change.group != self.group:
            raise GroupError("a membership change for another group was refused")
        if len(self.changes) + len(self.held) >= MAX_LOG:
            raise GroupError(f"this group's membership log is full ({MAX_LOG} changes)")
        if any(p not in self.changes for p in change.parents):
            if len(self.held) >= MAX_HELD_CHANGES:
                raise GroupError(f"more than {MAX_HELD_CHANGES} membership changes wait for earlier ones; "
                                 "this one was refused")
            self.held[h] = change        # checked in full once its parents are here
            return []
        self._check_alone(change)
        kept = [self._keep(change)]
        progress = True
        while progress:
            progress = False
            for hh, c in list(self.held.items()):
                if all(p in self.changes for p in c.parents):
                    del self.held[hh]
                    try:
                        self._check_alone(c)
                        kept.append(self._keep(c))
                    except GroupError:
                        continue         # a forged change that waited: dropped like one that came in order
                    progress = True
        self._merge()
        return kept

    def _check_alone(self, c: Change) -> None:
        """Shape, author and signature of a change whose parents are all here."""
        if c.op == "create":
            if c.parents or c.version != 1 or c.target != c.author:
                raise GroupError("a malformed group creation was refused")
            if self.root and c.hash != self.root:
                raise GroupError("a second creation of this group was refused (a different group already uses "
                                 "this id)")
            key = c.target_key
        else:
            if not c.parents:
                raise GroupError("a membership change without parents was refused")
            key = self._key_of(c.author)
            if c.op == "add" and (c.target_key is None or crypto.fingerprint(c.target_key) != c.target):
                raise GroupError("an invitation whose key does not match its member was refused")
        if key is None or crypto.fingerprint(key) != c.author:
            raise GroupError("a membership change by someone this group never had was refused")
        if not crypto.is_valid_signature(key, SIGN_CONTEXT, c.signed_body(), c.sig):
            raise GroupError("a membership change with a forged signature was refused")

    def _key_of(self, fp: bytes) -> bytes | None:
        for c in self.changes.values():
            if c.target == fp and c.target_key is not None and c.op in ("create", "add"):
                return c.target_key
        return None

    def _keep(self, c: Change) -> Change:
        # Exactly one more than its parents' (docs/groups.md): a version pushed higher would raise every
        # member's membership version, up to past MAX_LOG, where every member's texts are refused.
        if c.parents and c.version != 1 + max(self.changes[p].version for p in c.parents):
            raise GroupError("a membership change whose version is not one more than its parents' was refused")
        if c.op == "create":
            self.root, self.creator, self.name = c.hash, c.author, c.name
        self.changes[c.hash] = c
        return c

    def _merge(self) -> None:
        self.members, self.effective = _merge(self.ordered(), self.creator)

    def ancestry(self, h: bytes) -> set[bytes]:
        """``h`` and every change it builds on: what its author held when it made it."""
        seen, stack = {h}, [h]
        while stack:
            for p in self.changes[stack.pop()].parents:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def members_of(self, hashes: set[bytes]) -> set[bytes]:
        """The members a peer sees whose log is ``hashes`` (only the changes this log holds count)."""
        members, _ = _merge([c for c in self.ordered() if c.hash in hashes], self.creator)
        return set(members)

    def removal_version(self, fp: bytes) -> int | None:
        """The version of the effective change that removed ``fp`` (None: not removed)."""
        versions = [c.version for c in self.changes.values()
                    if c.op == "remove" and c.target == fp and c.hash in self.effective]
        return max(versions) if versions and fp not in self.members else None

    def propose(self, identity: Identity, op: str, target: bytes, *, target_key: bytes | None = None,
                name: str = "") -> Change:
        """A new change by ``identity`` on top of the current heads, checked against the rules before it is made."""
        me = identity.fingerprint
        if me not in self.members:
            raise GroupError("you are not a member of this group")
        if op == "add":
            if target in self.members:
                raise GroupError("they are a member already")
            if len(self.members) >= MAX_MEMBERS:
                raise GroupError(f"a group has at most {MAX_MEMBERS} members")
        elif op == "remove":
            if target not in self.members:
                raise GroupError("they are not a member")
            if target == self.creator:
                raise GroupError("the group's creator cannot be removed")
            if me != self.creator and target != me:
                raise GroupError("only the group's creator removes others (anyone may remove themselves)")
        c = Change.make(identity, self.group, op, target, target_key=target_key, name=name[:MAX_NAME],
                        parents=self.heads())
        self.add(c)
        return c


def _merge(ordered: list[Change], creator: bytes) -> tuple[dict[bytes, Member], set[bytes]]:
    """Apply ``ordered`` changes (in (version, author, hash) order), checking the rules against the state so far;
    returns the members and the hashes of the changes that took effect."""
    members: dict[bytes, Member] = {}
    effective: set[bytes] = set()
    for c in ordered:
        if c.op == "create":
            assert c.target_key is not None
            # ``create`` names the group, not its creator: the creator has no given name (UIs name it by key).
            members[c.target] = Member(c.target, c.target_key, "", c.version)
        elif c.author not in members:
            continue
        elif c.op == "add":
            if c.target in members or len(members) >= MAX_MEMBERS or c.target_key is None:
                continue
            members[c.target] = Member(c.target, c.target_key, c.name, c.version)
        else:   # remove
            if c.target not in members or c.target == creator:
                continue
            if c.author != creator and c.author != c.target:
                continue
            del members[c.target]
        effective.add(c.hash)
    return members, effective


@dataclass(frozen=True)
class SharedFile:
    """A file shared in a group: what its ``file`` frame announces and its later file offer must match."""

    name: str
    size: int
    sha256: bytes


@dataclass(frozen=True)
class GroupText:
    """One entry of a group conversation: a message, or (``file`` set; ``text`` is then the file's name) a file
    shared with the members. Both take the sender's next counter."""

    group: bytes
    sender: bytes
    counter: int
    version: int
    lamport: int
    sent_at: float
    text: str
    file: SharedFile | None = None

    def order_key(self) -> tuple[int, bytes, int]:
        return (self.lamport, self.sender, self.counter)

    def encode(self, ref: int) -> bytes:
        """This entry as the ``text`` or ``file`` frame numbered ``ref``."""
        common = {"ref": ref, "group": self.group, "sender": self.sender, "counter": self.counter,
                  "version": self.version, "lamport": self.lamport, "sent_at": self.sent_at}
        if self.file is None:
            return GROUP_WIRE.encode_body("text", **common, text=self.text)
        return GROUP_WIRE.encode_body("file", **common, name=self.file.name, size=self.file.size,
                                      sha256=self.file.sha256)

    @classmethod
    def from_frame(cls, m: Mapping[str, Any]) -> GroupText:
        """The entry of a decoded ``text`` or ``file`` frame; a :class:`GroupError` for an impossible time."""
        sent_at = m["sent_at"]
        if not isinstance(sent_at, float) or not 0.0 <= sent_at < 1e11:
            raise GroupError("a group message with an impossible time was refused")
        shared = None if "text" in m else SharedFile(m["name"], m["size"], bytes(m["sha256"]))
        return cls(bytes(m["group"]), bytes(m["sender"]), m["counter"], m["version"], m["lamport"], sent_at,
                   m["text"] if shared is None else shared.name, shared)


@dataclass(frozen=True)
class Accepted:
    """A message to show; ``gap``: messages from its sender before it that never came."""

    text: GroupText
    gap: int = 0


@dataclass
class Inbox:
    """The receiver's checks of one group's messages (sans IO)."""

    log: MembershipLog
    last_counter: dict[bytes, int] = field(default_factory=dict)    # sender -> last counter shown
    lamport: int = 0
    held: list[tuple[bytes, GroupText]] = field(default_factory=list)   # (channel peer, text) awaiting a version

    def receive(self, peer: bytes, t: GroupText) -> list[Accepted]:
        """``t`` arrived over the channel with ``peer``. Returns what to show now (maybe also released held
        messages); raises :class:`GroupError` for a refusal."""
        if t.sender != peer:
            raise GroupError("a group message claiming another member as its sender was refused (each member's "
                             "messages come over its own channel)")
        if t.version > MAX_LOG:
            # a version is 1 + its parents' and a log holds at most MAX_LOG changes: no group ever gets there
            raise GroupError(f"a group message claiming membership version {t.version}, which no group reaches "
                             f"(its log holds at most {MAX_LOG} changes), was refused")
        if t.version > self.log.version:
            if len(self.held) >= MAX_HELD_TEXTS:
                raise GroupError("too many group messages wait for membership changes this node does not have; "
                                 "this one was refused")
            self.held.append((peer, t))
            return []
        return self._accept(t)

    def _accept(self, t: GroupText) -> list[Accepted]:
        if t.sender not in self.log.members:
            raise GroupError("a group message from someone who is not a member was refused")
        last = self.last_counter.get(t.sender, 0)
        if t.counter <= last:
            return []            # a resend after a dropped chat, or a replay: shown once
        self.last_counter[t.sender] = t.counter
        self.lamport = max(self.lamport, t.lamport)
        return [Accepted(t, t.counter - last - 1)]

    def release(self) -> list[Accepted]:
        """Held messages whose membership version arrived (after a change was applied)."""
        out: list[Accepted] = []
        still: list[tuple[bytes, GroupText]] = []
        for peer, t in sorted(self.held, key=lambda pt: pt[1].counter):
            if t.version > self.log.version:
                still.append((peer, t))
                continue
            try:
                out += self._accept(t)
            except GroupError:
                continue
        self.held = still
        return out

    def next_lamport(self) -> int:
        self.lamport += 1
        return self.lamport


__all__ = ["CHANGE", "GROUP_WIRE", "Accepted", "Change", "GroupError", "GroupText", "Inbox", "Member",
           "MembershipLog", "SharedFile", "find_group", "new_group_id"]
