"""``p2pchat contacts``: list, show, verify, forget and rename the contacts of a data directory, and resolve the
``CONTACT`` of ``p2pchat chat CONTACT``. Every field read from the store (nicknames came from ledger records)
is shown through :mod:`p2pchat.display`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from p2pchat import passphrase
from p2pchat.display import Printer, one_line
from p2pchat.foundation.fingerprint_text import format_fingerprint

# The store and the ledger's query parser load only when a contacts command runs (`p2pchat --help` stays quick).
if TYPE_CHECKING:
    from p2pchat.contacts import Contact, ContactStore
    from p2pchat.vault import Vault


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("contacts", help="the people you chatted with: list, show, verify, forget, rename",
                       description="The contact store of the data directory: each key you completed a chat with, "
                                   "the nicknames and addresses it was reached at, whether you verified its "
                                   "safety number, and the key changes you were shown. NAME is a local name, a "
                                   "nickname or the start of a fingerprint (at least 4 hex digits).")
    p.add_argument("--data-dir", help="the data directory (default: $P2PCHAT_HOME or the per-user data directory)")
    passphrase.add_option(p)
    p.add_argument("--all", action="store_true", help="list also keys that were replaced (rotated or accepted)")
    p.add_argument("action", nargs="?", default="list",
                   choices=("list", "show", "verify", "unverify", "forget", "rename"),
                   help="list (default); show NAME; verify NAME (after comparing the safety number); unverify "
                        "NAME; forget NAME (its pins too); rename NAME NEWNAME (your own name for it)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("new_name", nargs="?", metavar="NEWNAME")


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at is not None else "-"


def _short(fp: str) -> str:
    return format_fingerprint(bytes.fromhex(fp), 4)


def _label(c: Contact) -> str:
    return one_line(c.local_name or c.nickname or "(no name)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from p2pchat.contacts import ContactNotFound, ContactStore

    p = Printer(out)
    opened = passphrase.open_data_dir(args, offer=False)
    store = ContactStore.in_data_dir(opened.data_dir, opened.vault)
    try:
        if args.action == "list":
            return _list(p, store, args.all)
        if args.name is None:
            raise ContactNotFound(f"contacts {args.action} needs NAME (a local name, nickname or fingerprint)")
        contact = store.resolve(args.name)
        if args.action == "show":
            return _show(p, store, contact)
        if args.action in ("verify", "unverify"):
            store.set_verified(contact.fp, args.action == "verify")
            p.line(f"{_label(contact)} ({_short(contact.fp)}) is "
                   + ("now verified: a change of its key is a hard stop." if args.action == "verify"
                      else "no longer marked verified."))
            return 0
        if args.action == "forget":
            store.forget(contact.fp)
            p.line(f"forgot {_label(contact)} ({_short(contact.fp)}) and the addresses and nicknames pinned to it")
            return 0
        if args.new_name is None:
            raise ContactNotFound("contacts rename needs NAME and NEWNAME")
        store.rename(contact.fp, args.new_name)
        p.line(f"{_label(contact)} ({_short(contact.fp)}) is now called {one_line(args.new_name.strip())}")
        return 0
    finally:
        store.close()


def _list(p: Printer, store: ContactStore, show_all: bool) -> int:
    from p2pchat.terminal_names import PeerNames

    names = PeerNames(store)        # two contacts whose names read alike are both marked
    contacts = [c for c in store.all() if show_all or c.replaced_by is None]
    if not contacts:
        p.line("No contacts yet: a peer becomes a contact once a chat with it passed all four steps.")
        return 0
    p.line(f"  {'NAME':<20} {'NICKNAME':<16} {'KEY':<20} {'LAST ADDRESS':<22} LAST SEEN")
    for c in contacts:
        mark = "✓" if c.verified else "·" if c.replaced_by is not None else " "
        name = one_line(c.local_name or "-")[:20]
        nick = one_line(c.nickname or "-")[:16]
        replaced = f"  (replaced by {_short(c.replaced_by)})" if c.replaced_by else ""
        p.line(f"{mark} {name:<20} {nick:<16} {_short(c.fp):<20} {one_line(c.last_address or '-'):<22} "
               f"{_when(c.last_seen)}{replaced}{names.looks_like(c.fp)}")
    p.line("✓ verified (safety number compared)   contacts show NAME: details and key changes")
    return 0


def _show(p: Printer, store: ContactStore, c: Contact) -> int:
    from p2pchat.terminal_names import PeerNames

    p.line(f"{_label(c)}{'  ✓ verified on ' + _when(c.verified_at) if c.verified else '  (not verified)'}"
           f"{PeerNames(store).looks_like(c.fp)}")
    p.line(f"  key          {format_fingerprint(c.fingerprint, 16)}")
    p.line(f"  local name   {one_line(c.local_name or '-')}")
    p.line(f"  nicknames    {', '.join(one_line(n) for n in c.nicknames) or '-'}")
    p.line(f"  addresses    {', '.join(one_line(a) for a in c.ips) or '-'} (last: {one_line(c.last_address or '-')})")
    p.line(f"  first seen   {_when(c.first_seen)}   last seen {_when(c.last_seen)}")
    if c.replaced_by:
        p.line(f"  replaced by  {format_fingerprint(bytes.fromhex(c.replaced_by), 16)}")
    # the history of the whole chain of keys that led to this one (rotations and accepted changes)
    earlier = {other.replaced_by: other.fp for other in store.all() if other.replaced_by}
    chain, fp = [c.fp], c.fp
    while fp in earlier and earlier[fp] not in chain and len(chain) < 64:
        fp = earlier[fp]
        chain.append(fp)
    decisions = sorted({d for key in chain for d in store.decisions(key)}, key=lambda d: d.at)
    if decisions:
        p.line("  key changes and decisions:")
        for d in decisions:
            p.line(f"    {_when(d.at)}  {d.decision:<10} {one_line(d.detail)}")
    return 0


def resolve_peer(data_dir: Path, peer: str, vault: Vault | None = None) -> tuple[str, Contact | None]:
    """What ``p2pchat chat PEER`` dials: an IP or a full fingerprint as typed; a contact's local name,
    nickname or fingerprint prefix → its last address (where its pin is checked), else its fingerprint; any
    other name → the ledger nickname as typed."""
    from p2pchat.contacts import ContactNotFound, ContactStore
    from p2pchat.peer_directory import query_kind

    kind, _value = query_kind(peer)
    if kind != "nick":
        return peer, None
    store = ContactStore.in_data_dir(data_dir, vault)
    try:
        contact = store.resolve(peer)
    except ContactNotFound:
        compact = peer.replace(" ", "").replace(":", "").lower()
        if len(compact) >= 8 and all(ch in "0123456789abcdef" for ch in compact):
            raise                   # a fingerprint prefix must name a contact (the ledger needs all 64 digits)
        return peer, None
    finally:
        store.close()
    return (contact.last_address or contact.fp), contact


__all__ = ["add_parser", "resolve_peer", "run"]
