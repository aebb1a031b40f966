"""The project's command lines as the lab runs them on its hosts (``ledger ...``, ``p2pchat ...``).

Every command gets the host's ``--host`` (its lab address), its own ``--data-dir`` and the lab's
``--network``; a NAT'd host also gets ``--no-inbound --relay <relay>``. Everything here goes through the
public command-line interface, exactly as a person would type it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from netns_lab.lab import Lab
from netns_lab.processes import LabProcess
from netns_lab.shell import LabError, faketime_library
from netns_lab.topology import RELAY
from netns_lab.wait import wait_until
from p2pchat.foundation.addresses import HOST_AUTO, RELAY_PORT, format_address


@dataclass(frozen=True)
class Settings:
    network: str = "p2plab"
    difficulty: int = 8          # proof-of-work bits: low, so blocks are found at once
    seed: str = "a"              # the host that runs `ledger serve`


class Project:
    """Runs ``ledger`` and ``p2pchat`` commands on the hosts of ``lab``."""

    def __init__(self, lab: Lab, settings: Settings | None = None, *, detached: bool = False) -> None:
        self.lab = lab
        self.settings = settings or Settings()
        self.detached = detached   # long-running commands outlive this program (vm-lab/netns up)
        self.ledgers: dict[str, LabProcess] = {}
        self.following: set[str] = set()   # hosts whose ledger node and listener run with --host auto
        self.clock_offsets: dict[str, str] = {}   # host → its ledger node's clock offset (libfaketime, "+10m")

    # ---- options -----------------------------------------------------------------------------------------
    @property
    def relay_address(self) -> str:
        return format_address(self.lab.ip(RELAY), RELAY_PORT)

    def natted(self, host: str) -> bool:
        return self.lab.topo.host(host).behind_nat

    def common(self, host: str) -> list[str]:
        """Options every command on ``host`` takes."""
        return ["--host", self.lab.ip(host), "--data-dir", str(self.lab.data_dir(host)),
                "--network", self.settings.network]

    def running(self, host: str) -> list[str]:
        """Options of a long-running command (ledger node, listener): ``--host auto`` on a host that follows
        its address (:attr:`following`), else the lab address."""
        options = self.common(host)
        if host in self.following:
            options[1] = HOST_AUTO
        return options

    def reach(self, host: str) -> list[str]:
        """How ``host`` is reached: a NAT'd host listens nowhere and is found through the relay."""
        return ["--no-inbound", "--relay", self.relay_address] if self.natted(host) else []

    def ledger_cmd(self, *args: str) -> list[str]:
        return self.lab.module_argv("ledger", *args)

    def node_cmd(self, host: str, *args: str) -> list[str]:
        """A ledger node's command line; with libfaketime preloaded on a host whose clock is off
        (:attr:`clock_offsets`: the wall clock only, the monotonic clock stays true)."""
        argv = self.ledger_cmd(*args)
        offset = self.clock_offsets.get(host)
        if offset is None:
            return argv
        library = faketime_library()
        if library is None:
            raise LabError("libfaketime is missing (Debian package libfaketime): cannot set a host's clock off")
        return ["env", f"LD_PRELOAD={library}", f"FAKETIME={offset}", "DONT_FAKE_MONOTONIC=1", *argv]

    def chat_cmd(self, *args: str) -> list[str]:
        return self.lab.module_argv("p2pchat", *args)

    # ---- ledger nodes ------------------------------------------------------------------------------------
    def node_options(self, host: str) -> list[str]:
        """What a ledger node registers: the host's name as nickname, and how to reach it."""
        return ["--nickname", host, *self.reach(host)]

    def ledger_serve(self, host: str) -> LabProcess:
        argv = self.node_cmd(host, "serve", *self.running(host), "--difficulty", str(self.settings.difficulty),
                               *self.node_options(host))
        proc = self.lab.start(host, "ledger", argv, detached=self.detached)
        self.ledgers[host] = proc
        return proc

    def ledger_join(self, host: str, via: str) -> LabProcess:
        argv = self.node_cmd(host, "join", self.lab.ip(via), *self.running(host), *self.node_options(host))
        proc = self.lab.start(host, "ledger", argv, detached=self.detached)
        self.ledgers[host] = proc
        return proc

    def stop_ledger(self, host: str) -> int:
        """Ctrl-C the ledger node of ``host`` and wait for it to end."""
        proc = self.ledgers.pop(host)
        code = proc.stop()
        self.lab.forget(proc)
        return code

    def kill_ledger(self, host: str) -> None:
        """SIGKILL the ledger node of ``host`` (no chance to clean up)."""
        proc = self.ledgers.pop(host)
        proc.kill()
        self.lab.forget(proc)

    def check_running(self, hosts: list[str]) -> None:
        """:class:`LabError` with its last output when the ledger node of one of ``hosts`` has exited."""
        for host in hosts:
            proc = self.ledgers.get(host)
            if proc is not None and not proc.running():
                raise LabError(f"the ledger node on {host} exited with status {proc.proc.returncode}; last lines:\n"
                               f"{proc.tail()}")

    def status(self, host: str, node: str | None = None) -> dict[str, Any] | None:
        """``ledger status --json`` run on ``host`` (asking ``node``'s ledger node, default its own); None
        while the node does not answer."""
        extra = ["--node", self.lab.ip(node)] if node else []
        done = self.lab.run(host, self.ledger_cmd("status", "--json", *self.common(host), *extra))
        if done.returncode != 0:
            return None
        return _json(done.stdout, f"ledger status on {host}")

    def statuses(self, hosts: list[str]) -> dict[str, dict[str, Any] | None]:
        """``ledger status --json`` on every host of ``hosts`` at once (each asking its own node)."""
        jobs = [(h, self.ledger_cmd("status", "--json", *self.common(h))) for h in hosts]
        return {h: _json(out, f"ledger status on {h}") if code == 0 else None
                for h, (code, out, _err) in zip(hosts, self.lab.run_many(jobs), strict=True)}

    def lookup(self, host: str, query: str, node: str | None = None) -> dict[str, Any] | None:
        """``ledger lookup QUERY --json`` on ``host`` (asking ``node``, default its own node); None when there is
        no binding (exit status 1)."""
        return self.lookups([(host, query)], node=node)[0]

    def lookups(self, asks: list[tuple[str, str]], node: str | None = None) -> list[dict[str, Any] | None]:
        """Several ``ledger lookup`` at once: ``(host, query)`` pairs, answers in the same order."""
        extra = ["--node", self.lab.ip(node)] if node else []
        jobs = [(h, self.ledger_cmd("lookup", q, "--json", *self.common(h), *extra)) for h, q in asks]
        answers: list[dict[str, Any] | None] = []
        for (host, query), (code, out, err) in zip(asks, self.lab.run_many(jobs), strict=True):
            if code == 1:
                answers.append(None)
            elif code != 0:
                raise LabError(f"[{host}] ledger lookup {query} failed (exit {code}): {(err or out).strip()[-800:]}")
            else:
                answers.append(_json(out, f"ledger lookup {query} on {host}"))
        return answers

    def verify(self, host: str) -> tuple[int, str]:
        """``ledger verify`` of ``host``'s store: exit status and output."""
        done = self.lab.run(host, self.ledger_cmd("verify", *self.common(host)), timeout=60)
        return done.returncode, (done.stdout + done.stderr).strip()

    # ---- chat --------------------------------------------------------------------------------------------
    def relay(self, host: str = RELAY) -> LabProcess:
        argv = self.chat_cmd("relay", "--host", self.lab.ip(host))
        return self.lab.start(host, "relay", argv, detached=self.detached)

    def listen(self, host: str, label: str = "listen", *, at_relay: bool = False) -> LabProcess:
        """``p2pchat listen --accept-all`` on ``host``, returned once it waits for chats. ``at_relay`` also
        registers a reachable host at the relay (a NAT'd host always is), so NAT'd callers can fall back to it."""
        extra = ["--relay", self.relay_address] if at_relay and not self.natted(host) else []
        proc = self.lab.start(host, label, self.chat_cmd("listen", "--accept-all", *self.running(host),
                                                         *self.reach(host), *extra))
        proc.wait_for(r"^Waiting for chats", 30)
        return proc

    def chat(self, host: str, peer: str, label: str = "chat") -> LabProcess:
        """``p2pchat chat PEER`` on ``host``; PEER is an address, nickname or fingerprint."""
        return self.lab.start(host, label, self.chat_cmd("chat", peer, *self.common(host), *self.reach(host)))

    # ---- a whole ledger network --------------------------------------------------------------------------
    def form_network(self, hosts: list[str], *, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """``ledger serve`` on the seed, ``ledger join`` on the others; returns each host's status once all
        nodes share one tip with every host's own record in a block."""
        seed = self.settings.seed
        self.ledger_serve(seed)

        def seed_answers() -> dict[str, Any] | None:
            self.check_running([seed])
            return self.status(seed)

        wait_until(seed_answers, timeout, f"the first ledger node on {seed} to answer")
        for host in hosts:
            if host != seed:
                self.ledger_join(host, seed)
        return self.wait_converged(hosts, timeout=timeout)

    def wait_converged(self, hosts: list[str], *, timeout: float = 60.0,
                       registered: bool = True) -> dict[str, dict[str, Any]]:
        """Wait until the ledger nodes of ``hosts`` agree on one tip, have nothing pending and (when
        ``registered``) hold their own record in a block; returns their statuses."""
        last: dict[str, dict[str, Any] | None] = {}

        def probe() -> dict[str, dict[str, Any]] | None:
            self.check_running(hosts)
            last.update(self.statuses(hosts))
            if any(s is None for s in last.values()):
                return None
            statuses: dict[str, dict[str, Any]] = {h: s for h, s in last.items() if s is not None}
            if len({tip_of(s) for s in statuses.values()}) != 1:
                return None
            if any(pending_of(s) for s in statuses.values()):
                return None
            if registered and not all(own_record_confirmed(s) for s in statuses.values()):
                return None
            return statuses

        def describe() -> str:
            return "; ".join(f"{h}: {summary(s)}" for h, s in last.items())

        return wait_until(probe, timeout, f"the ledger nodes {', '.join(hosts)} to converge",
                          interval=0.5, describe=describe)


# ---- reading `ledger status --json` ----------------------------------------------------------------------
def _json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise LabError(f"{what} did not print JSON: {text.strip()[:500]}") from None
    if not isinstance(value, dict):
        raise LabError(f"{what} printed {type(value).__name__}, not a JSON object")
    return value


def _count(value: Any) -> int:
    if isinstance(value, (list, dict)):
        return len(value)
    return int(value or 0)


def tip_of(status: dict[str, Any]) -> str:
    return str(status["tip"])


def height_of(status: dict[str, Any]) -> int:
    return int(status["height"])


def work_of(status: dict[str, Any]) -> int:
    return int(status.get("work", status.get("cumulative_work", 0)))


def pending_of(status: dict[str, Any]) -> int:
    return _count(status.get("pending", 0))


def peers_of(status: dict[str, Any]) -> int:
    return _count(status.get("peers", 0))


def own_record_confirmed(status: dict[str, Any]) -> bool:
    own = status.get("own_record")
    return isinstance(own, dict) and own.get("height") is not None


def fingerprint_of(status: dict[str, Any]) -> str:
    own = status.get("own_record") or {}
    fp = own.get("fingerprint") or status.get("fingerprint")
    if not fp:
        raise LabError(f"ledger status shows no fingerprint: {status}")
    return str(fp)


def summary(status: dict[str, Any] | None) -> str:
    if status is None:
        return "not answering"
    return (f"height {status.get('height')} tip {str(status.get('tip'))[:12]} pending {pending_of(status)} "
            f"peers {peers_of(status)} own record {'in a block' if own_record_confirmed(status) else 'not yet'}")
