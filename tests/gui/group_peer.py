"""A group member without a window, in its own process, for the window's group tests (issue 18): a real ChatNode
with a data directory (so it runs the node's group service and outbox) that accepts every chat, knows every
other listed user as a contact, answers each group message from someone else with ``re: <text>`` and takes every
file offered (into ``DIR/downloads``). Every group and file event is printed as a JSON line. Commands arrive as
JSON lines on stdin: ``{"create": NAME, "members": [NICKNAME, …]}`` makes a group (printed as ``{"event":
"created", "group": HEX}``), ``{"gsay": HEX, "text": T}`` writes to one, ``{"gsend": HEX, "path": P}`` shares a
file in one.

    python -m tests.gui.group_peer --host IP --port PORT --data-dir DIR --nickname NAME --directory FILE

``FILE`` lists everyone: a JSON list of ``{"der": HEX, "nickname": NAME, "ip": IP, "port": PORT}``; the data
directory holds the identity (``identity.pem``, no passphrase).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import sys
import threading
from pathlib import Path

from p2pchat.events import FileFinished, FileOffer, GroupMessage, GroupNotice, GroupReceipt
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory
from tests.gui.headless_peer import read_commands, say


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--host", "--port", "--data-dir", "--nickname", "--directory"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    identity = Identity.load(data_dir / KEY_FILE)
    listed = json.loads(Path(args.directory).read_text(encoding="utf-8"))
    entries = [DirectoryEntry(bytes.fromhex(e["der"]), e["nickname"], e["ip"], e["port"], height=5, confirmations=2)
               for e in listed]
    node = ChatNode(identity, host=args.host, port=int(args.port), nickname=args.nickname,
                    directory=FixedDirectory(entries), data_dir=data_dir, outbox=True, auto_accept=True,
                    step_timeout=5.0, direct_timeout=1.0)
    assert node.contacts is not None
    for e in entries:                        # they chatted before: each knows the others' keys
        if e.fingerprint != identity.fingerprint:
            node.contacts.record_chat(e.public_der, e.fingerprint, nickname=e.nickname, ip=None, address=None)
    commands: queue.Queue[dict[str, object] | None] = queue.Queue()
    reader = threading.Thread(target=read_commands, args=(commands,))   # ends when the test closes stdin
    node.start()
    groups = node.groups
    assert groups is not None
    reader.start()
    say(event="ready", address=node.address)
    try:
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                command = {}
            if command is None:
                return 0
            try:
                if "create" in command:
                    members = [node.group_member(str(n)) for n in command["members"]]  # type: ignore[attr-defined]
                    say(event="created", group=groups.create(str(command["create"]), members).hex())
                if "gsay" in command:
                    groups.say(bytes.fromhex(str(command["gsay"])), str(command["text"]))
                if "gsend" in command:
                    groups.send_file(bytes.fromhex(str(command["gsend"])), str(command["path"]))
            except UserError as exc:
                say(event="error", text=str(exc))
            try:
                event = node.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(event, GroupMessage | GroupNotice | GroupReceipt | FileOffer | FileFinished):
                say(event=type(event).__name__, **dataclasses.asdict(event))
            if isinstance(event, FileOffer):            # every file is taken (into DIR/downloads)
                node.answer_file(event.session, event.transfer, True)
            if isinstance(event, GroupMessage) and not event.text.startswith("re: "):
                try:
                    groups.say(bytes.fromhex(event.group), f"re: {event.text}")
                except UserError as exc:         # removed meanwhile
                    say(event="error", text=str(exc))
    finally:
        node.close()


if __name__ == "__main__":
    sys.exit(main())
