"""``p2pchat bot`` with real processes: the example bots in examples/ answer and keep messages from a real
``p2pchat chat`` on a real ledger network (issue 17)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time

import pytest

from tests.conftest import free_loopback_ip, make_identities
from tests.integration.chat_procs import ChatProcess, _env, ledger_network
from tests.integration.procs import ROOT, Cluster, wait_until

pytestmark = pytest.mark.slow


def _example(name: str, *args: str) -> subprocess.Popen[bytes]:
    """An example bot, once it says it is ready (its node listens): the chat that follows finds it."""
    bot = subprocess.Popen([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=_env(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert bot.stderr is not None
    said: list[bytes] = []
    deadline = time.monotonic() + 60
    while not any(b" bot ready at " in line for line in said):
        left = deadline - time.monotonic()
        if left <= 0 or bot.poll() is not None:
            raise AssertionError(f"{name} did not get ready: {b''.join(said).decode(errors='replace')}")
        ready, _, _ = select.select([bot.stderr], [], [], left)
        if ready:
            said.append(bot.stderr.readline())
    return bot


def test_the_echo_bot_answers_and_the_log_bot_keeps_messages_as_json(tmp_path):
    e, u = free_loopback_ip(), free_loopback_ip()
    with Cluster(tmp_path, make_identities(2)) as cluster:
        ledger_network(cluster, [e, u])
        log_file = tmp_path / "messages.jsonl"
        bots = [_example("echo_bot.py", "--host", e, "--data-dir", str(cluster.data_dir(e)))]
        chats: list[ChatProcess] = []
        try:
            echo = ChatProcess("chat", e, "--host", u, "--data-dir", str(cluster.data_dir(u)))
            chats.append(echo)
            echo.write("hello bot")
            echo.wait_for("echo: hello bot", timeout=60)
            echo.close_input()
            assert echo.wait_exit() == 0, echo.output()

            _stop(bots[0])             # the same host and key, now as the log bot
            bots.append(_example("log_bot.py", str(log_file), "--host", e, "--data-dir", str(cluster.data_dir(e))))
            logged = ChatProcess("chat", e, "--host", u, "--data-dir", str(cluster.data_dir(u)))
            chats.append(logged)
            logged.write("keep \x1b[31mthis\x1b[0m", "and this")
            logged.close_input()                          # chat waits for the receipts before its goodbye
            assert logged.wait_exit() == 0, logged.output()
            assert "2 message(s) sent, 2 delivered" in logged.output(), logged.output()
            wait_until(lambda: log_file.exists() and log_file.read_text().count("\n") >= 2, 30,
                       what="the log bot's file")
            entries = [json.loads(line) for line in log_file.read_text().splitlines()]
            assert [x["text"] for x in entries] == ["keep \x1b[31mthis\x1b[0m", "and this"]
            assert "\x1b" not in log_file.read_text() and all(len(x["fingerprint"]) > 0 for x in entries)
        finally:
            for chat in chats:
                chat.stop()
            for bot in bots:
                _stop(bot)


def _stop(bot: subprocess.Popen[bytes]) -> None:
    if bot.poll() is None:
        bot.terminate()
        try:
            bot.wait(timeout=20)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait()
    if bot.stderr is not None:
        bot.stderr.close()
