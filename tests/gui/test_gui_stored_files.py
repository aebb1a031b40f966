"""[redstate] The app's start with a key that is missing behind a link (kept on a drive that is not mounted): it
says so and exits, instead of taking the directory for a first run (asking for a nickname and making a new key,
a new identity)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2pchat.foundation.identity import KEY_FILE
from tests.conftest import free_loopback_ip

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


def test_the_app_refuses_a_key_behind_a_link_to_nothing_and_makes_no_new_one(xvfb, tmp_path):
    data = tmp_path / "carol"
    data.mkdir()
    target = tmp_path / "stick" / KEY_FILE
    (data / KEY_FILE).symlink_to(target)
    proc = subprocess.run([sys.executable, "-m", "p2pchat", "gui", "--data-dir", str(data), "--host",
                           free_loopback_ip(), "--difficulty", "8"], cwd=ROOT, capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"the identity key {data / KEY_FILE} is a link to {target}, which does not exist" in proc.stderr
    assert (data / KEY_FILE).is_symlink() and not target.parent.exists()
