"""Helpers shared by the lab tests."""

from __future__ import annotations

import pytest
from netns_lab.commands import Project
from netns_lab.scenarios import SCENARIOS
from netns_lab.shell import LabError


def run_scenario(project: Project, name: str) -> None:
    """Run one scenario; on failure, the reason and the last lines of every process's log."""
    try:
        SCENARIOS[name].run(project)
    except LabError as exc:
        pytest.fail(f"{exc}\n\nlogs:\n{project.lab.logs_tail()}", pytrace=False)
