"""Group chats in the window (issue 18), Tk-free: the presenter behind each group conversation.

The node's :class:`~p2pchat.group_service.GroupService` does the work (the same one ``listen`` uses; the chat node
starts it in a data directory); this class keeps what each group conversation shows and turns the service's events
into transcript lines. Every call into the service goes through the window's command worker (the service answers
on its own thread, which may be busy with frames from peers).

What a group conversation shows:

* every member's messages under the member's name in a stable member colour (the order in which the membership
  log made them members: the same on every member's screen), one's own on the own-message band with "delivered
  to n of m" counting up as the members' receipts arrive;
* a gap ("2 messages from bob never arrived") and a message held for a membership change as plain lines;
* each effective membership change as a line ("carol added dave", "bob left");
* the members with their verified mark and the state of this computer's pairwise chat with each (a group has no
  four steps of its own: each member's pairwise chat runs them).

Names: a contact is shown by the user's own name for it; anyone else by the name the member who added them gave,
marked "not a contact" with the start of their key, so that no member can pass someone off as a contact. Every
name and text is cleaned for display (:func:`gui.text.clean`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gui.models import ChatLine, LineKind, ListRow, keep_line
from gui.text import clean, clean_name, clock_time, count, one_line, preview_end, seen_when, stamp
from p2pchat.contacts import Contact
from p2pchat.display import quoted
from p2pchat.downloads import human
from p2pchat.events import Event, FileOffer, GroupMessage, GroupNotice, GroupReceipt
from p2pchat.foundation.errors import UserError
from p2pchat.group_service import ChangeView, GroupView
from p2pchat.groups import MAX_GROUP_TEXT, MAX_NAME

log = logging.getLogger(__name__)

GROUP_KEY = "group:"           # a group's row in the conversation list: GROUP_KEY + its id (hex)
MEMBER_COLOURS = 8             # gui/widgets/style.py MEMBER_COLORS: a member's colour is its index modulo this
HISTORY_SHOWN = 200            # kept messages drawn when a group conversation opens


class GroupsApi(Protocol):
    """The part of :class:`p2pchat.group_service.GroupService` the window uses."""

    def create(self, name: str, members: list[tuple[str, bytes, str]]) -> bytes: ...
    def add(self, gid: bytes, member: tuple[str, bytes, str]) -> None: ...
    def remove(self, gid: bytes, fp: str) -> None: ...
    def say(self, gid: bytes, text: str) -> int: ...
    def send_file(self, gid: bytes, path: str) -> int: ...
    def views(self, gid: bytes | None = None) -> list[GroupView]: ...
    def mark_read(self, gid: bytes) -> None: ...
    def delete_history(self, gid: bytes) -> int: ...


class MemberSource(Protocol):
    """The chat node's way of turning a contact into a group member: (fp hex, public key DER, name)."""

    def group_member(self, query: str) -> tuple[str, bytes, str]: ...


class Commands(Protocol):
    def submit(self, call: Callable[[], object], done: Callable[[object], None] | None = None,
               failed: Callable[[UserError], None] | None = None) -> None: ...


@dataclass(frozen=True)
class MemberRow:
    """One line of a group's member list."""

    fp: str
    name: str                 # cleaned; "you" for oneself
    verified: bool
    colour: int | None        # index into MEMBER_COLORS (None: oneself, drawn like one's own messages)
    state: str                # this computer's pairwise chat with the member ("online · 4 steps done", …)
    creator: bool


@dataclass(frozen=True)
class GroupFound:
    """One search hit in a group: the group's row key, where and when (cleaned), the matching text."""

    key: str
    label: str
    text: str


@dataclass
class GroupState:
    """Everything the window shows about one group."""

    view: GroupView
    lines: list[ChatLine] = field(default_factory=list)
    kept_bytes: int = 0                                           # what the lines' texts weigh (keep_line)
    unread: int = 0
    changes_shown: int = 0                                        # effective changes already drawn as lines
    mine: dict[int, ChatLine] = field(default_factory=dict)       # my message's counter -> its line
    receipts: dict[int, tuple[int, int]] = field(default_factory=dict)   # counter -> (delivered, of), maybe early
    texts: list[tuple[str, str, float]] = field(default_factory=list)    # (sender fp, text, sent at): search, export
    seen: set[tuple[str, int]] = field(default_factory=set)       # (sender, counter) drawn: never twice
    read_due: bool = False                                        # read on screen: tell the store at the next tick
    order: dict[str, int] = field(default_factory=dict)           # member -> its place among all ever added
    given: dict[str, str] = field(default_factory=dict)           # member -> the name its adder gave

    def __post_init__(self) -> None:
        self.set_view(self.view)

    def set_view(self, v: GroupView) -> None:
        """A newer view of the group (what is derived from its log is worked out once here, not per message)."""
        self.view = v
        self.order, self.given = {}, {}
        for ch in v.changes:
            if ch.op in ("create", "add"):
                self.order.setdefault(ch.target, len(self.order))
                if ch.op == "add":
                    self.given.setdefault(ch.target, ch.name)
        self.given.update({fp: name for fp, name in v.members if name})

    @property
    def key(self) -> str:
        return GROUP_KEY + self.view.gid

    @property
    def gid(self) -> bytes:
        return bytes.fromhex(self.view.gid)


@dataclass
class GroupChanges:
    """What the window must redraw for the groups after a batch."""

    rows_added: list[str] = field(default_factory=list)
    titles: set[str] = field(default_factory=set)
    lines_added: dict[str, list[ChatLine]] = field(default_factory=dict)
    lines_changed: dict[str, list[ChatLine]] = field(default_factory=dict)
    lines_dropped: dict[str, int] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)                # member lists to redraw
    select: str | None = None
    status: str | None = None

    def __bool__(self) -> bool:
        return any((self.rows_added, self.titles, self.lines_added, self.lines_changed, self.lines_dropped,
                    self.members, self.select is not None, self.status is not None))


def receipt_text(delivered: int, of: int) -> str:
    """The mark after one's own group message."""
    if of == 0:
        return "(no one else is in the group)"
    return ("✓ " if delivered >= of else "") + f"delivered to {delivered} of {of}"


class GroupChats:
    """State of every group of one window. ``contact(fp)`` reads the contact list, ``channel(fp)`` says how this
    computer's pairwise chat with a member stands."""

    def __init__(self, groups: GroupsApi | None, members: MemberSource, commands: Commands, *, me: str,
                 nickname: str, contact: Callable[[str], Contact | None], channel: Callable[[str], str],
                 clock: Callable[[], float] = time.time) -> None:
        self.service = groups
        self.members = members
        self.commands = commands
        self.me = me
        self.nickname = clean_name(nickname)
        self.contact = contact
        self.channel = channel
        self._line_ids = itertools.count(1)
        self.clock = clock
        self.groups: dict[str, GroupState] = {}          # row key -> state
        self.selected: str | None = None
        self.focused = True
        self._changes = GroupChanges()

    @property
    def available(self) -> bool:
        """The node keeps groups (it has a data directory)."""
        return self.service is not None

    def take_changes(self) -> GroupChanges:
        changes, self._changes = self._changes, GroupChanges()
        return changes

    # ---- loading ----------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read every group from the service (once, at start)."""
        service = self.service
        if service is None:
            return
        self.commands.submit(service.views, done=self._loaded, failed=self._failed)

    def _loaded(self, views: object) -> None:
        if isinstance(views, list):
            for v in views:
                self._apply_view(v, fresh=True)

    def refresh(self, gid: str) -> None:
        """Read one group again (its members changed)."""
        service = self.service
        if service is None:
            return
        self.commands.submit(lambda: service.views(bytes.fromhex(gid)), done=self._loaded_one, failed=self._failed)

    def _loaded_one(self, views: object) -> None:
        if isinstance(views, list):
            for v in views:
                self._apply_view(v, fresh=False)

    def _apply_view(self, v: GroupView, *, fresh: bool) -> GroupState:
        key = GROUP_KEY + v.gid
        g = self.groups.get(key)
        if g is None:
            g = GroupState(v, unread=v.unread)
            self.groups[key] = g
            self._changes.rows_added.append(key)
            self._history(g, v, announce=fresh)
        g.set_view(v)
        for change in v.changes[g.changes_shown:]:
            self._change_line(g, change)
        g.changes_shown = len(v.changes)
        self._changes.members.add(key)
        self._changes.titles.add(key)
        return g

    def _history(self, g: GroupState, v: GroupView, *, announce: bool) -> None:
        """The kept messages of a group, its membership changes between them by time."""
        g.texts = [(t.sender.hex(), t.text, t.sent_at) for t in v.texts]
        g.seen = {(t.sender.hex(), t.counter) for t in v.texts}
        shown = v.texts[-HISTORY_SHOWN:]
        if announce and shown:
            self._line(g, LineKind.NOTICE, "", f"ℹ Earlier messages of this group ({count(len(shown), 'message')} "
                                               "shown), kept on this computer:", self.clock(), level="info")
        now = self.clock()
        changes = list(v.changes)
        for t in shown:
            while changes and changes[0].ts <= t.sent_at:
                self._change_line(g, changes.pop(0))
            fp = t.sender.hex()
            line = self._message_line(g, fp, t.text, t.sent_at, None if t.file is None else t.file.size)
            line.time = stamp(t.sent_at, now)
            if fp == self.me:
                self._track(g, t.counter, line, v.receipts.get(t.counter))
        g.changes_shown = len(v.changes) - len(changes)
        if announce and shown:
            self._line(g, LineKind.NOTICE, "", "ℹ End of the kept messages.", now, level="info")

    def _change_line(self, g: GroupState, change: ChangeView) -> None:
        self._line(g, LineKind.NOTICE, "", f"ℹ {self.change_words(g, change)}", change.ts, level="info")

    # ---- what the window reads --------------------------------------------------------------------------------

    def name(self, key: str) -> str:
        """The group's name, cleaned for display."""
        return clean_name(self.groups[key].view.name, "group")

    def title(self, key: str) -> str:
        g = self.groups[key]
        gone = "" if self.me in {fp for fp, _n in g.view.members} else "✗ "
        name = gone + self.name(key)
        return f"{name} ({g.unread})" if g.unread else name

    def detail(self, key: str) -> str:
        g = self.groups[key]
        last = next((ln for ln in reversed(g.lines) if ln.kind is not LineKind.NOTICE), None)
        if self.me not in {fp for fp, _n in g.view.members}:
            return "you are no longer a member"
        if last is not None:
            return ("you: " if last.kind is LineKind.OUT else f"{last.sender}: ") + one_line(last.text)
        return f"group · {count(len(g.view.members), 'member')}"

    def rows(self) -> list[ListRow]:
        return [ListRow(key, self.title(key), self.detail(key)) for key in self.groups]

    def unread_total(self) -> int:
        return sum(g.unread for g in self.groups.values())

    def is_member(self, key: str) -> bool:
        g = self.groups.get(key)
        return g is not None and self.me in {fp for fp, _n in g.view.members}

    def name_of(self, g: GroupState, fp: str, *, you: str = "you") -> str:
        """A member's name as this window shows it (see the module docstring)."""
        if fp == self.me:
            return you
        c = self.contact(fp)
        if c is not None:
            return clean_name(c.local_name or c.nickname, fp[:16])
        unnamed = "the group's creator" if fp == g.view.creator else "someone"   # ``create`` names no creator
        return f"{clean_name(g.given.get(fp), unnamed)} (not a contact · {fp[:8]})"

    def colour(self, g: GroupState, fp: str) -> int | None:
        """The member's colour index: its place among everyone the log ever made a member (stable, the same on
        every member's screen); None for oneself."""
        if fp == self.me:
            return None
        place = g.order.get(fp)
        if place is None:
            return int(fp[:8], 16) % MEMBER_COLOURS
        mine = g.order.get(self.me)          # one's own place is skipped: the others' colours come first
        return (place - (1 if mine is not None and mine < place else 0)) % MEMBER_COLOURS

    def member_rows(self, key: str) -> list[MemberRow]:
        g = self.groups[key]
        rows = []
        for fp, _given in g.view.members:
            c = self.contact(fp)
            state = "this computer" if fp == self.me else self.channel(fp)
            rows.append(MemberRow(fp, self.name_of(g, fp), c is not None and c.verified, self.colour(g, fp), state,
                                  fp == g.view.creator))
        return rows

    def creator_name(self, key: str) -> str:
        g = self.groups[key]
        return self.name_of(g, g.view.creator)

    def remove_refusal(self, key: str) -> str | None:
        """Why this user cannot remove members (None: they can: they created the group)."""
        g = self.groups[key]
        if self.me not in {fp for fp, _n in g.view.members}:
            return "You are no longer a member of this group."
        if g.view.creator != self.me:
            return f"Only the group's creator, {self.creator_name(key)}, removes members."
        return None

    def leave_refusal(self, key: str) -> str | None:
        g = self.groups[key]
        if self.me not in {fp for fp, _n in g.view.members}:
            return "You are no longer a member of this group."
        if g.view.creator == self.me:
            return "You created this group: its creator cannot leave it (nobody could remove members any more)."
        return None

    def change_words(self, g: GroupState, ch: ChangeView) -> str:
        """One membership change as a sentence: "carol added dave", "bob left", "alice created “lab”"."""
        author = self.name_of(g, ch.author)
        if ch.op == "create":
            return f"{author} created the group {quoted(clean_name(ch.name, 'group'))}"     # [red team] unclosable
        target = self.name_of(g, ch.target)
        if ch.op == "add":
            return f"{author} added {target}"
        if ch.author == ch.target:
            return f"{author} left the group"
        return f"{author} removed {target}"

    # ---- user intents -----------------------------------------------------------------------------------------

    def select(self, key: str | None) -> None:
        self.selected = key
        g = self.groups.get(key) if key else None
        if g is not None and g.unread and self.focused:
            g.unread = 0
            g.read_due = True
            self._changes.titles.add(g.key)

    def tick(self) -> None:
        """Every few hundred ms: tell the store which groups were read (``p2pchat history`` counts from there)."""
        service = self.service
        for g in self.groups.values():
            if g.read_due and service is not None:
                g.read_due = False
                self.commands.submit(functools.partial(service.mark_read, g.gid), failed=self._failed)

    def set_focused(self, focused: bool) -> None:
        self.focused = focused
        self.select(self.selected)

    def create(self, name: str, fps: list[str]) -> str | None:
        """A new group with the contacts ``fps``; returns why not (None: on its way; the group shows once made)."""
        name = name.strip()
        if not name:
            return "give the group a name"
        if len(name) > MAX_NAME:
            return f"a group name is at most {MAX_NAME} characters"
        if clean(name) != name:
            return "the name contains control characters"
        if not fps:
            return "choose at least one contact"
        service, members = self.service, self.members
        if service is None:
            return "this window keeps no groups (it has no data directory)"

        def run() -> list[GroupView]:
            gid = service.create(name, [members.group_member(fp) for fp in fps])
            return service.views(gid)
        self.commands.submit(run, done=self._created, failed=self._failed)
        return None

    def _created(self, views: object) -> None:
        if isinstance(views, list) and views:
            g = self._apply_view(views[0], fresh=False)
            self._changes.select = g.key

    def add_members(self, key: str, fps: list[str]) -> str | None:
        g, service, members = self.groups.get(key), self.service, self.members
        if g is None or service is None:
            return "no such group"
        if not fps:
            return "choose at least one contact"
        gid = g.gid

        def run() -> None:
            for fp in fps:
                service.add(gid, members.group_member(fp))
        self.commands.submit(run, done=lambda _r: self.refresh(g.view.gid), failed=self._failed_in(key))
        return None

    def remove_member(self, key: str, fp: str) -> None:
        g, service = self.groups.get(key), self.service
        if g is None or service is None:
            return
        refusal = self.remove_refusal(key) if fp != self.me else self.leave_refusal(key)
        if refusal is not None:
            self._notice(g, refusal, level="error")
            return
        gid = g.gid
        self.commands.submit(lambda: service.remove(gid, fp), done=lambda _r: self.refresh(g.view.gid),
                             failed=self._failed_in(key))

    def send(self, key: str, text: str) -> str | None:
        """Send to every other member; returns why not (None: the entry may be cleared)."""
        g, service = self.groups.get(key), self.service
        if g is None or service is None:
            return "no such group"
        if self.me not in {fp for fp, _n in g.view.members}:
            return "you are no longer a member of this group"
        if not text.strip():
            return "the message is empty"
        text = text.encode("utf-8", "replace").decode("utf-8")
        if len(text) > MAX_GROUP_TEXT:
            return f"the message is {count(len(text), 'character')} long; the limit is {MAX_GROUP_TEXT:,}"
        now = self.clock()
        line = self._message_line(g, self.me, text, now)
        line.receipt = "…"
        g.texts.append((self.me, text, now))
        gid = g.gid
        self.commands.submit(lambda: service.say(gid, text), done=lambda n: self._said(g, line, n),
                             failed=lambda exc: self._not_said(g, line, exc))
        return None

    def send_file(self, key: str, path: str) -> None:
        """Share the file at ``path`` with every other member (each is offered it over its own chat)."""
        g, service = self.groups.get(key), self.service
        if g is None or service is None:
            return
        name = clean_name(os.path.basename(path), "file")
        line = self._line(g, LineKind.OUT, self.nickname, f"shared {name} — reading it…", self.clock())
        line.receipt = "…"
        gid = g.gid

        def shared(counter: object) -> None:
            size = os.path.getsize(path) if os.path.isfile(path) else 0
            line.text = line.text.removesuffix("reading it…") + self._file_words(self.me, size)
            line.shown = len(line.text)
            g.texts.append((self.me, os.path.basename(path), self.clock()))
            self._said(g, line, counter)
        self.commands.submit(lambda: service.send_file(gid, path), done=shared,
                             failed=lambda exc: self._not_said(g, line, exc))

    def _said(self, g: GroupState, line: ChatLine, counter: object) -> None:
        if isinstance(counter, int):
            self._track(g, counter, line, g.receipts.get(counter) or (0, max(0, len(g.view.members) - 1)))

    def _not_said(self, g: GroupState, line: ChatLine, exc: UserError) -> None:
        line.failed = clean(str(exc))
        self._changed(g, line)

    def _track(self, g: GroupState, counter: int, line: ChatLine, receipt: tuple[int, int] | None) -> None:
        g.mine[counter] = line
        line.msg_id = counter
        delivered, of = receipt or (0, 0)
        line.receipt = receipt_text(delivered, of)
        line.delivered = delivered >= of
        self._changed(g, line)

    # ---- the kept history -------------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[GroupFound]:
        """Kept group messages containing ``query`` (case-insensitive), newest first."""
        query = query.strip().casefold()
        if not query:
            return []
        hits: list[tuple[float, GroupFound]] = []
        now = self.clock()
        for g in self.groups.values():
            for fp, text, ts in g.texts:
                if query in text.casefold():
                    label = f"{self.name(g.key)} · {stamp(ts, now)} · {self.name_of(g, fp)}"
                    hits.append((ts, GroupFound(g.key, label, one_line(text, 60))))
        return [h for _ts, h in sorted(hits, key=lambda h: -h[0])[:limit]]

    def delete_history(self, key: str) -> None:
        """Erase the group's kept messages on this computer (the user confirmed); the conversation is emptied."""
        g, service = self.groups.get(key), self.service
        if g is None or service is None:
            return
        gid = g.gid

        def deleted(n: object) -> None:
            self._changes.lines_dropped[key] = self._changes.lines_dropped.get(key, 0) + len(g.lines)
            self._changes.lines_added.pop(key, None)
            g.lines, g.mine, g.texts, g.kept_bytes = [], {}, [], 0
            self._notice(g, f"Deleted {count(n if isinstance(n, int) else 0, 'kept message')} of this group from "
                            "this computer; the members keep their own copies.")
            self._changes.titles.add(key)
        self.commands.submit(lambda: service.delete_history(gid), done=deleted, failed=self._failed_in(key))

    def export_text(self, key: str) -> str | None:
        g = self.groups.get(key)
        if g is None:
            return None
        out = [f"Group “{self.name(g.key)}”, exported {time.strftime('%Y-%m-%d %H:%M')}"]
        for fp, text, ts in g.texts:
            out.append(f"[{seen_when(ts, self.clock())} {clock_time(ts)}] {self.name_of(g, fp, you=self.nickname)}: "
                       + clean(text))
        return "\n".join(out) + "\n"

    # ---- node events ------------------------------------------------------------------------------------------

    def handle(self, event: Event) -> bool:
        """Apply a group event; False for any other event (a file offer of a group file is said in the group, and
        left to the file transfers, which ask the user)."""
        if isinstance(event, FileOffer):
            g = self.groups.get(GROUP_KEY + event.group) if event.group else None
            if g is not None:
                self._notice(g, f"{clean_name(event.sender)} offers you {quoted(clean_name(event.name))} "
                                f"({human(event.size)}) from this group: answer in the dialog")
            return False
        if isinstance(event, GroupMessage):
            self._message(event)
        elif isinstance(event, GroupReceipt):
            self._receipt(event)
        elif isinstance(event, GroupNotice):
            g = self.groups.get(GROUP_KEY + event.group) if event.group else None
            if event.membership and event.group:
                self.refresh(event.group)         # the lines come from the log: who changed what
            elif g is not None:
                self._notice(g, clean(event.text), level="refused" if event.warning else "info")
            else:
                self._changes.status = "⚠ " + clean(event.text).replace("\n", " ")
        else:
            return False
        return True

    def _message(self, ev: GroupMessage) -> None:
        g = self.groups.get(GROUP_KEY + ev.group)
        if g is None:                     # a group that is not drawn yet (its view is being read): read it whole
            self.refresh(ev.group)
            return
        if (ev.sender, ev.counter) in g.seen:       # already drawn from a view read meanwhile
            return
        g.seen.add((ev.sender, ev.counter))
        if ev.gap:
            self._notice(g, f"{count(ev.gap, 'message')} from {self.name_of(g, ev.sender)} never arrived "
                            "(lost before they reached this computer)", level="refused")
        self._message_line(g, ev.sender, ev.text, ev.sent_at, ev.size)
        g.texts.append((ev.sender, ev.text, ev.sent_at))
        if g.key != self.selected or not self.focused:
            g.unread += 1
        else:
            g.read_due = True
        self._changes.titles.add(g.key)

    def _receipt(self, ev: GroupReceipt) -> None:
        g = self.groups.get(GROUP_KEY + ev.group)
        if g is None:
            return
        g.receipts[ev.counter] = (ev.delivered, ev.of)
        line = g.mine.get(ev.counter)
        if line is not None:
            self._track(g, ev.counter, line, (ev.delivered, ev.of))

    # ---- internals --------------------------------------------------------------------------------------------

    def _message_line(self, g: GroupState, fp: str, text: str, ts: float, size: int | None = None) -> ChatLine:
        """A member's message, or (``size`` given) a file it shared, named ``text``."""
        mine = fp == self.me
        shown = clean(text) if size is None else f"shared {clean_name(text, 'file')} — {self._file_words(fp, size)}"
        line = self._line(g, LineKind.OUT if mine else LineKind.IN, self.nickname if mine else self.name_of(g, fp),
                          shown, ts)
        line.colour = self.colour(g, fp)
        return line

    def _file_words(self, fp: str, size: int) -> str:
        if fp == self.me:
            return f"a file ({human(size)}); each member is offered it over their chat with you"
        return f"a file ({human(size)}); it is offered to you over your chat with them"

    def _notice(self, g: GroupState, text: str, level: str = "info") -> None:
        mark = "⚠" if level in ("error", "refused") else "ℹ"
        self._line(g, LineKind.NOTICE, "", f"{mark} {text}", self.clock(), level=level)

    def _line(self, g: GroupState, kind: LineKind, sender: str, text: str, ts: float, level: str = "") -> ChatLine:
        line = ChatLine(next(self._line_ids), kind, clock_time(ts), sender, text, preview_end(text), level=level)
        added = self._changes.lines_added.setdefault(g.key, [])
        added.append(line)
        g.lines, dropped, g.kept_bytes = keep_line(g.lines, line, g.kept_bytes)
        if dropped:
            gone = {old.line_id for old in dropped}
            g.mine = {n: ln for n, ln in g.mine.items() if ln.line_id not in gone}
            still = [ln for ln in added if ln.line_id not in gone]
            self._changes.lines_dropped[g.key] = (self._changes.lines_dropped.get(g.key, 0)
                                                  + len(dropped) - (len(added) - len(still)))
            self._changes.lines_added[g.key] = still
        return line

    def _changed(self, g: GroupState, line: ChatLine) -> None:
        self._changes.lines_changed.setdefault(g.key, []).append(line)

    def show_more(self, key: str, line_id: int) -> None:
        """Reveal the next part of a long message."""
        g = self.groups.get(key)
        line = next((ln for ln in g.lines if ln.line_id == line_id), None) if g else None
        if g is not None and line is not None and line.hidden:
            line.show_more()
            self._changed(g, line)

    def _failed(self, exc: UserError) -> None:
        self._changes.status = "⚠ " + clean(str(exc)).replace("\n", " ")

    def _failed_in(self, key: str) -> Callable[[UserError], None]:
        def failed(exc: UserError) -> None:
            g = self.groups.get(key)
            if g is None:
                self._failed(exc)
            else:
                self._notice(g, clean(str(exc)), level="error")
        return failed


__all__ = ["GROUP_KEY", "GroupChanges", "GroupChats", "GroupFound", "GroupState", "GroupsApi", "MemberRow",
           "receipt_text"]
