"""``--host auto``: this machine's own address, followed while it changes (a new DHCP lease, another Wi-Fi).

:class:`HostWatch` picks the address (the source address of the default route, else the first global address of
any interface) and, when asked at most every ``interval`` seconds (sooner after a socket error, at most once a
second), says when it changed: the address is gone, so the interface it was on (else the default route) names the
new one. :class:`HostFollower` is the thread that asks and calls its owner back. Addresses come from the kernel
(``ioctl`` per interface for IPv4, ``/proc/net/if_inet6`` for IPv6; on other systems only the default route's
source): nothing is sent anywhere.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from p2pchat.foundation.errors import UserError

log = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0      # seconds between two looks at the interfaces
FORCED_CHECK_GAP = 1.0    # a socket error asks sooner, but never more than once a second
_SIOCGIFADDR = 0x8915
# Errors that mean "the address this socket is bound to is gone" (worth an early look at the interfaces).
ADDRESS_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH})

Addresses = dict[str, list[str]]    # interface name → its usable addresses, in the kernel's order


class NoAddress(UserError):
    """This machine has no usable address for ``--host auto``."""


def usable(ip: str) -> bool:
    """An address others can dial: not loopback, link-local, multicast or unspecified."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    return not (addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified)


def interface_addresses() -> Addresses:
    """The usable addresses of every interface (IPv4 first, then IPv6)."""
    found: Addresses = {}
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    if names:
        import fcntl

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for name in names:
                try:
                    packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
                except OSError:
                    continue   # no IPv4 address on it
                ip = socket.inet_ntoa(packed[20:24])
                if usable(ip):
                    found.setdefault(name, []).append(ip)
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[3] != "00":    # global scope only
            continue
        ip = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
        if usable(ip):
            found.setdefault(parts[5], []).append(ip)
    return found


def default_route_source(family: int = socket.AF_INET) -> str | None:
    """The address the kernel would send from to the internet (a UDP connect: no packet leaves)."""
    target = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"   # documentation ranges
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            ip = str(s.getsockname()[0])
    except OSError:
        return None
    return ip if usable(ip) else None


class HostWatch:
    """This machine's address for ``--host auto``, and whether it changed (see the module docstring).

    ``addresses`` and ``route_source`` are the kernel's answers (replaced in tests); ``clock`` is monotonic."""

    def __init__(self, *, addresses: Callable[[], Addresses] = interface_addresses,
                 route_source: Callable[[], str | None] = default_route_source,
                 interval: float = CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self._addresses = addresses
        self._route_source = route_source
        self.interval = interval
        self._clock = clock
        self.interface: str | None = None
        current = self._pick(addresses(), prefer=None)
        if current is None:
            raise NoAddress("--host auto: this machine has no address others can reach (only loopback or "
                            "link-local ones); connect it to a network or give --host IP")
        self.current: str = current
        self._next = clock() + interval
        self._forced_at = float("-inf")
        self._force = False

    def _pick(self, found: Addresses, prefer: str | None) -> str | None:
        """``prefer`` if it still exists; else an address of the same interface (same family first); else the
        default route's source; else the first address of any interface."""
        where = {ip: name for name, ips in found.items() for ip in ips}
        if prefer is not None and prefer in where:
            return prefer
        family = None if prefer is None else ipaddress.ip_address(prefer).version
        same_if = found.get(self.interface or "", [])
        ranked = sorted(same_if, key=lambda ip: ipaddress.ip_address(ip).version != family)
        choice = ranked[0] if ranked else None
        if choice is None:
            route = self._route_source()
            choice = route if route in where else None
        if choice is None:
            choice = next((ip for ips in found.values() for ip in ips), None)
        if choice is not None:
            self.interface = where[choice]
        return choice

    def suspect(self) -> None:
        """A socket error hinted that the address is gone: look again soon (at most once a second)."""
        self._force = True

    def check(self) -> str | None:
        """The new address if it changed since the last answer, else None. Looks at the interfaces at most every
        ``interval`` seconds, or once a second after :meth:`suspect`; with no usable address at all the old one
        is kept (a network going down for a moment is not a move)."""
        now = self._clock()
        forced = self._force and now - self._forced_at >= FORCED_CHECK_GAP
        if now < self._next and not forced:
            return None
        if forced:
            self._forced_at = now
        self._force = False
        self._next = now + self.interval
        new = self._pick(self._addresses(), prefer=self.current)
        if new is None or new == self.current:
            return None
        self.current = new
        return new


class HostFollower:
    """The thread that asks a :class:`HostWatch` (several times a second, so a suspicion is acted on at once)
    and calls ``on_change(old, new)`` when the address moved. Owned and joined by :meth:`close`."""

    def __init__(self, watch: HostWatch, on_change: Callable[[str, str], None], *, name: str) -> None:
        self.watch = watch
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name)

    def start(self) -> HostFollower:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            old = self.watch.current
            new = self.watch.check()
            if new is None:
                continue
            log.warning("this machine's address changed from %s to %s: moving there", old, new)
            try:
                self._on_change(old, new)
            except UserError as exc:    # e.g. the port is taken at the new address; tried again at the next look
                log.warning("cannot move to %s: %s", new, exc)
                self.watch.current = old
