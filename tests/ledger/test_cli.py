"""The ``ledger`` command line: answers, exit statuses and one-line errors (never a traceback).

Running nodes (``serve``/``join`` as real processes, Ctrl-C/SIGTERM) are covered by tests/integration."""

import json
import subprocess
import sys

import pytest
from gossip_kit import PARAMS, Net, config, grow

from ledger.cli import main
from ledger.local_ledger import LocalLedger, store_path
from ledger.params import NetworkParams
from p2pchat.foundation.identity import KEY_FILE
from tests.conftest import free_loopback_ip


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    """Commands that ask a node keep the light client's headers in the data directory: never the user's own."""
    monkeypatch.setenv("P2PCHAT_HOME", str(tmp_path / "home"))


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


@pytest.fixture
def node(net):
    return net.registered_node()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lookup_prints_the_checked_binding_as_json(node, capsys):
    code, out, _ = run(capsys, "lookup", node.host, "--node", node.address, "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["ip"] == node.host and answer["fingerprint"] == node.identity.fingerprint.hex()
    assert answer["proof"] == "verified" and answer["confirmations"] >= 1 and answer["height"] >= 1


def test_lookup_in_text_names_block_and_confirmations(node, capsys):
    code, out, _ = run(capsys, "lookup", node.nickname, "--node", node.address)
    assert code == 0
    assert node.nickname in out and "confirmation" in out and node.identity.short_fingerprint in out


def test_lookup_of_nothing_exits_1_with_one_line(node, capsys):
    code, out, err = run(capsys, "lookup", "127.9.9.9", "--node", node.address)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "no ledger record for '127.9.9.9'" in err


def test_asking_a_node_that_does_not_run_exits_2_with_one_line(capsys):
    code, _, err = run(capsys, "status", "--node", f"{free_loopback_ip()}:9")
    assert code == 2 and err.count("\n") == 1 and "cannot connect" in err and "Traceback" not in err


def test_status_shows_height_peers_and_own_record(node, capsys):
    code, out, _ = run(capsys, "status", "--host", node.host, "--port", str(node.port))
    assert code == 0 and "own record" in out and "mined in block" in out
    code, out, _ = run(capsys, "--host", node.host, "status", "--port", str(node.port), "--json")
    status = json.loads(out)
    assert code == 0 and status["height"] == node.ledger.height and status["own_record"]["ip"] == node.host


def test_verify_passes_on_a_good_store_and_fails_on_a_damaged_one(tmp_path, capsys):
    with LocalLedger(tmp_path, PARAMS) as ledger:
        grow(ledger, 3)
    code, out, _ = run(capsys, "verify", "--data-dir", str(tmp_path))
    assert code == 0 and "height 3" in out and "valid" in out
    path = store_path(tmp_path, PARAMS.name)
    data = bytearray(path.read_bytes())
    data[200:4000] = b"\xff" * 3800
    path.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", "--data-dir", str(tmp_path), "--network", PARAMS.name)
    assert code == 1 and "Traceback" not in err and ("damaged" in err or "INVALID" in out)


def test_verify_without_a_ledger_says_what_to_do(tmp_path, capsys):
    code, _, err = run(capsys, "verify", "--data-dir", str(tmp_path))
    assert code == 2 and "ledger serve" in err


def test_serve_on_a_foreign_file_or_with_another_difficulty_refuses_clearly(tmp_path, capsys, identities):
    identities[0].save(tmp_path / KEY_FILE)
    path = store_path(tmp_path, "p2pchat")
    path.write_bytes(b"this is somebody's spreadsheet, not a ledger" * 100)
    code, _, err = run(capsys, "serve", "--data-dir", str(tmp_path), "--host", free_loopback_ip())
    assert code == 2 and "is not a ledger database" in err and err.count("\n") == 1
    path.unlink()
    with LocalLedger(tmp_path, NetworkParams(difficulty_bits=9)):
        pass
    code, _, err = run(capsys, "serve", "--data-dir", str(tmp_path), "--difficulty", "12")
    assert code == 2 and "--difficulty only applies to a new network" in err


def test_usage_errors_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "serve", "--data-dir", str(tmp_path), "--no-inbound")
    assert code == 2 and "--no-inbound needs --relay" in err
    with pytest.raises(SystemExit) as exc:
        main(["lookup", "x", "--host", "not-an-ip"])
    assert exc.value.code == 2
    code, _, err = run(capsys, "join", "--data-dir", str(tmp_path), f"{free_loopback_ip()}:9", "--wait", "0")
    assert code == 2 and "cannot reach" in err


def test_join_refuses_a_peer_on_another_network(net, tmp_path, capsys):
    other = net.node(config=config(register=False))
    code, _, err = run(capsys, "join", other.address, "--network", "elsewhere", "--data-dir", str(tmp_path))
    assert code == 2 and "wrong ledger network" in err


def test_python_dash_m_ledger_runs_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "ledger", "lookup", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "IP|NAME|FINGERPRINT" in result.stdout


def test_reorg_lists_nothing_on_a_calm_ledger_and_refuses_an_unknown_branch(tmp_path, capsys):
    with LocalLedger(tmp_path, PARAMS):
        pass
    code, out, _ = run(capsys, "reorg", "--data-dir", str(tmp_path))
    assert code == 0 and "no parked branches" in out
    code, out, _ = run(capsys, "reorg", "--list", "--json", "--data-dir", str(tmp_path))
    assert code == 0 and json.loads(out) == []
    code, _, err = run(capsys, "reorg", "--accept", "00ab12cd", "--data-dir", str(tmp_path))
    assert code == 2 and "no parked branch" in err and err.count("\n") == 1


def test_finality_options_are_checked(tmp_path, capsys):
    for argv in (["join", "127.0.0.1", "--checkpoint", "5:abcd"], ["join", "127.0.0.1", "--checkpoint", "x"],
                 ["serve", "--finality-depth", "0"], ["serve", "--finality-seconds", "soon"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--data-dir", str(tmp_path)])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "is not HEIGHT:HASH" in err and "at least 1" in err
