"""How the bench scripts start the project's commands: as a user does, through the installed script."""

from __future__ import annotations

from pathlib import Path


def installed_command(python: str, name: str) -> list[str]:
    """``name`` (``ledger``, ``p2pchat``) as the installed script next to the interpreter (what ``pip install``
    made), run by that interpreter; ``python -m name`` when there is none (``-m`` adds runpy's start-up)."""
    script = Path(python).parent / name
    return [python, str(script)] if script.is_file() else [python, "-m", name]
