"""The lab cleans up after itself: on errors inside a scenario, on Ctrl-C, and on `down`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netns_lab.__main__ import registry
from netns_lab.lab import VM_LAB, Lab, child_env
from netns_lab.topology import namespace_pids, namespaces

from tests.helpers import wait_until
from tests.lab.conftest import LAB_ID, LAB_NAME, OTHER_LAB_IDS, require_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_error_inside_the_lab_removes_namespaces_and_processes(tmp_path: Path) -> None:
    require_lab()
    pid = None
    with pytest.raises(RuntimeError, match="scenario broke"), Lab(tmp_path, name=LAB_NAME) as lab:
        server = lab.start("a", "probe", lab.module_argv("netns_lab.probe", "serve", lab.ip("a"), "9000"))
        server.wait_for("listening", 15)
        pid = server.pid
        assert namespaces(LAB_NAME)
        raise RuntimeError("scenario broke")
    assert namespaces(LAB_NAME) == []
    assert pid is not None and not _alive(pid)


def test_nothing_of_the_lab_is_in_the_machines_own_namespace(lab: Lab) -> None:
    own = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "10.77." not in own
    assert "p-a" not in links and "br0" not in links
    inside = subprocess.run(["ip", "-n", lab.topo.ns("a"), "-o", "addr", "show"], capture_output=True, text=True,
                            check=True).stdout
    assert lab.ip("a") in inside


def _netns(*args: str, **kw) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "netns_lab", "--lab", LAB_ID, *args], cwd=VM_LAB.parent,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_ctrl_c_during_up_removes_the_lab(tmp_path: Path) -> None:
    require_lab()
    state = tmp_path / "state"
    proc = _netns("up", "--dir", str(state), "--timeout", "120")
    try:
        wait_until(lambda: len(namespaces(LAB_NAME)) >= 6, 30, what="the lab to come up")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert namespaces(LAB_NAME) == []
    assert not state.exists()


def _netns_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netns_lab", *args], cwd=VM_LAB.parent, env=child_env(),
                          capture_output=True, text=True, timeout=150, check=False)


def test_up_status_exec_down_leaves_nothing_behind(tmp_path: Path) -> None:
    require_lab()
    state = tmp_path / "state"
    try:
        up = _netns_cli("up", "--lab", LAB_ID, "--dir", str(state), "--difficulty", "8")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"lab {LAB_ID} is up" in up.stdout
        assert f"vm-lab/netns down --lab {LAB_ID}" in up.stdout   # --lab given: the hints name the lab
        status = _netns_cli("status", "--lab", LAB_ID)
        assert status.returncode == 0
        assert "ledger serve" in status.stdout and "p2pchat relay" in status.stdout
        seen = _netns_cli("exec", "--lab", LAB_ID, "c", "ledger", "status", "--json")
        assert seen.returncode == 0, seen.stderr
        assert '"own_record"' in seen.stdout and "10.77.0.10:8472" in seen.stdout   # c's relay hint
        assert registry().state(LAB_ID) is not None
    finally:
        down = _netns_cli("down", "--lab", LAB_ID)
    assert down.returncode == 0, down.stderr
    assert namespaces(LAB_NAME) == []
    assert not state.exists()
    assert registry().state(LAB_ID) is None


def _host_processes(lab_id: str) -> dict[str, list[int]]:
    return {ns: namespace_pids(ns) for ns in namespaces(f"p2plab-{lab_id}")}


def test_two_labs_coexist_and_down_of_one_leaves_the_other_running(tmp_path: Path) -> None:
    require_lab()
    first, second = OTHER_LAB_IDS
    try:
        for lab_id in (first, second):
            up = _netns_cli("up", "--lab", lab_id, "--dir", str(tmp_path / lab_id), "--difficulty", "8")
            assert up.returncode == 0, up.stdout + up.stderr
        before = _host_processes(second)
        running = [pid for pids in before.values() for pid in pids]
        assert len(running) >= 5   # four ledger nodes and the relay
        status = _netns_cli("status")
        assert f"p2plab-{first}:" in status.stdout and f"p2plab-{second}:" in status.stdout

        down = _netns_cli("down", "--lab", first)
        assert down.returncode == 0, down.stderr
        assert namespaces(f"p2plab-{first}") == []
        assert not (tmp_path / first).exists()
        kept = [line for line in down.stdout.splitlines() if line.startswith("other labs keep running:")]
        assert kept and f"p2plab-{second}" in kept[0]

        assert _host_processes(second) == before           # same namespaces, same processes
        assert all(_alive(pid) for pid in running)
        assert (tmp_path / second / "lab.json").exists()
        seen = _netns_cli("exec", "--lab", second, "b", "ledger", "status", "--json")
        assert seen.returncode == 0, seen.stderr          # its nodes still answer
        gone = _netns_cli("exec", "--lab", first, "b", "ledger", "status")
        assert gone.returncode == 1 and f"lab {first} is not up" in gone.stderr
    finally:
        for lab_id in (first, second):
            _netns_cli("down", "--lab", lab_id)
    assert namespaces(f"p2plab-{second}") == []
    assert registry().state(first) is None and registry().state(second) is None


def _dial(lab: Lab, src: str, dst_ip: str) -> subprocess.CompletedProcess[str]:
    return lab.run(src, lab.module_argv("netns_lab.probe", "dial", dst_ip, "9000", "--timeout", "1"))


def test_partition_cuts_the_groups_apart_and_heal_joins_them(lab: Lab) -> None:
    server = lab.start("a", "probe", lab.module_argv("netns_lab.probe", "serve", lab.ip("a"), "9000"))
    server.wait_for("listening", 15)
    lab.add_host("d")
    lab.topo.partition(["b", "d"])
    assert "did not answer" in _dial(lab, "b", lab.ip("a")).stdout           # cut off
    assert _dial(lab, "c", lab.ip("a")).returncode == 0                     # the NAT'd home stays on a's side
    assert "Connection refused" in _dial(lab, "d", lab.ip("b")).stdout      # b's side: b answers (no listener)
    lab.topo.heal()
    assert _dial(lab, "b", lab.ip("a")).stdout.strip() == f"seen as {lab.ip('b')}"


def test_address_change_moves_the_host(lab: Lab) -> None:
    server = lab.start("a", "probe", lab.module_argv("netns_lab.probe", "serve", lab.ip("a"), "9000"))
    server.wait_for("listening", 15)
    lab.topo.change_address("b", "10.77.0.22")
    assert lab.ip("b") == "10.77.0.22"
    assert _dial(lab, "b", lab.ip("a")).stdout.strip() == "seen as 10.77.0.22"
