"""The scenario set of ``vm-lab/selftest``, run against the Vagrant lab's VMs from the host over ssh.

Every command goes through ``ssh -F SSH_CONFIG VM '...'`` (the file ``vagrant ssh-config`` writes) and is the
command a person would type in the VM: ``ledger status|lookup|join``, ``p2pchat listen|chat`` with the VM's
``$P2PLAB_IP``/``$P2PLAB_OPTS`` from /etc/environment. Scenarios: the network forms (join), every VM resolves
every nickname (lookups), a direct chat, a chat to the NAT'd peer through the relay, a partition and its heal,
and kill -9 of a ledger node and of the relay. Each prints ``passed``/``FAILED`` with its duration; the exit
status is the number of failures (capped at 100).

Usage: python vagrant_scenarios.py --ssh-config FILE --logs DIR [--network p2plab] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_lab.commands import fingerprint_of
from netns_lab.processes import LabProcess
from netns_lab.scenarios import (
    DIRECT_PATH,
    HANDSHAKE_DONE,
    RELAY_PATH,
    block_height,
    record_field,
    same_fingerprint,
)
from netns_lab.shell import LabError
from netns_lab.wait import wait_until

CONVERGE_TIMEOUT = 600.0   # under software emulation (TCG) a VM is 10-20 times slower than the host
STEP_TIMEOUT = 120.0
MESSAGE_TIMEOUT = 60.0
NEWCOMER_IP_OFFSET = 40    # a second address on the relay VM for the partition scenario's newcomer


@dataclass
class VMs:
    """The lab's VMs as seen from the host, reached with ``ssh -F``. Nicknames are read from each VM's
    ``ledger status`` (peer-a registers as ``a``)."""

    ssh_config: Path
    logs: Path
    network: str = "p2plab"
    names: list[str] = field(default_factory=lambda: ["peer-a", "relay", "peer-b", "peer-c"])
    natted: str = "peer-c"
    procs: list[LabProcess] = field(default_factory=list)

    def argv(self, vm: str, command: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", vm, command]

    def run(self, vm: str, command: str, *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self.argv(vm, command), capture_output=True, text=True, timeout=timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise LabError(f"[{vm}] '{command}' did not finish within {timeout:g} s") from None

    def must(self, vm: str, command: str, *, timeout: float = 120.0) -> str:
        done = self.run(vm, command, timeout=timeout)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise LabError(f"[{vm}] '{command}' failed (exit {done.returncode}): {detail}")
        return done.stdout

    def start(self, vm: str, label: str, command: str) -> LabProcess:
        """A long-running command in ``vm`` (its stdin a pipe), stopped with :meth:`stop_remote`.
        The remote shell notes its pid, so the command is stopped in the VM, not just the ssh client."""
        remote = f"echo $$ > {_pidfile(vm, label)}; PYTHONUNBUFFERED=1 exec {command}"
        proc = LabProcess(f"{label}@{vm}", self.argv(vm, remote), self.logs / f"{vm}-{label}.log", env=_env())
        self.procs.append(proc)
        return proc

    def stop_remote(self, vm: str, label: str, proc: LabProcess) -> None:
        pidfile = _pidfile(vm, label)
        self.run(vm, f"kill -INT $(cat {pidfile}) 2>/dev/null; rm -f {pidfile}")
        try:
            proc.wait_exit(30)
        except LabError:
            pass   # close() below ends the ssh client; the pid file named the remote process already
        proc.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in self.procs:
            proc.close()
        self.procs.clear()

    # ---- the ledger ---------------------------------------------------------------------------------------
    def ledger(self, vm: str, args: str) -> str:
        return f"ledger {args} --host $P2PLAB_IP --network {shlex.quote(self.network)}"

    def status(self, vm: str) -> dict[str, Any] | None:
        done = self.run(vm, self.ledger(vm, "status --json"))
        return _json(done.stdout) if done.returncode == 0 else None

    def lookup(self, vm: str, query: str) -> dict[str, Any] | None:
        done = self.run(vm, self.ledger(vm, f"lookup {shlex.quote(query)} --json"))
        return _json(done.stdout) if done.returncode == 0 else None

    def nickname(self, vm: str) -> str:
        status = self.status(vm)
        if status is None or not status.get("nickname"):
            raise LabError(f"the ledger node on {vm} does not say its nickname: {status}")
        return str(status["nickname"])

    def converged(self, vms: list[str], timeout: float = CONVERGE_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Wait until every VM's node answers, has its own record in a block and all share one tip."""
        seen: dict[str, dict[str, Any] | None] = {}

        def probe() -> dict[str, dict[str, Any]] | None:
            seen.clear()
            seen.update({vm: self.status(vm) for vm in vms})
            statuses = {vm: s for vm, s in seen.items() if s is not None}
            if len(statuses) != len(vms) or len({str(s.get("tip")) for s in statuses.values()}) != 1:
                return None
            own = [s.get("own_record") for s in statuses.values()]
            return statuses if all(isinstance(o, dict) and o.get("height") is not None for o in own) else None

        return wait_until(probe, timeout, f"{', '.join(vms)} to agree on one chain", interval=2.0,
                          describe=lambda: "; ".join(f"{vm}: {_summary(s)}" for vm, s in seen.items()))


def _pidfile(vm: str, label: str) -> str:
    return f"/tmp/p2plab-{vm}-{label}.pid"


def _env() -> dict[str, str]:
    return dict(os.environ)


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _summary(status: dict[str, Any] | None) -> str:
    if status is None:
        return "not answering"
    own = status.get("own_record")
    mined = isinstance(own, dict) and own.get("height") is not None
    return (f"height {status.get('height')} tip {str(status.get('tip'))[:12]} "
            f"own record {'mined' if mined else 'not yet'}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise LabError(message)


# ---- scenarios -----------------------------------------------------------------------------------------
def join(vms: VMs) -> None:
    """Every VM's ledger node (peer-a serves, the others joined it at boot) agrees on one chain holding every
    VM's record."""
    vms.converged(vms.names)


def lookups(vms: VMs) -> None:
    """Every VM resolves every nickname; the NAT'd peer has no address but the relay hint."""
    statuses = vms.converged(vms.names)
    failures = []
    for asker in vms.names:
        for target in vms.names:
            nick = str(statuses[target].get("nickname"))
            found = vms.lookup(asker, nick)
            if found is None or not same_fingerprint(found, fingerprint_of(statuses[target])):
                failures.append(f"{asker} → {nick}: {found}")
            elif target == vms.natted and record_field(found, "ip"):
                failures.append(f"{asker} → {nick}: the NAT'd peer has an address: {found}")
    check(not failures, "look-ups failed:\n  " + "\n  ".join(failures))
    print(f"   {len(vms.names) ** 2} look-ups answered", flush=True)


def _chat(vms: VMs, caller: str, callee: str, path: str) -> None:
    listener = vms.start(callee, "listen", "p2pchat listen --accept-all $P2PLAB_OPTS")
    try:
        listener.wait_for(r"^Waiting for chats", STEP_TIMEOUT)
        started = time.monotonic()
        chat = vms.start(caller, "chat", f"p2pchat chat {shlex.quote(vms.nickname(callee))} $P2PLAB_OPTS")
        chat.wait_for(HANDSHAKE_DONE, STEP_TIMEOUT)
        chat.wait_for(path, 5)
        print(f"   chat ready in {time.monotonic() - started:.1f} s: "
              f"{chat.wait_for(r'Chat ready with .*', 1).group(0)}", flush=True)
        for i in range(3):
            chat.send(f"{caller} to {callee} line {i} ✓")
        for i in range(3):
            listener.wait_for(re.escape(f"{caller} to {callee} line {i} ✓"), MESSAGE_TIMEOUT)
        ready = listener.wait_for(r"Chat (\d+) with .* is ready", MESSAGE_TIMEOUT)
        listener.send(f"/to {ready.group(1)}")      # listen writes only to the chat the user chose
        listener.send(f"{callee} answers ✓")
        chat.wait_for(re.escape(f"{callee} answers ✓"), MESSAGE_TIMEOUT)
        chat.close_stdin()
        code = chat.wait_exit(60)
        vms.run(caller, f"rm -f {_pidfile(caller, 'chat')}")
        check(code == 0, f"p2pchat chat on {caller} exited with status {code}:\n{chat.tail()}")
        chat.close()
        vms.procs.remove(chat)
    finally:
        vms.stop_remote(callee, "listen", listener)


def direct_chat(vms: VMs) -> None:
    """peer-a calls peer-b by nickname: the four steps, the direct path, lines both ways, a clean goodbye."""
    _chat(vms, "peer-a", "peer-b", DIRECT_PATH)


def relay_chat(vms: VMs) -> None:
    """peer-a calls the NAT'd peer-c: nobody can dial it, so the chat runs through the relay VM."""
    _chat(vms, "peer-a", vms.natted, RELAY_PATH)


LAB_IFACE = "$(ip -o -4 addr show | awk -v ip=\"$P2PLAB_IP\" 'index($4, ip \"/\") == 1 { print $2; exit }')"


def partition_heal(vms: VMs) -> None:
    """peer-b is cut off the lab network; meanwhile a newcomer (a second address on the relay VM) joins
    peer-a's side, which mines its record; after the cut is lifted peer-b follows peer-a's chain and knows
    the newcomer."""
    before = vms.converged(vms.names)
    relay_ip = vms.must("relay", "echo $P2PLAB_IP").strip()
    newcomer = _offset(relay_ip, NEWCOMER_IP_OFFSET)
    seed_ip = vms.must("peer-a", "echo $P2PLAB_IP").strip()
    cut = (f"sudo nft add table inet p2plab_cut && sudo nft add chain inet p2plab_cut cut_in "
           f"'{{ type filter hook input priority -10; }}' && sudo nft add chain inet p2plab_cut cut_out "
           f"'{{ type filter hook output priority -10; }}' && iface={LAB_IFACE} && "
           f"sudo nft add rule inet p2plab_cut cut_in iifname $iface drop && "
           f"sudo nft add rule inet p2plab_cut cut_out oifname $iface drop")
    vms.must("peer-b", cut)
    joined: LabProcess | None = None
    try:
        vms.must("relay", f"sudo ip addr add {newcomer}/24 dev {LAB_IFACE}")
        joined = vms.start("relay", "newcomer", f"ledger join {seed_ip} --host {newcomer} --data-dir "
                           f"/tmp/p2plab-newcomer --network {shlex.quote(vms.network)} --nickname newcomer")
        side_a = ["peer-a", "relay"]

        def newcomer_mined() -> bool:
            return block_height(vms.lookup("peer-a", "newcomer")) is not None

        wait_until(newcomer_mined, CONVERGE_TIMEOUT, "peer-a's side to mine the newcomer's record", interval=2.0)
        vms.converged(side_a)
        cut_off = vms.status("peer-b")
        check(cut_off is not None and cut_off.get("tip") == before["peer-b"].get("tip"),
              f"peer-b moved while cut off: {_summary(cut_off)}")
        vms.must("peer-b", "sudo nft delete table inet p2plab_cut")
        healed_at = time.monotonic()
        final = vms.converged(vms.names)
        print(f"   healed {time.monotonic() - healed_at:.1f} s after the cut was lifted "
              f"(height {before['peer-a'].get('height')} → {final['peer-a'].get('height')})", flush=True)
        check(vms.lookup("peer-b", "newcomer") is not None, "peer-b does not know the newcomer after the heal")
    finally:
        vms.run("peer-b", "sudo nft delete table inet p2plab_cut 2>/dev/null; true")
        if joined is not None:
            vms.stop_remote("relay", "newcomer", joined)
        vms.run("relay", f"sudo ip addr del {newcomer}/24 dev {LAB_IFACE} 2>/dev/null; rm -rf /tmp/p2plab-newcomer")


def kill_restart(vms: VMs) -> None:
    """kill -9 of peer-b's ledger node and of the relay: systemd restarts both, peer-b catches up and keeps
    its binding, and a chat through the relay works again."""
    before = vms.converged(vms.names)
    fp_b = fingerprint_of(before["peer-b"])   # the status's own, not the record's (which has no fingerprint field)
    for vm, unit in (("peer-b", "p2pchat-ledger"), ("relay", "p2pchat-relay")):
        old = vms.must(vm, f"sudo systemctl show -p MainPID --value {unit}").strip()
        vms.must(vm, f"sudo systemctl kill -s KILL {unit}")
        started = time.monotonic()

        def restarted(vm: str = vm, unit: str = unit, old: str = old) -> bool:
            now = vms.run(vm, f"sudo systemctl show -p MainPID --value {unit}").stdout.strip()
            return now not in ("", "0", old)

        wait_until(restarted, STEP_TIMEOUT, f"systemd to restart {unit} on {vm}", interval=1.0)
        print(f"   {unit} on {vm} back {time.monotonic() - started:.1f} s after kill -9", flush=True)
    vms.converged(vms.names)
    found = vms.lookup("peer-a", str(before["peer-b"].get("nickname")))
    check(found is not None and same_fingerprint(found, str(fp_b)), f"peer-b's binding changed or vanished: {found}")
    _chat(vms, "peer-a", vms.natted, RELAY_PATH)


def _offset(ip: str, offset: int) -> str:
    return str(ipaddress.ip_address(ip) + offset)


SCENARIOS: dict[str, Callable[[VMs], None]] = {
    "join": join, "lookups": lookups, "direct-chat": direct_chat, "relay-chat": relay_chat,
    "partition-heal": partition_heal, "kill-restart": kill_restart,
}


def first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    return flat.split(". ")[0].rstrip(".") + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The scenario set of vm-lab/selftest, run against the VMs.")
    parser.add_argument("--ssh-config", type=Path, required=True, help="output of `vagrant ssh-config`")
    parser.add_argument("--logs", type=Path, required=True, help="where each remote command's output goes")
    parser.add_argument("--network", default="p2plab")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"default: all of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)} (there are {', '.join(SCENARIOS)})")
    vms = VMs(args.ssh_config, args.logs, args.network)
    failed = 0
    try:
        for name in names:
            print(f"== {name}: {first_sentence(SCENARIOS[name].__doc__ or '')}", flush=True)
            started = time.monotonic()
            try:
                SCENARIOS[name](vms)
                print(f"   passed in {time.monotonic() - started:.1f} s", flush=True)
            except LabError as exc:
                failed += 1
                print(f"   FAILED in {time.monotonic() - started:.1f} s: {exc}", flush=True)
    finally:
        vms.close()
    print(f"\n{len(names) - failed} passed, {failed} failed", flush=True)
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
