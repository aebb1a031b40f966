"""``listen``'s commands and lines for files kept for contacts (issue 16, :mod:`p2pchat.file_resume`):
``/file CONTACT PATH`` sends a file to a contact now or when it can be reached, ``/waiting`` lists the files that
wait (with the texts), ``/cancel wN`` takes one back. Each change shows as one compact line."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from p2pchat.display import Printer, one_line
from p2pchat.downloads import human
from p2pchat.events import FileWaiting
from p2pchat.foundation.errors import UsageError
from p2pchat.node import ChatNode

FILE_HELP = ("Files for a contact: /file CONTACT PATH (sent now or when it can be reached; an interrupted file "
             "resumes by itself), /waiting, /cancel wN.")


def waiting_ref(arg: str) -> int | None:
    """The number in ``w3`` (a waiting file), or None."""
    return int(arg[1:]) if arg[:1] in ("w", "W") and arg[1:].isdigit() else None


class WaitingFileCommands:
    """Runs ``/file`` and ``/cancel wN`` and shows :class:`FileWaiting` events on ``listen``'s printer."""

    def __init__(self, node: ChatNode, p: Printer, name_of: Callable[[str], str]) -> None:
        self.node, self.p, self.name_of = node, p, name_of

    def send(self, arg: str) -> None:
        who, _, path = arg.partition(" ")
        if not who or not path.strip():
            raise UsageError("say whom and which file: /file CONTACT PATH (CONTACT as `p2pchat contacts list` "
                             "shows it)")
        store = self.node.contacts
        if store is None:
            raise UsageError("not sent: this node has no contact store (no data directory)")
        contact = store.resolve(who)
        self.p.line(f"  reading {one_line(os.path.basename(path.strip()))} for its SHA-256…")
        ref = self.node.send_file_to_contact(contact.fp, os.path.expanduser(path.strip()))
        self.p.line(f"File w{ref} for {self.name_of(contact.fp)} is kept until delivered; it is offered as soon as "
                    f"the chat is ready (/waiting lists it, /cancel w{ref} takes it back).")

    def cancel(self, ref: int) -> None:
        self.node.cancel_waiting_file(ref)
        self.p.line(f"File w{ref} cancelled; it will not be sent.")

    def show(self) -> bool:
        """List the waiting files; False when there is none."""
        files = self.node.waiting_files()
        for f in files:
            where = "on its way" if self.node.resume is not None and self.node.resume.under_way(f.ref) else "waiting"
            self.p.line(f"  w{f.ref}: file {one_line(f.name)} ({human(f.size)}) to {self.name_of(f.fp)} since "
                        f"{time.strftime('%H:%M', time.localtime(f.queued_at))}, {where}")
        return bool(files)

    def on_event(self, ev: FileWaiting) -> None:
        name, who = one_line(ev.name), self.name_of(ev.fp)
        if ev.status == "waiting":
            self.p.line(f"  · file w{ev.ref} {name} ({human(ev.size)}) for {who}: {ev.text}")
        elif ev.status == "offered":
            self.p.line(f"  → file w{ev.ref} {name} ({human(ev.size)}) offered to {who}; {ev.text}")
        elif ev.status == "dropped":
            self.p.line(f"! file w{ev.ref}: {ev.text}")
        # cancelled: the command said so; done / ended: the transfer's own line (✓ or ✗) said how it ended


__all__ = ["FILE_HELP", "WaitingFileCommands", "waiting_ref"]
