"""``p2pchat pad``: make a one-time pad for a contact, import one, and show how much of it is left (issue 17).
The pad itself lives in :mod:`p2pchat.pad`; its files and its use in a chat are described in docs/protocol.md."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TextIO

from p2pchat import passphrase
from p2pchat.display import Printer, one_line

_FP = re.compile(r"^[0-9a-f]{64}$")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pad", help="one-time pads: new CONTACT --out DIR, import DIR, status CONTACT",
                       description="A one-time pad shared in person gives the texts of a chat information-"
                                   "theoretic secrecy (see docs/security.md). 'new' writes DIR/mine (import it "
                                   "yourself) and DIR/peer (carry it to the contact on removable media); "
                                   "'import' installs a pad directory; 'status' shows the bytes left each way. "
                                   "CONTACT is a contact's local name, nickname, fingerprint prefix or full "
                                   "fingerprint (64 hex digits).")
    p.add_argument("--data-dir", help="the data directory (default: $P2PCHAT_HOME or the per-user data directory)")
    passphrase.add_option(p)
    p.add_argument("action", choices=("new", "import", "status"))
    p.add_argument("target", metavar="CONTACT|DIR", help="CONTACT for new and status, DIR for import")
    p.add_argument("--size", default="64M", help="pad size, both halves together (default 64M)")
    p.add_argument("--out", help="where 'new' writes the pad (a directory that is empty or does not exist)")


def _contact_fp(opened: passphrase.Opened, name: str) -> bytes:
    compact = name.strip().replace(" ", "").replace(":", "").lower()
    if _FP.match(compact):
        return bytes.fromhex(compact)
    from p2pchat.contacts import ContactStore

    store = ContactStore.in_data_dir(opened.data_dir, opened.vault)
    try:
        return bytes.fromhex(store.resolve(name).fp)
    finally:
        store.close()


def run(args: argparse.Namespace, out: TextIO) -> int:
    from p2pchat.foundation.fingerprint_text import format_fingerprint
    from p2pchat.foundation.identity import Identity
    from p2pchat.pad import Pad, PadError, create_pad, import_pad, parse_size

    p = Printer(out)
    opened = passphrase.open_data_dir(args, offer=False)
    me = Identity.load_or_create(opened.data_dir, opened.passphrase).fingerprint
    if args.action == "import":
        meta = import_pad(Path(args.target), opened.data_dir, me)
        p.line(f"imported pad {meta.pad_id.hex()} ({meta.half_size:,} bytes each way) for "
               f"{format_fingerprint(meta.peer_of(me), 4)}")
        return 0
    peer = _contact_fp(opened, args.target)
    if args.action == "new":
        if not args.out:
            raise PadError("pad new needs --out DIR (e.g. a USB stick's directory)")
        meta, mine, theirs = create_pad(me, peer, parse_size(args.size), Path(args.out))
        p.line(f"pad {meta.pad_id.hex()}: {meta.half_size:,} bytes each way, for you and "
               f"{format_fingerprint(peer, 4)}")
        p.line(f"  yours: {one_line(str(mine))}  → p2pchat pad import {one_line(str(mine))}")
        p.line(f"  theirs: {one_line(str(theirs))}  → hand it over in person; they run p2pchat pad import")
        p.line("Delete both copies from the removable medium once imported: whoever copies it can read the texts.")
        return 0
    pad = Pad.open(opened.data_dir, me, peer)
    if pad is None:
        p.line(f"no pad is installed for {format_fingerprint(peer, 4)}")
        return 1
    st = pad.status()
    p.line(f"pad {st.pad_id.hex()}: {st.send_left:,} bytes left to send, {st.recv_left:,} bytes left to "
           f"receive (of {st.half_size:,} each way)")
    return 0
