"""A node's groups (issue 18): the sans-IO core of :mod:`p2pchat.groups` with its store and the fan-out.

Everything runs on the service's own thread (joined by :meth:`GroupService.close`): frames from peers (handed over
by the channel driver with a session lock held, so only queued there), chats that open (the node's session
watcher), and the user's commands (which wait for their result). Every frame for a member is first kept in the
group store as ``pending`` and goes out whenever a chat with that member is open, in order; the member's ``ack``
deletes it. Members with something pending are dialled by the node's outbox like contacts with waiting texts.

Files shared in a group: the ``file`` frame announcing it is an entry like a text (counter, receipts, pending); once
a member has acknowledged it, the file itself is offered to that member over the ordinary file transfer of the open
chat (:meth:`GroupHost.offer_file`), and again in its next chat until the member took or declined it. On the
receiving side the node's file driver asks :meth:`GroupService.tag_offer` which group file an offer is (an offer
from that member whose SHA-256 and size equal a file it announced), so the offer shows in the group conversation.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from p2pchat.events import GroupMessage, GroupNotice, GroupReceipt
from p2pchat.file_driver import prepare as prepare_file
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import FrameError, LocalFault, ProtocolError, UsageError, UserError
from p2pchat.foundation.identity import Identity
from p2pchat.group_history import GroupHistory, entry_of
from p2pchat.group_limits import MAX_PENDING_PER_MEMBER, GroupLimits
from p2pchat.group_store import GroupStore
from p2pchat.groups import (
    GROUP_WIRE,
    MAX_GROUP_TEXT,
    MAX_GROUPS,
    MAX_INVITES_PER_CONTACT,
    Change,
    GroupError,
    GroupText,
    Inbox,
    MembershipLog,
    SharedFile,
    find_group,
)
from p2pchat.node_runtime import SessionWatcher

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# frames from peers not yet handled, per peer and in all (beyond: dropped unacknowledged; the sender resends them)
MAX_HELD_PER_PEER = 64                      # texts one member may have waiting for a membership version, all groups
MAX_HELD_BYTES_PER_PEER = 4 * 1024 * 1024   # and their UTF-8
MAX_QUEUED_PER_PEER = 2 * MAX_PENDING_PER_MEMBER + 64
MAX_QUEUED_BYTES_PER_PEER = 8 * 1024 * 1024
MAX_QUEUED_FRAMES = 16384
MAX_QUEUED_BYTES = 64 * 1024 * 1024
MAX_KEPT_PER_SENDER = 64 * 1024 * 1024   # bytes of one member's texts kept (all groups); newer ones are shown only
MAX_FILE_ATTEMPTS = 3               # offers of one group file to one member that may fail before it is given up
FINAL_FILE_STATES = {"done": "saved", "declined": "declined", "cancelled": "cancelled"}


class GroupHost(Protocol):
    """What the service needs of the chat node."""

    def live_session_with(self, fp: str) -> str | None: ...

    def send_group_frame(self, session: str, body: bytes) -> None:
        """Seal ``body`` as a ``group`` frame in ``session``; a :class:`UserError` when the chat ended."""

    def want_contact(self, fp: str) -> None:
        """Dial ``fp`` (its outbox schedule), since something waits for it."""

    def offer_file(self, session: str, path: str, size: int, sha256: bytes) -> str:
        """Offer the file at ``path`` in ``session`` (a file transfer); its transfer id, hex. A :class:`UserError`
        when it cannot (the chat ended, too many transfers under way, the file cannot be read)."""

    def cancel_file(self, session: str, transfer: str) -> None:
        """Stop the transfer ``transfer`` of ``session``."""


@dataclass
class Group:
    log: MembershipLog
    inbox: Inbox
    invited_by: str
    my_counter: int = 0
    texts: list[GroupText] = field(default_factory=list)
    acks: dict[int, set[str]] = field(default_factory=dict)    # my counter -> members who acknowledged it
    sent_to: dict[int, int] = field(default_factory=dict)      # my counter -> other members when it was sent
    my_files: dict[int, str] = field(default_factory=dict)     # my counter -> the path of the file I shared

    @property
    def name(self) -> str:
        return self.log.name


@dataclass(frozen=True)
class ChangeView:
    """[groupgui] One membership change that took effect (fingerprints in hex; ``name``: the target's name as
    the author gave it, or the group's name for ``create``)."""

    op: str
    author: str
    target: str
    name: str
    ts: float


@dataclass(frozen=True)
class GroupView:
    """[groupgui] A group as the window shows it (:meth:`GroupService.views`)."""

    gid: str
    name: str
    creator: str
    members: tuple[tuple[str, str], ...]        # (fingerprint hex, name as its adder gave it), in joining order
    changes: tuple[ChangeView, ...]             # the effective changes, in the log's order
    texts: tuple[GroupText, ...]                # in the causal display order
    receipts: dict[int, tuple[int, int]]        # my message's counter -> (members who have it, sent to)
    unread: int = 0                             # kept messages from members not read yet (see views)


@dataclass
class _Pending:
    row: int
    ref: int
    body: bytes
    gid: bytes
    counter: int | None       # my text's counter (None: a change frame)
    version: int


class GroupService:
    """Owns the groups of one node and the thread that handles them."""

    def __init__(self, host: GroupHost, store: GroupStore, identity: Identity,
                 emit: Callable[[Any], None], *, limits: GroupLimits | None = None) -> None:
        self._host = host
        self._store = store
        self._me = identity
        self._emit = emit
        self.groups: dict[bytes, Group] = {}
        self._pending: dict[str, list[_Pending]] = {}
        self._held_acks: dict[str, list[tuple[bytes, int, bytes]]] = {}   # fp -> (group, counter, ack) to send
        self._unkept: set[tuple[bytes, bytes, int]] = set()   # (group, sender, counter) the store refused: no ack
        self._sent: dict[str, set[int]] = {}          # session -> refs of the pending frames sent in it
        # my shared files a member has not taken yet: fp -> (gid, counter) -> store row; offers under way
        self._files_out: dict[str, dict[tuple[bytes, int], int]] = {}
        self._offering: dict[str, tuple[str, bytes, int]] = {}     # transfer id -> (fp, gid, counter)
        self._attempts: dict[tuple[str, bytes, int], int] = {}
        # files members announced that this node has not taken yet (read by tag_offer on a reader thread)
        self._tags_lock = threading.Lock()
        self._announced: dict[tuple[str, bytes, int], list[tuple[bytes, int, str]]] = {}  # (fp, sha, size) ->
        self._tagged: dict[bytes, tuple[str, bytes, int, bytes, int]] = {}   # transfer -> (fp, sha, size, gid, n)
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._limits = limits or GroupLimits()
        self._inflow_lock = threading.Lock()
        self._inflow: dict[str, tuple[int, int]] = {}       # peer -> (frames, bytes) queued, not yet handled
        self._inflow_total = (0, 0)
        # (group, member) -> hashes of the changes it has or was queued (it is sent only the others)
        self._known: dict[tuple[bytes, str], set[bytes]] = {}
        self._kept_from: dict[bytes, int] = {}          # sender -> bytes of its texts kept (MAX_KEPT_PER_SENDER)
        self._over: set[bytes] = set()                  # senders past it the user was told of
        self._counter_rows: dict[tuple[bytes, bytes], int] = {}   # (group, sender) -> its latest "counter" row
        self._load()
        self._thread = threading.Thread(target=self._run, name="groups", daemon=True)
        self._thread.start()

    # --- loading ------------------------------------------------------------------------------------------

    def _load(self) -> None:
        invited = {bytes(r.record["gid"]): r.record["invited_by"] for r in self._store.rows("group")}
        logs = {gid: MembershipLog(gid) for gid in invited}
        for r in self._store.rows("change"):
            lg = logs.get(bytes(r.record["gid"]))
            if lg is not None:
                lg.add(Change.decode(bytes(r.record["raw"])))
        for gid, lg in logs.items():
            self.groups[gid] = Group(lg, Inbox(lg), invited[gid])
        for r in self._store.rows("text"):
            g = self.groups.get(bytes(r.record["gid"]))
            if g is None:
                continue
            t = entry_of(r.record)
            g.texts.append(t)
            self._kept_from[t.sender] = self._kept_from.get(t.sender, 0) + _kept_size(t)
            if "path" in r.record:
                g.my_files[t.counter] = r.record["path"]
            if t.sender == self._me.fingerprint:
                g.sent_to[t.counter] = r.record.get("to", 0)
            self._reached(g, t.sender, t.counter, t.lamport)
        for r in self._store.rows("counter"):         # what a deleted transcript had reached
            g = self.groups.get(bytes(r.record["gid"]))
            if g is not None:
                self._reached(g, bytes(r.record["sender"]), r.record["counter"], r.record["lamport"])
        for r in self._store.rows("receipt"):
            g = self.groups.get(bytes(r.record["gid"]))
            if g is not None:
                g.acks.setdefault(r.record["counter"], set()).add(r.record["member"])
        for r in self._store.rows("pending"):
            rec = r.record
            self._pending.setdefault(rec["fp"], []).append(
                _Pending(r.id, rec["ref"], bytes(rec["body"]), bytes(rec["gid"]), rec.get("counter"),
                         rec["version"]))
        seen = {(bytes(r.record["gid"]), bytes(r.record["sender"]), r.record["counter"])
                for r in self._store.rows("fileseen")}
        for g in self.groups.values():
            for t in g.texts:
                if t.file is not None and t.sender != self._me.fingerprint and \
                        (t.group, t.sender, t.counter) not in seen:
                    self._announce(g, t)
        for r in self._store.rows("fileout"):
            self._files_out.setdefault(r.record["fp"], {})[(bytes(r.record["gid"]), r.record["counter"])] = r.id
        for fp in self._pending.keys() | self._files_out.keys():
            self._host.want_contact(fp)

    def _reached(self, g: Group, sender: bytes, counter: int, lamport: int) -> None:
        g.inbox.lamport = max(g.inbox.lamport, lamport)
        if sender == self._me.fingerprint:
            g.my_counter = max(g.my_counter, counter)
        else:
            g.inbox.last_counter[sender] = max(g.inbox.last_counter.get(sender, 0), counter)

    # --- the thread ---------------------------------------------------------------------------------------

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self._store.close()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except UserError as exc:
                log.info("groups: %s", exc)
                self._emit(GroupNotice(None, "", str(exc), warning=True))
            except Exception:
                log.exception("internal error in the group service")
                raise

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the service thread and wait for its result (the user's commands)."""
        fut: Future[_T] = Future()

        def job() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:         # handed to the caller, who shows it
                fut.set_exception(exc)
        self._jobs.put(job)
        while True:
            try:
                return fut.result(timeout=1.0)
            except TimeoutError:
                if not self._thread.is_alive():     # it stopped on a programming error (logged): say so, not hang
                    raise LocalFault("the group service stopped after an internal error (see the log); "
                                     "restart the program") from None

    # --- hooks from the node (any thread, maybe a session lock held: queue only) ------------------------------

    def frame_from(self, session: str, fp: str, body: bytes) -> None:
        with self._inflow_lock:
            frames, size = self._inflow.get(fp, (0, 0))
            total_frames, total_size = self._inflow_total
            if frames >= MAX_QUEUED_PER_PEER or size + len(body) > MAX_QUEUED_BYTES_PER_PEER or \
                    total_frames >= MAX_QUEUED_FRAMES or total_size + len(body) > MAX_QUEUED_BYTES:
                log.warning("groups: dropped a frame from %s: too many waiting (it is sent again)", fp[:16])
                return
            self._inflow[fp] = (frames + 1, size + len(body))
            self._inflow_total = (total_frames + 1, total_size + len(body))
        self._jobs.put(lambda: self._on_frame(session, fp, body))

    def _taken(self, fp: str, body: bytes) -> None:
        with self._inflow_lock:
            frames, size = self._inflow.pop(fp, (1, len(body)))
            if frames > 1:
                self._inflow[fp] = (frames - 1, size - len(body))
            total_frames, total_size = self._inflow_total
            self._inflow_total = (total_frames - 1, total_size - len(body))

    def chat_ready(self, fp: str, session: str) -> None:
        self._jobs.put(lambda: self._flush(fp, session))
        self._jobs.put(lambda: self._offer_files(fp))

    def chat_ended(self, fp: str | None, session: str, *, dropped: bool, ours: bool) -> None:
        self._jobs.put(lambda: self._forget_session(fp, session))

    def _forget_session(self, fp: str | None, session: str) -> None:
        """Frames sent in a chat that ended unacknowledged go out again: in another chat with the member that is
        still open, or in the next one."""
        self._sent.pop(session, None)
        if fp is not None and self._pending.get(fp):
            live = self._host.live_session_with(fp)
            if live is not None and live != session:
                self._flush(fp, live)
            else:
                self._host.want_contact(fp)

    def has_pending(self, fp: str) -> bool:
        return bool(self._pending.get(fp) or self._files_out.get(fp))

    # --- hooks from the file driver (a reader thread, a session lock held: no IO, no waiting) -----------------

    def tag_offer(self, peer_fp: str, tid: bytes, sha256: bytes, size: int) -> tuple[str, str, int] | None:
        """Which group file the offer ``tid`` from ``peer_fp`` is: (group id hex, group name, the sender's
        counter), or None (an ordinary file offer). The oldest file announced with that SHA-256 and size."""
        with self._tags_lock:
            waiting = self._announced.get((peer_fp, sha256, size))
            if not waiting:
                return None
            gid, counter, name = waiting[0]
            self._tagged[tid] = (peer_fp, sha256, size, gid, counter)
            return gid.hex(), name, counter

    def file_finished(self, peer_fp: str, tid: bytes, outgoing: bool, state: str) -> None:
        """A transfer with ``peer_fp`` ended in ``state`` (done, declined, cancelled, failed)."""
        if outgoing:
            self._jobs.put(lambda: self._my_file_ended(tid.hex(), state))
            return
        if state == "failed":          # cut or refused on the way: the member offers it again (resume)
            return
        with self._tags_lock:
            tag = self._tagged.pop(tid, None)
            if tag is None:
                return
            fp, sha, size, gid, counter = tag
            waiting = self._announced.get((fp, sha, size), [])
            self._announced[(fp, sha, size)] = [w for w in waiting if (w[0], w[1]) != (gid, counter)]
        self._jobs.put(lambda: self._seen(gid, bytes.fromhex(fp), counter))

    # --- the user's commands ------------------------------------------------------------------------------

    def create(self, name: str, members: list[tuple[str, bytes, str]]) -> bytes:
        """A new group named ``name`` with ``members`` (fp hex, public key DER, name); returns its id."""
        def run() -> bytes:
            if len(self.groups) >= MAX_GROUPS:
                raise GroupError(f"this node keeps at most {MAX_GROUPS} groups")
            lg, create = MembershipLog.create(self._me, name)
            g = Group(lg, Inbox(lg), "")
            self.groups[lg.group] = g
            self._store.add("group", gid=lg.group, invited_by="")
            self._keep_changes(lg.group, [create])
            for fp, der, nick in members:
                self._propose(g, "add", bytes.fromhex(fp), der, nick)
            self._fan_out_changes(g)
            return lg.group
        return self._call(run)

    def add(self, gid: bytes, member: tuple[str, bytes, str]) -> None:
        def run() -> None:
            g = self._group(gid)
            self._propose(g, "add", bytes.fromhex(member[0]), member[1], member[2])
            self._fan_out_changes(g)
        self._call(run)

    def remove(self, gid: bytes, fp: str) -> None:
        def run() -> None:
            g = self._group(gid)
            target = bytes.fromhex(fp)
            before = set(g.log.members)
            self._propose(g, "remove", target, None, "")
            self._fan_out_changes(g, also=before - set(g.log.members))   # the removed learn it, and only that
            self._after_membership(g, before)
        self._call(run)

    def say(self, gid: bytes, text: str) -> int:
        """Send ``text`` to every other member of the group; returns its counter."""
        if not text or len(text) > MAX_GROUP_TEXT:
            raise UsageError(f"a group message is 1 to {MAX_GROUP_TEXT} characters")

        return self._call(lambda: self._post(gid, text, None, None))

    def send_file(self, gid: bytes, path: str) -> int:
        """Share the file at ``path`` with every other member: it shows in the group conversation, and each member
        is offered it over its own chat (now, or when it is next reachable) until it takes or declines it, a cut
        transfer resuming like any other. Returns the entry's counter. Hashes the file on this thread first."""
        full, size, sha = prepare_file(path)
        name = os.path.basename(full)
        return self._call(lambda: self._post(gid, name, SharedFile(name, size, sha), full))

    def _post(self, gid: bytes, text: str, shared: SharedFile | None, path: str | None) -> int:
        g = self._group(gid)
        if self._me.fingerprint not in g.log.members:
            raise GroupError(f"you are no longer a member of {g.name}")
        # Refused before anything is kept when a member has no room for it (the text, and maybe a change frame
        # first): refused halfway, it stayed in the transcript and reached only the members queued before.
        for m, member in g.log.members.items():
            if m != self._me.fingerprint and len(self._pending.get(m.hex(), ())) + 2 > MAX_PENDING_PER_MEMBER:
                raise GroupError(f"{MAX_PENDING_PER_MEMBER} group frames already wait for {member.label}, who has "
                                 "not been reachable; nothing was sent to the group: "
                                 "wait until they are delivered, or remove that member")
        g.my_counter += 1
        t = GroupText(gid, self._me.fingerprint, g.my_counter, g.log.version, g.inbox.next_lamport(), time.time(),
                      text, shared)
        to = len(g.log.members) - 1
        others = [m for m in g.log.members if m != self._me.fingerprint]
        # One transaction keeps the text, its shared file's offers and every frame for the members (a member who
        # may not have every change yet, added by someone else, gets them first, on the same queue): a kill or a
        # full disk leaves the message sent to all or kept nowhere, never in the transcript and queued for some.
        changes = self._changes_due(g, set(others))
        frames: list[tuple[str, int | None, Callable[[int], bytes]]] = [
            (fp, None, functools.partial(_changes_body, gid, [c.encode() for _, c in missing]))
            for fp, missing in changes]
        frames += [(m.hex(), t.counter, t.encode) for m in others]
        made = []
        for fp, counter, make in frames:
            ref = _new_ref()
            made.append((fp, counter, ref, make(ref)))
        records: list[tuple[str, dict[str, Any]]] = [("text", _text_record(t, to=to, path=path))]
        if shared is not None and path is not None:
            records += [("fileout", {"fp": m.hex(), "gid": gid, "counter": t.counter}) for m in others]
        records += [("pending", {"fp": fp, "ref": ref, "body": body, "gid": gid, "counter": counter,
                                 "version": g.log.version}) for fp, counter, ref, body in made]
        try:
            rows = self._store.add_many(records)
        except LocalFault:          # not kept (a full disk): not sent either, and its number is not used up
            g.my_counter -= 1
            raise
        g.sent_to[t.counter] = to
        g.texts.append(t)
        if shared is not None and path is not None:
            g.my_files[t.counter] = path
            for m, row in zip(others, rows[1:1 + len(others)], strict=True):
                self._files_out.setdefault(m.hex(), {})[(gid, t.counter)] = row
        for fp, missing in changes:
            known = self._known.setdefault((gid, fp), set())
            if not known:
                self._drop_superseded(fp, gid)
            known.update(h for h, _ in missing)
        for (fp, counter, ref, body), row in zip(made, rows[len(rows) - len(made):], strict=True):
            self._pending.setdefault(fp, []).append(_Pending(row, ref, body, gid, counter, g.log.version))
        for fp in dict.fromkeys(fp for fp, _, _, _ in made):
            self._send_or_call(fp)
        return t.counter

    def snapshot(self) -> list[tuple[bytes, str, list[bytes]]]:
        """(id, name, members) of every group."""
        return self._call(lambda: [(gid, g.name, list(g.log.members)) for gid, g in self.groups.items()])

    def conversation(self, gid: bytes) -> list[GroupText]:
        """The group's messages in their causal order (the same on every member)."""
        return self._call(lambda: sorted(self._group(gid).texts, key=GroupText.order_key))

    def delivered(self, gid: bytes, counter: int) -> tuple[int, int]:
        """(members who acknowledged my message ``counter``, the other members it was sent to)."""
        def run() -> tuple[int, int]:
            g = self._group(gid)
            return len(g.acks.get(counter, ())), g.sent_to.get(counter, 0)
        return self._call(run)

    def find(self, text: str) -> bytes:
        """The group whose name or id (hex prefix) is ``text``."""
        return self._call(lambda: find_group(((gid, g.name) for gid, g in self.groups.items()), text))

    # --- [groupgui] what the window shows of its groups ---------------------------------------------------

    def views(self, gid: bytes | None = None) -> list[GroupView]:
        """Every group (or only ``gid``) as the window draws it: members, effective changes, messages, receipts;
        the kept messages not read yet only when every group is read (it reads the whole store)."""
        def run() -> list[GroupView]:
            unread = {} if gid is not None else {s.gid: s.unread for s in self._history().conversations()}
            return [self._view(g, unread.get(k, 0)) for k, g in self.groups.items() if gid is None or k == gid]
        return self._call(run)

    def _view(self, g: Group, unread: int) -> GroupView:
        lg = g.log
        members = sorted(lg.members.values(), key=lambda m: (m.since, m.fp))
        return GroupView(
            lg.group.hex(), lg.name, lg.creator.hex(), tuple((m.fp.hex(), m.name) for m in members),
            tuple(ChangeView(c.op, c.author.hex(), c.target.hex(), c.name, c.ts)
                  for c in lg.ordered() if c.hash in lg.effective),
            tuple(sorted(g.texts, key=GroupText.order_key)),
            {n: (len(g.acks.get(n, ())), of) for n, of in g.sent_to.items()}, unread)

    def mark_read(self, gid: bytes) -> None:
        """The user has read the group's messages so far (``p2pchat history`` counts unread ones from here)."""
        self._call(lambda: self._history().mark_read(gid))

    def delete_history(self, gid: bytes) -> int:
        """Forget the group's kept messages here and in the store (the group, its members and the numbering
        stay: :meth:`p2pchat.group_history.GroupHistory.delete`); returns how many were forgotten."""
        def run() -> int:
            g = self._group(gid)
            n = self._history().delete(gid)
            g.texts.clear()
            self._kept_from = {}
            for t in (t for other in self.groups.values() for t in other.texts):
                self._kept_from[t.sender] = self._kept_from.get(t.sender, 0) + _kept_size(t)
            self._over.clear()
            return n
        return self._call(run)

    def _history(self) -> GroupHistory:
        return GroupHistory(self._store, self._me.fingerprint)

    # --- internals (the service thread) -------------------------------------------------------------------

    def _group(self, gid: bytes) -> Group:
        g = self.groups.get(gid)
        if g is None:
            raise UsageError("no such group")
        return g

    def _propose(self, g: Group, op: str, target: bytes, key: bytes | None, name: str) -> None:
        c = g.log.propose(self._me, op, target, target_key=key, name=name)
        self._keep_changes(g.log.group, [c])

    def _keep_changes(self, gid: bytes, changes: list[Change]) -> None:
        self._store.add_many([("change", {"gid": gid, "raw": c.encode()}) for c in changes])

    def _keep_text(self, g: Group, t: GroupText) -> None:
        self._store.add("text", **_text_record(t))
        g.texts.append(t)       # only once stored: a text the store refused is not part of the conversation

    def _fan_out_changes(self, g: Group, *, also: set[bytes] | None = None, only: set[bytes] | None = None) -> None:
        """To every other member (and ``also`` those; or ``only`` those) the changes it is not known to have: the
        whole log to a member this run never sent anything (a new member needs it all), else the new ones."""
        for fp, missing in self._changes_due(g, (set(g.log.members) | (also or set())) if only is None else only):
            known = self._known.setdefault((g.log.group, fp), set())
            if not known:
                self._drop_superseded(fp, g.log.group)
            self._queue(fp, g, None, functools.partial(_changes_body, g.log.group, [c.encode() for _, c in missing]))
            known.update(h for h, _ in missing)        # frames for a member go out in order until acknowledged

    def _changes_due(self, g: Group, members: set[bytes]) -> list[tuple[str, list[tuple[bytes, Change]]]]:
        """(member fp hex, the changes it is not known to have) for each of ``members`` but me that lacks some:
        the whole log for one this run never sent anything (a new member needs it all)."""
        ordered = g.log.ordered_items()
        due = []
        for m in members:
            if m == self._me.fingerprint:
                continue
            known = self._known.get((g.log.group, m.hex()), set())
            if len(known) >= len(ordered) and known.issuperset(g.log.changes):
                continue                               # the usual case before a message: nothing to send
            due.append((m.hex(), [(h, c) for h, c in ordered if h not in known]))
        return due

    def _drop_superseded(self, fp: str, gid: bytes) -> None:
        """The whole log is about to be queued for member ``fp``: the change frames of this group still waiting
        for it hold nothing more (the log only grows), so they go. Otherwise a member that never acknowledges,
        sent the whole log again and again (each time a change makes it needed), would hold every copy here, in
        memory and in the store: a hostile creator re-adding it with stale parents made that grow with the square
        of the log (255 copies, about 55 MiB per group)."""
        waiting = self._pending.get(fp, [])
        old = [p for p in waiting if p.gid == gid and p.counter is None]
        if old:
            self._pending[fp] = [p for p in waiting if not (p.gid == gid and p.counter is None)]
            self._store.delete([p.row for p in old])

    def _queue(self, fp: str, g: Group, counter: int | None, make: Callable[[int], bytes]) -> None:
        waiting = self._pending.setdefault(fp, [])
        if len(waiting) >= MAX_PENDING_PER_MEMBER:
            raise GroupError(f"{MAX_PENDING_PER_MEMBER} group frames already wait for a member; wait until they "
                             "are delivered")
        ref = _new_ref()
        body = make(ref)
        row = self._store.add("pending", fp=fp, ref=ref, body=body, gid=g.log.group, counter=counter,
                              version=g.log.version)
        waiting.append(_Pending(row, ref, body, g.log.group, counter, g.log.version))
        self._send_or_call(fp)

    def _send_or_call(self, fp: str) -> None:
        """What waits for ``fp`` goes out now if a chat with it is open; else the outbox calls it."""
        session = self._host.live_session_with(fp)
        if session is not None:
            self._flush(fp, session)
        else:
            self._host.want_contact(fp)

    def _flush(self, fp: str, session: str) -> None:
        sent = self._sent.setdefault(session, set())
        for p in list(self._pending.get(fp, ())):
            if p.ref in sent:          # refs, not rows: SQLite reuses the row id of a deleted last row
                continue
            try:
                self._host.send_group_frame(session, p.body)
            except UserError as exc:
                log.info("groups: %s", exc)
                return
            sent.add(p.ref)

    def _send_now(self, session: str, body: bytes) -> None:
        try:
            self._host.send_group_frame(session, body)
        except UserError as exc:
            log.info("groups: %s", exc)

    def _admit(self, fp: str, kind: str, cost: float = 1.0) -> bool:
        """Draw on ``fp``'s budget for ``kind`` (p2pchat/group_limits.py); a refusal is told once per run."""
        ok, notice = self._limits.admit(fp, kind, cost)
        if notice is not None:
            log.info("groups: %s", notice)
            self._emit(GroupNotice(None, "", notice, warning=True))
        return ok

    def _on_frame(self, session: str, fp: str, body: bytes) -> None:
        """One frame from ``fp``. Over a budget it is refused unacknowledged, before any other work; a refusal is
        shown at most about once a second per peer (a stream of bad frames is not a stream of notices)."""
        self._taken(fp, body)
        if not self._admit(fp, "frame"):
            return
        try:
            self._handle_frame(session, fp, body)
        except GroupError as exc:
            log.info("groups: %s", exc)
            if self._limits.admit(fp, "notice")[0]:
                self._emit(GroupNotice(None, "", str(exc), warning=True))

    def _handle_frame(self, session: str, fp: str, body: bytes) -> None:
        try:
            msg = GROUP_WIRE.decode(body)
        except (FrameError, ProtocolError) as exc:
            raise GroupError(f"a malformed group frame from {fp[:16]} was refused ({exc})") from None
        if msg.type == "ack":
            self._on_ack(fp, [int(r) for r in msg["refs"]])
            return
        if msg.type not in ("changes", "text", "file"):    # e.g. the codec's own `error` message
            raise GroupError(f"a group frame of the unexpected kind {msg.type!r} from {fp[:16]} was refused")
        gid = bytes(msg["group"])
        ack = GROUP_WIRE.encode_body("ack", refs=[msg["ref"]])
        if msg.type == "changes":
            changes = [Change.decode(bytes(c)) for c in msg["changes"]]
            g = self.groups.get(gid)
            unchecked = [c for c in changes if g is None or (c.hash not in g.log.changes and
                                                            c.hash not in g.log.held)]
            if (g is None and not self._admit(fp, "invite")) or \
                    (unchecked and not self._admit(fp, "change", len(unchecked))):
                return
            self._send_now(session, ack)        # even a refused frame: its sender stops resending it
            self._on_changes(fp, gid, changes)
        elif not self._admit(fp, "text"):
            return
        else:                                   # a text or a shared file: acknowledged once shown or refused
            self._held_acks.setdefault(fp, []).append((gid, msg["counter"], ack))
            g = self.groups.get(gid)
            try:
                t = GroupText.from_frame(msg.fields)
                if g is None:
                    raise GroupError(f"a message for a group this node does not know came from {fp[:16]}; refused")
                if t.version > g.log.version:
                    self._check_hold_room(fp, t)
                self._show(g, g.inbox.receive(bytes.fromhex(fp), t))
                if any(h is t for _peer, h in g.inbox.held):        # [groupgui] said, not silent
                    self._emit(GroupNotice(gid.hex(), g.name, f"a message from {fp[:16]} waits for a membership "
                                                              "change this computer does not have yet; it shows "
                                                              "once that arrives", warning=True))
            finally:
                self._ack_unless_held(fp)

    def _ack_unless_held(self, fp: str) -> None:
        """Acknowledge the texts from ``fp`` that are shown or refused; a held text is acknowledged once released
        (unacknowledged, it comes again after a restart of this node)."""
        held = {(t.group, t.counter) for peer, t in self._held_texts() if peer.hex() == fp}
        sender = bytes.fromhex(fp)
        waiting = [(gid, counter, ack) for gid, counter, ack in self._held_acks.get(fp, [])
                   if (gid, sender, counter) not in self._unkept]
        self._unkept -= {u for u in self._unkept if u[1] == sender}     # their acks are gone: resends come again
        keep = [(gid, counter, ack) for gid, counter, ack in waiting if (gid, counter) in held]
        go = [ack for gid, counter, ack in waiting if (gid, counter) not in held]
        self._held_acks[fp] = keep
        session = self._host.live_session_with(fp) if go else None
        for ack in go:
            if session is not None:
                self._send_now(session, ack)

    def _check_hold_room(self, fp: str, t: GroupText) -> None:
        """[red team, 2026-12-07 night] Texts one member makes this node hold in memory (waiting for a membership
        version), over all groups: at most MAX_HELD_PER_PEER and MAX_HELD_BYTES_PER_PEER of UTF-8, so a member
        cannot hold 256 texts of 64 K characters in each of its groups, nor take every slot of a group's holding."""
        sender = bytes.fromhex(fp)
        mine = [h for peer, h in self._held_texts() if peer == sender]
        size = sum(len(h.text.encode("utf-8", "surrogatepass")) for h in mine)
        if len(mine) >= MAX_HELD_PER_PEER or size + len(t.text.encode("utf-8", "surrogatepass")) > \
                MAX_HELD_BYTES_PER_PEER:
            self._unkept.add((t.group, sender, t.counter))      # not acknowledged: its sender sends it again
            raise GroupError(f"{len(mine)} group messages from {fp[:16]} ({size:,} bytes) already wait for "
                             "membership changes this computer does not have; this one was refused (it comes "
                             "again in a later chat)")

    def _held_texts(self) -> list[tuple[bytes, GroupText]]:
        return [h for g in self.groups.values() for h in g.inbox.held]

    def _show(self, g: Group, accepted: list[Any]) -> None:
        for i, a in enumerate(accepted):
            room = self._room_for(g, a.text)
            try:
                if room:
                    self._keep_text(g, a.text)
                else:                   # shown only: the sender keeps more than it may make us store
                    self._keep_counter(g, a.text)
            except LocalFault:
                # Not kept (a full disk), so neither shown nor acknowledged: the inbox forgets it and what came
                # after it, and their senders send them again (in the next chat, or after a restart).
                if room:
                    self._kept_from[a.text.sender] -= _kept_size(a.text)
                for b in accepted[i:]:
                    t = b.text
                    g.inbox.last_counter[t.sender] = min(g.inbox.last_counter.get(t.sender, 0),
                                                         t.counter - b.gap - 1)
                    self._unkept.add((t.group, t.sender, t.counter))
                raise
            if a.text.file is not None:
                self._announce(g, a.text)
            self._emit_message(g, a)

    def _room_for(self, g: Group, t: GroupText) -> bool:
        """Whether a member's text may be kept: what one member can make this computer store (and load at every
        start) is bounded, :data:`MAX_KEPT_PER_SENDER` over all groups; past it, its texts are shown, not kept,
        and the user is told once. A shared file's entry is always kept (its offer depends on it)."""
        kept = self._kept_from.get(t.sender, 0) + _kept_size(t)
        if t.file is None and kept > MAX_KEPT_PER_SENDER:
            if t.sender not in self._over:
                self._over.add(t.sender)
                sender = g.log.members.get(t.sender)
                who = sender.label if sender is not None else f"key {t.sender.hex()[:16]}"
                self._emit(GroupNotice(g.log.group.hex(), g.name, f"this computer already keeps "
                                       f"{MAX_KEPT_PER_SENDER // 2**20} MiB of group messages from {who}; newer "
                                       "ones from them are shown but not saved (deleting a group's history "
                                       "makes room)", warning=True))
            return False
        self._kept_from[t.sender] = kept
        return True

    def _keep_counter(self, g: Group, t: GroupText) -> None:
        """A text shown but not kept: only the number it reached is (one row per group and sender, replaced), so
        after a restart the next one is not taken for a gap nor this one for new."""
        key = (g.log.group, t.sender)
        row = self._store.add("counter", gid=g.log.group, sender=t.sender, counter=t.counter, lamport=t.lamport)
        old, self._counter_rows[key] = self._counter_rows.get(key), row
        if old is not None:
            self._store.delete([old])

    def _emit_message(self, g: Group, a: Any) -> None:
        sender = g.log.members.get(a.text.sender)
        self._emit(GroupMessage(g.log.group.hex(), g.name, a.text.sender.hex(),
                                sender.name if sender is not None else "",
                                a.text.counter, a.text.text, a.text.sent_at, a.gap,
                                a.text.file.size if a.text.file is not None else None))

    def _seen(self, gid: bytes, sender: bytes, counter: int) -> None:
        self._store.add("fileseen", gid=gid, sender=sender, counter=counter)

    def _announce(self, g: Group, t: GroupText) -> None:
        """A member's shared file this node has not taken: its offer will be shown in the group."""
        assert t.file is not None
        with self._tags_lock:
            self._announced.setdefault((t.sender.hex(), t.file.sha256, t.file.size), []).append(
                (t.group, t.counter, g.name))

    # --- my shared files (the service thread) ------------------------------------------------------------------

    def _offer_files(self, fp: str) -> None:
        """Offer ``fp`` each of my shared files it acknowledged and has not taken, in its open chat."""
        waiting = self._files_out.get(fp)
        if not waiting:
            return
        session = self._host.live_session_with(fp)
        if session is None:
            self._host.want_contact(fp)
            return
        busy = {(gid, n) for f, gid, n in self._offering.values() if f == fp}
        for gid, counter in list(waiting):
            g = self.groups.get(gid)
            path = g.my_files.get(counter) if g is not None else None
            entry = next((t for t in g.texts if t.sender == self._me.fingerprint and t.counter == counter),
                         None) if g is not None else None
            if g is None or path is None or entry is None or entry.file is None:
                self._drop_file_out(fp, gid, counter)
                continue
            if (gid, counter) in busy or fp not in g.acks.get(counter, ()):
                continue       # under way, or the member has not got the announcement yet (it comes first)
            if not os.path.isfile(path) or os.path.getsize(path) != entry.file.size:
                self._drop_file_out(fp, gid, counter)
                self._emit(GroupNotice(gid.hex(), g.name, f"{entry.file.name} changed or was moved since you "
                                                          "shared it; members who had not taken it will not get it"))
                continue
            try:
                tid = self._host.offer_file(session, path, entry.file.size, entry.file.sha256)
            except UserError as exc:           # the chat ended, or enough transfers are under way: later
                log.info("groups: %s", exc)
                return
            self._offering[tid] = (fp, gid, counter)

    def _my_file_ended(self, tid: str, state: str) -> None:
        who = self._offering.pop(tid, None)
        if who is None:
            return
        fp, gid, counter = who
        g = self.groups.get(gid)
        if state not in FINAL_FILE_STATES:
            tries = self._attempts[who] = self._attempts.get(who, 0) + 1
            if tries < MAX_FILE_ATTEMPTS:
                self._offer_files(fp)       # in the chat still open, or the next one
                return
        self._drop_file_out(fp, gid, counter)
        member = g.log.members.get(bytes.fromhex(fp)) if g is not None else None
        if g is not None and member is not None:       # (a transfer to a removed member was stopped: no notice)
            name = next((t.text for t in g.texts if t.sender == self._me.fingerprint and t.counter == counter), "")
            verb = FINAL_FILE_STATES.get(state, f"could not be given it after {MAX_FILE_ATTEMPTS} tries:")
            self._emit(GroupNotice(gid.hex(), g.name, f"{member.label} {verb} {name}"))
        self._offer_files(fp)

    def _drop_file_out(self, fp: str, gid: bytes, counter: int) -> None:
        row = self._files_out.get(fp, {}).pop((gid, counter), None)
        self._attempts.pop((fp, gid, counter), None)
        if row is not None:
            self._store.delete([row])

    def _on_changes(self, fp: str, gid: bytes, changes: list[Change]) -> None:
        peer = bytes.fromhex(fp)
        g = self.groups.get(gid)
        if g is None:          # an invitation
            if len(self.groups) >= MAX_GROUPS:
                raise GroupError(f"an invitation from {fp[:16]} was refused: this node keeps at most {MAX_GROUPS} "
                                 "groups")
            if sum(1 for x in self.groups.values() if x.invited_by == fp) >= MAX_INVITES_PER_CONTACT:
                raise GroupError(f"an invitation from {fp[:16]} was refused: it invited this node to "
                                 f"{MAX_INVITES_PER_CONTACT} groups already")
            lg = MembershipLog(gid)
            for c in changes:
                lg.add(c)
            if peer not in lg.members or self._me.fingerprint not in lg.members:
                raise GroupError(f"an invitation from {fp[:16]} that does not make both of you members was refused")
            g = Group(lg, Inbox(lg), fp)
            self.groups[gid] = g
            self._known[(gid, fp)] = set(lg.changes)
            self._store.add("group", gid=gid, invited_by=fp)
            self._keep_changes(gid, lg.ordered())
            self._emit(GroupNotice(gid.hex(), lg.name, f"you were added to {lg.name!r} ({len(lg.members)} members)",
                                   membership=True))
            return
        if not self._key_known(g, peer):
            raise GroupError(f"membership changes from {fp[:16]}, who was never a member of {g.name!r}, were refused")
        before = set(g.log.members)
        new: list[Change] = []
        refused: list[str] = []
        for c in changes:
            try:
                new += g.log.add(c)
            except GroupError as exc:      # one bad change does not stop the good ones
                refused.append(str(exc))
        if refused:                        # told once per frame, however many it carried
            more = f" (and {len(refused) - 1} more refused changes)" if len(refused) > 1 else ""
            self._emit(GroupNotice(gid.hex(), g.name, f"from {fp[:16]}: {refused[0]}{more}", warning=True))
        theirs_known = self._known.setdefault((gid, fp), set())
        theirs_known.update(c.hash for c in changes if c.hash in g.log.changes)
        if not new:
            return
        self._keep_changes(gid, new)
        self._after_membership(g, before)
        # A change's author gave it to the members it saw when it made it (the members of the change's ancestry),
        # and the sender to those it sees; a member only this node sees — one added by a concurrent edit — gets it
        # from here. A member added by a change whose author lacked something this node holds gets the whole log:
        # that frame may reach it before the adder's invitation, so it must be a valid invitation on its own.
        reach = g.log.members_of(theirs_known)
        behind: set[bytes] = set()
        whole: set[bytes] = set()
        for c in new:
            seen = g.log.ancestry(c.hash)
            behind |= set(g.log.members) - g.log.members_of(seen)
            if c.op == "add" and c.target in g.log.members and len(seen) < len(g.log.changes):
                whole.add(c.target)
        for m in whole:
            self._known.pop((gid, m.hex()), None)
        self._fan_out_changes(g, only=((set(g.log.members) - reach) | behind | whole) - {peer})

    def _key_known(self, g: Group, peer: bytes) -> bool:
        return any(c.target == peer for c in g.log.changes.values())

    def _after_membership(self, g: Group, before: set[bytes]) -> None:
        now = set(g.log.members)
        for m in now - before:
            self._emit(GroupNotice(g.log.group.hex(), g.name,
                                   f"{g.log.members[m].label} joined {g.name!r}", membership=True))
        for m in before - now:
            self._emit(GroupNotice(g.log.group.hex(), g.name,
                                   f"you were removed from {g.name!r}" if m == self._me.fingerprint else
                                   f"key {m.hex()[:16]} is no longer in {g.name!r}", membership=True))
        self._drop_pending_for_removed(g)
        self._show(g, g.inbox.release())
        for fp in list(self._held_acks):
            self._ack_unless_held(fp)

    def _drop_pending_for_removed(self, g: Group) -> None:
        """A removed member gets nothing new: its waiting texts of this group are dropped (changes stay, so it
        learns it was removed)."""
        for fp in {m.hex() for m in self._all_removed(g)}:
            for gid, counter in [k for k in self._files_out.get(fp, {}) if k[0] == g.log.group]:
                self._drop_file_out(fp, gid, counter)
            for tid, (f, gid, _) in list(self._offering.items()):
                session = self._host.live_session_with(fp)
                if f == fp and gid == g.log.group and session is not None:
                    try:
                        self._host.cancel_file(session, tid)     # its end comes back through file_finished
                    except UserError as exc:
                        log.info("groups: %s", exc)
            with self._tags_lock:        # and what it shared is no longer offered in the group
                for key, waiting in self._announced.items():
                    if key[0] == fp:
                        self._announced[key] = [w for w in waiting if w[0] != g.log.group]
            keep: list[_Pending] = []
            drop: list[_Pending] = []
            for p in self._pending.get(fp, []):
                (drop if p.gid == g.log.group and p.counter is not None else keep).append(p)
            if drop:
                self._pending[fp] = keep
                self._store.delete([p.row for p in drop])

    def _all_removed(self, g: Group) -> set[bytes]:
        return {c.target for c in g.log.changes.values() if c.op == "remove" and c.target not in g.log.members}

    def _on_ack(self, fp: str, refs: list[int]) -> None:
        wanted = set(refs)
        done = [p for p in self._pending.get(fp, []) if p.ref in wanted]
        if not done:
            return
        self._pending[fp] = [p for p in self._pending[fp] if p.ref not in wanted]
        self._store.delete([p.row for p in done])
        for p in done:
            g = self.groups.get(p.gid)
            if p.counter is None or g is None:
                continue
            got = g.acks.setdefault(p.counter, set())
            if fp not in got:
                got.add(fp)
                self._store.add("receipt", gid=p.gid, counter=p.counter, member=fp)
                self._emit(GroupReceipt(p.gid.hex(), g.name, p.counter, len(got), g.sent_to.get(p.counter, 0)))
        self._offer_files(fp)           # a shared file follows the announcement the member now has


def _new_ref() -> int:
    return (int.from_bytes(crypto.random_bytes(8), "big") >> 2) + 1      # 62 random bits


def _text_record(t: GroupText, *, to: int = 0, path: str | None = None) -> dict[str, Any]:
    """A group text as the store keeps it (``to``: the other members my own text was sent to; ``path``: the file
    I shared)."""
    extra: dict[str, Any] = {} if t.file is None else {"name": t.file.name, "size": t.file.size,
                                                        "sha256": t.file.sha256}
    if path is not None:
        extra["path"] = path
    return {"gid": t.group, "sender": t.sender, "counter": t.counter, "version": t.version, "lamport": t.lamport,
            "sent_at": t.sent_at, "text": t.text, "to": to, **extra}


def _kept_size(t: GroupText) -> int:
    return len(t.text.encode("utf-8", "surrogatepass"))


def _changes_body(gid: bytes, raw: list[bytes], ref: int) -> bytes:
    return GROUP_WIRE.encode_body("changes", ref=ref, group=gid, changes=raw)


class WatcherPair:
    """Tells two session watchers (the outbox and the groups) about chats that open and end."""

    def __init__(self, *watchers: SessionWatcher) -> None:
        self._watchers = watchers

    def chat_ready(self, fp: str, session: str) -> None:
        for w in self._watchers:
            w.chat_ready(fp, session)

    def chat_ended(self, fp: str | None, session: str, *, dropped: bool, ours: bool) -> None:
        for w in self._watchers:
            w.chat_ended(fp, session, dropped=dropped, ours=ours)


__all__ = ["ChangeView", "Group", "GroupHost", "GroupService", "GroupView", "WatcherPair"]
