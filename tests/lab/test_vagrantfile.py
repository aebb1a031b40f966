"""The Vagrant lab's files: the Vagrantfile validates (when Vagrant is installed) and the provisioning scripts
are valid bash. No VM is booted: no provider exists where the tests run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VM_LAB = Path(__file__).resolve().parents[2] / "vm-lab"


def _validate(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A copy, so validation leaves no .vagrant directory in the checkout.
    work = tmp_path / "vm-lab"
    work.mkdir()
    shutil.copy(VM_LAB / "Vagrantfile", work / "Vagrantfile")
    shutil.copytree(VM_LAB / "provision", work / "provision")
    full_env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1", **env}
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=work, capture_output=True, text=True,
                          timeout=120, env=full_env, check=False)


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="Vagrant is not installed (Debian package vagrant)")
@pytest.mark.parametrize("peers, natted", [("3", "c"), ("2", ""), ("5", "e")])
def test_vagrantfile_validates(tmp_path: Path, peers: str, natted: str) -> None:
    done = _validate(tmp_path, P2PLAB_PEERS=peers, P2PLAB_NATTED=natted)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="Vagrant is not installed (Debian package vagrant)")
def test_vagrantfile_refuses_to_put_the_seed_behind_nat(tmp_path: Path) -> None:
    done = _validate(tmp_path, P2PLAB_NATTED="a")
    assert done.returncode != 0
    assert "must be reachable" in done.stdout + done.stderr


@pytest.mark.parametrize("script", sorted(p.name for p in (VM_LAB / "provision").glob("*.sh")))
def test_provisioning_scripts_are_valid_bash(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(VM_LAB / "provision" / script)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_provisioning_scripts_refuse_unknown_roles(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(VM_LAB / "provision" / "routes.sh"), "sideways", "10.77.1.254",
                           "192.168.56.0/24", "10.77.1.0/24"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "unknown kind" in done.stderr
