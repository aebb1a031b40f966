"""`--help` loads no heavy module: pycryptodome, customtkinter, msgpack, SQLite, the ledger core and the costliest
standard modules are imported by the commands that use them (startup time: bench/startup_bench.py). Each check
runs a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("Crypto", "customtkinter", "tkinter", "msgpack", "sqlite3", "ledger.chain", "ledger.local_ledger",
         "ledger.node", "ledger.records", "ledger.store", "ledger.client", "p2pchat.node",
         # standard modules that cost a command's start-up milliseconds: logging (traceback, tokenize…), shutil
         # (zlib, bz2, lzma; argparse's width), dataclasses (inspect, ast, dis), hashlib (OpenSSL)
         "logging", "shutil", "dataclasses", "hashlib")

_PROBE = """
import contextlib, io, json, sys
from {module} import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main({argv!r})
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "help": out.getvalue(), "modules": sorted(sys.modules)}}))
"""


def _run(module: str, argv: list[str]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(module=module, argv=argv)], capture_output=True,
                          text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _heavy(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.parametrize(("module", "argv"), [
    ("p2pchat.cli", ["--help"]),
    ("ledger.cli", ["--help"]),
    ("ledger.cli", ["lookup", "--help"]),
    ("ledger.cli", ["serve", "--help"]),
])
def test_help_imports_no_crypto_window_codec_or_ledger_core(module: str, argv: list[str]) -> None:
    result = _run(module, argv)
    assert result["code"] == 0
    assert "usage:" in str(result["help"])
    assert _heavy(result["modules"]) == []


def test_the_probe_sees_heavy_imports_when_a_command_needs_them() -> None:
    # The same probe, for a module that does use pycryptodome: the check above can fail.
    proc = subprocess.run([sys.executable, "-c", "import sys, ledger.client, p2pchat.foundation.crypto as c; "
                           "c.hkdf(b's', b'', b''); print('Crypto' in sys.modules, 'msgpack' in sys.modules)"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.split() == ["True", "True"]


def test_pycryptodome_works_after_a_lazy_start() -> None:
    proc = subprocess.run([sys.executable, "-c", """
import sys
from p2pchat.foundation import crypto
assert 'Crypto' not in sys.modules
key = crypto.generate_rsa(1024 * 3)
der = crypto.public_der(key)
sig = crypto.sign(key, 'test', b'data')
crypto.verify(der, 'test', b'data', sig)
box = crypto.seal(b'k' * 32, b'n' * 12, b'hello', b'')
assert crypto.open_sealed(b'k' * 32, b'n' * 12, box, b'') == b'hello'
assert isinstance(key, crypto.RsaKey)
print('ok')
"""], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "ok"


def test_the_light_client_imports_none_of_the_nodes_ledger() -> None:
    # `ledger lookup` and every chat node import ledger.client: no chain, store, pool, miner or worker processes.
    node_side = ("ledger.local_ledger", "ledger.chain", "ledger.store", "ledger.pool", "ledger.miner",
                 "ledger.bindings", "multiprocessing")
    proc = subprocess.run([sys.executable, "-c", "import json, sys, ledger.client; "
                           f"print(json.dumps([m for m in {node_side!r} if m in sys.modules]))"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(proc.stdout) == []
