"""vm-lab/selftest and its scenario set, as far as they go without booting a VM: the options, the scenario
names both agree on, the ssh command lines, and `--check`, which runs the teardown on the machine as it is and
must find nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from vagrant_scenarios import SCENARIOS, VMs, main

VM_LAB = Path(__file__).resolve().parents[2] / "vm-lab"
SELFTEST = VM_LAB / "selftest"


def _selftest(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "P2PLAB_SELFTEST_DIR": str(state)}
    return subprocess.run(["bash", str(SELFTEST), *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def test_selftest_is_valid_bash_and_shellcheck_clean() -> None:
    assert subprocess.run(["bash", "-n", str(SELFTEST)], check=False).returncode == 0
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(SELFTEST)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout


def test_selftest_and_the_scenario_module_name_the_same_scenarios(tmp_path: Path) -> None:
    usage = _selftest("--help", state=tmp_path).stdout
    listed = re.search(r"scenarios: (.*) \(default: all\)", usage)
    assert listed is not None, usage
    assert listed.group(1).split() == list(SCENARIOS)


@pytest.mark.parametrize("args, message", [
    (["--memory", "12"], "at least 256"),
    (["--difficulty", "x"], "from 1 to 32"),
    (["--box-only", "--check"], "exclude each other"),
    (["--frobnicate"], "unknown option --frobnicate"),
    (["no-such-scenario"], "no scenario 'no-such-scenario'"),
])
def test_selftest_refuses_bad_options_before_touching_anything(tmp_path: Path, args: list[str], message: str) -> None:
    done = _selftest(*args, state=tmp_path / "state")
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="vm-lab/selftest runs as root, with ip")
def test_check_runs_the_teardown_on_the_machine_as_found_and_leaves_nothing(tmp_path: Path) -> None:
    done = _selftest("--check", "--transcript", str(tmp_path / "t.txt"), state=tmp_path / "state")
    assert done.returncode == 0, done.stdout + done.stderr
    transcript = (tmp_path / "t.txt").read_text()
    assert "check: missing Debian packages:" in transcript
    assert "nothing left behind" in transcript
    assert re.search(r"\[\d\d:\d\d:\d\d \+ *\d+s\] check PASSED", transcript)


def test_vm_commands_go_through_ssh_with_vagrants_config(tmp_path: Path) -> None:
    vms = VMs(tmp_path / "ssh-config", tmp_path)
    assert vms.argv("peer-a", "ledger status") == [
        "ssh", "-F", str(tmp_path / "ssh-config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "peer-a",
        "ledger status"]
    assert vms.ledger("peer-b", "lookup c --json") == "ledger lookup c --json --host $P2PLAB_IP --network p2plab"


def test_the_scenario_module_refuses_unknown_scenarios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--ssh-config", str(tmp_path / "c"), "--logs", str(tmp_path), "no-such"])
    assert "no scenario no-such" in capsys.readouterr().err
