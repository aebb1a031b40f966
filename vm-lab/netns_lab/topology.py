"""The lab's network: a switch namespace with a bridge, one namespace per host, and a NAT router.

::

        A 10.77.0.11    B 10.77.0.12    R 10.77.0.10 (relay)     router wan0 10.77.0.1
            |               |               |                        |   (masquerade, no inbound)
        ----+---------------+---- br0 in <name>-sw ------------------+
                                                                     router lan0 10.77.1.1
                                                                         |
                                                                     C 10.77.1.2 (default route via the router)

Every interface is created inside a lab namespace (the veth pairs are made in the switch or router namespace
with their other end moved straight into the host's namespace), so the machine's own namespace never holds a
lab address or a route into the lab. Namespaces are named ``<name>-<host>``; :func:`cleanup` finds them by
that prefix, stops the processes inside them and deletes them.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from dataclasses import dataclass, field

from netns_lab.shell import LabError, run

LAN = ipaddress.ip_network("10.77.0.0/24")
BEHIND_NAT = ipaddress.ip_network("10.77.1.0/24")
ROUTER_WAN_IP = "10.77.0.1"
ROUTER_LAN_IP = "10.77.1.1"
RELAY_IP = "10.77.0.10"
SWITCH = "sw"
ROUTER = "nat"
BRIDGE = "br0"
SPLIT_BRIDGE = "br1"   # the other side of a partition
DEFAULT_PEERS = ("a", "b", "c")
DEFAULT_NATTED = ("c",)
RELAY = "r"


@dataclass
class Host:
    """One machine of the lab."""

    name: str
    ip: str
    ns: str
    port: str            # this host's veth end in the switch (or router) namespace
    behind_nat: bool = False
    role: str = "peer"   # "peer" or "relay"


@dataclass
class Topology:
    """Builds, changes and removes one lab. ``name`` prefixes every namespace it creates."""

    name: str = "p2plab"
    peers: tuple[str, ...] = DEFAULT_PEERS
    natted: tuple[str, ...] = DEFAULT_NATTED
    with_relay: bool = True
    hosts: dict[str, Host] = field(default_factory=dict)
    built: bool = False
    _next_lan: int = 11
    _next_natted: int = 2

    def __post_init__(self) -> None:
        for peer in self.peers:
            if not peer.isalnum() or not peer.islower() or len(peer) > 8 or peer in (SWITCH, ROUTER, RELAY):
                raise LabError(f"host name '{peer}' must be 1-8 lowercase letters/digits and not sw, nat or r")
        unknown = set(self.natted) - set(self.peers)
        if unknown:
            raise LabError(f"the NAT'd hosts {sorted(unknown)} are not among the peers {list(self.peers)}")

    # ---- names -------------------------------------------------------------------------------------------
    def ns(self, host: str) -> str:
        """Namespace name of ``host`` (also accepts ``sw`` and ``nat``)."""
        return f"{self.name}-{host}"

    @property
    def switch_ns(self) -> str:
        return self.ns(SWITCH)

    @property
    def router_ns(self) -> str:
        return self.ns(ROUTER)

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"the lab has no host '{name}' (hosts: {', '.join(self.hosts)})") from None

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    # ---- building ----------------------------------------------------------------------------------------
    def build(self) -> None:
        """Create the switch, the router (when a host is NAT'd), the relay and the peers."""
        if self.built:
            return
        leftovers = namespaces(self.name)
        if leftovers:
            raise LabError(f"namespaces of an earlier lab are still there ({', '.join(leftovers)}); "
                           f"remove them with: vm-lab/netns down")
        self.built = True   # from here on teardown() has something to remove
        self._add_ns(SWITCH)
        run(["ip", "-n", self.switch_ns, "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "-n", self.switch_ns, "link", "set", BRIDGE, "up"])
        if self.natted:
            self._build_router()
        if self.with_relay:
            self._add_lan_host(RELAY, RELAY_IP, role="relay")
        for peer in self.peers:
            if peer in self.natted:
                self._add_natted_host(peer)
            else:
                self.add_host(peer)

    def add_host(self, name: str, ip: str | None = None) -> Host:
        """Plug one more machine into the switch (scenarios use this for hosts that join later)."""
        if name in self.hosts:
            raise LabError(f"the lab already has a host '{name}'")
        if ip is None:
            ip = self._free_lan_ip()
        return self._add_lan_host(name, ip, role="peer")

    def _free_lan_ip(self) -> str:
        taken = {h.ip for h in self.hosts.values()} | {ROUTER_WAN_IP, RELAY_IP}
        while True:
            ip = str(LAN[self._next_lan])
            self._next_lan += 1
            if ip not in taken:
                return ip

    def _add_ns(self, name: str) -> None:
        ns = self.ns(name)
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _add_lan_host(self, name: str, ip: str, *, role: str) -> Host:
        self._add_ns(name)
        port = f"p-{name}"
        self._veth(self.switch_ns, port, self.ns(name), "eth0")
        run(["ip", "-n", self.switch_ns, "link", "set", port, "master", BRIDGE])
        run(["ip", "-n", self.switch_ns, "link", "set", port, "up"])
        self._address(self.ns(name), "eth0", ip, LAN.prefixlen)
        host = Host(name=name, ip=ip, ns=self.ns(name), port=port, role=role)
        self.hosts[name] = host
        return host

    def _add_natted_host(self, name: str) -> Host:
        self._add_ns(name)
        ip = str(BEHIND_NAT[self._next_natted])
        self._next_natted += 1
        port = f"l-{name}"
        self._veth(self.router_ns, port, self.ns(name), "eth0")
        run(["ip", "-n", self.router_ns, "link", "set", port, "master", "lan0"])
        run(["ip", "-n", self.router_ns, "link", "set", port, "up"])
        self._address(self.ns(name), "eth0", ip, BEHIND_NAT.prefixlen)
        run(["ip", "-n", self.ns(name), "route", "add", "default", "via", ROUTER_LAN_IP])
        host = Host(name=name, ip=ip, ns=self.ns(name), port=port, behind_nat=True)
        self.hosts[name] = host
        return host

    def _build_router(self) -> None:
        """A home router: LAN bridge ``lan0`` behind, ``wan0`` on the switch; masquerades outgoing
        connections and forwards nothing that starts outside."""
        self._add_ns(ROUTER)
        ns = self.router_ns
        self._veth(self.switch_ns, f"p-{ROUTER}", ns, "wan0")
        run(["ip", "-n", self.switch_ns, "link", "set", f"p-{ROUTER}", "master", BRIDGE])
        run(["ip", "-n", self.switch_ns, "link", "set", f"p-{ROUTER}", "up"])
        self._address(ns, "wan0", ROUTER_WAN_IP, LAN.prefixlen)
        run(["ip", "-n", ns, "link", "add", "lan0", "type", "bridge"])
        self._address(ns, "lan0", ROUTER_LAN_IP, BEHIND_NAT.prefixlen)
        # /proc/sys/net is per network namespace, so this switches forwarding on for the router only.
        run(["ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        ruleset = f"""
table ip {self.name}-nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" ip saddr {BEHIND_NAT} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
    }}
}}
"""
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input_text=ruleset)

    def _veth(self, ns_here: str, name_here: str, ns_there: str, name_there: str) -> None:
        run(["ip", "-n", ns_here, "link", "add", name_here, "type", "veth", "peer", "name", name_there,
             "netns", ns_there])

    def _address(self, ns: str, dev: str, ip: str, prefixlen: int) -> None:
        run(["ip", "-n", ns, "addr", "add", f"{ip}/{prefixlen}", "dev", dev])
        run(["ip", "-n", ns, "link", "set", dev, "up"])

    # ---- changing ----------------------------------------------------------------------------------------
    def partition(self, group: list[str]) -> None:
        """Split the switch in two: the ``group`` hosts on one side, everyone else on the other."""
        ns = self.switch_ns
        if run(["ip", "-n", ns, "link", "show", SPLIT_BRIDGE], check=False).returncode != 0:
            run(["ip", "-n", ns, "link", "add", SPLIT_BRIDGE, "type", "bridge"])
            run(["ip", "-n", ns, "link", "set", SPLIT_BRIDGE, "up"])
        for name in group:
            h = self.host(name)
            # A NAT'd host reaches the switch through the router's port: moving it moves the whole home.
            port = f"p-{ROUTER}" if h.behind_nat else h.port
            run(["ip", "-n", ns, "link", "set", port, "master", SPLIT_BRIDGE])

    def heal(self) -> None:
        """Put every switch port back on the one bridge."""
        ns = self.switch_ns
        listing = run(["ip", "-n", ns, "-o", "link", "show", "master", SPLIT_BRIDGE], check=False)
        for line in listing.stdout.splitlines():
            port = line.split(":")[1].strip().split("@")[0]
            run(["ip", "-n", ns, "link", "set", port, "master", BRIDGE])

    def change_address(self, host: str, new_ip: str) -> None:
        """Give ``host`` a new LAN address (the old one disappears, as after a new DHCP lease)."""
        h = self.host(host)
        if h.behind_nat:
            raise LabError("changing the address of a NAT'd host is not part of the lab")
        if ipaddress.ip_address(new_ip) not in LAN or new_ip in {x.ip for x in self.hosts.values()}:
            raise LabError(f"{new_ip} is not a free address in {LAN}")
        # Old one first: deleting a primary address also deletes the secondaries of its subnet.
        run(["ip", "-n", h.ns, "addr", "del", f"{h.ip}/{LAN.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", h.ns, "addr", "add", f"{new_ip}/{LAN.prefixlen}", "dev", "eth0"])
        h.ip = new_ip

    # ---- removing ----------------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop every process left in the lab's namespaces and delete them."""
        cleanup(self.name)
        self.hosts.clear()
        self.built = False


def namespaces(name: str) -> list[str]:
    """The namespaces that belong to the lab called ``name``."""
    # Host names hold no '-', so the lab "p2plab" does not claim the namespaces of the lab "p2plab-run".
    return sorted(ns for ns in all_namespaces() if ns.startswith(f"{name}-") and "-" not in ns[len(name) + 1:])


def all_namespaces(prefix: str = "") -> list[str]:
    """Every network namespace whose name starts with ``prefix``."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    found = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return sorted(ns for ns in found if ns.startswith(prefix))


def namespace_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def stop_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM ``pids``, then SIGKILL whichever is still alive after ``grace`` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cleanup(name: str) -> list[str]:
    """Remove every namespace of the lab ``name`` and the processes running in them; returns what was removed."""
    return remove_namespaces(namespaces(name))


def remove_namespaces(found: list[str]) -> list[str]:
    """Stop the processes inside ``found`` (only those, each by its id), then delete the namespaces."""
    pids = sorted({pid for ns in found for pid in namespace_pids(ns) if pid != os.getpid()})
    if pids:
        stop_pids(pids)
    for ns in found:
        run(["ip", "netns", "del", ns], check=False)
    return found
