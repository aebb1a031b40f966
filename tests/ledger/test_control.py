"""The node's local control socket (ledger/control.py): ``ledger lookup`` from the node's own data directory is
answered by that node without a proof, and every case the rule of docs/ledger.md ("Asking this machine's own
node") leaves out falls back to the proven lookup."""

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
from gossip_kit import Net, wait_until

from ledger import control
from ledger.assume_valid import AssumeValid, VerifyState
from ledger.cli import main

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets on this system")


@pytest.fixture
def base():
    # A short path: a Unix socket's path is bounded (108 bytes on Linux); pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="lc-") as path:
        yield Path(path)


@pytest.fixture
def net(base):
    with Net(base) as n:
        yield n


@pytest.fixture
def node(net):
    return net.registered_node()


def lookup(capsys, node, *extra, data_dir=None):
    code = main(["lookup", node.host, "--node", node.address, "--json",
                 "--data-dir", str(data_dir or node.ledger.data_dir), *extra])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_the_nodes_own_data_dir_is_answered_over_its_socket_with_the_proven_fields(node, capsys):
    path = control.socket_path(node.ledger.data_dir)
    assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o600
    code, own, _ = lookup(capsys, node)
    assert code == 0 and own["proof"] == "own node"
    code, proven, _ = lookup(capsys, node, "--prove")
    assert code == 0 and proven["proof"] == "verified"
    assert {k: v for k, v in own.items() if k != "proof"} == {k: v for k, v in proven.items() if k != "proof"}


def test_text_output_says_who_answered(node, capsys):
    code = main(["lookup", node.nickname, "--node", node.address, "--data-dir", str(node.ledger.data_dir)])
    out = capsys.readouterr().out
    assert code == 0 and node.identity.short_fingerprint in out
    assert "own ledger node" in out and "header chain" not in out


def test_no_binding_is_said_by_the_own_node_in_one_line(node, capsys):
    code = main(["lookup", "127.9.9.9", "--node", node.address, "--data-dir", str(node.ledger.data_dir)])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1 and "no ledger record for '127.9.9.9'" in err


def test_a_query_that_is_not_one_is_refused_as_by_the_proven_lookup(node, capsys):
    assert control.ask(node.ledger.data_dir, "not-an-ip", "ip") is None   # the node sends an error frame
    code = main(["lookup", "not-an-ip", "--by", "ip", "--node", node.address, "--data-dir",
                 str(node.ledger.data_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "'not-an-ip' is not an IP address" in err


def test_another_node_asked_from_this_data_dir_is_proven(net, node, capsys):
    other = net.node(seeds=[node.address])
    wait_until(lambda: other.ledger.lookup("ip", node.host, other.clock()), what="the other node synced")
    code = main(["lookup", node.host, "--node", other.address, "--json", "--data-dir", str(node.ledger.data_dir)])
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["proof"] == "verified" and answer["node"] == other.address


def test_another_network_named_on_the_command_line_is_not_answered_by_the_socket(node, capsys):
    assert control.ask(node.ledger.data_dir, node.host, None)["network"] == node.params.name
    code = main(["lookup", node.host, "--node", node.address, "--data-dir", str(node.ledger.data_dir),
                 "--network", "elsewhere"])
    out, err = capsys.readouterr()
    # Not this node's network: the proven path asks the node over TCP, which refuses a client of another network.
    assert code == 2 and out == "" and "elsewhere" in err


def test_a_block_not_yet_checked_after_a_fast_join_is_proven_instead(node, capsys):
    height = node.ledger.lookup("ip", node.host, node.clock()).height
    # The node's history up to its record's block is assumed valid and its background check has not reached it.
    node.assume_valid = AssumeValid(node.ledger.data_dir / "av.json", height, bytes(32), verified=height - 1,
                                    state=VerifyState.RUNNING)
    answer = control.ask(node.ledger.data_dir, node.host, None)
    assert answer["found"] and not answer["checked"]
    code, binding, _ = lookup(capsys, node)
    assert code == 0 and binding["proof"] == "verified"
    node.assume_valid.update(verified=height)
    assert control.ask(node.ledger.data_dir, node.host, None)["checked"]
    node.assume_valid.update(state=VerifyState.FAILED)
    failed = control.ask(node.ledger.data_dir, node.host, None)
    assert not failed["found"] and "forged" in failed["reason"]


def test_a_socket_in_a_directory_others_may_write_to_is_not_trusted(node, capsys):
    data_dir = node.ledger.data_dir
    assert control.ask(data_dir, node.host, None) is not None
    os.chmod(data_dir, 0o777)
    try:
        assert control.ask(data_dir, node.host, None) is None
        code, answer, _ = lookup(capsys, node)
        assert code == 0 and answer["proof"] == "verified"
    finally:
        os.chmod(data_dir, 0o700)


def test_a_socket_left_by_a_stopped_node_is_refused_then_replaced(net, base, capsys):
    data_dir = base / "restarted"
    data_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(control.socket_path(data_dir)))   # a socket file nobody listens on any more
    stale.close()
    assert control.ask(data_dir, "x", None) is None
    node = net.node(ledger=net.ledger("restarted"))
    wait_until(lambda: node.ledger.lookup("ip", node.host, node.clock()), what="registration")
    code, answer, _ = lookup(capsys, node)
    assert code == 0 and answer["proof"] == "own node"
    node.close()
    assert not control.socket_path(data_dir).exists()


def test_a_second_node_on_the_same_data_dir_leaves_the_first_ones_socket_alone(net, node):
    server = control.ControlServer(node.ledger.data_dir, lambda query, by: {})
    assert not server.start() and "another node answers" in (server.problem or "")
    server.close()
    assert control.ask(node.ledger.data_dir, node.host, None)["found"]


def test_a_control_request_other_than_lookup_gets_an_error_frame(node):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(control.socket_path(node.ledger.data_dir)))
    from p2pchat.foundation.transport import FramedSocket

    with FramedSocket(sock, control.CONTROL_PROTOCOL, timeout=5.0) as conn:
        conn.send("lookup_result", found=False, checked=False, node="x", network="y")
        assert conn.recv().type == "error"


# What `ledger lookup` must not import when its own node answers: the proof checking (pycryptodome, the light
# client, records and blocks, the header file's SQLite) and the start-up weights logging, shutil, dataclasses and
# hashlib (bench/startup_bench.py). A fresh interpreter runs the command against the node of this test.
OWN_NODE_PATH_MUST_NOT_IMPORT = ("Crypto", "sqlite3", "ledger.client", "ledger.records", "ledger.blocks",
                                 "ledger.sync", "ledger.header_store", "logging", "shutil", "dataclasses",
                                 "hashlib", "json")

_PROBE = """
import contextlib, io, sys
from ledger.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
sys.stderr.write(repr((code, out.getvalue(), sorted(sys.modules))))
"""


def _probe(node, *extra):
    import ast
    import subprocess
    import sys

    argv = ["lookup", node.host, "--node", node.address, "--data-dir", str(node.ledger.data_dir), *extra]
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60,
                          check=True)
    code, out, modules = ast.literal_eval(proc.stderr.strip().splitlines()[-1])
    heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in OWN_NODE_PATH_MUST_NOT_IMPORT)]
    return code, out, heavy


def test_a_lookup_answered_by_the_own_node_imports_no_proof_checking_or_start_up_weights(node):
    code, out, heavy = _probe(node)
    assert code == 0 and "own ledger node" in out
    assert heavy == []


def test_the_import_probe_sees_the_proof_checking_of_a_proven_lookup(node):
    # The same probe with --prove: the check above can fail.
    code, out, heavy = _probe(node, "--prove")
    assert code == 0 and "header chain" in out
    assert {"Crypto", "ledger.client", "ledger.records", "sqlite3", "logging"} <= set(heavy)
