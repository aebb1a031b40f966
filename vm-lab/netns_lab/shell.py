"""Running the ``ip``/``nft`` commands that build the lab, with errors a person can read."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence


class LabError(Exception):
    """The lab cannot be built, a command inside it failed, or a scenario's expectation was not met."""


def run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return its result; raise :class:`LabError` with its stderr when it fails and ``check``."""
    try:
        proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise LabError(f"'{argv[0]}' is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"'{' '.join(argv)}' did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"'{' '.join(argv)}' failed (exit {proc.returncode}): {detail}")
    return proc


def missing_requirements() -> list[str]:
    """What keeps the lab from running here, as sentences (empty when everything is in place)."""
    import os

    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("the netns lab needs root (it creates network namespaces)")
    if shutil.which("ip") is None:
        problems.append("'ip' is missing (Debian package iproute2)")
    if shutil.which("nft") is None:
        problems.append("'nft' is missing (Debian package nftables; the NAT router needs it)")
    if problems:
        return problems
    probe = f"p2plab-probe-{os.getpid()}"    # per process: two labs starting at once must not share it
    created = run(["ip", "netns", "add", probe], check=False)
    if created.returncode != 0:
        problems.append(f"'ip netns add' does not work here: {created.stderr.strip()}")
    else:
        run(["ip", "netns", "del", probe], check=False)
    return problems


def faketime_library() -> str | None:
    """libfaketime's library for threaded programs (Debian package libfaketime), or None. The lab preloads it
    itself instead of running the ``faketime`` wrapper, which would stand between the lab and the node."""
    import glob

    for pattern in ("/usr/lib/*/faketime/libfaketimeMT.so.1", "/usr/lib/faketime/libfaketimeMT.so.1",
                    "/usr/local/lib/faketime/libfaketimeMT.so.1"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None
