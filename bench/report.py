"""Writing a benchmark's section of docs/benchmarks.md (shared by the bench scripts)."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, text: str, path: Path = BENCHMARKS) -> Path:
    """Put ``text`` (which starts with ``heading``) in place of the section ``heading``, where it stands;
    append it when the file has no such section yet."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    body = text.rstrip("\n") + "\n"
    if heading in current:
        head, _, rest = current.partition(heading)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        updated = head + body + ("\n" + tail if tail else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + body
    path.parent.mkdir(exist_ok=True)
    path.write_text(updated)
    return path
