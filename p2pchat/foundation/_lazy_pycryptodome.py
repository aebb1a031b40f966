"""Placeholders that import a pycryptodome module or function on first use (for :mod:`p2pchat.foundation.crypto`).

A placeholder lives in its owner module's namespace; the first attribute access or call imports the real object
and replaces the placeholder there, so only the first use goes through this module.

Before the first pycryptodome import, pycryptodome's ctypes back end is told this machine's architecture: without
that it calls ``platform.architecture()``, which runs the ``file`` program once per process (about 40 ms here).
The value is what ``platform.architecture()`` answers for the running interpreter on every non-Windows system.
"""

from __future__ import annotations

import importlib
import struct
import sys
import threading
from typing import Any

_lock = threading.Lock()
_prepared = False


def _prepare() -> None:
    global _prepared
    with _lock:
        if _prepared:
            return
        _prepared = True
        if sys.platform == "win32" or "Crypto.Util._raw_api" in sys.modules:
            return
        try:
            import cffi  # noqa: F401  (pycryptodome prefers cffi when present; then nothing to tell)
            return
        except ImportError:
            pass
        raw_api = importlib.import_module("Crypto.Util._raw_api")
        cached = getattr(raw_api, "cached_architecture", None)
        if getattr(raw_api, "backend", None) == "ctypes" and isinstance(cached, list) and not cached:
            cached[:] = [f"{struct.calcsize('P') * 8}bit", "ELF"]


def load(module: str, attribute: str | None = None) -> Any:
    """The pycryptodome module ``module`` (or its ``attribute``), imported now."""
    _prepare()
    loaded = importlib.import_module(module)
    return loaded if attribute is None else getattr(loaded, attribute)


class Module:
    """Stands for the module ``module`` under ``name`` in ``namespace`` until first used."""

    def __init__(self, namespace: dict[str, Any], name: str, module: str) -> None:
        self._namespace, self._name, self._module = namespace, name, module

    def _resolve(self) -> Any:
        real = load(self._module)
        self._namespace[self._name] = real
        return real

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._resolve(), attribute)


class Function:
    """Stands for the function ``name`` of ``module`` in ``namespace`` until first called."""

    def __init__(self, namespace: dict[str, Any], name: str, module: str) -> None:
        self._namespace, self._name, self._module = namespace, name, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        real = load(self._module, self._name)
        self._namespace[self._name] = real
        return real(*args, **kwargs)
