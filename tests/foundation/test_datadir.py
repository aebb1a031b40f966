"""What may stand where a data directory's file should be, the data directory itself, the one-process lock, and
making the first identity key when two processes start at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from p2pchat.foundation.datadir import DataDirLock, resolve_data_dir, slot_problem
from p2pchat.foundation.errors import IdentityError, LocalFault
from p2pchat.foundation.identity import KEY_FILE, Identity
from tests.conftest import make_identities


def test_a_missing_file_or_a_regular_one_even_through_a_link_is_usable(tmp_path):
    assert slot_problem(tmp_path / "new") is None
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    assert slot_problem(tmp_path / "file") is None and slot_problem(tmp_path / "link") is None


def test_a_directory_a_dangling_link_or_a_socket_is_not(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        assert "not a regular file" in (slot_problem(tmp_path / "sock") or "")
    assert "is a directory" in (slot_problem(tmp_path / "dir") or "")
    assert f"is a link to {tmp_path / 'gone'}, which does not exist" in (slot_problem(tmp_path / "dangling") or "")


def test_a_data_directory_is_made_private_and_a_file_in_its_way_is_a_local_fault(tmp_path):
    made = resolve_data_dir(tmp_path / "a" / "b")
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700
    (tmp_path / "file").write_text("x")
    with pytest.raises(LocalFault, match="is not a directory"):
        resolve_data_dir(tmp_path / "file")
    with pytest.raises(LocalFault, match="cannot use the data directory"):
        resolve_data_dir(tmp_path / "file" / "below")


def test_the_lock_refuses_a_second_holder_in_another_process_until_the_first_lets_go(tmp_path):
    path = tmp_path / "job.lock"
    held = DataDirLock(path, "busy")
    probe = ("import sys; from pathlib import Path; from p2pchat.foundation.datadir import DataDirLock\n"
             "try:\n    DataDirLock(Path(sys.argv[1]), 'busy: someone has it')\nexcept Exception as e:\n"
             "    print(e); sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=30)
    assert other.returncode == 3 and "busy: someone has it" in other.stdout
    held.release()
    held.release()      # twice is harmless
    assert subprocess.run([sys.executable, "-c", probe, str(path)], timeout=30).returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600


def test_of_two_first_keys_saved_at_once_one_wins_and_both_read_it(tmp_path):
    a, b = make_identities(2)
    path = tmp_path / KEY_FILE
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def save(ident: Identity) -> None:
        barrier.wait()
        results.append(ident.save_new(path))
    threads = [threading.Thread(target=save, args=(i,)) for i in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    winner = Identity.load(path)
    assert winner.fingerprint in (a.fingerprint, b.fingerprint)
    assert not b.save_new(path) and Identity.load(path).fingerprint == winner.fingerprint
    assert sorted(os.listdir(tmp_path)) == [KEY_FILE]      # no temporary copies left


def test_load_or_create_uses_the_key_another_process_made_meanwhile(tmp_path, monkeypatch):
    """The race itself: this process generated its key while another saved one; it takes the other's."""
    from p2pchat.foundation import keygen

    mine, theirs = make_identities(2)

    def generate(**_kw: object) -> object:
        theirs.save_new(tmp_path / KEY_FILE)        # the other process finishes first
        return mine._key
    monkeypatch.setattr(keygen, "generate_identity_key", generate)
    got = Identity.load_or_create(tmp_path)
    assert got.fingerprint == theirs.fingerprint
    assert Identity.load(tmp_path / KEY_FILE).fingerprint == theirs.fingerprint


def test_a_key_readable_by_others_or_in_a_directory_is_refused_with_what_to_do(tmp_path):
    key = make_identities(1)[0]
    key.save(tmp_path / KEY_FILE)
    (tmp_path / KEY_FILE).chmod(0o640)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(tmp_path / KEY_FILE)
    (tmp_path / KEY_FILE).unlink()
    (tmp_path / KEY_FILE).mkdir()
    with pytest.raises(IdentityError, match="is a directory"):
        Identity.load_or_create(tmp_path)
