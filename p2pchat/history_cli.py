"""``p2pchat history``: the conversations kept in the data directory, one contact's transcript, search, export
and delete. Everything a peer wrote is shown through :mod:`p2pchat.display`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from p2pchat import passphrase
from p2pchat.display import Printer, one_line
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import LocalFault, UsageError

if TYPE_CHECKING:
    from p2pchat.contacts import ContactStore
    from p2pchat.history import HistoryMessage, HistoryStore

PREVIEW = 50


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="your chats kept on this computer: show, search, export, delete",
                       description="The chat history of the data directory. Without CONTACT: the list of "
                                   "conversations (or, with --search, matches in all of them). With CONTACT (a "
                                   "local name, nickname or fingerprint, as for p2pchat chat): its transcript, "
                                   "which is then marked read.")
    p.add_argument("contact", nargs="?", metavar="CONTACT")
    p.add_argument("--search", metavar="TEXT", help="messages containing TEXT (any case), newest first")
    p.add_argument("--export", metavar="FILE", help="write CONTACT's whole transcript to FILE as text ('-': "
                                                    "standard output); FILE must not exist yet")
    p.add_argument("--delete", action="store_true", help="forget CONTACT's whole transcript (asks first on a "
                                                         "terminal; elsewhere add --yes)")
    p.add_argument("--yes", action="store_true", help="with --delete: do not ask")
    p.add_argument("--limit", type=int, default=200, help="show at most this many messages (default 200)")
    p.add_argument("--data-dir", help="the data directory (default: $P2PCHAT_HOME or the per-user data directory)")
    passphrase.add_option(p)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from p2pchat.contacts import ContactStore
    from p2pchat.history import HistoryStore

    if (args.export or args.delete) and not args.contact:
        raise UsageError("--export and --delete need CONTACT (whose transcript)")
    data_dir, _secret, vault = passphrase.open_data_dir(args, offer=False)
    history = HistoryStore.in_data_dir(data_dir, vault)
    contacts = ContactStore.in_data_dir(data_dir, vault)
    p = Printer(out)
    try:
        if not args.contact:
            if args.search:
                return _matches(p, history.search(args.search, limit=args.limit), contacts)
            return _conversations(p, history, contacts)
        fp, name = _resolve(contacts, args.contact)
        if args.delete:
            return _delete(p, history, fp, name, args.yes)
        if args.export:
            return _export(p, history.export_text(fp, name), args.export, out)
        if args.search:
            return _matches(p, history.search(args.search, fp=fp, limit=args.limit), contacts)
        messages = history.messages(fp, limit=args.limit)
        if not messages:
            p.line(f"No messages with {one_line(name)} are kept here.")
            return 0
        from p2pchat.history import transcript_line

        for m in messages:
            p.line(transcript_line(m, name))
        history.mark_read(fp)
        return 0
    finally:
        contacts.close()
        history.close()


def _resolve(contacts: ContactStore, text: str) -> tuple[str, str]:
    """(fingerprint, name to show) of what the user typed: a contact, or a full fingerprint."""
    compact = text.strip().replace(" ", "").replace(":", "").lower()
    if len(compact) == 64 and all(ch in "0123456789abcdef" for ch in compact):
        return compact, _name(contacts, compact)
    contact = contacts.resolve(text)
    return contact.fp, _name(contacts, contact.fp)


def _name(contacts: ContactStore, fp: str) -> str:
    c = contacts.get(fp)
    if c is not None and (c.local_name or c.nickname):
        return c.local_name or c.nickname or ""
    return crypto.format_fingerprint(bytes.fromhex(fp), 4)


def _conversations(p: Printer, history: HistoryStore, contacts: ContactStore) -> int:
    convs = history.conversations()
    if not convs:
        p.line("No chat history yet: the texts of every chat that passed all four steps are kept here.")
        return 0
    p.line(f"  {'CONTACT':<24} {'LAST MESSAGE':<17} {'UNREAD':>6}  LAST TEXT")
    for c in convs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.last_ts))
        text = one_line(("you: " if c.last_direction == "out" else "") + c.last_text)
        text = text if len(text) <= PREVIEW else text[:PREVIEW - 1] + "…"
        p.line(f"  {one_line(_name(contacts, c.fp))[:24]:<24} {when:<17} {c.unread or '':>6}  {text}")
    p.line("p2pchat history CONTACT shows one transcript; --search TEXT looks in all of them")
    return 0


def _matches(p: Printer, found: list[HistoryMessage], contacts: ContactStore) -> int:
    from p2pchat.history import transcript_line

    if not found:
        p.line("No message contains that text.")
        return 0
    names: dict[str, str] = {}
    for m in found:
        name = names.setdefault(m.fp, _name(contacts, m.fp))
        p.line(f"{one_line(name)} · {transcript_line(m, name)}")
    return 0


def _delete(p: Printer, history: HistoryStore, fp: str, name: str, yes: bool) -> int:
    count = len(history.messages(fp, limit=10_000))
    if count == 0:
        p.line(f"No messages with {one_line(name)} are kept here.")
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("--delete forgets the whole transcript; add --yes to confirm")
        answer = input(f"Forget all {count if count < 10_000 else 'the'} messages with {one_line(name)}? "
                       f"This cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            p.line("Nothing was deleted.")
            return 1
    deleted = history.delete(fp)
    p.line(f"Forgot {deleted} message{'s' if deleted != 1 else ''} with {one_line(name)}.")
    return 0


def _export(p: Printer, text: str, target: str, out: TextIO) -> int:
    if target == "-":
        out.write(text)
        out.flush()
        return 0
    path = Path(target)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists already; choose another file (nothing was written)") from None
    except OSError as exc:
        raise LocalFault(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    p.line(f"Wrote the transcript to {one_line(str(path))} (readable by you only; it is not encrypted).")
    return 0


__all__ = ["add_parser", "run"]
