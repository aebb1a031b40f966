#!/usr/bin/env python3
"""A bot that keeps every message it receives in a file, one JSON object a line, and answers nothing.

    python3 examples/log_bot.py messages.jsonl --host 127.0.0.6 --data-dir ~/.local/share/log-bot

The first argument is the file (appended to); the rest go to ``p2pchat bot`` (docs/bot.md). Each line of the file
is ``{"at": …, "from": nickname, "fingerprint": …, "text": …}``: what the peer wrote stays a JSON string, so
reading the file with ``cat`` can never run a terminal control sequence.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: log_bot.py FILE [p2pchat bot options]", file=sys.stderr)
        return 2
    path, rest = argv[0], argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))     # a clean stop: the finally below runs
    child = subprocess.Popen([sys.executable, "-m", "p2pchat", "bot", "--accept-all", *rest],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    assert child.stdin is not None and child.stdout is not None
    peers: dict[str, str] = {}       # session -> the peer's key fingerprint, once the four steps are done
    try:
        with open(path, "a", encoding="utf-8") as log:
            for line in child.stdout:
                event = json.loads(line)
                kind = event.get("event")
                if kind == "ready":
                    print(f"log bot ready at {event['address']}, keeping messages in {path}", file=sys.stderr,
                          flush=True)
                elif kind == "session_updated" and event["info"].get("peer_fingerprint"):
                    peers[event["info"]["session"]] = event["info"]["peer_fingerprint"]
                elif kind == "message_received":
                    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event["received_at"])),
                             "from": event["sender"], "fingerprint": peers.get(event["session"]),
                             "text": event["text"]}
                    log.write(json.dumps(entry, ensure_ascii=True) + "\n")
                    log.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if child.stdin and not child.stdin.closed:
            child.stdin.close()
        child.wait()
    return child.returncode or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
