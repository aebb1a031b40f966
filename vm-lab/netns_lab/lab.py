"""One lab: the topology, a working directory with each host's data directory and logs, and the processes
started in it. ``with Lab(...) as lab:`` guarantees that everything is removed again, also on errors and
Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netns_lab.processes import LabProcess
from netns_lab.shell import LabError
from netns_lab.topology import DEFAULT_NATTED, DEFAULT_PEERS, Topology

REPO = Path(__file__).resolve().parents[2]
VM_LAB = REPO / "vm-lab"


def child_env() -> dict[str, str]:
    """The environment of every lab process: the repository importable, output unbuffered, no inherited
    data directory."""
    env = dict(os.environ)
    env.pop("P2PCHAT_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(VM_LAB), env.get("PYTHONPATH", "")) if p)
    return env


class Lab:
    """A running lab. Host names are the topology's (``a``, ``b``, ``c``, ``r`` …)."""

    def __init__(self, workdir: Path, *, name: str = "p2plab", peers: tuple[str, ...] = DEFAULT_PEERS,
                 natted: tuple[str, ...] = DEFAULT_NATTED, python: str = sys.executable,
                 say: Callable[[str], None] = lambda _text: None) -> None:
        self.workdir = Path(workdir)
        self.topo = Topology(name=name, peers=peers, natted=natted)
        self.python = python
        self.say = say
        self.procs: list[LabProcess] = []
        self.env = child_env()

    # ---- lifetime ----------------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.topo.build()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process (Ctrl-C, then SIGKILL), then remove the namespaces and what runs in them."""
        try:
            for proc in reversed(self.procs):
                proc.close()
        finally:
            self.procs.clear()
            self.topo.teardown()

    # ---- hosts -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.topo.name

    def ip(self, host: str) -> str:
        return self.topo.host(host).ip

    def data_dir(self, host: str) -> Path:
        path = self.workdir / host
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def add_host(self, host: str) -> str:
        """Plug in another machine; returns its address."""
        return self.topo.add_host(host).ip

    # ---- processes ---------------------------------------------------------------------------------------
    def module_argv(self, module: str, *args: str) -> list[str]:
        return [self.python, "-m", module, *args]

    def start(self, host: str, label: str, argv: list[str], *, detached: bool = False) -> LabProcess:
        """Start ``argv`` inside ``host``; its output goes to ``<workdir>/logs/<host>-<label>.log``."""
        log = self.workdir / "logs" / f"{host}-{label}.log"
        self.say(f"  [{host}] {' '.join(argv[1:] if argv[0] == self.python else argv)}")
        proc = LabProcess(f"{label}@{host}", self.topo.exec_argv(host, argv), log, env=self.env,
                          detached=detached)
        if not detached:
            self.procs.append(proc)
        return proc

    def run(self, host: str, argv: list[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a short command inside ``host`` and return its result (any exit status)."""
        try:
            return subprocess.run(self.topo.exec_argv(host, argv), capture_output=True, text=True,
                                  timeout=timeout, env=self.env, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise LabError(f"[{host}] '{' '.join(argv)}' did not finish within {timeout:g} s") from None

    def run_many(self, jobs: list[tuple[str, list[str]]], *, timeout: float = 30.0) -> list[tuple[int, str, str]]:
        """Run short commands on several hosts at once; ``(exit status, stdout, stderr)`` for each job."""
        procs = [subprocess.Popen(self.topo.exec_argv(host, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, env=self.env) for host, argv in jobs]
        results = []
        deadline = time.monotonic() + timeout
        for proc, (host, argv) in zip(procs, jobs, strict=True):
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.kill()
                    other.communicate()
                raise LabError(f"[{host}] '{' '.join(argv)}' did not finish within {timeout:g} s") from None
            results.append((proc.returncode, out, err))
        return results

    def forget(self, proc: LabProcess) -> None:
        """Close ``proc`` and drop it from the lab's list (after a scenario stopped or killed it)."""
        proc.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def logs_tail(self, lines: int = 15) -> str:
        """The last lines of every process's log, for failure reports."""
        parts = []
        for log in sorted((self.workdir / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join("    " + t for t in text))
        return "\n".join(parts)

    # ---- state of a detached lab (vm-lab/netns up) ------------------------------------------------------
    def state(self, **extra: str) -> dict[str, Any]:
        """What later commands (status, exec, down) need to know about a lab left running."""
        return {
            "name": self.name, "workdir": str(self.workdir), "started": time.time(), **extra,
            "hosts": {h.name: {"ip": h.ip, "ns": h.ns, "behind_nat": h.behind_nat, "role": h.role}
                      for h in self.topo.hosts.values()},
        }
