"""One `vm-lab/netns` at a time per lab: a lock file held while a command builds, runs or removes a lab, so a
second `run` never mistakes a running lab for the leftovers of an interrupted one."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netns_lab.shell import LabError

LOCK_DIR = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")


@contextmanager
def lab_lock(name: str) -> Iterator[None]:
    """Hold the lock of the lab ``name``; :class:`LabError` naming the holder when another process has it.
    The lock file is removed again on release."""
    path = LOCK_DIR / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before us may have removed the file after we opened it: then it is not the lock.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LabError(f"another vm-lab/netns command (pid {holder}) is using the lab {name}; wait for it "
                           f"or stop it with Ctrl-C") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)   # while still holding the lock
    finally:
        os.close(fd)   # closing releases the lock
