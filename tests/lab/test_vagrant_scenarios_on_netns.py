"""The selftest's VM scenario set (vm-lab/vagrant_scenarios.py) against real nodes: the netns lab's hosts stand
in for the VMs, and a stand-in for ``ssh`` (the one part that cannot exist without VMs) runs each command in
the host's namespace with the environment a VM's /etc/environment gives (``P2PLAB_IP``, ``P2PLAB_OPTS``).
This checks the scenarios' own logic and the commands they type before the long VM run does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from netns_lab.commands import Project
from netns_lab.lab import VM_LAB, child_env

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

VMS = {"peer-a": "a", "relay": "r", "peer-b": "b", "peer-c": "c"}


def _stand_ins(project: Project, where: Path) -> Path:
    lab = project.lab
    bin_dir = where / "bin"
    bin_dir.mkdir(parents=True)
    cases = []
    for vm, host in VMS.items():
        opts = f"--host {lab.ip(host)} --network {project.settings.network} --relay {project.relay_address}"
        if project.natted(host):
            opts += " --no-inbound"
        cases.append(f"  {vm}) ns={lab.topo.ns(host)} ip={lab.ip(host)} home={lab.data_dir(host)} opts='{opts}' ;;")
    ssh = where / "ssh"
    ssh.write_text(f"""#!/usr/bin/env bash
# ssh -F CONFIG -o X -o Y VM COMMAND, run in the VM's stand-in namespace
while [ $# -gt 0 ]; do case "$1" in -F|-o) shift 2 ;; *) break ;; esac; done
vm=$1; shift
case "$vm" in
{chr(10).join(cases)}
  *) echo "ssh: no VM $vm" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" env P2PLAB_IP="$ip" P2PLAB_OPTS="$opts" P2PCHAT_HOME="$home" \\
  PATH="{bin_dir}:{Path(sys.executable).parent}:$PATH" bash -c "$*"
""")
    # The VMs' `ledger`/`p2pchat` are console scripts; here they are the modules of this checkout.
    for tool in ("ledger", "p2pchat"):
        (bin_dir / tool).write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {tool} "$@"\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')   # root already
    for f in (ssh, *bin_dir.iterdir()):
        f.chmod(0o755)
    return where


def test_vm_scenarios_pass_against_real_nodes_through_a_stand_in_ssh(project: Project, tmp_path: Path) -> None:
    project.relay("r").wait_for(r"relay listening on", 15)
    project.form_network(list(VMS.values()), timeout=90)
    fake = _stand_ins(project, tmp_path / "fake")
    env = child_env()
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    newcomer_dir = Path("/tmp/p2plab-newcomer")
    assert not newcomer_dir.exists()
    done = subprocess.run([sys.executable, str(VM_LAB / "vagrant_scenarios.py"), "--ssh-config", os.devnull,
                           "--logs", str(tmp_path / "logs"), "--network", project.settings.network,
                           "join", "lookups", "direct-chat", "relay-chat", "partition-heal"],
                          capture_output=True, text=True, timeout=280, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed, 0 failed" in done.stdout
    assert "16 look-ups answered" in done.stdout
    assert "(path: direct)" in done.stdout and "(path: relay " in done.stdout
    assert not newcomer_dir.exists()   # the partition scenario's newcomer cleaned up after itself
    assert not [f for f in Path("/tmp").glob("p2plab-*.pid") if f.name.split("-")[1] in ("peer", "relay")]
