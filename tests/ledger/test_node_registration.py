"""A node registers this machine's key for its address, renews it before it expires, publishes an update when
the address changes, and publishes a relay hint instead of an address when it cannot be dialled."""

import socket

import pytest
from gossip_kit import Net, config, wait_until

from ledger.client import LedgerClient
from ledger.errors import LedgerError
from ledger.node import default_nickname
from p2pchat.foundation.host_address import HostWatch
from tests.conftest import free_loopback_ip


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path) as n:
        yield n


def own(node):
    return node.ledger.lookup("fp", node.identity.fingerprint, node.clock())


def test_a_node_registers_its_key_for_its_address_with_ports_and_nickname(net):
    node = net.node(chat_port=9999, nickname="alice")
    answer = wait_until(lambda: own(node), what="registration")
    record = answer.record
    assert (record.ip, record.port, record.ledger_port, record.nickname) == (node.host, 9999, node.port, "alice")
    assert node.status()["own_record"]["state"] == "mined"
    assert node.ensure_registered() is None  # nothing to do while the record is fresh


def test_the_record_is_renewed_before_it_expires(net):
    node = net.node(config=config(record_lifetime=6, renew_fraction=0.5))
    first = wait_until(lambda: own(node), what="registration").record
    renewed = wait_until(lambda: (a := own(node)) and a.record.seq > first.seq and a.record, timeout=20,
                         what="renewal")
    assert renewed.ip == first.ip and renewed.expires > first.expires and renewed.prev == first.id


def test_a_node_started_on_another_address_publishes_an_update(net):
    seed = net.node(config=config(register=False))
    identity = net.identity()
    first = net.node(identity=identity, seeds=[seed.address])
    wait_until(lambda: seed.ledger.lookup("ip", first.host, seed.clock()), what="first registration")
    ledger_dir = first.ledger.data_dir
    first.close()
    first.ledger.close()
    moved = net.node(identity=identity, ledger=net.ledger(ledger_dir.name), seeds=[seed.address],
                     nickname=first.nickname)
    wait_until(lambda: seed.ledger.lookup("ip", moved.host, seed.clock()), what="the update to be mined")
    answer = seed.ledger.lookup("fp", identity.fingerprint, seed.clock())
    assert answer.record.seq == 1 and answer.record.ip == moved.host
    assert seed.ledger.lookup("ip", first.host, seed.clock()) is None  # the old address is free again


def test_a_node_following_its_address_moves_and_publishes_the_update_while_running(net):
    """--host auto (p2pchat.foundation.host_address): the address changes under a running node; it listens at
    the new one, publishes the update and is dialled there; the old address stops answering."""
    old_ip, new_ip = free_loopback_ip(), free_loopback_ip()
    interfaces = {"eth0": [old_ip]}
    watch = HostWatch(addresses=lambda: dict(interfaces), route_source=lambda: None, interval=0.2)
    seed = net.node(config=config(register=False))
    mover = net.node(seeds=[seed.address], host_watch=watch)
    assert mover.host == old_ip
    wait_until(lambda: seed.ledger.lookup("ip", old_ip, seed.clock()), what="the first registration")
    interfaces["eth0"] = [new_ip]
    answer = wait_until(lambda: (a := seed.ledger.lookup("fp", mover.identity.fingerprint, seed.clock()))
                        and a.record.ip == new_ip and a, what="the update to be mined on the seed")
    assert (answer.record.ledger_port, answer.record.nickname) == (mover.port, mover.nickname)
    assert seed.ledger.lookup("ip", old_ip, seed.clock()) is None
    assert mover.host == new_ip and mover.status()["host"] == new_ip
    assert LedgerClient(new_ip, mover.port, source_ip=seed.host, network=net.params.name).lookup(
        mover.nickname, by="nick").ip == new_ip
    with pytest.raises(OSError):
        socket.create_connection((old_ip, mover.port), timeout=2).close()
    wait_until(lambda: any(p.ip == new_ip for p in seed.peers()), what="the seed connected to the new address")


def test_a_node_without_inbound_connections_publishes_only_a_relay_hint(net):
    seed = net.node(config=config(register=False))
    hidden = net.node(seeds=[seed.address], no_inbound=True, relay="127.0.0.1:8472", nickname="behind-nat")
    wait_until(lambda: seed.ledger.lookup("nick", "behind-nat", seed.clock()), what="relay-only registration")
    binding = LedgerClient(seed.host, seed.port).lookup("behind-nat")
    assert binding.ip is None and binding.port is None and binding.relay == "127.0.0.1:8472"
    assert binding.address is None
    # It announced no listen port: the seed does not offer it to others as a peer address.
    assert all(p.listen_addr is None for p in seed.peers())
    assert f"{hidden.host}:{hidden.port}" not in seed._share_addresses(exclude=None)


def test_a_node_without_inbound_connections_needs_a_relay_hint(net):
    with pytest.raises(LedgerError, match="relay hint"):
        net.node(no_inbound=True, start=False)


def test_a_nickname_clash_registers_the_address_without_the_nickname_and_says_so(net):
    owner = net.node(nickname="taken")
    wait_until(lambda: own(owner), what="owner registration")
    rival = net.node(seeds=[owner.address], nickname="TAKEN")
    problem = wait_until(lambda: rival.status()["nickname_problem"], what="the clash reported")
    assert "nickname 'TAKEN' is taken by another key" in problem and "ledger update --nickname" in problem
    mined = wait_until(lambda: rival.ledger.lookup("ip", rival.host, rival.clock()), what="the rival's address")
    assert mined.record.nickname == "" and mined.record.key == rival.identity.public_der
    assert owner.ledger.lookup("nick", "taken", owner.clock()).record.key == owner.identity.public_der
    assert rival.status()["registration_error"] is None


def test_the_default_nickname_comes_from_the_key_not_the_host(net):
    name = default_nickname(bytes.fromhex("ab" * 32))
    assert name == "user-abababab"
    node = net.node(start=False)
    assert node.nickname == default_nickname(node.identity.fingerprint)
    assert node.host not in node.nickname and socket.gethostname().split(".")[0] not in node.nickname
