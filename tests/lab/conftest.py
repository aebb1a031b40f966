"""Fixtures for the netns lab tests: a fresh lab per test, removed again whatever happens.

The tests need root and working network namespaces. Elsewhere they are skipped with the reason; in CI
(``CI`` set) as root they must run, so a missing tool fails them instead of hiding them.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pchat.foundation.identity import KEY_FILE
from tests.conftest import make_identities

VM_LAB = Path(__file__).resolve().parents[2] / "vm-lab"
if str(VM_LAB) not in sys.path:
    sys.path.insert(0, str(VM_LAB))

from netns_lab.commands import Project, Settings  # noqa: E402
from netns_lab.lab import Lab  # noqa: E402
from netns_lab.shell import missing_requirements  # noqa: E402
from netns_lab.topology import cleanup, namespaces  # noqa: E402

# Every lab of this pytest process has an id made of its pid, so parallel runs and a user's `vm-lab/netns up`
# never meet; ``p2plab-`` keeps them findable by `vm-lab/netns status` and `down --every-lab`.
LAB_ID = f"t{os.getpid()}"
LAB_NAME = f"p2plab-{LAB_ID}"
OTHER_LAB_IDS = (f"{LAB_ID}x", f"{LAB_ID}y")   # the two labs of the coexistence test
HOSTS_WITH_KEYS = ("a", "b", "c", "r", "d", "e", "f")


def require_lab() -> None:
    """Skip (or, in CI as root, fail) when the lab cannot run here."""
    problems = missing_requirements()
    if not problems:
        return
    reason = "netns lab unavailable: " + "; ".join(problems)
    if os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail(f"CI runs as root, so the lab tests must run, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _no_lab_left_behind() -> Iterator[None]:
    yield
    names = [LAB_NAME] + [f"p2plab-{lab_id}" for lab_id in OTHER_LAB_IDS]
    left = [ns for name in names for ns in namespaces(name)] if os.geteuid() == 0 and shutil.which("ip") else []
    for name in names:
        cleanup(name)
    assert not left, f"lab namespaces were left behind: {left}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_lab()
    the_lab = Lab(tmp_path / "lab", name=LAB_NAME)
    with the_lab:
        # Cached test keys: RSA-3072 generation would cost every node half a second.
        for host, identity in zip(HOSTS_WITH_KEYS, make_identities(len(HOSTS_WITH_KEYS)), strict=True):
            identity.save(the_lab.data_dir(host) / KEY_FILE)
        yield the_lab
    assert not namespaces(LAB_NAME), "the lab was not removed"


@pytest.fixture
def project(lab: Lab) -> Project:
    return Project(lab, Settings(difficulty=8))
