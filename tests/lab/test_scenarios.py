"""The multi-host scenarios of vm-lab/netns, each in a fresh lab of network namespaces."""

from __future__ import annotations

import os

import pytest
from netns_lab.commands import Project
from netns_lab.shell import faketime_library

from tests.lab.support import run_scenario

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]


def test_lab_wiring_isolates_the_natted_host_and_the_machine(project: Project) -> None:
    run_scenario(project, "isolation")


def test_network_forms_through_ledger_join_and_everyone_resolves_everyone(project: Project) -> None:
    run_scenario(project, "network-forms")


def test_two_hosts_chat_directly_through_the_four_steps(project: Project) -> None:
    run_scenario(project, "direct-chat")


def test_natted_host_chats_through_the_relay(project: Project) -> None:
    run_scenario(project, "relay-chat")


def test_natted_host_calls_a_reachable_host_without_relay_directly(project: Project) -> None:
    run_scenario(project, "natted-caller")


def test_partition_heals_to_the_most_work_chain_without_losing_records(project: Project) -> None:
    run_scenario(project, "partition")


@pytest.mark.timeout(480)
def test_a_long_partition_with_equal_work_on_both_sides_heals_by_itself(project: Project) -> None:
    run_scenario(project, "partition-equal")


def test_address_change_updates_the_record_and_chats_follow(project: Project) -> None:
    run_scenario(project, "address-change")


def test_clocks_ten_minutes_off_are_told_plainly_ban_nobody_and_status_claims_only_what_peers_hold(
        project: Project) -> None:
    if faketime_library() is None:
        reason = "libfaketime is missing (Debian package libfaketime; scripts/setup.sh --test installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    run_scenario(project, "clock-skew")


def test_killed_node_restarts_and_rejoins(project: Project) -> None:
    run_scenario(project, "kill-restart")
