"""Start and stop real ``python -m ledger`` processes for the multi-process tests.

Each process gets its own 127.x address (``--host``) and data directory; readiness is polled with
``ledger status --json``. :class:`Cluster` is a context manager that always kills every process it started,
even when a test fails, and keeps their output for the failure report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ledger.client import LedgerClient
from ledger.records import Record
from p2pchat.foundation.addresses import LEDGER_PORT
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
TEST_DIFFICULTY = 8




def run_ledger(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run one short ``python -m ledger`` command and return its result."""
    return subprocess.run([sys.executable, "-m", "ledger", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # Commands without --data-dir must not read or write the user's own data directory (pins, light-client
    # headers): every test network shares its genesis with others, so stored headers would leak between tests.
    # One per xdist worker: two tests running at once must not share it either.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    env["P2PCHAT_HOME"] = str(Path(tempfile.gettempdir()) / f"p2pchat-tests-no-home{'-' + worker if worker else ''}")
    return env


class LedgerProcess:
    """One ``ledger serve``/``ledger join`` process."""

    def __init__(self, command: list[str], host: str, data_dir: Path, log_path: Path) -> None:
        self.command = command
        self.host = host
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.host

    @property
    def port(self) -> int:
        if "--port" in self.command:
            return int(self.command[self.command.index("--port") + 1])
        return LEDGER_PORT

    def client(self) -> LedgerClient:
        """An in-process light client of this node (much faster to poll than the CLI)."""
        return LedgerClient(self.host, self.port, timeout=5.0)

    def quick_status(self) -> dict[str, Any] | None:
        """The node's status through an in-process client, None while it does not answer."""
        try:
            return self.client().status()
        except UserError:
            return None

    def start(self) -> LedgerProcess:
        args = [sys.executable, "-m", "ledger", *self.command, "--host", self.host, "--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
        return self

    def status(self) -> dict[str, Any] | None:
        """``ledger status --json`` of this node, or None while it does not answer."""
        result = run_ledger("status", "--json", "--node", self.host, timeout=20)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Polls with the in-process client (a ``ledger status`` process per poll cost a Python start each), then
        returns what ``ledger status --json`` says once the node answers."""
        def ready() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"ledger node {self.host} exited with {self.proc.returncode}:\n{self.output()}")
            return self.quick_status()
        deadline = time.monotonic() + timeout
        wait_until(ready, timeout, interval=0.05, what=f"ledger node {self.host} to answer")
        return wait_until(self.status, max(1.0, deadline - time.monotonic()), interval=0.2,
                          what=f"ledger status --json to answer from {self.host}")

    def lookup(self, query: str, node: str | None = None) -> dict[str, Any] | None:
        result = run_ledger("lookup", query, "--json", "--node", node or self.host)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def quick_lookup(self, query: str) -> dict[str, Any] | None:
        """``lookup``'s answer through an in-process light client (no Python start per poll), None without one."""
        try:
            return LedgerClient(self.host, self.port, timeout=5.0).lookup(query).to_json()
        except UserError:
            return None

    def wait_lookup(self, query: str, timeout: float = 60.0, what: str = "the lookup",
                    until: Callable[[dict[str, Any] | None], object] = bool) -> dict[str, Any] | None:
        """Wait until ``until`` holds for this node's answer to ``query``: polled with the in-process client, then
        the real ``ledger lookup --json`` must agree (its answer is returned)."""
        deadline = time.monotonic() + timeout
        wait_until(lambda: until(self.quick_lookup(query)), timeout, what=what)

        def command_agrees() -> tuple[dict[str, Any] | None] | None:
            answer = self.lookup(query)
            return (answer,) if until(answer) else None
        return wait_until(command_agrees, max(1.0, deadline - time.monotonic()), interval=0.2,
                          what=f"{what} (ledger lookup {query} --node {self.host})")[0]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if the node does not stop within ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


class Cluster:
    """Ledger processes of one test; ``with Cluster(tmp_path) as c:`` kills them all on the way out."""

    def __init__(self, base: Path, identities: list[Identity] | None = None) -> None:
        self.base = base
        self.procs: list[LedgerProcess] = []
        self._identities = list(identities or [])

    def data_dir(self, host: str, name: str | None = None) -> Path:
        """The data directory of the node at ``host`` (or of another node on that host, by ``name``)."""
        path = self.base / (name or f"node-{host}")
        if not path.exists():
            path.mkdir(mode=0o700, parents=True)
            # Reuse a cached test key: RSA-3072 generation would cost each process half a second.
            if self._identities:
                self._identities.pop(0).save(path / KEY_FILE)
        return path

    def serve(self, host: str, *extra: str, difficulty: int = TEST_DIFFICULTY) -> LedgerProcess:
        return self._start(["serve", "--difficulty", str(difficulty), *extra], host)

    def join(self, host: str, *peers: str, extra: tuple[str, ...] = (), name: str | None = None) -> LedgerProcess:
        return self._start(["join", *peers, *extra], host, name)

    def _start(self, command: list[str], host: str, name: str | None = None) -> LedgerProcess:
        name = name or f"node-{host}"
        proc = LedgerProcess(command, host, self.data_dir(host, name), self.base / f"{name}.log")
        self.procs.append(proc.start())
        return proc

    def restart(self, proc: LedgerProcess) -> LedgerProcess:
        proc.kill()
        return proc.start()

    def logs(self) -> str:
        return "\n".join(f"--- {p.host} ---\n{p.output()}" for p in self.procs)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for proc in self.procs:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.stop()
        if exc_type is not None:
            sys.stderr.write(self.logs())


def premine(data_dir: Path, blocks: int, difficulty: int = TEST_DIFFICULTY, network: str = "p2pchat",
            records: Sequence[Record] = ()) -> bytes:
    """Give ``data_dir`` a ledger of ``blocks`` blocks (dated a second apart, in the past) before a node starts on
    it; ``records`` go one a block from height 1, the other blocks are empty. Returns the tip hash."""
    import threading

    from ledger.blocks import Block, BlockHeader
    from ledger.local_ledger import LocalLedger
    from ledger.merkle import merkle_root
    from ledger.miner import mine
    from ledger.params import NetworkParams

    params = NetworkParams(name=network, difficulty_bits=difficulty)
    stop = threading.Event()
    now = time.time()
    with LocalLedger(data_dir, params) as ledger, ledger.batched():
        tip = ledger.chain.tip
        start = int(now) - blocks - 60
        for i in range(blocks):
            body = tuple(records[i:i + 1])
            header = BlockHeader(version=params.version, network_id=params.network_id, height=tip.height + 1,
                                 prev_hash=tip.hash, merkle_root=merkle_root([r.id for r in body]),
                                 timestamp=start + i, target_bits=params.difficulty_bits, nonce=0)
            solved = mine(header, stop)
            assert solved is not None
            result = ledger.receive_block(Block(solved, body), now)
            assert result.status == "added", result.reason
            tip = solved
        return tip.hash
