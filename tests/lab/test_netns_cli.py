"""The `vm-lab/netns` command itself, without building a lab (no root needed): the options `exec` adds, and
the lock that keeps two commands off one lab."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from netns_lab.__main__ import build_parser, exec_argv
from netns_lab.labs import Registry, check_id, lab_of_namespace, safe_to_remove, usable_workdir
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


# ---- lab ids: several labs on one machine ----------------------------------------------------------------

def _registry(tmp_path: Path) -> Registry:
    # Ids made of this pid: no lab of that name exists, so none counts as up.
    return Registry(root=tmp_path / "run", pointer=tmp_path / "checkout" / ".netns-lab")


def test_lab_ids_are_short_lowercase_words_and_not_reserved() -> None:
    assert check_id("2") == "2" and check_id("group3") == "group3"
    for bad in ("", "A", "a-b", "x" * 13, "run", "../x"):
        with pytest.raises(LabError, match="lowercase letters or digits"):
            check_id(bad)


def test_namespaces_belong_to_their_own_lab_only() -> None:
    assert lab_of_namespace("p2plab-2-a") == "p2plab-2"
    assert lab_of_namespace("p2plab-2-run-a") == "p2plab-2-run"   # `run`'s lab is not lab 2
    assert lab_of_namespace("p2plab-12-a") == "p2plab-12"         # lab 12 is not lab 1


def test_commands_act_on_the_given_lab_else_on_the_one_up_started_from_this_checkout(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    assert reg.resolve(None) is None                 # nothing started from here: no guessing
    (tmp_path / "checkout").mkdir()
    assert reg.point_at(f"p{os.getpid()}")
    assert reg.resolve(None) == f"p{os.getpid()}"
    assert reg.resolve("other") == "other"
    with pytest.raises(LabError):
        reg.resolve("No Such")


def test_up_reuses_this_checkouts_id_once_its_lab_is_gone_and_takes_a_free_number_otherwise(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    (tmp_path / "checkout").mkdir()
    mine = f"q{os.getpid()}"
    reg.point_at(mine)
    assert reg.new_id() == mine
    workdir = tmp_path / "data"
    workdir.mkdir()
    reg.record({"id": mine, "workdir": str(workdir), "hosts": {}})   # recorded: taken until `down` forgets it
    assert reg.new_id() != mine and reg.new_id().isdigit()
    reg.forget(mine)
    assert reg.state(mine) is None and reg.pointed() is None     # forgetting this checkout's lab drops the pointer


def test_a_record_names_its_lab_in_the_registry_and_the_data_directory(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    workdir = tmp_path / "data"
    workdir.mkdir()
    reg.record({"id": "7", "workdir": str(workdir), "started_by": "alice", "hosts": {}})
    assert reg.state("7") == json.loads((workdir / "lab.json").read_text())
    assert reg.recorded_ids() == ["7"]
    assert safe_to_remove(workdir, "7")
    assert not safe_to_remove(workdir, "8")            # another lab's directory is never removed


def test_up_never_takes_over_a_directory_it_did_not_make(tmp_path: Path) -> None:
    usable_workdir(tmp_path / "missing", "3")
    (tmp_path / "empty").mkdir()
    usable_workdir(tmp_path / "empty", "3")
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(LabError, match="not a data directory of lab 3"):
        usable_workdir(home, "3")


def test_down_every_lab_must_be_spelled_out_and_the_old_all_is_refused() -> None:
    parser = build_parser()
    assert parser.parse_args(["down", "--every-lab"]).every_lab
    assert parser.parse_args(["down", "--all"]).old_all
    with pytest.raises(SystemExit):
        parser.parse_args(["down", "--every"])          # no abbreviation of the big hammer
    assert parser.parse_args(["down", "--lab", "2"]).lab == "2"
    assert parser.parse_args(["--lab", "2", "down"]).lab == "2"
    assert parser.parse_args(["down"]).lab is None


def test_a_second_up_from_the_same_checkout_is_refused_while_its_lab_runs(tmp_path: Path) -> None:
    running: set[str] = set()

    class Labs(Registry):   # labs are "up" when listed in `running`, without building namespaces
        def is_up(self, lab_id: str) -> bool:
            return lab_id in running

    reg = Labs(root=tmp_path / "run", pointer=tmp_path / ".netns-lab")
    reg.point_at("4")
    running.add("4")
    with pytest.raises(LabError, match="this checkout's lab 4 is already up"):
        reg.id_for_up(None)
    assert reg.id_for_up("other") == "other"      # a named second lab is fine
    running.clear()
    assert reg.id_for_up(None) == "4"             # gone: the checkout gets its id back
