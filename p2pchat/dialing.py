"""Finding and reaching a peer: resolve what the user typed, dial directly first, fall back to a relay.

``resolve_target`` turns an IP, ``ip:port``, nickname or fingerprint into a :class:`PeerTarget` (where to dial,
the peer's relay hint and fingerprint when the ledger knows them). ``dial`` opens the connection: TCP straight
to the peer within ``direct_timeout``, and on a timeout, a refusal or no address, through the peer's relay hint
or the node's own relay. The result says which path is in use.

A call *by address* (an IP or ``ip:port``) never uses a relay: the record that binds an address is reached at
that address or not at all. The relay hint is written by the key holder itself, so following it would let a
record that squats an address (a key that never answers there) receive every call made to that address
(docs/security.md §4). Relay-only hosts, and hosts whose direct path fails, are called by nickname or
fingerprint, where the user names the key rather than the place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.chat_protocol import CHAT
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import CHAT_PORT, format_address, parse_address
from p2pchat.foundation.errors import AddressError, PeerUnreachable, UserError
from p2pchat.foundation.transport import connect
from p2pchat.links import Binding, Link
from p2pchat.peer_directory import PeerDirectory, PeerNotFound, query_kind

log = logging.getLogger(__name__)

DIRECT = "direct"


@dataclass(frozen=True)
class PeerTarget:
    """Where a peer can be reached, as far as the query and the ledger tell."""

    query: str
    ip: str | None = None
    port: int | None = None
    relay: str | None = None            # the peer's relay hint ("ip:port") from its ledger record
    fingerprint: bytes | None = None    # needed to ask a relay for the peer
    nickname: str | None = None
    note: str | None = None             # why the ledger could not help, or its dispute mark; shown if dialing fails
    by_address: bool = False            # the user named an address: reach it there or not at all (no relay)

    @property
    def address(self) -> str | None:
        return format_address(self.ip, self.port) if self.ip and self.port else None


def _explicit_address(query: str) -> tuple[str, int] | None:
    """``(ip, port)`` when the query is ``ip:port`` / ``[v6]:port``, else None."""
    text = query.strip()
    if (text.startswith("[") and "]:" in text) or text.count(":") == 1:
        try:
            return parse_address(text, CHAT_PORT)
        except AddressError:
            return None
    return None


def resolve_target(query: str, directory: PeerDirectory) -> PeerTarget:
    """Where to dial ``query``: an IP goes to its record's port (or the chat port), ``ip:port`` as given, a
    nickname or fingerprint to the address or relay hint of its ledger record (none → :class:`PeerNotFound`)."""
    explicit = _explicit_address(query)
    if explicit is not None:
        explicit_ip, explicit_port = explicit
        found, note = _try_lookup(directory, explicit_ip)
        if found is not None and found.disputed is not None:
            note = found.disputed.describe()
        return _target_from(query, found, ip=explicit_ip, port=explicit_port, note=note, by_address=True)
    kind, value = query_kind(query)
    if kind == "ip":
        found, note = _try_lookup(directory, value)
        # A disputed binding's key does not answer at the address (ledger/disputes.py): the port it wrote says
        # nothing about who does, so the call goes to the chat port, and step 2 refuses the disputed binding.
        dispute = found.disputed if found is not None else None
        if dispute is not None:
            note = dispute.describe()
        port = (found.port if found is not None and found.ip == value and found.port and dispute is None
                else CHAT_PORT)
        return _target_from(query, found, ip=value, port=port, note=note, by_address=True)
    binding = directory.lookup(value)
    ip = binding.ip
    return _target_from(query, binding, ip=ip, port=(binding.port or CHAT_PORT) if ip else None, note=None)


def _try_lookup(directory: PeerDirectory, ip: str) -> tuple[Binding | None, str | None]:
    try:
        return directory.lookup(ip), None
    except PeerNotFound as exc:
        return None, str(exc)


def _target_from(query: str, binding: Binding | None, *, ip: str | None, port: int | None, note: str | None,
                 by_address: bool = False) -> PeerTarget:
    if binding is None:
        return PeerTarget(query=query, ip=ip, port=port, note=note, by_address=by_address)
    # A call by address keeps the relay hint out of the target altogether: nothing below can follow it.
    return PeerTarget(query=query, ip=ip, port=port, relay=None if by_address else binding.relay,
                      fingerprint=binding.fingerprint, nickname=binding.nickname, by_address=by_address, note=note)


NO_RELAY_BY_ADDRESS = ("a relay is not used for calls by address, because the relay hint is written by the key "
                       "holder itself: a key that never answered at an address could otherwise take every call "
                       "made to it. If you know this peer, call it by nickname or fingerprint to use a relay")


def _refuse_by_address(target: PeerTarget, reasons: list[str]) -> PeerUnreachable:
    """The plain message for a call by address whose direct path failed (no relay is tried)."""
    detail = "; ".join(reasons)
    if target.fingerprint is None:     # no record: no relay could be asked anyway
        return PeerUnreachable(f"cannot reach {target.query}: nothing answered at {target.address or target.ip} "
                               f"({detail})" + (f"; the ledger has no record for it ({target.note})"
                                                if target.note else ""))
    head = (f"{target.ip} is bound to key {crypto.format_fingerprint(target.fingerprint, 4)}"
            f"{f' ({target.nickname!r})' if target.nickname else ''} but did not answer at "
            f"{target.address or target.ip}")
    dispute = f"; the ledger node says the binding is {target.note}" if target.note else ""
    return PeerUnreachable(f"cannot reach {target.query}: {head} ({detail}){dispute}; {NO_RELAY_BY_ADDRESS}")


RelayOpener = Callable[[str, bytes, float], Link]
"""``open(relay_address, peer_fingerprint, timeout) -> link``: a connection to the peer through a relay."""


@dataclass
class Dialed:
    link: Link                # FramedSocket, or a relay link with the same methods
    path: str                 # "direct" or "relay ip:port"
    peer_address: str | None  # the address connected to (direct), or the one the ledger names (relay)
    fallback_reason: str | None = None   # why the direct path was not used


def dial(target: PeerTarget, *, source_ip: str, direct_timeout: float, io_timeout: float,
         own_relay: str | None, open_relay: RelayOpener | None) -> Dialed:
    """Connect to ``target``: directly first, then through a relay. Raises :class:`PeerUnreachable` naming why
    each path failed. A ``--no-inbound`` host dials directly too (outbound works through NAT): its hello claims no
    address, so the callee looks it up by its key (docs/protocol.md §3.2)."""
    reasons: list[str] = []
    link: Link
    if target.ip and target.port:
        try:
            link = connect(target.ip, target.port, CHAT, source_ip=source_ip, timeout=direct_timeout)
        except PeerUnreachable as exc:
            reasons.append(f"the direct connection failed ({exc})")
            log.info("direct dial to %s failed: %s", target.address, exc)
        else:
            link.timeout = io_timeout
            return Dialed(link, DIRECT, target.address)
    else:
        reasons.append(f"the ledger has no address for {target.query} (it is reachable through a relay only)"
                       if target.fingerprint else f"no address is known for {target.query}")
    if target.by_address:
        raise _refuse_by_address(target, reasons)
    relays = [r for r in (target.relay, own_relay) if r]
    if not relays:
        reasons.append("no relay is known for this peer (its ledger record names none and --relay is not set)")
    elif target.fingerprint is None:
        reasons.append("a relay cannot be asked for this peer: the ledger has no record of its key"
                       + (f" ({target.note})" if target.note else ""))
    elif open_relay is None:
        reasons.append("this node cannot use relays")
    else:
        for relay in dict.fromkeys(relays):
            shown = relay.partition("#")[0]     # [relay link, issue 11] a "#KEY" pin is not part of the path shown
            try:
                link = open_relay(relay, target.fingerprint, io_timeout)
            except UserError as exc:
                reasons.append(f"relay {shown} failed ({exc})")
                continue
            return Dialed(link, f"relay {shown}", target.address, fallback_reason="; ".join(reasons))
    raise PeerUnreachable(f"cannot reach {target.query}: " + ", and ".join(reasons))
