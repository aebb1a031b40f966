"""--host auto: picking this machine's address and noticing when it moves (p2pchat.foundation.host_address)."""

from __future__ import annotations

import pytest

from p2pchat.foundation.host_address import (
    FORCED_CHECK_GAP,
    HostWatch,
    NoAddress,
    interface_addresses,
    usable,
)


class Machine:
    """The kernel's answers, changed by the test; ``looks`` counts how often the interfaces were read."""

    def __init__(self, addresses: dict[str, list[str]], route: str | None = None) -> None:
        self.addresses = addresses
        self.route = route
        self.looks = 0
        self.now = 100.0

    def read(self) -> dict[str, list[str]]:
        self.looks += 1
        return {name: list(ips) for name, ips in self.addresses.items()}

    def watch(self) -> HostWatch:
        return HostWatch(addresses=self.read, route_source=lambda: self.route, interval=5.0,
                         clock=lambda: self.now)


def test_the_default_routes_source_is_chosen_and_kept_while_it_exists() -> None:
    m = Machine({"eth0": ["10.0.0.5"], "wlan0": ["192.168.1.7"]}, route="192.168.1.7")
    watch = m.watch()
    assert (watch.current, watch.interface) == ("192.168.1.7", "wlan0")
    m.addresses["eth0"] = ["10.0.0.6"]      # another interface changing is not a move
    m.now += 5
    assert watch.check() is None
    assert watch.current == "192.168.1.7"


def test_a_new_lease_on_the_same_interface_is_the_new_address() -> None:
    m = Machine({"eth0": ["10.0.0.5", "fd00::5"], "eth1": ["172.16.0.2"]}, route=None)
    watch = m.watch()
    assert watch.current == "10.0.0.5"
    m.addresses["eth0"] = ["fd00::5", "10.0.0.9"]
    m.now += 5
    assert watch.check() == "10.0.0.9"       # same interface, same family preferred over the IPv6 one
    assert watch.current == "10.0.0.9"
    m.now += 5
    assert watch.check() is None


def test_the_interfaces_are_read_at_most_every_interval_and_sooner_once_after_a_suspicion() -> None:
    m = Machine({"eth0": ["10.0.0.5"]})
    watch = m.watch()
    looks = m.looks
    for _ in range(50):
        m.now += 0.05
        watch.check()
    assert m.looks == looks                   # 2.5 s: not yet
    m.addresses["eth0"] = ["10.0.0.8"]
    watch.suspect()
    assert watch.check() == "10.0.0.8"        # a socket error: looked at once
    for _ in range(9):                        # suspicions are bounded to one look a second
        watch.suspect()
        m.now += FORCED_CHECK_GAP / 10
        watch.check()
    assert m.looks == looks + 1
    m.now += FORCED_CHECK_GAP / 5
    watch.check()                             # the suspicion still stands: looked once the gap is over
    assert m.looks == looks + 2


def test_an_interface_left_without_address_keeps_the_old_one_until_another_appears() -> None:
    m = Machine({"eth0": ["10.0.0.5"]})
    watch = m.watch()
    m.addresses = {}
    m.now += 5
    assert watch.check() is None and watch.current == "10.0.0.5"
    m.addresses = {"wlan0": ["192.168.1.7"]}
    m.now += 5
    assert watch.check() == "192.168.1.7" and watch.interface == "wlan0"


def test_a_machine_with_only_loopback_and_link_local_addresses_is_told_so() -> None:
    with pytest.raises(NoAddress, match="--host IP"):
        Machine({}).watch()
    assert not usable("127.0.0.1") and not usable("fe80::1") and not usable("::1") and usable("fd00::1")


def test_this_machines_interfaces_list_only_usable_addresses() -> None:
    for ips in interface_addresses().values():
        assert ips and all(usable(ip) for ip in ips)
