"""Several labs on one machine: every lab started by ``vm-lab/netns up`` has an id, and commands act on one lab.

A lab with id ``ID`` is named ``p2plab-ID``: its namespaces are ``p2plab-ID-<host>`` and the scenario labs of
``vm-lab/netns run`` are ``p2plab-ID-run-<host>``, so removing one lab never touches another. Three small
files say which lab is whose:

- the **registry** ``/run/p2plab/ID.json`` (gone after a reboot, like the namespaces): the lab's state — hosts,
  addresses, data directory, who started it from which checkout — so ``--lab ID`` finds it from anywhere;
- the lab's **data directory** (``/tmp/p2plab-ID`` or ``--dir``) holds the same ``lab.json``; ``down`` only
  deletes a directory whose ``lab.json`` names the lab being removed;
- the checkout's **pointer** ``vm-lab/.netns-lab``: the id of the lab that ``up`` (without ``--lab``) last
  started from this checkout. ``status``, ``exec`` and ``down`` without ``--lab`` act on that lab.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns_lab.shell import LabError
from netns_lab.topology import namespaces

PREFIX = "p2plab-"           # every namespace of every lab (and of tests/lab) starts so
STATE_FILE = "lab.json"
_ID = re.compile(r"[a-z0-9]{1,12}")
RESERVED_IDS = frozenset({"run", "probe"})   # "p2plab-run" is `run`'s lab without an id; "probe" the netns check
MAX_AUTO_ID = 99


def default_registry() -> Path:
    run = Path("/run")
    base = run if run.is_dir() and os.access(run, os.W_OK) else Path(tempfile.gettempdir())
    return base / "p2plab"


def check_id(lab_id: str) -> str:
    """``lab_id`` if it is a valid lab id, else :class:`LabError` saying what one looks like."""
    if not _ID.fullmatch(lab_id) or lab_id in RESERVED_IDS:
        raise LabError(f"lab id '{lab_id}' must be 1-12 lowercase letters or digits (not run or probe), e.g. 2 "
                       f"or group3")
    return lab_id


def lab_name(lab_id: str) -> str:
    return PREFIX + check_id(lab_id)


def lab_of_namespace(ns: str) -> str:
    """The lab a namespace belongs to: ``p2plab-2-a`` → ``p2plab-2``, ``p2plab-2-run-a`` → ``p2plab-2-run``."""
    return ns.rsplit("-", 1)[0]


def started_by() -> str:
    """Who ran ``up``: the user behind sudo when there is one."""
    user = os.environ.get("SUDO_USER") or os.environ.get("USER") or os.environ.get("LOGNAME")
    return user or f"uid {os.getuid()}"


@dataclass(frozen=True)
class Registry:
    """The labs of this machine. ``root`` is ``/run/p2plab``; ``pointer`` is the checkout's ``vm-lab/.netns-lab``."""

    root: Path
    pointer: Path

    # ---- the registry ------------------------------------------------------------------------------------
    def entry(self, lab_id: str) -> Path:
        return self.root / f"{check_id(lab_id)}.json"

    def state(self, lab_id: str) -> dict[str, Any] | None:
        """The state ``up`` recorded for ``lab_id``; None when there is none (or it cannot be read)."""
        try:
            state = json.loads(self.entry(lab_id).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def record(self, state: dict[str, Any]) -> None:
        """Write ``state`` to the registry and to ``lab.json`` in the lab's data directory."""
        text = json.dumps(state, indent=2) + "\n"
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.entry(state["id"]).write_text(text)
        (Path(state["workdir"]) / STATE_FILE).write_text(text)

    def forget(self, lab_id: str) -> None:
        self.entry(lab_id).unlink(missing_ok=True)
        if self.pointed() == lab_id:
            self.pointer.unlink(missing_ok=True)
        try:
            self.root.rmdir()   # the last lab gone: leave nothing behind in /run
        except OSError:
            pass

    def recorded_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if _ID.fullmatch(p.stem))

    # ---- this checkout's lab -----------------------------------------------------------------------------
    def pointed(self) -> str | None:
        """The id of the lab ``up`` last started from this checkout, if any."""
        try:
            text = self.pointer.read_text().strip()
        except FileNotFoundError:
            return None
        return text if _ID.fullmatch(text) else None

    def point_at(self, lab_id: str) -> bool:
        """Remember ``lab_id`` as this checkout's lab; False when the checkout is not writable."""
        try:
            self.pointer.write_text(check_id(lab_id) + "\n")
        except OSError:
            return False
        return True

    # ---- choosing a lab ----------------------------------------------------------------------------------
    def is_up(self, lab_id: str) -> bool:
        return bool(namespaces(lab_name(lab_id)))

    def taken(self, lab_id: str) -> bool:
        return self.is_up(lab_id) or self.state(lab_id) is not None

    def new_id(self) -> str:
        """For ``up`` without ``--lab``: this checkout's last id when that lab is gone, else the first free
        number."""
        mine = self.pointed()
        if mine is not None and not self.taken(mine):
            return mine
        for number in range(1, MAX_AUTO_ID + 1):
            if not self.taken(str(number)):
                return str(number)
        raise LabError(f"labs 1 to {MAX_AUTO_ID} all exist; remove some ('vm-lab/netns status' lists them)")

    def id_for_up(self, given: str | None) -> str:
        """The id ``up`` uses: ``--lab`` when given; else a new one, unless this checkout's lab is still up
        (a second ``up`` would take the checkout's commands away from it)."""
        if given is not None:
            return check_id(given)
        mine = self.pointed()
        if mine is not None and self.is_up(mine):
            raise LabError(f"this checkout's lab {mine} is already up ('vm-lab/netns down' removes it); "
                           f"'vm-lab/netns up --lab NAME' starts another one beside it")
        return self.new_id()

    def resolve(self, given: str | None) -> str | None:
        """The lab a command acts on: ``--lab`` when given, else this checkout's lab, else None."""
        return check_id(given) if given is not None else self.pointed()


def describe(state: dict[str, Any] | None) -> str:
    """One line about who started a lab, from where and when."""
    if not state:
        return "not started by vm-lab/netns up (a test or an interrupted command)"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(state.get("started", 0))))
    return f"started by {state.get('started_by', '?')} from {state.get('checkout', '?')} at {when}"


def safe_to_remove(workdir: Path, lab_id: str) -> bool:
    """True when ``workdir`` is a data directory of the lab ``lab_id`` (its ``lab.json`` says so)."""
    try:
        state = json.loads((workdir / STATE_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    return isinstance(state, dict) and state.get("id") == lab_id


def usable_workdir(workdir: Path, lab_id: str) -> None:
    """:class:`LabError` unless ``up`` may use ``workdir``: missing, empty, or an earlier data directory of
    the same lab (which ``up`` then empties)."""
    if not workdir.exists():
        return
    if workdir.is_dir() and not any(workdir.iterdir()):
        return
    if safe_to_remove(workdir, lab_id):
        return
    raise LabError(f"{workdir} exists and is not a data directory of lab {lab_id}; pick another --dir (up never "
                   f"deletes a directory it did not make)")
