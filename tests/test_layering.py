"""The import rules of docs/architecture.md: lower layers never import higher ones."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "p2pchat/foundation": ("ledger", "p2pchat.", "gui"),
    "ledger": ("p2pchat.", "gui"),
}
ALLOWED_PREFIXES = {"ledger": ("p2pchat.foundation",), "p2pchat/foundation": ("p2pchat.foundation",)}
CORES = ("p2pchat/handshake.py", "p2pchat/channel.py", "p2pchat/chat_protocol.py", "p2pchat/safety.py",
         "p2pchat/steps.py", "p2pchat/events.py", "p2pchat/transfer.py", "p2pchat/smp.py")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else [ROOT / folder]:
        for mod in imported_modules(path):
            if mod.startswith(allowed):
                continue
            if any(mod == f.rstrip(".") or mod.startswith(f if f.endswith(".") else f + ".") or mod == f
                   for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {mod}")
    return found


def test_foundation_and_ledger_never_import_higher_layers():
    problems = []
    for folder, forbidden in FORBIDDEN.items():
        problems += violations(folder, forbidden, ALLOWED_PREFIXES[folder])
    assert problems == []


def test_protocol_cores_import_no_io_or_ui_modules():
    io_modules = ("socket", "threading", "tkinter", "customtkinter", "sqlite3", "time", "selectors", "asyncio",
                  "ledger", "gui", "p2pchat.node", "p2pchat.relay")
    problems = []
    for core in CORES:
        if (ROOT / core).exists():
            problems += violations(core, io_modules, ("p2pchat.foundation", "p2pchat.steps", "p2pchat.events",
                                                       "p2pchat.chat_protocol", "p2pchat.safety",
                                                       "p2pchat.handshake", "p2pchat.display"))
    assert problems == []


def test_the_spec_implementation_imports_nothing_of_the_project():
    """tests/spec/impl is built from the docs alone: only the standard library, pycryptodome and msgpack."""
    import sys
    allowed = set(sys.stdlib_module_names) | {"Crypto", "msgpack"}
    problems = [f"{path.relative_to(ROOT)} imports {mod}"
                for path in sorted((ROOT / "tests/spec/impl").rglob("*.py"))
                for mod in imported_modules(path) if mod.split(".")[0] not in allowed]
    assert problems == []
