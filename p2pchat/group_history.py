"""Group conversations kept in the group store, as ``p2pchat history`` shows them (issue 18; docs/history.md
"Group conversations"): list, transcript, search, export, mark read, delete — without a running node.

Rows are read through :class:`~p2pchat.group_store.GroupStore` (sealed under the data directory's vault like the
chat history). Deleting a group's transcript keeps, per sender, the highest counter and clock it had reached
(``counter`` rows), so this node's next message continues the numbering its members expect and an old message
sent again is still recognised as seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pchat.display import display_lines, one_line
from p2pchat.downloads import human
from p2pchat.group_store import GroupStore, Row
from p2pchat.groups import Change, GroupError, GroupText, SharedFile, find_group

SEARCH_LIMIT = 1000


def entry_of(record: dict[str, Any]) -> GroupText:
    """The conversation entry a ``text`` row keeps."""
    shared = (SharedFile(record["name"], record["size"], bytes(record["sha256"])) if "sha256" in record
              else None)
    return GroupText(bytes(record["gid"]), bytes(record["sender"]), record["counter"], record["version"],
                     record["lamport"], record["sent_at"], record["text"], shared)


def entry_text(t: GroupText) -> str:
    """What an entry says, raw (show it through :mod:`p2pchat.display`)."""
    return t.text if t.file is None else f"[file] {t.text} ({human(t.file.size)})"


@dataclass(frozen=True)
class GroupSummary:
    gid: bytes
    name: str
    count: int
    unread: int
    last: GroupText | None


class GroupHistory:
    """The group conversations of one data directory (``me``: this node's key fingerprint)."""

    def __init__(self, store: GroupStore, me: bytes) -> None:
        self._store = store
        self.me = me

    def close(self) -> None:
        self._store.close()

    def _groups(self) -> dict[bytes, str]:
        """Every group kept here: id -> name (from its creation)."""
        names = {bytes(r.record["gid"]): "" for r in self._store.rows("group")}
        for r in self._store.rows("change"):
            gid = bytes(r.record["gid"])
            if gid in names and not names[gid]:
                try:
                    c = Change.decode(bytes(r.record["raw"]))
                except GroupError:
                    continue
                if c.op == "create":
                    names[gid] = c.name
        return names

    def member_names(self, gid: bytes) -> dict[bytes, str]:
        """The name each member was given when it was added (the creator's own nickname for itself)."""
        out: dict[bytes, str] = {}
        for r in self._store.rows("change"):
            if bytes(r.record["gid"]) == gid:
                try:
                    c = Change.decode(bytes(r.record["raw"]))
                except GroupError:
                    continue
                if c.op in ("create", "add"):
                    out.setdefault(c.target, "" if c.op == "create" else c.name)
        return out

    def _texts(self, gid: bytes | None = None) -> list[Row]:
        return [r for r in self._store.rows("text") if gid is None or bytes(r.record["gid"]) == gid]

    def _read_upto(self) -> dict[bytes, int]:
        upto: dict[bytes, int] = {}
        for r in self._store.rows("read"):
            gid = bytes(r.record["gid"])
            upto[gid] = max(upto.get(gid, 0), r.record["upto"])
        return upto

    def find(self, text: str) -> bytes:
        """The group whose name or id (hex prefix, 4 digits or more) is ``text``; a UsageError otherwise."""
        return find_group(self._groups().items(), text)

    def name(self, gid: bytes) -> str:
        return self._groups().get(gid, "")

    def conversations(self) -> list[GroupSummary]:
        """Every group, most recent first (one without messages last)."""
        names = self._groups()
        upto = self._read_upto()
        by_group: dict[bytes, list[Row]] = {gid: [] for gid in names}
        for r in self._texts():
            by_group.setdefault(bytes(r.record["gid"]), []).append(r)
        out = []
        for gid, rows in by_group.items():
            if gid not in names:
                continue
            entries = [entry_of(r.record) for r in rows]
            unread = sum(1 for r, t in zip(rows, entries, strict=True)
                         if t.sender != self.me and r.id > upto.get(gid, 0))
            last = max(entries, key=GroupText.order_key) if entries else None
            out.append(GroupSummary(gid, names[gid], len(entries), unread, last))
        out.sort(key=lambda s: s.last.sent_at if s.last is not None else 0.0, reverse=True)
        return out

    def transcript(self, gid: bytes, limit: int | None = None) -> list[GroupText]:
        """The group's entries in their causal order (the same on every member); the last ``limit``."""
        entries = sorted((entry_of(r.record) for r in self._texts(gid)), key=GroupText.order_key)
        return entries[-limit:] if limit else entries

    def search(self, query: str, gid: bytes | None = None, limit: int = SEARCH_LIMIT) -> list[GroupText]:
        """Entries whose text (or file name) contains ``query``, any case, newest first."""
        needle = query.casefold()
        if not needle:
            return []
        found = [t for t in (entry_of(r.record) for r in reversed(self._texts(gid))) if needle in t.text.casefold()]
        return found[:max(1, limit)]

    def mark_read(self, gid: bytes) -> None:
        rows = self._texts(gid)
        if rows:
            self._store.add("read", gid=gid, upto=rows[-1].id)

    def delete(self, gid: bytes) -> int:
        """Forget the group's transcript (its entries, receipts and read marks); the group and its members stay.
        Returns how many entries were forgotten."""
        rows = self._texts(gid)
        if not rows:
            return 0
        reached: dict[bytes, tuple[int, int]] = {}
        for r in rows:
            t = entry_of(r.record)
            counter, lamport = reached.get(t.sender, (0, 0))
            reached[t.sender] = (max(counter, t.counter), max(lamport, t.lamport))
        self._store.add_many([("counter", {"gid": gid, "sender": sender, "counter": c, "lamport": lam})
                              for sender, (c, lam) in reached.items()])
        extra = [r.id for kind in ("receipt", "read") for r in self._store.rows(kind) if bytes(r.record["gid"]) == gid]
        self._store.delete([r.id for r in rows] + extra, erase=True)
        return len(rows)

    def export_text(self, gid: bytes, name_of: Callable[[bytes], str]) -> str:
        """The whole transcript as plain text, oldest first; what members wrote is neutralised for terminals."""
        lines = [f"Group {one_line(self.name(gid))} (id {gid.hex()})"]
        for t in self.transcript(gid):
            lines.extend(display_lines(group_line(t, self.me, name_of)))
        return "\n".join(lines) + "\n"


def group_line(t: GroupText, me: bytes, name_of: Callable[[bytes], str]) -> str:
    """``[2026-12-07 08:01:02] carol: text`` — raw: show it through :mod:`p2pchat.display`."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.sent_at))
    who = "you" if t.sender == me else name_of(t.sender)
    return f"[{when}] {who}: {entry_text(t)}"


__all__ = ["GroupHistory", "GroupSummary", "entry_of", "entry_text", "group_line"]
