"""``listen``'s group commands and lines (issue 18): ``/group create|add|remove|list|show``, ``/gsay`` and
``/gsend`` (a file to every member; each member's offer is answered with the usual ``/accept F…``).

Names shown for members are the user's own names for them (the contact store) before the name the member who
added them gave, marked when that name reads like a contact's (:mod:`p2pchat.terminal_names`); a group name or a
message is text from the network and goes through the printer's sanitising.
"""

from __future__ import annotations

import os
import shlex
from typing import Protocol

from p2pchat.contacts import ContactStore
from p2pchat.display import Printer, name_in_line, one_line
from p2pchat.downloads import human
from p2pchat.events import GroupMessage, GroupNotice, GroupReceipt
from p2pchat.foundation.errors import UsageError
from p2pchat.foundation.identity import Identity
from p2pchat.group_service import GroupService
from p2pchat.terminal_names import PeerNames

GROUP_HELP = ("Groups: /group create NAME MEMBER…, /group add GROUP MEMBER, /group remove GROUP MEMBER, "
              "/group list, /group show GROUP, /gsay GROUP TEXT, /gsend GROUP PATH (GROUP: its name or the start "
              "of its id; MEMBER: a contact).")


class GroupNode(Protocol):
    """What the group commands need: the chat node in ``listen``, or ``p2pchat group``'s offline stand-in."""

    identity: Identity
    contacts: ContactStore | None
    groups: GroupService | None

    def group_member(self, query: str) -> tuple[str, bytes, str]: ...


class GroupCommands:
    """Runs the typed group commands and shows group events on ``listen``'s printer."""

    def __init__(self, node: GroupNode, p: Printer, names: PeerNames) -> None:
        self.node = node
        self.p = p
        self.names = names              # contacts by fingerprint (hex), as listen shows them

    def _service(self) -> GroupService:
        if self.node.groups is None:
            raise UsageError("this node keeps no groups (they need a data directory and `p2pchat listen`)")
        return self.node.groups

    def command(self, word: str, arg: str) -> None:
        """``/group …``, ``/gsay …`` or ``/gsend …``; a :class:`UsageError` is shown by the caller."""
        groups = self._service()
        if word == "/gsend":
            where, _, path = arg.partition(" ")
            if not where or not path.strip():
                raise UsageError("say where and which file: /gsend GROUP PATH")
            gid = groups.find(where)
            counter = groups.send_file(gid, os.path.expanduser(path.strip()))
            self.p.line(f"  → [{self._gname(gid)}] file {one_line(os.path.basename(path.strip()))} (entry {counter}) "
                        "offered to every member as they can be reached")
            return
        if word == "/gsay":
            where, _, text = arg.partition(" ")
            if not where or not text.strip():
                raise UsageError("say where and what: /gsay GROUP TEXT")
            gid = groups.find(where)
            counter = groups.say(gid, text.strip())
            self.p.line(f"  → [{self._gname(gid)}] message {counter} queued for every member")
            return
        try:
            parts = shlex.split(arg)
        except ValueError as exc:
            raise UsageError(f"cannot read that command ({exc}); put a name with spaces in quotes") from None
        sub, rest = (parts[0], parts[1:]) if parts else ("", [])
        if sub == "create" and rest:
            members = [self.node.group_member(m) for m in rest[1:]]
            gid = groups.create(rest[0], members)
            self.p.line(f"Group {one_line(rest[0])} created (id {gid.hex()[:8]}) with "
                        f"{len(members) + 1} members; /gsay {gid.hex()[:8]} TEXT writes to it.")
        elif sub in ("add", "remove") and len(rest) == 2:
            gid = groups.find(rest[0])
            fp, der, name = self.node.group_member(rest[1])
            if sub == "add":
                groups.add(gid, (fp, der, name))
                self.p.line(f"{self.names.contact_name(fp)} added to {self._gname(gid)}; they get what is said from "
                            "now on.")
            else:
                groups.remove(gid, fp)
                self.p.line(f"{self.names.contact_name(fp)} removed from {self._gname(gid)}; they get nothing new.")
        elif sub == "list" and not rest:
            self.show_list()
        elif sub == "show" and len(rest) == 1:
            self.show(groups.find(rest[0]))
        else:
            raise UsageError(GROUP_HELP)

    def _gname(self, gid: bytes) -> str:
        for g, name, _ in self._service().snapshot():
            if g == gid:
                return name_in_line(name)
        return gid.hex()[:8]

    def _member(self, fp: str, given: str = "") -> str:
        """A contact by its name; anyone else by the name its adder gave (if any) and always its key; either
        marked when the name reads like another contact's."""
        store = self.node.contacts
        contact = store.get(fp) if store is not None else None
        mark = " ✓" if contact is not None and contact.verified else ""
        if contact is not None:
            return self.names.contact_name(fp) + mark
        return self.names.stranger(given, fp)

    def show_list(self) -> None:
        snap = self._service().snapshot()
        if not snap:
            self.p.line("No groups yet. " + GROUP_HELP)
            return
        me = self.node.identity.fingerprint
        for gid, name, members in snap:
            names = ["you" if m == me else self._member(m.hex()) for m in members]
            status = "" if me in members else " — you are no longer a member"
            self.p.line(f"  {gid.hex()[:8]}  {name_in_line(name)}: {', '.join(names)}{status}")
        self.p.line("✓: a contact whose safety number you verified.")

    def show(self, gid: bytes) -> None:
        groups = self._service()
        me = self.node.identity.fingerprint
        for t in groups.conversation(gid):
            what = t.text if t.file is None else f"shared the file {one_line(t.text)!r} ({human(t.file.size)})"
            if t.sender == me:
                got, of = groups.delivered(gid, t.counter)
                self.p.line(f"  you: {what}   (delivered to {got} of {of})")
            else:
                self.p.line(f"  {self._member(t.sender.hex())}: {what}")

    def on_event(self, ev: GroupMessage | GroupNotice | GroupReceipt) -> None:
        if isinstance(ev, GroupMessage):
            if ev.gap:
                self.p.line(f"! [{name_in_line(ev.group_name)}] {ev.gap} message(s) from "
                            f"{self._member(ev.sender, ev.sender_name)} never arrived")
            what = ev.text if ev.size is None else f"shares the file {one_line(ev.text)!r} ({human(ev.size)})"
            self.p.line(f"[{name_in_line(ev.group_name)}] {self._member(ev.sender, ev.sender_name)}: {what}")
        elif isinstance(ev, GroupReceipt):
            self.p.line(f"  · [{name_in_line(ev.group_name)}] message {ev.counter} delivered to {ev.delivered} of "
                        f"{ev.of}")
        else:
            where = f"[{name_in_line(ev.group_name)}] " if ev.group else ""
            self.p.line(f"  · {where}{ev.text}")


__all__ = ["GROUP_HELP", "GroupCommands"]
