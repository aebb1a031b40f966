"""The sender's list of files waiting for contacts (``outgoing-files.bin``, p2pchat/file_resume.py) on a full disk
(a small tmpfs this test mounts: root only): a file queued then is refused in plain words and is neither kept nor
offered, the list on disk keeps what it held and no half-written copy takes the disk's last bytes; a delivered
file whose forgetting could not be written is not offered again, and the list is written once there is room."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.file_digest import sha256_of
from p2pchat.file_resume import FILE_NAME, FileResume, PendingFileStore
from p2pchat.foundation.errors import LocalFault
from p2pchat.transfer import State
from p2pchat.vault import Vault
from tests.p2pchat.test_file_resume import _file, _Host
from tests.p2pchat.test_group_full_disk import fill, small_disk  # noqa: F401  (fixture)

FP = "ab" * 32


def _queue(resume: FileResume, src: Path) -> None:
    resume.queue(FP, str(src), src.stat().st_size, sha256_of(str(src))[1])


def test_a_file_queued_on_a_full_disk_is_refused_plainly_and_neither_kept_nor_offered(
        small_disk: Path, tmp_path: Path) -> None:  # noqa: F811
    data = small_disk / "data"
    data.mkdir()
    vault = Vault.open(tmp_path, None)
    store = PendingFileStore(data / FILE_NAME, vault)
    host = _Host()
    jobs: list[tuple] = []
    resume = FileResume(host, store, submit=lambda fn, *a: jobs.append((fn, a)), emit=lambda ev: None)
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    _file(first, 1000)
    _file(second, 2000, seed=2)
    _queue(resume, first)
    filler = fill(small_disk)
    with pytest.raises(LocalFault, match=r"could not write the list of files waiting to be sent, .*: No space left "
                                         r"on device; second.bin was not sent"):
        _queue(resume, second)
    assert [f.name for f in resume.waiting()] == ["first.bin"]
    assert host.offers == []                                  # nothing offered before the jobs run …
    while jobs:
        fn, args = jobs.pop(0)
        fn(*args)
    assert host.offers == ["first.bin"]                       # … and then only the file that was kept
    assert sorted(p.name for p in data.iterdir()) == [FILE_NAME]     # no half-written copy left behind
    assert [f.name for f in PendingFileStore(data / FILE_NAME, vault).load()[1]] == ["first.bin"]

    # first.bin is delivered while the disk is still full: forgotten here at once, written once there is room
    resume.transfer_ended("s1", "t1", State.DONE, False)
    while jobs:
        fn, args = jobs.pop(0)
        fn(*args)
    assert resume.waiting() == []
    filler.unlink()
    _queue(resume, second)                                    # the next write carries the forgotten one too
    assert [f.name for f in PendingFileStore(data / FILE_NAME, vault).load()[1]] == ["second.bin"]
