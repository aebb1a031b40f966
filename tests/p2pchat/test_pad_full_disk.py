"""[redstate] A full disk when a one-time pad's spent bytes are recorded (RLIMIT_FSIZE in a child process): the
message is refused in plain words, the record is as it was, no temporary copy is left, and sending works again
once there is room — the bytes of the refused message are never used."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from p2pchat.pad import PadError, USED
    from tests.p2pchat.test_pad import installed
    base = Path(sys.argv[1]); hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    a, b = installed(base)
    before = (a.dir / USED).read_bytes()
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
    try:
        a.seal("refused on a full disk"); error = None
    except PadError as exc:
        error = str(exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    unchanged = (a.dir / USED).read_bytes() == before
    listed = sorted(p.name for p in a.dir.iterdir())
    frame = a.seal("sent once there is room")
    print(json.dumps([error, unchanged, listed, b.open_frame(frame), a.sent]))
""")


def test_a_full_disk_refuses_the_message_and_spends_no_pad_byte(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    error, unchanged, listed, opened, sent = json.loads(proc.stdout)
    assert error and "could not write" in error and "were not used" in error, error
    assert unchanged and not [name for name in listed if ".tmp" in name], listed
    assert opened == "sent once there is room"
    assert sent == 32 + len(b"sent once there is room")     # the refused message spent nothing
