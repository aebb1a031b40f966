"""A relay that misbehaves on purpose, for tests that check the chat layer notices.

:class:`MaliciousRelay` overrides :meth:`RelayServer.forward`, the one place payloads pass, and can record,
drop, duplicate, reorder, flip a bit in, or cross-wire (deliver into another session) the payloads it picks:
``direction`` (0 = caller to callee, 1 = callee to caller, None = both) and ``index`` (the n-th payload of a
session in that direction, 1-based; None = every one). Run it as a process for multi-process tests:

    python -m tests.p2pchat.relay.malicious_relay --host 127.0.0.9 --port 8472 --action flip --index 5
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from p2pchat.relay.server import RelayServer, RelaySession

ACTIONS = ("record", "drop", "duplicate", "reorder", "flip", "crosswire")


class MaliciousRelay(RelayServer):
    """A :class:`RelayServer` whose ``forward`` applies ``action`` to the payloads it picks (see module doc)."""

    def __init__(self, host: str, port: int = 0, *, action: str = "record", direction: int | None = None,
                 index: int | None = None, flip_offset: int = -1, **kw: Any) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        super().__init__(host, port, **kw)
        self.action = action
        self.direction = direction
        self.index = index
        self.flip_offset = flip_offset
        self.recorded: list[tuple[int, int, bytes]] = []   # (session id, sender side, payload)
        self.tampered = 0                                   # payloads the action was applied to
        self._seen: dict[tuple[int, int], int] = {}
        self._held: dict[tuple[int, int], bytes] = {}
        self._evil_lock = threading.Lock()

    def _picks(self, session: RelaySession, sender: int) -> bool:
        key = (session.id, sender)
        self._seen[key] = self._seen.get(key, 0) + 1
        return ((self.direction is None or sender == self.direction)
                and (self.index is None or self._seen[key] == self.index))

    def forward(self, session: RelaySession, sender: int, record: bytes) -> None:
        # The relay knows the session's pair keys: it opens every pair record, works on the plaintext (the chat's
        # bytes, as a relay that forwarded plain payloads would see them) and reseals what it delivers.
        to = 1 - sender
        key = (session.id, sender)
        payload = session.open_record(sender, record)
        with self._evil_lock:
            self.recorded.append((session.id, sender, payload))
            picked = self.action != "record" and self._picks(session, sender)
            held = self._held.pop(key, None)
            if picked:
                self.tampered += 1
                if self.action == "reorder" and held is None:
                    self._held[key] = payload      # released after the next payload in this direction
                    return
        if not picked:
            session.deliver(to, session.seal_record(to, payload))
        elif self.action == "duplicate":
            session.deliver(to, session.seal_record(to, payload))
            session.deliver(to, session.seal_record(to, payload))
        elif self.action == "flip":
            altered = bytearray(payload)
            altered[self.flip_offset] ^= 0x01
            session.deliver(to, session.seal_record(to, bytes(altered)))
        elif self.action == "crosswire":
            others = [s for s in self.sessions() if s is not session]
            if others:
                others[-1].deliver(to, others[-1].seal_record(to, payload))
        elif self.action == "reorder":
            session.deliver(to, session.seal_record(to, payload))
        # "drop" delivers nothing.
        if held is not None:
            session.deliver(to, session.seal_record(to, held))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="malicious_relay")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--action", choices=ACTIONS, default="record")
    p.add_argument("--direction", type=int, choices=(0, 1))
    p.add_argument("--index", type=int)
    args = p.parse_args(argv)
    relay = MaliciousRelay(args.host, args.port, action=args.action, direction=args.direction, index=args.index,
                           bytes_per_second=None)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    relay.start()
    print(f"relay listening on {relay.address} (malicious: {args.action})", flush=True)
    while not stop.wait(1.0):
        pass
    relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
