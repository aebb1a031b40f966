"""A group text that arrives while the receiver's disk is full (a small tmpfs this test mounts: root only) is
neither shown nor acknowledged, the user is told in plain words, and it is shown once — not lost, not twice —
when the sender sends it again after there is room. Sending on a full disk is refused and uses up no number."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pchat.events import GroupMessage, GroupNotice
from p2pchat.foundation.errors import LocalFault
from p2pchat.foundation.identity import Identity
from tests.helpers import wait_until
from tests.p2pchat.test_group_service import Wire, _member, _service


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                 capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    if not mounted:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last byte (bounded by its size)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for _ in range(4096):
            try:
                fh.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        else:
            raise AssertionError("the small disk never filled")
        for _ in range(64):                 # the last partial block
            try:
                fh.write(b"\0" * 64)
            except OSError:
                break
    return filler


def texts(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, GroupMessage)]


def test_a_group_text_arriving_on_a_full_disk_is_not_acknowledged_and_shows_once_when_sent_again(
        tmp_path: Path, small_disk: Path, identities: list[Identity]) -> None:
    a, b = identities[:2]
    afp, bfp = a.fingerprint.hex(), b.fingerprint.hex()
    wire = Wire()
    sa, sb = _service(wire, a, tmp_path / "a"), _service(wire, b, small_disk / "b")
    try:
        gid = sa.create("club", [_member(b, "bob")])
        sa.say(gid, "before")
        wait_until(lambda: texts(wire.events[bfp]) == ["before"], 10, what="bob's first message")
        filler = fill(small_disk)
        sa.say(gid, "while full")
        wait_until(lambda: any(isinstance(e, GroupNotice) and "could not write" in e.text
                               for e in wire.events[bfp]), 10, what="bob told that his disk refused it")
        assert texts(wire.events[bfp]) == ["before"]
        assert sa.delivered(gid, 2) == (0, 1)         # not acknowledged: alice keeps it to send again
        with pytest.raises(LocalFault, match="could not write"):
            sb.say(gid, "bob on a full disk")
        os.unlink(filler)
        session = f"{afp}>{bfp}"
        sa.chat_ended(bfp, session, dropped=True, ours=True)
        sa.chat_ready(bfp, session)                   # the next chat with bob: what waits goes again
        wait_until(lambda: sa.delivered(gid, 2) == (1, 1), 10, what="the resent text acknowledged")
        assert texts(wire.events[bfp]) == ["before", "while full"]
        assert [t.text for t in sb.conversation(gid)] == ["before", "while full"]
        sb.say(gid, "bob again")                      # bob's first text since: number 1, no gap
        wait_until(lambda: texts(wire.events[afp]) == ["bob again"], 10, what="bob's text at alice")
        assert [(e.counter, e.gap) for e in wire.events[afp] if isinstance(e, GroupMessage)] == [(1, 0)]
    finally:
        sa.close()
        sb.close()
