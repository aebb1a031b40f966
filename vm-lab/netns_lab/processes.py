"""Processes running inside the lab's namespaces, with their output captured and searchable.

A :class:`LabProcess` is one command started with ``ip netns exec`` (which execs the command, so the process
id is the command's own). Its standard output and error go, line by line, to a log file and to memory, where
:meth:`LabProcess.wait_for` finds a pattern with a deadline. Its standard input is a pipe, so scenarios type
into ``p2pchat chat``/``listen`` the way a person would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from netns_lab.shell import LabError

TAIL_LINES = 40


class LabProcess:
    """One running command of the lab. ``close()`` stops it and joins its reader thread."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str],
                 detached: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader: threading.Thread | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if detached:
            # Outlives the command that started it (vm-lab/netns up): output straight to the log file.
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True)
            self._eof = True
            return
        self._log = open(log_path, "a", encoding="utf-8")  # closed by the reader thread
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True, encoding="utf-8", errors="replace", bufsize=1,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"lab-{name}-out")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._log.write(line)
                self._log.flush()
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        finally:
            self._log.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    # ---- output ------------------------------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the output; ``wait_for(..., since=mark)`` only looks at lines after it."""
        with self._cond:
            return len(self._lines)

    def output(self, since: int = 0) -> str:
        with self._cond:
            return "\n".join(self._lines[since:])

    def tail(self, n: int = TAIL_LINES) -> str:
        if self._reader is None:
            try:
                return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
            except FileNotFoundError:
                return ""
        with self._cond:
            return "\n".join(self._lines[-n:])

    def wait_for(self, pattern: str, timeout: float, *, since: int = 0) -> re.Match[str]:
        """The first output line after ``since`` matching ``pattern``; :class:`LabError` with the output's tail
        when the deadline passes or the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for i in range(checked, len(self._lines)):
                    found = regex.search(self._lines[i])
                    if found:
                        return found
                checked = len(self._lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    why = f"exited with status {self.proc.poll()}" if self._eof else f"not within {timeout:g} s"
                    raise LabError(f"{self.name}: no output matching /{pattern}/ ({why}); last lines:\n"
                                   f"{self._tail_locked()}")
                self._cond.wait(min(remaining, 0.5))

    def _tail_locked(self) -> str:
        return "\n".join("    " + line for line in self._lines[-TAIL_LINES:])

    # ---- input -------------------------------------------------------------------------------------------
    def send(self, line: str) -> None:
        """Type one line into the process."""
        if self.proc.stdin is None or self.proc.stdin.closed:
            raise LabError(f"{self.name}: its input is closed")
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise LabError(f"{self.name}: exited before reading '{line}'; last lines:\n{self.tail()}") from None

    def close_stdin(self) -> None:
        """End of input (what Ctrl-D does in a terminal)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    # ---- lifetime ----------------------------------------------------------------------------------------
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        """The exit status; :class:`LabError` if it is still running after ``timeout`` seconds."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.name} still runs after {timeout:g} s; last lines:\n{self.tail()}") from None
        self._join_reader()
        return code

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> int:
        """SIGKILL, as a power cut would: no chance to clean up."""
        self.signal(signal.SIGKILL)
        return self.wait_exit(10)

    def stop(self, grace: float = 10.0) -> int:
        """Ctrl-C (SIGINT) and wait; SIGKILL when it does not end within ``grace`` seconds."""
        self.close_stdin()
        self.signal(signal.SIGINT)
        try:
            code = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.proc.wait(10)
        self._join_reader()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        self._join_reader()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass

    def _join_reader(self) -> None:
        if self._reader is not None and self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(10)
            if self._reader.is_alive():
                raise LabError(f"{self.name}: its output did not end after it exited")
