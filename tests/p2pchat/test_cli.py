"""The `p2pchat` command line: help without a display, plain errors for bad input, delegation to the relay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pchat.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    if data_dir is not None:
        env["P2PCHAT_HOME"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "p2pchat", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def test_without_a_subcommand_and_without_a_display_it_prints_help():
    result = run()
    assert result.returncode == 0
    for command in ("chat", "listen", "demo", "gui", "relay"):
        assert command in result.stdout


def test_the_relay_subcommand_is_the_relay_command():
    result = run("relay", "--help")
    assert result.returncode == 0 and "relay" in result.stdout and "--max-per-ip" in result.stdout


def test_bad_addresses_and_options_are_refused_in_one_sentence(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("P2PCHAT_HOME", str(tmp_path))
    assert main(["chat", "bob", "--host", "not-an-ip"]) == 1
    assert "'not-an-ip' is not an IP address" in capsys.readouterr().err
    assert main(["listen", "--no-inbound"]) == 1
    assert "--no-inbound needs --relay" in capsys.readouterr().err
    assert main(["demo", "--headless", "--hosts", "127.0.0.2"]) == 1
    assert "two different addresses" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["chat"])
    assert exc.value.code == 2


def test_chat_with_nobody_listening_exits_one_with_the_failed_step(tmp_path, identities):
    identities[0].save(tmp_path / "identity.pem")
    from tests.conftest import free_loopback_ip

    result = run("chat", f"{free_loopback_ip()}:9", "--host", free_loopback_ip(), "--nickname", "x",
                 "--direct-timeout", "1", data_dir=tmp_path)
    assert result.returncode == 1
    assert "✗ 1 Connect — cannot reach" in result.stdout


def test_parser_knows_the_node_options():
    args = build_parser().parse_args(["listen", "--accept-all", "--relay", "127.0.0.9", "--no-inbound",
                                      "--rotate-every", "5", "--ledger", "127.0.0.4:8470"])
    assert args.accept_all and args.no_inbound and args.rotate_every == 5 and args.ledger == "127.0.0.4:8470"
