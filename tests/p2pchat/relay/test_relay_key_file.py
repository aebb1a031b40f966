"""[redstate] The relay's link key file (docs/relay.md): clients pin the key, so the file must never be lost to a
kill, a full disk or a race, and a link to nothing, a directory or a damaged file is refused and left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from p2pchat.foundation.errors import UserError
from p2pchat.relay.secure import RelayKey

ROOT = Path(__file__).resolve().parents[3]


def test_two_relays_making_the_key_at_once_get_the_same_one(tmp_path):
    path = tmp_path / "relay_key"
    keys: list[bytes] = []
    barrier = threading.Barrier(4)

    def make() -> None:
        barrier.wait()
        keys.append(RelayKey.load_or_create(path).public)
    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and RelayKey.load_or_create(path).public == keys[0]
    assert sorted(os.listdir(tmp_path)) == ["relay_key"] and path.stat().st_mode & 0o777 == 0o600


def test_a_link_to_nothing_a_directory_or_a_damaged_key_is_refused_and_left(tmp_path):
    link = tmp_path / "linked"
    link.symlink_to(tmp_path / "stick" / "relay_key")
    with pytest.raises(UserError, match="does not exist"):
        RelayKey.load_or_create(link)
    assert link.is_symlink() and not (tmp_path / "stick").exists()
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        RelayKey.load_or_create(tmp_path / "dir")
    damaged = tmp_path / "damaged"
    damaged.write_text("ab" * 10)
    damaged.chmod(0o600)          # (a key others can read is refused before it is read: test_crypto_review.py)
    with pytest.raises(UserError, match=r"does not hold a relay key .* was not changed"):
        RelayKey.load_or_create(damaged)
    assert damaged.read_text() == "ab" * 10


def test_a_full_disk_when_the_key_is_made_leaves_no_half_key_and_it_is_made_once_there_is_room(tmp_path):
    child = textwrap.dedent("""
        import json, resource, sys
        from pathlib import Path
        from p2pchat.foundation.errors import UserError
        from p2pchat.relay.secure import RelayKey
        path = Path(sys.argv[1]); hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))
        try:
            RelayKey.load_or_create(path); error = None
        except UserError as exc:
            error = str(exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        listed = sorted(p.name for p in path.parent.iterdir())
        print(json.dumps([error, listed, RelayKey.load_or_create(path).public.hex()]))
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path / "relay_key")], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    error, listed, public = json.loads(proc.stdout)
    assert error and "could not write the relay key" in error
    assert listed == []
    assert RelayKey.load_or_create(tmp_path / "relay_key").public.hex() == public
