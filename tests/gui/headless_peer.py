"""A chat peer without a window, in its own process, for the window tests: a real ChatNode that accepts every
chat and answers each message with ``echo: <text>``. Commands arrive as JSON lines on stdin (``{"burst": n}``
sends n messages at once, ``{"long": n}`` one message of n characters); every node event is printed as a JSON
line. The tests kill this process to make a peer vanish mid-chat.

    python -m tests.gui.headless_peer --host IP --data-dir DIR --nickname NAME --network NET --ledger ADDR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import sys
import threading
from pathlib import Path

from p2pchat.events import MessageReceived, SessionEnded, SessionUpdated, StepResult
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode


def say(**fields: object) -> None:
    print(json.dumps(fields, default=str), flush=True)


def read_commands(commands: queue.Queue[dict[str, object] | None]) -> None:
    for line in sys.stdin:
        if line.strip():
            commands.put(json.loads(line))
    commands.put(None)


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--host", "--data-dir", "--nickname", "--network", "--ledger"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    identity = Identity.load(Path(args.data_dir) / KEY_FILE)
    node = ChatNode(identity, host=args.host, network=args.network, nickname=args.nickname, ledger=args.ledger,
                    auto_accept=True)
    commands: queue.Queue[dict[str, object] | None] = queue.Queue()
    reader = threading.Thread(target=read_commands, args=(commands,))  # ends when the test closes stdin
    node.start()
    reader.start()
    say(event="ready", address=node.address)
    chats: list[str] = []
    try:
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                command = {}
            if command is None:
                return 0
            for session in chats[-1:]:
                if "burst" in command:
                    for i in range(int(command["burst"])):  # type: ignore[call-overload]
                        node.send_text(session, f"burst {i}")
                if "long" in command:
                    node.send_text(session, "L" * int(command["long"]))  # type: ignore[call-overload]
            try:
                event = node.events.get(timeout=0.05)
            except queue.Empty:
                continue
            fields = {k: v for k, v in dataclasses.asdict(event).items() if k != "text"} \
                if not isinstance(event, SessionUpdated) else {"session": event.info.session}
            if isinstance(event, MessageReceived):
                fields["text"] = event.text[:100]
            say(event=type(event).__name__, **fields)
            if isinstance(event, StepResult) and event.ok and event.step == 4:
                chats.append(event.session)
            elif isinstance(event, MessageReceived) and not event.text.startswith("echo: "):
                try:
                    node.send_text(event.session, f"echo: {event.text}")
                except UserError as exc:
                    say(event="error", text=str(exc))
            elif isinstance(event, SessionEnded) and event.session in chats:
                chats.remove(event.session)
    finally:
        node.close()


if __name__ == "__main__":
    sys.exit(main())
