"""The ledger tab's "your identity" actions — change nickname, rotate key, revoke — run off the Tk thread.

Each action does what ``ledger update`` / ``ledger rotate-key`` / ``ledger revoke`` do (:mod:`ledger.own_record`):
it reads this data directory's key, asks the ledger node the window uses for the identity's latest record,
publishes the new record there and follows it until a block holds it. Progress lines and the outcome are queued
for the Tk thread, which takes them with :meth:`LedgerActions.drain`. One action at a time; :meth:`close` joins.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from p2pchat.foundation.addresses import LEDGER_PORT, parse_address
from p2pchat.foundation.errors import UserError

log = logging.getLogger(__name__)
WAIT_SECONDS = 120.0


class Action(Enum):
    NICKNAME = "nickname"
    ROTATE = "rotate"
    REVOKE = "revoke"


@dataclass(frozen=True)
class Report:
    """One line for the panel; ``final`` is True for the outcome (``ok`` says which kind)."""

    text: str
    final: bool = False
    ok: bool = True


class LedgerActions:
    """Runs :class:`Action` s against the ledger node at ``address`` with the key in ``data_dir``."""

    def __init__(self, address: str, data_dir: Path, *, passphrase: str | None, source_ip: str | None,
                 network: str | None, wait: float = WAIT_SECONDS) -> None:
        self.ip, self.port = parse_address(address, LEDGER_PORT)
        self.data_dir = Path(data_dir)
        self.passphrase, self.source_ip, self.network, self.wait = passphrase, source_ip, network, wait
        self._reports: queue.Queue[Report] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def start(self, action: Action, value: str = "") -> bool:
        """Start ``action`` (``value``: the new nickname); False if another one is still running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            if self._thread is not None:
                self._thread.join()
            self._thread = threading.Thread(target=self._run, args=(action, value), name=f"gui-ledger-{action.value}")
            self._thread.start()
            return True

    def move(self, address: str, source_ip: str) -> None:
        """``--host auto``: ask the ledger node at ``address`` from ``source_ip`` from the next action on."""
        ip, port = parse_address(address, LEDGER_PORT)
        with self._lock:
            self.ip, self.port, self.source_ip = ip, port, source_ip

    def drain(self) -> list[Report]:
        """The reports queued since the last call (on the Tk thread)."""
        out = []
        while True:
            try:
                out.append(self._reports.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stop following a record (it stays with the node) and join the thread."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _say(self, text: str) -> None:
        self._reports.put(Report(text))

    def _run(self, action: Action, value: str) -> None:
        from ledger import own_record
        from ledger.client import LedgerClient

        with self._lock:
            ip, port, source_ip = self.ip, self.port, self.source_ip
        try:
            identity = own_record.load_identity(self.data_dir, self.passphrase)
            client = LedgerClient(ip, port, source_ip=source_ip, network=self.network, timeout=10.0)
            own = own_record.own_record(client.status(), identity)
            params = client.network()
            now = time.time()
            new = None
            if action is Action.NICKNAME:
                record = own_record.build_update(identity, own, params, now, nickname=value)
            elif action is Action.ROTATE:
                self._say("generating the new key…")
                new = own_record.next_key(self.data_dir, self.passphrase, own)
                self._say(f"new key {new.short_fingerprint} saved beside the current one")
                record = own_record.build_rotation(identity, new, own, params, now)
            else:
                record = own_record.build_revocation(identity, own, params, now)
            self._say("publishing: " + "; ".join(" ".join(line.split()) for line in own_record.describe(record)))
            result = own_record.publish_and_wait(client, record, self.wait, progress=self._say, stop=self._stop)
            if not result.mined:
                self._reports.put(Report(f"still pending after {self.wait:.0f} s; the node mines it when it can",
                                         final=True, ok=False))
                return
            text = f"✓ mined in block {result.height}"
            if new is not None:
                switched = own_record.switch_to_rotated_key(self.data_dir, new.fingerprint, self.passphrase)
                if switched is None:
                    raise UserError("the rotation is mined but the new key file could not be moved into place")
                text += (f"; the identity key is now {switched.short_fingerprint} — restart p2pchat so that chats "
                         "use it")
            self._reports.put(Report(text, final=True))
        except UserError as exc:
            self._reports.put(Report(f"✗ {exc}", final=True, ok=False))
        except Exception as exc:  # a programming error: logged with its traceback, shown once
            log.exception("ledger action %s failed", action.value)
            self._reports.put(Report(f"✗ internal error: {exc}", final=True, ok=False))


def confirmation_text(action: Action, nickname: str = "") -> tuple[str, str, str]:
    """(title, question, confirm button) for the confirmation dialog of ``action``."""
    if action is Action.NICKNAME:
        shown = f"“{nickname}”" if nickname else "no nickname"
        return ("Change nickname", f"Publish a record that changes your nickname to {shown}? Your address and key "
                "stay the same.", "Change")
    if action is Action.ROTATE:
        return ("Rotate key", "Replace your identity key with a new one? The new key is saved beside the current "
                "one and takes over once the rotation is mined; peers then see a new fingerprint.", "Rotate")
    return ("Revoke identity", "Revoke your identity for good? Your address and nickname are released and this key "
            "can never register again.", "Revoke")

