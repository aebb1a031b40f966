#!/usr/bin/env python3
"""An echo bot: accepts every chat and answers each message with the same text.

    python3 examples/echo_bot.py --host 127.0.0.5 --data-dir ~/.local/share/echo-bot

Every argument is passed to ``p2pchat bot`` (node options: --host, --data-dir, --ledger, --relay, …). The bot
runs ``python3 -m p2pchat bot --accept-all`` as a child process and talks to it in JSON lines (docs/bot.md).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

MAX_ECHO = 4000     # characters echoed back from one message


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))     # a clean stop: the finally below runs
    child = subprocess.Popen([sys.executable, "-m", "p2pchat", "bot", "--accept-all", *argv],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    assert child.stdin is not None and child.stdout is not None
    try:
        for line in child.stdout:
            event = json.loads(line)
            if event.get("event") == "ready":
                print(f"echo bot ready at {event['address']} as {event['nickname']!r}", file=sys.stderr, flush=True)
            elif event.get("event") == "message_received":
                reply = {"cmd": "send", "session": event["session"], "text": "echo: " + event["text"][:MAX_ECHO]}
                child.stdin.write(json.dumps(reply) + "\n")
                child.stdin.flush()
            elif "reply" in event and not event["ok"]:
                print(f"echo bot: {event['error']!r}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        if child.stdin and not child.stdin.closed:
            child.stdin.close()          # end of input: the bot says goodbye in every chat and exits
        child.wait()
    return child.returncode or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
