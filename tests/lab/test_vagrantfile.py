"""The Vagrant lab's files, without booting a VM (no provider exists where the tests run): the Vagrantfile
validates with Vagrant, asks for the machines, networks and provisioners the lab needs (read with a stand-in
for Vagrant's configuration objects, tests/lab/vagrant_plan.rb), and the provisioning scripts are valid bash
that refuse bad arguments."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

VM_LAB = Path(__file__).resolve().parents[2] / "vm-lab"
PLAN = Path(__file__).resolve().parent / "vagrant_plan.rb"
needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None,
                                   reason="Vagrant is not installed (Debian package vagrant)")
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="Ruby is not installed (Vagrant brings it)")


def _clean_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("P2PLAB_") and k != "VAGRANT_NO_PARALLEL"}
    return {**base, **env}


def _validate(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A copy, so validation leaves no .vagrant directory in the checkout.
    work = tmp_path / "vm-lab"
    work.mkdir()
    shutil.copy(VM_LAB / "Vagrantfile", work / "Vagrantfile")
    shutil.copytree(VM_LAB / "provision", work / "provision")
    full_env = _clean_env(VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1", **env)
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=work, capture_output=True, text=True,
                          timeout=120, env=full_env, check=False)


def _plan_run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ruby", str(PLAN), str(VM_LAB / "Vagrantfile")], cwd=VM_LAB, capture_output=True,
                          text=True, timeout=60, env=_clean_env(**env), check=False)


def _plan(**env: str) -> dict[str, Any]:
    done = _plan_run(**env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _machine(plan: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in plan["machines"] if m["name"] == name)


def _args(machine: dict[str, Any], provisioner: str) -> list[str]:
    return next(p["args"] for p in machine["provisioners"] if p["name"] == provisioner)


@needs_vagrant
@pytest.mark.parametrize("env", [
    {"P2PLAB_PEERS": "3", "P2PLAB_NATTED": "c"},
    {"P2PLAB_PEERS": "2", "P2PLAB_NATTED": ""},
    {"P2PLAB_PEERS": "5", "P2PLAB_NATTED": "peer-e"},
    {"P2PLAB_BRIDGE": "eth0", "P2PLAB_FIRST_IP": "10.20.30.200", "P2PLAB_APT_PROXY": "http://10.20.30.5:3142",
     "P2PLAB_WHEELHOUSE": "http://10.20.30.5:8000/", "P2PLAB_NTP": "10.20.30.5", "P2PLAB_BOX": "bento/debian-12"},
])
def test_vagrantfile_validates(tmp_path: Path, env: dict[str, str]) -> None:
    done = _validate(tmp_path, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


@needs_vagrant
def test_vagrantfile_refuses_to_put_the_seed_behind_nat(tmp_path: Path) -> None:
    done = _validate(tmp_path, P2PLAB_NATTED="a")
    assert done.returncode != 0
    assert "must be reachable" in done.stdout + done.stderr


@needs_ruby
def test_vms_are_named_peer_x_never_a_hex_prefix_and_keep_their_nicknames() -> None:
    plan = _plan(P2PLAB_PEERS="6", P2PLAB_NATTED="c")
    names = [m["name"] for m in plan["machines"]]
    assert names == ["router", "peer-a", "relay", "peer-b", "peer-c", "peer-d", "peer-e", "peer-f"]
    # Vagrant reads a name made of hex digits as the prefix of a machine id (Vagrant issue #8152).
    assert not [n for n in names if re.fullmatch(r"[0-9a-f]+", n)]
    assert _machine(plan, "peer-a")["primary"]
    services = {m["name"]: _args(m, "services") for m in plan["machines"] if m["name"] != "router"}
    assert services["peer-a"][:3] == ["seed", "a", "192.168.56.11"]
    assert services["peer-c"][:3] == ["natted", "c", "10.77.1.2"]
    assert services["relay"][:2] == ["relay", "relay"]
    assert all(args[3] == "192.168.56.11" for args in services.values())      # everyone joins peer-a


@needs_ruby
def test_the_natted_peer_can_be_named_by_nickname_or_vm_name() -> None:
    by_vm_name = _plan(P2PLAB_PEERS="4", P2PLAB_NATTED="peer-d")
    assert _args(_machine(by_vm_name, "peer-d"), "services")[0] == "natted"
    assert _args(_machine(by_vm_name, "peer-c"), "services")[0] == "peer"
    assert _plan_run(P2PLAB_NATTED="peer-q").returncode != 0


@needs_ruby
def test_box_follows_the_host_cpu_unless_chosen() -> None:
    assert _plan(FAKE_HOST_CPU="x86_64")["box"] == "debian/bookworm64"
    assert _plan(FAKE_HOST_CPU="arm64")["box"] == "bento/debian-12"
    assert _plan(FAKE_HOST_CPU="aarch64")["box"] == "bento/debian-12"
    assert _plan(FAKE_HOST_CPU="arm64", P2PLAB_BOX="p2plab/bookworm")["box"] == "p2plab/bookworm"


@needs_ruby
def test_package_sources_and_time_servers_reach_every_vm() -> None:
    plan = _plan(P2PLAB_APT_PROXY="http://10.0.0.5:3142", P2PLAB_WHEELHOUSE="http://10.0.0.5:8000/",
                 P2PLAB_NTP="10.0.0.5 ntp.school.example")
    for machine in plan["machines"]:
        order = [p["name"] for p in machine["provisioners"]]
        assert order[:2] == ["apt", "timesync"], machine["name"]    # before anything is installed or mined
        assert _args(machine, "apt") == ["http://10.0.0.5:3142"]
        assert _args(machine, "timesync") == ["10.0.0.5 ntp.school.example"]
        if machine["name"] != "router":
            assert _args(machine, "install") == ["", "http://10.0.0.5:8000/"]
    assert _args(_machine(_plan(P2PLAB_PIP_INDEX="https://pypi.school.example/simple/"), "peer-b"),
                 "install") == ["https://pypi.school.example/simple/", ""]


@needs_ruby
@pytest.mark.parametrize("env, message", [
    ({"P2PLAB_APT_PROXY": "ftp://x"}, "P2PLAB_APT_PROXY=ftp://x must be an http"),
    ({"P2PLAB_PIP_INDEX": "http://a/simple/", "P2PLAB_WHEELHOUSE": "http://a/w/"}, "not both"),
    ({"P2PLAB_WHEELHOUSE": "http://a/w/'; rm -rf /"}, "must be an http"),
    ({"P2PLAB_NTP": "pool.example; reboot"}, "P2PLAB_NTP must be"),
    ({"P2PLAB_FIRST_IP": "10.1.2.250", "P2PLAB_PEERS": "8"}, "leave 10.1.2.0/24"),
    ({"P2PLAB_FIRST_IP": "10.77.1.10"}, "home network"),
    ({"P2PLAB_FIRST_IP": "192.168.56.1"}, "leaves no room for the host"),
    ({"P2PLAB_FIRST_IP": "10.1.2.251", "P2PLAB_PEERS": "3"}, "leave 10.1.2.0/24"),   # the router would be .255
])
def test_bad_settings_are_refused_with_the_reason(env: dict[str, str], message: str) -> None:
    done = _plan_run(**env)
    assert done.returncode != 0
    assert message in done.stderr


@needs_ruby
def test_bridged_mode_puts_the_lab_network_on_the_classroom_lan() -> None:
    plan = _plan(P2PLAB_BRIDGE="enp3s0", P2PLAB_FIRST_IP="10.20.30.200")
    nets = {m["name"]: m["networks"] for m in plan["machines"]}
    assert nets["relay"] == [{"type": "public_network", "ip": "10.20.30.200", "netmask": "255.255.255.0",
                              "bridge": "enp3s0", "dev": "enp3s0", "mode": "bridge"}]
    assert nets["peer-a"][0]["ip"] == "10.20.30.201" and nets["peer-b"][0]["ip"] == "10.20.30.202"
    assert nets["router"][0]["type"] == "public_network" and nets["router"][0]["ip"] == "10.20.30.204"
    assert [n["type"] for n in nets["peer-c"]] == ["private_network"]           # the home network only
    assert _args(_machine(plan, "peer-b"), "routes")[2] == "10.20.30.0/24"
    assert _args(_machine(plan, "peer-b"), "services")[3:5] == ["10.20.30.201", "10.20.30.200"]


@needs_ruby
def test_vms_start_one_after_the_other_unless_parallel_is_asked_for() -> None:
    assert _plan()["no_parallel"] == "yes"
    assert _plan(P2PLAB_PARALLEL="yes")["no_parallel"] is None


@pytest.mark.parametrize("script", sorted(p.name for p in (VM_LAB / "provision").glob("*.sh")))
def test_provisioning_scripts_are_valid_bash(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(VM_LAB / "provision" / script)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_provisioning_scripts_refuse_unknown_roles() -> None:
    done = subprocess.run(["bash", str(VM_LAB / "provision" / "routes.sh"), "sideways", "10.77.1.254",
                           "192.168.56.0/24", "10.77.1.0/24"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "unknown kind" in done.stderr


def test_apt_proxy_script_refuses_what_is_not_a_url() -> None:
    done = subprocess.run(["bash", str(VM_LAB / "provision" / "apt.sh"), "10.0.0.5:3142"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2
    assert "must be an http:// or https:// URL" in done.stderr
