"""What a hostile ledger node (any node ``--node`` names) or peer can make the ``ledger`` command print (red team
2026-12-07): its strings are shown escaped, on one line each and bounded; a status of the wrong shape is said in
one line, never a traceback. The node here is a real server on a 127.x address that answers what a test says."""

import logging
import sys
import threading

import pytest

from ledger.cli import log_formatter, main
from ledger.disputes import Dispute
from ledger.errors import LedgerError
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL
from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.transport import FramedSocket, FrameServer
from tests.conftest import free_loopback_ip
from tests.ledger.hostile_ledger import answer_hello

# A window title (OSC 0), a screen wipe, a right-to-left override, and a line that looks like the command's own.
EVIL = "\x1b]0;pwned\x07\x1b[2J\u202eevil\nALERT         fake" + "A" * 5000
LABELS = ("node ", "fingerprint ", "network id ", "height ", "sync ", "peers ", "pending ", "own record ",
          "registration ", "nickname ", "final ", "ALERT ", "CLOCK ", "conflict ", "disputed ", "evidence ",
          "parked ", "pruned ", "history check ", "              ")


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("P2PCHAT_HOME", str(tmp_path / "home"))


class HostileNode:
    """Answers the handshake like a node of the default network, then the first request with ``answer``."""

    def __init__(self) -> None:
        self.answer: tuple[str, dict] = ("error", {"reason": "unset"})
        self.params = NetworkParams()
        self.server = FrameServer(free_loopback_ip(), 0, LEDGER_PROTOCOL, self._serve, name="hostile").start()
        self.address = format_address(self.server.host, self.server.port)

    def _serve(self, conn: FramedSocket) -> None:
        answer_hello(conn, self.params)
        conn.recv(5.0)
        type_, fields = self.answer
        conn.send(type_, **fields)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def hostile():
    node = HostileNode()
    yield node
    node.close()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_safe(text, max_line=700):
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert all(len(line) <= max_line for line in text.splitlines())
    assert "<U+001B>]0;pwned<U+0007>" in text   # shown, not dropped: the reader sees what the node tried


def test_status_strings_from_a_hostile_node_are_shown_escaped_one_line_each_and_bounded(hostile, capsys):
    own = {"nickname": EVIL, "ip": EVIL, "port": EVIL, "seq": EVIL, "state": EVIL, "warning": EVIL}
    hostile.answer = ("status_result", {"status": {
        "nickname": EVIL, "address": EVIL, "network": EVIL, "fingerprint": "00" * 32, "height": EVIL, "tip": EVIL,
        "cumulative_work": EVIL, "peers": [{"address": EVIL}] * 3, "pending": EVIL, "own_record": own,
        "registration_error": EVIL, "nickname_problem": EVIL, "syncing": True,
        "sync": {"phase": EVIL, "peer": EVIL, "height": EVIL, "target": EVIL}, "alerts": [EVIL],
        "binding_alerts": [{"text": EVIL}], "clock": {"warning": EVIL}}})
    code, out, err = run(capsys, "status", "--node", hostile.address)
    assert code == 0, err
    assert_safe(out)
    assert all(line.startswith(LABELS) for line in out.splitlines())   # no line of the node's making


@pytest.mark.parametrize("status", [
    {"fingerprint": "not hex"},
    {"fingerprint": "00" * 32, "peers": ["a string, not a map"]},
    {"fingerprint": "00" * 32, "own_record": "a string", "syncing": True, "sync": 5},
])
def test_a_status_of_the_wrong_shape_is_the_nodes_fault_in_one_line(hostile, capsys, status):
    hostile.answer = ("status_result", {"status": status})
    code, out, err = run(capsys, "status", "--node", hostile.address)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "answered with a status this command cannot read" in err
    assert hostile.address in err


def test_a_refusal_reason_is_shown_escaped_on_the_one_error_line(hostile, capsys):
    hostile.answer = ("error", {"reason": EVIL[:1000]})
    code, out, err = run(capsys, "status", "--node", hostile.address)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert_safe(err, max_line=2100)


def test_a_lookup_not_found_reason_is_shown_escaped_on_one_line(hostile, capsys):
    hostile.answer = ("lookup_result", {"found": False, "reason": EVIL[:1000]})
    code, out, err = run(capsys, "lookup", "127.0.0.5", "--node", hostile.address)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert_safe(err, max_line=2100)


def test_log_lines_quoting_a_peer_are_escaped_and_a_traceback_keeps_its_lines():
    formatter = log_formatter()
    record = logging.LogRecord("ledger.node", logging.INFO, __file__, 1, "%s closed the connection: %s",
                               ("127.0.0.9:8470", EVIL[:200]), None)
    line = formatter.format(record)
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    assert "<U+001B>[2J<U+202E>evil<U+000A>ALERT" in line
    try:
        raise ValueError("boom")
    except ValueError:
        failure = logging.LogRecord("ledger.node", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "Traceback (most recent call last):\n" in formatter.format(failure)


def test_a_dispute_mark_names_a_node_address_never_free_text():
    mark = {"holder": bytes(32), "answering": bytes(range(32)), "checked": 5}
    assert Dispute.from_wire("127.0.0.5", mark | {"node": "127.0.0.9:8470"}).node == "127.0.0.9:8470"
    for node in ("\x1b[2Jnode", "127.0.0.9:8470\u202e", "somewhere"):
        with pytest.raises(LedgerError, match="names no node address"):
            Dispute.from_wire("127.0.0.5", mark | {"node": node})


def test_the_serve_command_logs_through_the_escaping_formatter(monkeypatch):
    from ledger import cli

    handlers: list[logging.Handler] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: handlers.extend(kw["handlers"]))
    args = cli.build_parser().parse_args(["serve"])
    cli._setup_logging(args)
    assert type(handlers[0].formatter).__name__ == "ShownFormatter"
    assert threading.current_thread()   # (no node was started)
