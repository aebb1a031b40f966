"""[redstate] The background verification's progress file on a full disk: the verification goes on (a failed save
is logged, not an exception that ends the verifier's thread), the old file stays, no temporary copy is left."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from ledger.assume_valid import AssumeValid, VerifyState

ROOT = Path(__file__).resolve().parents[2]


def test_a_progress_file_the_disk_cannot_take_is_logged_and_the_old_one_kept(tmp_path, caplog):
    path = tmp_path / "assume-valid-0011223344556677.json"
    av = AssumeValid(path, 100, bytes(32), verified=10, state=VerifyState.RUNNING)
    assert av.save()
    av.update(verified=20)
    child = textwrap.dedent("""
        import json, resource, sys
        from pathlib import Path
        from ledger.assume_valid import AssumeValid, VerifyState
        path = Path(sys.argv[1]); hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        av = AssumeValid(path, 100, bytes(32), verified=20, state=VerifyState.RUNNING)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
        saved = av.save()
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        print(json.dumps([saved, sorted(p.name for p in path.parent.iterdir()), av.save()]))
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    saved, listed, saved_after = json.loads(proc.stdout)
    assert saved is False and "could not save the background verification's progress" in proc.stderr
    assert listed == [path.name]          # the old file, no temporary copy
    assert saved_after is True and json.loads(path.read_text())["verified"] == 20
    with caplog.at_level(logging.WARNING):
        (tmp_path / "blocked").mkdir()
        (tmp_path / "blocked" / "x").write_text("x")
        blocked = AssumeValid(tmp_path / "blocked", 1, bytes(32))
        assert blocked.save() is False      # a directory in the way: logged, never raised
    assert "could not save" in caplog.text
