"""``p2pchat history``: the conversations kept in the data directory, one contact's (or group's) transcript,
search, export and delete. Everything a peer wrote is shown through :mod:`p2pchat.display`. Group conversations
come from the group store (:mod:`p2pchat.group_history`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from p2pchat import passphrase
from p2pchat.display import Printer, one_line
from p2pchat.foundation.errors import LocalFault, UsageError
from p2pchat.foundation.fingerprint_text import format_fingerprint

if TYPE_CHECKING:
    from p2pchat.contacts import ContactStore
    from p2pchat.group_history import GroupHistory
    from p2pchat.groups import GroupText
    from p2pchat.history import HistoryMessage, HistoryStore
    from p2pchat.terminal_names import ContactSource, PeerNames
    from p2pchat.vault import Vault

PREVIEW = 50


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="your chats kept on this computer: show, search, export, delete",
                       description="The chat history of the data directory. Without CONTACT: the list of "
                                   "conversations (or, with --search, matches in all of them). With CONTACT (a "
                                   "local name, nickname or fingerprint, as for p2pchat chat): its transcript, "
                                   "which is then marked read. Group conversations are listed and searched too; "
                                   "--group GROUP (or a CONTACT that names no contact but a group) works on one "
                                   "group's transcript.")
    p.add_argument("contact", nargs="?", metavar="CONTACT")
    p.add_argument("--group", metavar="GROUP", help="a group's transcript instead (its name or the start of its id)")
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
    from p2pchat.terminal_names import PeerNames

    if (args.export or args.delete) and not (args.contact or args.group):
        raise UsageError("--export and --delete need CONTACT or --group GROUP (whose transcript)")
    if args.contact and args.group:
        raise UsageError("give CONTACT or --group GROUP, not both")
    data_dir, secret, vault = passphrase.open_data_dir(args, offer=False)
    history = HistoryStore.in_data_dir(data_dir, vault)
    contacts = ContactStore.in_data_dir(data_dir, vault)
    groups = _open_groups(data_dir, secret, vault)
    p = Printer(out)
    names = PeerNames(contacts)     # a name that reads like another contact's is marked
    try:
        if not args.contact and not args.group:
            if args.search:
                return _matches(p, history.search(args.search, limit=args.limit), names,
                                groups.search(args.search, limit=args.limit) if groups else [], groups)
            return _conversations(p, history, names, groups)
        if args.group:
            if groups is None:
                raise UsageError("no groups are kept here")
            return _group(p, args, groups, groups.find(args.group), names, out)
        try:
            fp, name = _resolve(contacts, args.contact)
        except UsageError:
            if groups is None:
                raise
            try:
                gid = groups.find(args.contact)
            except UsageError:
                raise UsageError(f"{args.contact!r} names no contact and no group") from None
            return _group(p, args, groups, gid, names, out)
        if args.delete:
            return _delete(p, history, fp, name, args.yes)
        if args.export:
            return _export(p, history.export_text(fp, name), args.export, out)
        if args.search:
            return _matches(p, history.search(args.search, fp=fp, limit=args.limit), names)
        messages = history.messages(fp, limit=args.limit)
        if not messages:
            p.line(f"No messages with {one_line(name)} are kept here.")
            return 0
        from p2pchat.history import transcript_line

        if mark := names.looks_like(fp):
            p.line(f"{one_line(name)}{mark}: another contact's name reads like this one's")
        for m in messages:
            p.line(transcript_line(m, name))
        history.mark_read(fp)
        return 0
    finally:
        contacts.close()
        history.close()
        if groups is not None:
            groups.close()


def _open_groups(data_dir: Path, secret: str | None, vault: Vault) -> GroupHistory | None:
    """The data directory's group conversations, if it has a group store (it is not created here)."""
    from p2pchat.foundation.identity import KEY_FILE, Identity
    from p2pchat.group_history import GroupHistory
    from p2pchat.group_store import FILE_NAME, GroupStore

    if not (data_dir / FILE_NAME).exists() or not (data_dir / KEY_FILE).exists():
        return None
    store = GroupStore.in_data_dir(data_dir, vault)
    if not store.rows("group"):
        store.close()
        return None
    return GroupHistory(store, Identity.load(data_dir / KEY_FILE, secret).fingerprint)


def _member_name(names: PeerNames, groups: GroupHistory, gid: bytes) -> Callable[[bytes], str]:
    """A member's name: the user's own for a contact, else the name the member who added it gave (marked as
    such, and as a look-alike when it reads like a contact's)."""
    from p2pchat.terminal_names import MARK

    given = groups.member_names(gid)

    def name(fp: bytes) -> str:
        c = names.store.get(fp.hex()) if names.store is not None else None
        if c is not None and (c.local_name or c.nickname):
            return (c.local_name or c.nickname or "") + names.looks_like(c.fp)
        twin = names.twin(given.get(fp), fp.hex())
        if twin is not None:
            return f"{given.get(fp)} (key {fp.hex()[:8]}, not your contact {twin}) {MARK}"
        return f"{given.get(fp) or '?'} (key {fp.hex()[:8]})"
    return name


def _group(p: Printer, args: argparse.Namespace, groups: GroupHistory, gid: bytes, names: PeerNames,
           out: TextIO) -> int:
    """The ``p2pchat history`` actions on one group's transcript."""
    from p2pchat.group_history import group_line

    label = f"the group {groups.name(gid)}"
    name_of = _member_name(names, groups, gid)
    if args.delete:
        count = len(groups.transcript(gid))
        if count == 0:
            p.line(f"No messages of {one_line(label)} are kept here.")
            return 0
        if not _confirmed(p, f"Forget all {count} messages of {one_line(label)}? The group and its members "
                             "stay. This cannot be undone. [y/N] ", args.yes):
            return 1
        deleted = groups.delete(gid)
        p.line(f"Forgot {deleted} message{'s' if deleted != 1 else ''} of {one_line(label)}.")
        return 0
    if args.export:
        return _export(p, groups.export_text(gid, name_of), args.export, out)
    if args.search:
        return _matches(p, [], names, groups.search(args.search, gid, limit=args.limit), groups)
    entries = groups.transcript(gid, args.limit)
    if not entries:
        p.line(f"No messages of {one_line(label)} are kept here.")
        return 0
    for t in entries:
        p.line(group_line(t, groups.me, name_of))
    groups.mark_read(gid)
    return 0


def _confirmed(p: Printer, question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("--delete forgets the whole transcript; add --yes to confirm")
    if input(question).strip().lower() not in ("y", "yes"):
        p.line("Nothing was deleted.")
        return False
    return True


def _resolve(contacts: ContactStore, text: str) -> tuple[str, str]:
    """(fingerprint, name to show) of what the user typed: a contact, or a full fingerprint."""
    compact = text.strip().replace(" ", "").replace(":", "").lower()
    if len(compact) == 64 and all(ch in "0123456789abcdef" for ch in compact):
        return compact, _name(contacts, compact)
    contact = contacts.resolve(text)
    return contact.fp, _name(contacts, contact.fp)


def _name(contacts: ContactSource | None, fp: str) -> str:
    c = contacts.get(fp) if contacts is not None else None
    if c is not None and (c.local_name or c.nickname):
        return c.local_name or c.nickname or ""
    return format_fingerprint(bytes.fromhex(fp), 4)


def _conversations(p: Printer, history: HistoryStore, names: PeerNames, groups: GroupHistory | None) -> int:
    rows: list[tuple[float, str, str, int, str]] = []      # (last time, name, its mark, unread, last text)
    for c in history.conversations():
        rows.append((c.last_ts, _name(names.store, c.fp), names.looks_like(c.fp), c.unread,
                     ("you: " if c.last_direction == "out" else "") + c.last_text))
    for g in groups.conversations() if groups is not None else []:
        rows.append((g.last.sent_at if g.last else 0.0, f"group {g.name}", "", g.unread,
                     _last_line(g.last, names, groups) if g.last and groups else "(no messages)"))
    if not rows:
        p.line("No chat history yet: the texts of every chat that passed all four steps are kept here.")
        return 0
    p.line(f"  {'CONTACT':<24} {'LAST MESSAGE':<17} {'UNREAD':>6}  LAST TEXT")
    for ts, name, mark, unread, last_text in sorted(rows, key=lambda r: r[0], reverse=True):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""
        text = one_line(last_text)
        text = text if len(text) <= PREVIEW else text[:PREVIEW - 1] + "…"
        p.line(f"  {one_line(name)[:24] + mark:<24} {when:<17} {unread or '':>6}  {text}")
    p.line("p2pchat history CONTACT shows one transcript (--group GROUP a group's); --search TEXT looks in all of "
           "them")
    return 0


def _last_line(last: GroupText, names: PeerNames, groups: GroupHistory) -> str:
    from p2pchat.group_history import entry_text

    who = "you" if last.sender == groups.me else _member_name(names, groups, last.group)(last.sender)
    return f"{who}: {entry_text(last)}"


def _matches(p: Printer, found: list[HistoryMessage], names: PeerNames,
             in_groups: list[GroupText] | None = None, groups: GroupHistory | None = None) -> int:
    from p2pchat.group_history import group_line
    from p2pchat.history import transcript_line

    if not found and not in_groups:
        p.line("No message contains that text.")
        return 0
    shown: dict[str, tuple[str, str]] = {}
    for m in found:
        name, mark = shown.setdefault(m.fp, (_name(names.store, m.fp), names.looks_like(m.fp)))
        p.line(f"{one_line(name)}{mark} · {transcript_line(m, name)}")
    if groups is not None:
        for t in in_groups or []:
            p.line(f"group {one_line(groups.name(t.group))} · "
                   f"{group_line(t, groups.me, _member_name(names, groups, t.group))}")
    return 0


def _delete(p: Printer, history: HistoryStore, fp: str, name: str, yes: bool) -> int:
    count = len(history.messages(fp, limit=10_000))
    if count == 0:
        p.line(f"No messages with {one_line(name)} are kept here.")
        return 0
    if not _confirmed(p, f"Forget all {count if count < 10_000 else 'the'} messages with {one_line(name)}? "
                         "This cannot be undone. [y/N] ", yes):
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
