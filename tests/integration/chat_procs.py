"""Real ``p2pchat chat`` / ``p2pchat listen`` processes for the multi-process chat tests.

:class:`ChatProcess` starts ``python -m p2pchat ...`` with pipes, collects its output lines on a reader thread
(joined when the process ends) and lets a test write lines to it and wait for output. A ledger network for the
chat is made with ``tests.integration.procs.Cluster`` (real ``ledger serve``/``ledger join`` processes).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.integration.procs import ROOT, Cluster, wait_until


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("P2PCHAT_HOME", None)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ChatProcess:
    """One ``p2pchat`` process with its stdin open for writing and its output gathered line by line."""

    def __init__(self, *args: str) -> None:
        self.args = [sys.executable, "-m", "p2pchat", *args]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="test-chat-output")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def write(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines).encode())
        self.proc.stdin.flush()

    def close_input(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait_for(self, text: str, timeout: float = 30.0, count: int = 1) -> None:
        wait_until(lambda: self.output().count(text) >= count or self._died(), timeout,
                   what=f"{text!r} in the output of {' '.join(self.args[2:])}:\n{self.output()}")
        if self.output().count(text) < count:
            raise AssertionError(f"process exited with {self.proc.returncode} before {text!r}:\n{self.output()}")

    def choose_chat(self, count: int = 1, timeout: float = 30.0) -> int:
        """``listen``: wait until ``count`` chats were announced ready, then send typed lines to the last one
        (``/to N``: listen never picks a chat by itself); returns N."""
        pattern = re.compile(r"^\[\d+\] Chat (\d+) with .* is ready")

        def ready() -> list[int]:
            return [int(m.group(1)) for line in self.output().splitlines() if (m := pattern.match(line))]

        wait_until(lambda: len(ready()) >= count or self._died(), timeout,
                   what=f"{count} chat(s) ready in the output of {' '.join(self.args[2:])}:\n{self.output()}")
        number = ready()[count - 1]
        self.write(f"/to {number}")
        self.wait_for(f"Lines you type now go to chat {number} ")
        return number

    def _died(self) -> bool:
        return self.proc.poll() is not None and not self._reader.is_alive()

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{' '.join(self.args[2:])} did not exit:\n{self.output()}") from None
        self._reader.join()
        return code

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) if still running; always joins the reader."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        self._reader.join()


def ledger_network(cluster: Cluster, hosts: list[str], timeout: float = 60.0) -> None:
    """``ledger serve`` on the first host, ``ledger join`` on the others; wait until every node finds every
    host's record (so each host's key is bound to its address and mined)."""
    first = cluster.serve(hosts[0])
    first.wait_ready()
    for host in hosts[1:]:
        cluster.join(host, hosts[0]).wait_ready()
    deadline = time.monotonic() + timeout
    for proc in cluster.procs:
        # Polled with an in-process client; each node then answers the real `ledger lookup` command once.
        for host in hosts:
            wait_until(lambda h=host, p=proc: p.quick_lookup(h), max(1.0, deadline - time.monotonic()),
                       what=f"the record of {host} on {proc.host}\n{cluster.logs()}")
        assert proc.lookup(hosts[-1]), f"ledger lookup {hosts[-1]} --node {proc.host} failed\n{cluster.logs()}"


def data_dir(cluster: Cluster, host: str) -> Path:
    return cluster.data_dir(host)
