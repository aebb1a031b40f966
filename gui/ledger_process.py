"""The app's own ledger node as a child process the window owns: started, watched and always stopped.

:class:`LedgerProcess` starts ``python -m gui.ledger_child`` (see that module for the protocol and why a
process), hands it the start request, follows its stdout (answers) and stderr (its log, forwarded to this
process's log) on two reader threads it joins, and stops it on :meth:`close`: a stop request, then SIGTERM,
then SIGKILL. The child runs in its own session, so a Ctrl+C in the terminal reaches only the app, which then
stops the child; if the app dies, the child gets SIGTERM from the kernel (Linux) and sees its stdin end.

:class:`ChildSource` is what the ledger tab watches: status over the ledger port (as ``ledger status`` and
every light client get it), recent blocks and pending records from the child's pipe, and "Join network" as a
request to the child. Its failures become plain sentences in the tab.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import IO, Any

from gui.ledger_monitor import ClientSource
from gui.ledger_view import LedgerSnapshot
from p2pchat.foundation.errors import UserError

log = logging.getLogger(__name__)
child_log = logging.getLogger("gui.ledger_child")

STOP_GRACE = 10.0       # the node closes its peers and its store: give it time before SIGTERM
TERM_GRACE = 5.0
REQUEST_TIMEOUT = 5.0
STDERR_KEPT = 20


class ChildState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"        # could not start, or ended while the app still needed it
    STOPPED = "stopped"      # stopped by the app


class LedgerProcessError(UserError):
    """The app's ledger node process could not start or stopped unexpectedly."""


class LedgerProcess:
    """One ``gui.ledger_child`` process (see the module docstring)."""

    def __init__(self, request: dict[str, Any], *, python: str = sys.executable) -> None:
        self.address = f"{request['host']}:{request['port']}"
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()     # requests come from the monitor thread, stop from the app's
        self._changed = threading.Condition(self._lock)
        self._state = ChildState.STARTING
        self._error = ""
        self._answers: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        self._closing = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([python, "-m", "gui.ledger_child"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                     errors="replace", env=env, start_new_session=True)
        self.pid = self.proc.pid
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._stdin: IO[str] = self.proc.stdin
        self._threads = [threading.Thread(target=self._read_answers, args=(self.proc.stdout,),
                                          name="gui-ledger-child-out"),
                         threading.Thread(target=self._read_log, args=(self.proc.stderr,), name="gui-ledger-child-log")]
        for thread in self._threads:
            thread.start()
        self._write({**request, "parent_pid": os.getpid(),
                     "parent_death_signal": threading.current_thread() is threading.main_thread()})

    # --- state ----------------------------------------------------------------------------------------------

    @property
    def state(self) -> ChildState:
        with self._lock:
            return self._state

    @property
    def error(self) -> str:
        with self._lock:
            return self._error

    def wait_ready(self, timeout: float, *, tick: Callable[[float], None] | None = None) -> None:
        """Block until the node listens; raises :class:`LedgerProcessError` if it failed or ``timeout`` passed.
        ``tick(elapsed)`` runs every 0.1 s while waiting (on the calling thread)."""
        started = time.monotonic()
        with self._lock:
            while self._state is ChildState.STARTING:
                elapsed = time.monotonic() - started
                if elapsed >= timeout:
                    raise LedgerProcessError(f"the ledger node did not start within {timeout:.0f} s")
                if tick is not None:
                    self._lock.release()
                    try:
                        tick(elapsed)
                    finally:
                        self._lock.acquire()
                self._changed.wait(0.1)
            if self._state is not ChildState.RUNNING:
                raise LedgerProcessError(self._error or "the ledger node stopped")

    # --- requests -------------------------------------------------------------------------------------------

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a request to the child and wait for its answer (see gui.ledger_child)."""
        with self._lock:
            if self._state is not ChildState.RUNNING:
                raise LedgerProcessError(self._error or f"the ledger node is {self._state.value}")
            self._next_id += 1
            ident = self._next_id
        self._write({"id": ident, "op": op, **fields})
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if self._state is not ChildState.RUNNING:
                    raise LedgerProcessError(self._error or "the ledger node stopped")
                if left <= 0:
                    raise LedgerProcessError(f"the ledger node did not answer within {timeout:.0f} s")
                self._changed.wait(left)
            answer = self._answers.pop(ident)
        if not answer.get("ok"):
            raise LedgerProcessError(str(answer.get("error") or "the ledger node refused"))
        return answer

    def _write(self, message: dict[str, Any]) -> None:
        try:
            with self._write_lock:
                self._stdin.write(json.dumps(message) + "\n")
                self._stdin.flush()
        except (BrokenPipeError, ValueError, OSError):   # the child is gone; the reader reports why
            log.debug("the ledger node process no longer reads its requests")

    def move(self, host: str) -> None:
        """``--host auto``: this machine's address is now ``host``; the node listens there (same port) and
        publishes the updated record. Raises :class:`LedgerProcessError` when it cannot (e.g. the port is taken)."""
        answer = self.request("move", host=host)
        with self._lock:
            self.address = str(answer.get("address") or f"{host}:{self.address.rpartition(':')[2]}")

    # --- readers --------------------------------------------------------------------------------------------

    def _read_answers(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("the ledger node process wrote a line that is not JSON: %.200r", line)
                continue
            with self._lock:
                event = message.get("event")
                if event == "ready":
                    self._state = ChildState.RUNNING
                elif event == "failed":
                    self._state = ChildState.FAILED
                    self._error = f"the ledger node could not start: {message.get('error')}"
                elif isinstance(message.get("id"), int):
                    self._answers[message["id"]] = message
                self._changed.notify_all()
        code = self.proc.wait()
        with self._lock:
            if self._state is ChildState.FAILED:
                pass
            elif self._closing:
                self._state = ChildState.STOPPED
            else:
                self._state = ChildState.FAILED
                last = next((line for line in reversed(self._stderr) if line.strip()), "")
                self._error = (f"the ledger node stopped unexpectedly (exit status {code})"
                               + (f": {last.strip()}" if last else ""))
                log.warning("%s", self._error)
            self._changed.notify_all()

    def _read_log(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            with self._lock:
                self._stderr.append(line)
            child_log.info("%s", line)

    # --- stopping -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the child (stop request, then SIGTERM, then SIGKILL) and join the reader threads."""
        with self._lock:
            self._closing = True
        self._write({"op": "stop"})
        try:
            with self._write_lock:
                self._stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("the ledger node process did not stop within %.0f s: terminating it", STOP_GRACE)
            self.proc.terminate()
            try:
                self.proc.wait(TERM_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for thread in self._threads:
            thread.join()
        with self._lock:
            if self._state is ChildState.STARTING:
                self._state = ChildState.STOPPED


class ChildSource:
    """The ledger tab's view of the app's own ledger node process."""

    def __init__(self, process: LedgerProcess, *, source_ip: str | None, network: str | None) -> None:
        ip, _, port = process.address.rpartition(":")
        self.process = process
        self.where = f"in this app's ledger process (pid {process.pid}), {process.address}"
        self._client = ClientSource(ip, int(port), source_ip=source_ip, network=network)
        self._client.where = self.where

    def snapshot(self) -> LedgerSnapshot:
        state = self.process.state
        if state is ChildState.STARTING:
            return LedgerSnapshot(where=self.where, running=False, starting=True)
        if state is not ChildState.RUNNING:
            return LedgerSnapshot(where=self.where, running=False,
                                  error=self.process.error or "the ledger node is stopped")
        snap = self._client.snapshot()       # over the ledger port, like `ledger status`
        try:
            extra = self.process.request("recent")
        except LedgerProcessError as exc:
            log.info("no recent blocks from the ledger node: %s", exc)
            return snap
        return replace(snap, blocks=tuple(str(b) for b in extra.get("blocks", ())),
                       pending=tuple(str(p) for p in extra.get("pending", ())))

    def join(self, address: str) -> str:
        self.process.request("join", address=address)
        return f"✓ dialling {address}; it appears under Peers once connected"

    def move(self, old: str, new: str) -> None:
        """The machine's address changed: the child's node moves there, and the status is asked there."""
        self.process.move(new)
        self.where = f"in this app's ledger process (pid {self.process.pid}), {self.process.address}"
        self._client.move(old, new)
        self._client.where = self.where

    def close(self) -> None:
        """The process belongs to the app's :class:`gui.ledger_runtime.LedgerRuntime`, which stops it."""
        self._client.close()
