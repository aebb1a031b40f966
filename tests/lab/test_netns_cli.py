"""The `vm-lab/netns` command itself, without building a lab (no root needed): the options `exec` adds, and
the lock that keeps two commands off one lab."""

from __future__ import annotations

import os

import pytest
from netns_lab.__main__ import exec_argv
from netns_lab.locking import LOCK_DIR, lab_lock
from netns_lab.shell import LabError

STATE = {
    "workdir": "/tmp/p2plab", "network": "p2plab", "relay": "10.77.0.10:8472",
    "hosts": {"a": {"ip": "10.77.0.11", "ns": "p2plab-a", "behind_nat": False},
              "c": {"ip": "10.77.1.2", "ns": "p2plab-c", "behind_nat": True}},
}


def test_chat_on_a_reachable_host_gets_its_address_data_dir_and_network() -> None:
    argv = exec_argv(STATE, "a", ["p2pchat", "chat", "c"], "py")
    assert argv == ["ip", "netns", "exec", "p2plab-a", "py", "-m", "p2pchat", "chat", "c", "--host", "10.77.0.11",
                    "--data-dir", "/tmp/p2plab/a", "--network", "p2plab"]


def test_chat_on_the_natted_host_also_gets_no_inbound_and_the_relay() -> None:
    argv = exec_argv(STATE, "c", ["p2pchat", "listen", "--accept-all"], "py")
    assert argv[:9] == ["ip", "netns", "exec", "p2plab-c", "py", "-m", "p2pchat", "listen", "--accept-all"]
    assert argv[9:] == ["--host", "10.77.1.2", "--data-dir", "/tmp/p2plab/c", "--network", "p2plab",
                        "--no-inbound", "--relay", "10.77.0.10:8472"]


def test_options_the_user_gave_are_kept() -> None:
    argv = exec_argv(STATE, "a", ["ledger", "status", "--network", "other", "--json"], "py")
    assert argv.count("--network") == 1 and argv[argv.index("--network") + 1] == "other"
    assert argv[argv.index("--host") + 1] == "10.77.0.11"


def test_other_commands_run_unchanged_in_the_namespace() -> None:
    assert exec_argv(STATE, "a", ["ip", "addr"], "py") == ["ip", "netns", "exec", "p2plab-a", "ip", "addr"]


def test_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(LabError, match="no host 'z'"):
        exec_argv(STATE, "z", ["p2pchat", "chat", "a"], "py")


def test_a_second_command_on_the_same_lab_is_refused_and_the_lock_file_goes_away() -> None:
    name = f"p2plab-lock-{os.getpid()}"
    with lab_lock(name):
        with pytest.raises(LabError, match=f"pid {os.getpid()}"), lab_lock(name):
            pass
        with lab_lock(name + "x"):   # another lab is independent
            pass
    assert not (LOCK_DIR / f"{name}.lock").exists()
    with lab_lock(name):             # free again
        pass
