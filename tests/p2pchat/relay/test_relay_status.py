"""The status view (``p2pchat relay --status``): sessions by fingerprint prefix, counts and counters, as text
or JSON, only for clients on the relay's machine; and the CLI's error handling."""

import json
from types import SimpleNamespace

import pytest

from p2pchat.relay.cli import main, query_status
from p2pchat.relay.protocol import short_fp
from p2pchat.relay.server import _is_local
from tests.conftest import free_loopback_ip, free_port, make_identities


@pytest.fixture(scope="module")
def ids():
    return make_identities(2)


def test_status_reports_sessions_registrations_and_counters(env, ids):
    relay = env.relay()
    a, b = env.pair(ids[0], ids[1], relay)
    a.send("msg", n=1, body=bytes(1000))
    b.recv(timeout=5)
    status = query_status(relay.host, relay.port)
    assert status["address"] == relay.address and status["registered"] == 1 and status["session_count"] == 1
    (session,) = status["sessions"]
    assert session["a"] == short_fp(ids[0].fingerprint) and session["b"] == short_fp(ids[1].fingerprint)
    assert session["bytes_ab"] == len(a.protocol.encode("msg", n=1, body=bytes(1000))) and session["bytes_ba"] == 0
    assert status["counters"]["sessions"] == 1 and status["counters"]["status_queries"] == 1
    assert status["limits"]["max_per_ip"] == relay.max_per_ip


def test_status_command_prints_text_and_json(env, ids, capsys):
    relay = env.relay()
    env.register(ids[1], relay)
    assert main(["--status", "--host", relay.host, "--port", str(relay.port)]) == 0
    text = capsys.readouterr().out
    assert f"relay {relay.address}" in text and "registered hosts: 1" in text and "sessions: 0" in text
    assert main(["--status", "--json", "--host", relay.host, "--port", str(relay.port)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["registered"] == 1 and data["counters"]["registrations"] == 1


def test_status_is_shown_only_to_clients_on_the_relay_machine():
    # A non-loopback client cannot exist on this test machine, so the check itself is exercised.
    def conn(peer: str, local: str) -> SimpleNamespace:
        return SimpleNamespace(peer=(peer, 5000), local=(local, 8472))
    assert _is_local(conn("127.0.0.5", "10.0.0.1"))
    assert _is_local(conn("10.0.0.1", "10.0.0.1"))
    assert not _is_local(conn("10.0.0.2", "10.0.0.1"))
    assert not _is_local(conn("2001:db8::1", "2001:db8::2"))


def test_status_of_a_relay_that_is_not_running_says_so(capsys):
    host = free_loopback_ip()
    assert main(["--status", "--host", host, "--port", str(free_port(host))]) == 1
    assert "p2pchat relay: cannot connect to" in capsys.readouterr().err


def test_bad_command_line_values_are_reported(capsys):
    assert main(["--host", "not-an-ip"]) == 1
    assert "'not-an-ip' is not an IP address" in capsys.readouterr().err
    assert main(["--host", "127.0.0.1", "--port", "0"]) == 1
    assert "is not a TCP port" in capsys.readouterr().err
    assert main(["--host", free_loopback_ip(), "--port", "9", "--max-per-ip", "0"]) == 2
    assert "max_per_ip must be at least 1" in capsys.readouterr().err
