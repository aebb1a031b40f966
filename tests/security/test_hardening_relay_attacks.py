"""Issue 11's relay attacks, against running ``p2pchat relay`` processes:

- a stranger's calls, answered by the callee, used up the callee's per-address connection slots;
- throwaway keys filled the relay's pending calls, and a call stayed pending after its caller hung up;
- one key rang a host hundreds of times;
- a key with no ledger record rang a host that never agreed to take such calls;
- a passive observer of the client↔relay link read who calls whom.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.errors import PeerUnreachable
from p2pchat.foundation.identity import Identity
from p2pchat.relay import RelayError, RelayLink, RelayRegistration, open_relay_link
from p2pchat.relay.cli import query_status
from p2pchat.relay.protocol import expect
from tests.conftest import free_loopback_ip, free_port, make_identities
from tests.integration.procs import Cluster
from tests.integration.test_relay_process import RelayProcess
from tests.p2pchat.relay.relay_helpers import INNER, Invites, raw_login, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ids() -> list[Identity]:
    return make_identities(6)


class Relay:
    """A relay process and the clients of one test, all closed at the end."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.host = free_loopback_ip()
        self.port = free_port(self.host)
        self.proc = RelayProcess(self.host, self.port, tmp_path / f"relay-{self.host}.log", *extra).start()
        self.key = query_status_when_up(self)
        self.closables: list[Any] = []
        self.invites = Invites()

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def as_server(self) -> SimpleNamespace:
        """What the raw-login helper needs to know of a relay."""
        return SimpleNamespace(host=self.host, port=self.port, address=self.address,
                               key=SimpleNamespace(public=self.key))

    def status(self) -> dict[str, Any]:
        return query_status(self.host, self.port, timeout=5)

    def register(self, identity: Identity, *, accept_unregistered: bool = False,
                 invites: Invites | None = None) -> RelayRegistration:
        reg = RelayRegistration(identity, self.host, self.port, on_invite=invites or self.invites,
                                inner_protocol=INNER, source_ip=free_loopback_ip(), timeout=10,
                                relay_key=self.key, accept_unregistered=accept_unregistered).start()
        self.closables.append(reg)
        assert reg.wait_registered(20), reg.state_text
        return reg

    def call(self, identity: Identity, peer: Identity, source_ip: str | None = None) -> RelayLink:
        link = open_relay_link(identity, self.host, self.port, peer.fingerprint, inner_protocol=INNER,
                               source_ip=source_ip or free_loopback_ip(), timeout=30, relay_key=self.key)
        self.closables.append(link)
        return link

    def raw(self, identity: Identity, role: str, **kw: Any) -> Any:
        conn = raw_login(identity, self.as_server(), role, **kw)   # type: ignore[arg-type]
        self.closables.append(conn)
        return conn

    def close(self) -> None:
        self.invites.close()
        for obj in reversed(self.closables):
            obj.close()
        assert self.proc.stop() == 0, self.proc.output()
        assert "Traceback" not in self.proc.output(), self.proc.output()


def query_status_when_up(relay: Relay) -> bytes:
    return bytes(relay.proc.wait_ready()["relay_key"])


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        relay.close()


def start(relays: list[Relay], tmp_path: Path, *extra: str) -> Relay:
    relay = Relay(tmp_path, *extra)
    relays.append(relay)
    return relay


def exchange(a: RelayLink, b: RelayLink, n: int) -> None:
    a.send("msg", n=n, body=b"hello")
    assert b.recv(timeout=10)["n"] == n


def test_answers_to_a_strangers_calls_do_not_use_up_the_callees_address_slots(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--max-per-ip", "4", "--rings-per-minute", "30")
    stranger, bob, carol = ids[0], ids[1], ids[2]
    relay.register(bob, accept_unregistered=True)          # bob takes anyone's calls
    # Six of the stranger's calls, answered and held open: bob's address now has 1 registration + 6 answers.
    for i in range(6):
        link = relay.call(stranger, bob, source_ip=free_loopback_ip())
        exchange(link, relay.invites.get(timeout=20), i)
    assert relay.status()["session_count"] == 6
    # An honest caller still reaches bob: his answer connection is not refused at his address.
    honest = relay.call(carol, bob)
    exchange(honest, relay.invites.get(timeout=20), 99)


def test_a_call_is_dropped_as_soon_as_its_caller_hangs_up(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--pair-timeout", "120")
    silent = relay.raw(ids[1], "register")                  # registered, never answers
    expect(silent, "registered", 10, relay.address)
    caller = relay.raw(ids[0], "call", peer=ids[1].fingerprint)
    assert expect(silent, "invite", 10, relay.address)["caller"] == ids[0].fingerprint
    assert relay.status()["pending"] == 1
    caller.close()
    # Far sooner than the 120 s pair timeout: the relay watches the caller's socket while the call waits.
    status = wait_until(lambda: (s := relay.status())["pending"] == 0 and s, 30, what="the call to be dropped")
    assert status["counters"]["hangups"] == 1


def test_pending_calls_are_capped_per_caller_address_and_per_callee(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--pair-timeout", "120", "--rings-per-minute", "10")
    silent = relay.raw(ids[5], "register")
    expect(silent, "registered", 10, relay.address)
    flooder = free_loopback_ip()
    refusals: list[str] = []
    for key in ids[:3]:                                      # 3 keys × 4 calls from one address
        for _ in range(4):
            conn = relay.raw(key, "call", peer=ids[5].fingerprint, source_ip=flooder)
            try:
                expect(conn, "paired", 0.5, relay.address)
            except RelayError as exc:
                refusals.append(str(exc))
            except PeerUnreachable:      # still waiting (no answer within 0.5 s): a pending call
                pass
    wait_until(lambda: relay.status()["pending"] == 8, 30, what="eight pending calls")
    assert sum(f"{flooder} already has 8 pairings waiting" in r for r in refusals) == 4
    # Another address with a fourth key hits the callee's own cap; nobody else's calls are affected.
    other = relay.raw(ids[3], "call", peer=ids[5].fingerprint)
    with pytest.raises(RelayError, match="already has 8 calls waiting"):
        expect(other, "paired", 10, relay.address)
    relay.register(ids[4], accept_unregistered=True)
    honest = relay.call(ids[3], ids[4])
    exchange(honest, relay.invites.get(timeout=20), 1)
    assert relay.status()["pending"] == 8                  # not the relay's 256


def test_one_key_ringing_one_host_is_refused_after_a_few_calls_a_minute(relays, tmp_path, ids):
    relay = start(relays, tmp_path)                          # default: 3 calls per minute per caller and host
    pest, bob, carol = ids[0], ids[1], ids[2]
    relay.register(bob, accept_unregistered=True)
    for i in range(3):
        link = relay.call(pest, bob)
        exchange(link, relay.invites.get(timeout=20), i)
        link.close()
    with pytest.raises(RelayError, match=r"you rang .* more than 3 times in a minute; try again in \d+ s"):
        relay.call(pest, bob)
    exchange(relay.call(carol, bob), relay.invites.get(timeout=20), 7)   # others still ring bob
    assert relay.status()["counters"]["rings_refused"] == 1


def test_a_key_without_a_ledger_record_cannot_ring_a_host_that_did_not_consent(relays, tmp_path, ids):
    relay = start(relays, tmp_path, "--no-ledger")           # no caller can be checked
    relay.register(ids[1])                                   # the default: callers need a ledger record
    with pytest.raises(RelayError, match="takes calls only from keys with a ledger record, and this relay has "
                                         "no ledger to check yours"):
        relay.call(ids[0], ids[1])
    # By default the relay asks this machine's ledger node; none runs at the relay's address here.
    default = start(relays, tmp_path)
    default.register(ids[1], invites=Invites())
    with pytest.raises(RelayError, match="the relay could not reach its ledger to check your key"):
        default.call(ids[0], ids[1])
    assert relay.invites.links.empty()                       # bob was never even rung
    assert relay.status()["counters"]["callers_refused"] == 1


def test_a_relay_with_a_ledger_pairs_registered_callers_and_refuses_strangers(relays, tmp_path, ids):
    ledger_host = free_loopback_ip()
    with Cluster(tmp_path / "ledger", [ids[0]]) as cluster:
        node = cluster.serve(ledger_host)
        node.wait_ready()
        node.wait_lookup(ledger_host, 60, what=f"the ledger host's record\n{cluster.logs()}")
        relay = start(relays, tmp_path, "--ledger", ledger_host)
        relay.register(ids[1])
        exchange(relay.call(ids[0], ids[1]), relay.invites.get(timeout=20), 1)     # ids[0] has a record
        with pytest.raises(RelayError, match="the relay's ledger has none for your key"):
            relay.call(ids[2], ids[1])
        status = relay.status()
        assert status["counters"]["callers_refused"] == 1 and status["limits"]["ledger"].startswith("ledger ")
        relays.remove(relay)
        relay.close()


class Tap:
    """A TCP forwarder on the path between clients and the relay that records every byte both ways (a passive
    observer). Bounded: at most ``limit`` connections; ``close()`` joins its threads."""

    def __init__(self, target: tuple[str, int], limit: int = 16) -> None:
        self.target = target
        self.host = free_loopback_ip()
        self.listener = socket.create_server((self.host, 0))
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self.limit = limit
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accept = threading.Thread(target=self._accept_loop, name="tap-accept")
        self._accept.start()

    def _accept_loop(self) -> None:
        for _ in range(self.limit):
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, source_address=(self.host, 0))
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), name="tap-pump")
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes the accept() of the accept thread
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._accept.join()
        for t in self._threads:
            t.join()


def test_a_passive_observer_of_the_relay_link_cannot_tell_who_calls_whom(relays, tmp_path, ids):
    alice, bob = ids[0], ids[1]
    host = free_loopback_ip()
    port = free_port(host)
    tap = Tap((host, port))
    try:
        # Clients dial the tap; the relay accepts login proofs for that address (as behind port forwarding).
        relay_proc = RelayProcess(host, port, tmp_path / "relay.log", "--public", f"{tap.host}:{tap.port}").start()
        key = bytes(relay_proc.wait_ready()["relay_key"])
        invites = Invites()
        reg = RelayRegistration(bob, tap.host, tap.port, on_invite=invites, inner_protocol=INNER,
                                source_ip=free_loopback_ip(), relay_key=key, accept_unregistered=True).start()
        try:
            assert reg.wait_registered(20), reg.state_text
            a = open_relay_link(alice, tap.host, tap.port, bob.fingerprint, inner_protocol=INNER,
                                source_ip=free_loopback_ip(), timeout=30, relay_key=key)
            invites.taken.append(a)
            b = invites.get(timeout=20)
            a.send("msg", n=1, body=b"SECRET-MARKER")
            assert b.recv(timeout=10)["body"] == b"SECRET-MARKER"
        finally:
            reg.close()
            invites.close()
        assert relay_proc.stop() == 0
    finally:
        tap.close()
    wire = bytes(tap.captured)
    assert len(wire) > 2000                                  # the observer did see the whole exchange
    for who in (alice, bob):
        fp = who.fingerprint
        for form in (fp, fp[:8], fp.hex().encode(), who.public_der[-64:]):
            assert form not in wire
    for word in (b"login", b"invite", b"paired", b"challenge", b"register", b"SECRET"):
        assert word not in wire
