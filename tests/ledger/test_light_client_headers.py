"""The light client keeps its verified headers in the data directory: a restart asks only for the new suffix, a
damaged or foreign file is moved aside with a plain message, a fork below the stored tip is followed, and a
branch below a block a node reported final is refused."""

import sqlite3
import time

import pytest
from gossip_kit import PARAMS, Net, config, grow, next_block, wait_until

from ledger.chain import FinalityPolicy
from ledger.cli import main
from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.header_store import HeaderStore, header_file_path
from ledger.sync import HeaderChain


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def client_of(node, data_dir):
    return LedgerClient(node.host, node.port, network=PARAMS, pin_dir=data_dir)


def test_a_restarted_client_asks_only_for_the_headers_after_its_stored_tip(net, tmp_path):
    node = net.node(config=config(register=False))
    grow(node.ledger, 30)
    first = client_of(node, tmp_path)
    assert first.sync_headers() == 30 and first.headers_received == 30
    first.close()
    assert header_file_path(tmp_path, PARAMS, node.host, node.port).is_file()
    grow(node.ledger, 7)
    again = client_of(node, tmp_path)
    assert again.height == 30  # before any contact: the stored chain
    assert again.sync_headers() == 37
    assert again.headers_received == 7
    assert again.header(37).hash == node.ledger.tip_info()[1]
    third = client_of(node, tmp_path)
    assert third.sync_headers() == 37 and third.headers_received == 0


@pytest.mark.parametrize(("spoil", "reason"), [
    (lambda path: path.write_bytes(b"\x00garbage" * 100 + path.read_bytes()[800:]), "SQLite reports"),
    (lambda path: (path.unlink(), sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()),
     "not a p2pchat light-client header file"),
])
def test_a_damaged_or_foreign_header_file_is_moved_aside_with_a_plain_message(net, tmp_path, spoil, reason):
    node = net.node(config=config(register=False))
    grow(node.ledger, 12)
    client = client_of(node, tmp_path)
    client.sync_headers()
    client.close()
    path = header_file_path(tmp_path, PARAMS, node.host, node.port)
    spoil(path)
    fresh = client_of(node, tmp_path)
    assert fresh.sync_headers() == 12 and fresh.headers_received == 12
    assert fresh.header_problem is not None
    assert f"header file {path} cannot be used" in fresh.header_problem and reason in fresh.header_problem
    assert "moved it to" in fresh.header_problem and "fetching the headers again from genesis" in fresh.header_problem
    assert list(tmp_path.glob(f"{path.name}.damaged-*"))


def test_a_header_file_of_another_network_is_not_used(tmp_path):
    other = PARAMS.__class__(name=PARAMS.name, difficulty_bits=PARAMS.difficulty_bits + 1)
    path = header_file_path(tmp_path, PARAMS, "127.0.0.1", 8470)
    HeaderStore(other, path).close()   # a file of another network under this network's name
    store = HeaderStore(PARAMS, path)
    assert store.problem is not None and "headers of another network" in store.problem
    assert store.height == 0
    store.close()


def test_a_fork_below_the_stored_tip_is_followed_after_a_restart(net, tmp_path):
    node = net.node(config=config(register=False))
    main = grow(node.ledger, 5)
    client = client_of(node, tmp_path)
    assert client.sync_headers() == 5
    client.close()
    parent = main[1].header
    branch = []
    for i in range(5):  # heights 3..7 on block 2: more work than the stored tip at 5
        block = next_block(parent, (), main[1].header.timestamp + 30 + i)
        assert node.ledger.receive_block(block, time.time()).status == "added"
        branch.append(block)
        parent = block.header
    restarted = client_of(node, tmp_path)
    assert restarted.sync_headers() == 7
    assert [restarted.header(h).hash for h in (2, 3, 7)] == [main[1].hash, branch[0].hash, branch[-1].hash]
    assert restarted.headers_received == 5  # the branch only: the locator found block 2


def test_a_branch_below_a_block_a_node_reported_final_is_refused_with_a_reason(net, tmp_path):
    honest = net.node(ledger=net.ledger("honest", finality=FinalityPolicy(min_hold=0)), config=config(register=False))
    grow(honest.ledger, 10)   # depth 6 with no minimum hold: block 5 is final on the honest node at once
    other = net.node(config=config(register=False))
    grow(other.ledger, 14, start=int(time.time()) - 500)   # another history from genesis, with more work
    client = client_of(honest, tmp_path)
    client.sync_headers()
    path = header_file_path(tmp_path, PARAMS, honest.host, honest.port)
    final = HeaderChain(PARAMS, HeaderStore(PARAMS, path)).final()
    assert final is not None and final[0] == 5
    # The same node's address now serves the other history (the header file is the one of the node first asked,
    # as for a chat node whose own ledger node moved to another address).
    switched = client_of(honest, tmp_path)
    assert switched.height == 10
    switched.ip, switched.port = other.host, other.port
    with pytest.raises(LedgerError, match=r"is on another history than this client: a branch forking at block 0 .*"
                                          r"would replace block 5 .* reported final to this client; not following"):
        switched.sync_headers()
    assert switched.height == 10 and switched.header(10).hash == honest.ledger.tip_info()[1]


def test_the_header_chain_in_memory_and_on_disk_agree(tmp_path):
    memory = HeaderChain(PARAMS)
    disk = HeaderChain(PARAMS, HeaderStore(PARAMS, tmp_path / "h.sqlite"))
    parent, headers = PARAMS.genesis().header, []
    for i in range(25):
        block = next_block(parent, (), int(time.time()) - 100 + i)
        headers.append(block.header)
        parent = block.header
    for chain in (memory, disk):
        assert chain.extend(headers[:10], time.time()) == (0, 10)
        assert chain.extend(headers[5:], time.time()) == (10, 25)   # a resent overlap is skipped
    assert memory.locator() == disk.locator()
    assert memory.work == disk.work == 25 * headers[0].work
    reopened = HeaderChain(PARAMS, HeaderStore(PARAMS, tmp_path / "h.sqlite"))
    assert reopened.tip.hash == headers[-1].hash and reopened.at(13) == headers[12]


def test_ledger_lookup_from_the_command_line_fetches_only_new_headers_the_second_time(net, tmp_path, caplog):
    node = net.node()
    wait_until(lambda: node.ledger.lookup("ip", node.host, node.clock()), what="registration")
    grow(node.ledger, 20)
    data_dir = tmp_path / "home"
    data_dir.mkdir()
    argv = ["lookup", node.host, "--node", node.address, "--data-dir", str(data_dir), "-v"]
    height = node.ledger.height
    with caplog.at_level("INFO", logger="ledger.client"):
        assert main(argv) == 0
        assert f"sent {height} headers; verified header chain at height {height}" in caplog.text
        caplog.clear()
        grow(node.ledger, 3)
        assert main(argv) == 0
        assert f"sent 3 headers; verified header chain at height {height + 3}" in caplog.text
