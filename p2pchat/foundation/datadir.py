"""Where a node keeps its identity key, ledger database and settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
