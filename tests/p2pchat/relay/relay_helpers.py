"""Helpers for the relay tests: polling, a small inner (stand-in chat) protocol, raw relay clients that can
send what a well-behaved client never would, and a pairing shortcut."""

from __future__ import annotations

import queue
import threading
from typing import Any

from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.codec import Field, Protocol
from p2pchat.foundation.identity import Identity
from p2pchat.foundation.transport import FramedSocket
from p2pchat.relay import RelayLink, RelayRegistration, RelayServer, open_relay_link
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import LOGIN_CONTEXT, VERSION, expect, login_proof_data
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until  # noqa: F401  (re-exported for the tests here)

# Stands in for the chat protocol: the relay must carry it without knowing it.
INNER = Protocol("inner-test", {"msg": {"n": Field(int), "body": Field(bytes, max_len=1 << 20)}},
                 max_frame=(1 << 20) + 64)



def raw_login(identity: Identity, relay: RelayServer, role: str, *, source_ip: str | None = None,
              peer: bytes | None = None, ticket: bytes | None = None, network: str = "p2pchat",
              key: bytes | None = None, signer: Identity | None = None, address: str | None = None,
              nonce: bytes | None = None, version: int = VERSION,
              accept_unregistered: bool | None = True) -> FramedSocket:
    """Log in by hand. ``key`` replaces the DER sent, ``signer`` the key that signs, ``address`` the relay
    address signed and ``nonce`` the nonce signed, so tests can forge every part of the proof."""
    conn = connect_link((relay.host, relay.port), pin=relay.key.public, source_ip=source_ip, timeout=5)
    challenge = expect(conn, "challenge", 5, relay.address)
    der = identity.public_der if key is None else key
    proof = login_proof_data(challenge["nonce"] if nonce is None else nonce,
                             address or format_address(relay.host, relay.port), crypto.fingerprint(der), network)
    sig = (signer or identity).sign(LOGIN_CONTEXT, proof)
    conn.send("login", version=version, network=network, role=role, key=der, sig=sig, peer=peer, ticket=ticket,
              accept_unregistered=accept_unregistered)
    return conn


class Invites:
    """An ``on_invite`` callback that queues the links it receives."""

    def __init__(self) -> None:
        self.links: queue.Queue[RelayLink] = queue.Queue()
        self.taken: list[RelayLink] = []

    def __call__(self, link: RelayLink) -> None:
        self.links.put(link)

    def get(self, timeout: float = 10.0) -> RelayLink:
        link = self.links.get(timeout=timeout)
        self.taken.append(link)
        return link

    def close(self) -> None:
        while not self.links.empty():
            self.taken.append(self.links.get_nowait())
        for link in self.taken:
            link.close()


def register(identity: Identity, relay: RelayServer, source_ip: str, invites: Invites,
             **kw: Any) -> RelayRegistration:
    kw.setdefault("accept_unregistered", True)     # most tests pair keys that no ledger knows
    kw.setdefault("relay_key", relay.key.public)
    kw.setdefault("inner_protocol", INNER)
    reg = RelayRegistration(identity, relay.host, relay.port, on_invite=invites, source_ip=source_ip, timeout=5,
                            **kw).start()
    assert reg.wait_registered(10), reg.state_text
    return reg


def call(identity: Identity, relay: RelayServer, peer: Identity, source_ip: str, **kw: Any) -> RelayLink:
    kw.setdefault("relay_key", relay.key.public)
    kw.setdefault("inner_protocol", INNER)
    return open_relay_link(identity, relay.host, relay.port, peer.fingerprint, source_ip=source_ip,
                           timeout=kw.pop("timeout", 10), **kw)


class RelayEnv:
    """Relays, registrations and links of one test, all closed (in reverse order) when the test ends."""

    def __init__(self) -> None:
        self._closables: list[Any] = []
        self.invites = Invites()

    def own(self, obj: Any) -> Any:
        self._closables.append(obj)
        return obj

    def relay(self, cls: type[RelayServer] = RelayServer, **kw: Any) -> RelayServer:
        return self.own(cls(kw.pop("host", None) or free_loopback_ip(), kw.pop("port", 0), **kw).start())

    def register(self, identity: Identity, relay: RelayServer, source_ip: str | None = None,
                 invites: Invites | None = None, **kw: Any) -> RelayRegistration:
        return self.own(register(identity, relay, source_ip or free_loopback_ip(), invites or self.invites, **kw))

    def call(self, identity: Identity, relay: RelayServer, peer: Identity, source_ip: str | None = None,
             **kw: Any) -> RelayLink:
        return self.own(call(identity, relay, peer, source_ip or free_loopback_ip(), **kw))

    def pair(self, caller: Identity, callee: Identity, relay: RelayServer) -> tuple[RelayLink, RelayLink]:
        """Register ``callee``, let ``caller`` call it; returns (caller's link, callee's link)."""
        self.register(callee, relay)
        link = self.call(caller, relay, callee)
        return link, self.invites.get()

    def raw(self, identity: Identity, relay: RelayServer, role: str, **kw: Any) -> FramedSocket:
        return self.own(raw_login(identity, relay, role, **kw))

    def close(self) -> None:
        # Registrations first: closing one joins its answering workers, so no link reaches on_invite after the
        # invites are closed (a worker still answering when the test ended used to hand over a link nobody closed,
        # whose keepalive thread then outlived the test). Then the links handed to on_invite, then the other
        # clients, then the relays they use.
        registrations = [obj for obj in self._closables if isinstance(obj, RelayRegistration)]
        for reg in reversed(registrations):
            reg.close()
        self.invites.close()
        for obj in reversed(self._closables):
            if not isinstance(obj, RelayRegistration):
                obj.close()


def relay_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("relay")]
