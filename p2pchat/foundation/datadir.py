"""Where a node keeps its identity key, ledger database and settings, and what may stand where one of its files
should be."""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from p2pchat.foundation.errors import LocalFault

try:
    import fcntl
except ImportError:      # Windows: no flock; one process per data directory is then the user's to keep
    fcntl = None  # type: ignore[assignment]

APP_NAME = "p2pchat"


def default_data_dir() -> Path:
    """The per-user data directory of the platform (XDG on Linux)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$P2PCHAT_HOME``, else :func:`default_data_dir`; created mode 0700."""
    if explicit:
        path = Path(explicit)
    elif os.environ.get("P2PCHAT_HOME"):
        path = Path(os.environ["P2PCHAT_HOME"])
    else:
        path = default_data_dir()
    path = path.expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise LocalFault(f"the data directory {path} is not a directory (a file of that name is in the way); "
                         f"choose another --data-dir, or move the file aside") from None
    except OSError as exc:
        raise LocalFault(f"cannot use the data directory {path}: {exc.strerror or exc}") from None
    return path


def slot_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold one of the data directory's files, in words that follow its name ("is a
    directory"), or None: nothing is there (a new file may be made) or a regular file is (perhaps through a
    link). A link whose target is missing is refused rather than followed: writing through it would make the
    file somewhere else, and making a new key or store beside it would hide the one that is missing (a key kept
    on a drive that is not mounted)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return (f"is a link to {os.readlink(path)}, which does not exist (is the drive it is on mounted?); "
                    "p2pchat did not change it")
        return None
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file; move it aside"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device, pipe or socket); move it aside"
    return None


def exposure_problem(st: os.stat_result, path: Path) -> str | None:
    """Why a secret file (a private key) with the status ``st`` must not be used, in words that follow its name
    ("can be read by other users …; fix it with: chmod 600 …"), or None: only its owner may read or write it."""
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"can be read by other users (mode {stat.S_IMODE(st.st_mode):o}); fix it with: chmod 600 '{path}'"
    return None


class DataDirLock:
    """An ``flock`` on a file of the data directory, held while this process does what only one process may do
    there (the ledger node's store, the chat node's waiting messages and files). Released by :meth:`release` or
    when the process ends, however it ends (a ``kill -9`` leaves nothing to clean up)."""

    def __init__(self, path: Path, busy: str) -> None:
        """Take the lock at ``path``; ``busy`` is the refusal when another process holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LocalFault(f"cannot take the lock {path}: {exc.strerror or exc}") from None
        self._fd: int | None = fd
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._fd = None
                raise LocalFault(busy) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)      # closing releases the flock
            self._fd = None


def write_temporary(path: Path, data: bytes, fail: Callable[[str], Exception]) -> Path:
    """``data`` in a new file (mode 0600) beside ``path`` named for this thread, flushed to disk, to be renamed or
    linked into place. A write the disk cannot take raises ``fail(reason)`` and leaves no temporary copy (it would
    hold a full disk's last bytes)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise fail(exc.strerror or str(exc)) from None
    return tmp


def write_new_file(path: Path, data: bytes, fail: Callable[[str], Exception]) -> bool:
    """Put ``data`` at ``path`` (mode 0600) unless a file is there already (False): written whole first
    (:func:`write_temporary`), then linked into place, so a reader sees all of it or nothing, a kill leaves no half
    file, and of several processes making it at once exactly one succeeds."""
    tmp = write_temporary(path, data, fail)
    try:
        os.link(tmp, path)          # fails when the file exists: never replaces another process's
    except FileExistsError:
        return False
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return True


def replace_file(path: Path, data: bytes, fail: Callable[[str], Exception]) -> None:
    """Put ``data`` at ``path`` (mode 0600) in place of what it held: written whole first (:func:`write_temporary`),
    then renamed over it, so a reader or a kill sees the old file or the new one. A write the disk cannot take
    raises ``fail(reason)``, leaving the old file and no temporary copy."""
    tmp = write_temporary(path, data, fail)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise fail(exc.strerror or str(exc)) from None
