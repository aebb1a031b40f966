"""Who is behind an address, a nickname or a fingerprint: the chat node's view of the ledger.

A :class:`PeerDirectory` answers ``lookup(query)`` with the peer's ledger binding (public key, address, relay
hint, block height, confirmations, and ``disputed``: the ledger node's dispute mark of an IP binding, or None)
or raises :class:`PeerNotFound` with a reason for a person. The node uses it twice: to find where to dial
(step 1) and to check the key a peer presents (step 2).

- :class:`LedgerDirectory` asks a ledger node through ``ledger.client.LedgerClient``, which checks the Merkle
  proof against the headers it has synced.
- :class:`FixedDirectory` holds bindings given in advance (benchmarks, and tests of the node that are not about
  the ledger). Its entries carry the same attributes as the ledger client's ``VerifiedBinding``.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ledger.client import LedgerClient, LookupNotFound, VerifiedBinding
from ledger.disputes import Dispute
from ledger.errors import LedgerError
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import normalize_ip
from p2pchat.foundation.errors import AddressError, PeerUnreachable, UserError
from p2pchat.handshake import ChainPosition
from p2pchat.links import Binding

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
log = logging.getLogger(__name__)


class PeerNotFound(UserError):
    """The ledger has no live binding for the query (or could not be asked)."""


def query_kind(query: str) -> tuple[str, str]:
    """Classify what a user typed: ``("ip", "127.0.0.2")``, ``("fp", <64 hex>)`` or ``("nick", name)``."""
    text = query.strip()
    try:
        return "ip", normalize_ip(text)
    except AddressError:
        pass
    compact = text.replace(" ", "").replace(":", "").lower()
    if _HEX64.match(compact):
        return "fp", compact
    return "nick", text


@dataclass(frozen=True)
class DirectoryEntry:
    """A binding known in advance; same attribute names as ``ledger.client.VerifiedBinding``."""

    public_der: bytes
    nickname: str
    ip: str | None = None
    port: int | None = None
    relay: str | None = None
    height: int = 0
    confirmations: int = 0
    disputed: Dispute | None = None   # set when the ledger node marked the IP binding disputed (ledger/disputes.py)

    @property
    def fingerprint(self) -> bytes:
        return crypto.fingerprint(self.public_der)


LookupBy = str | None
"""``"ip"``, ``"nick"``, ``"fp"`` or ``None`` (detect from the query)."""


class PeerDirectory(Protocol):
    def lookup(self, query: str, by: LookupBy = None) -> Binding:
        """The binding for an IP, nickname or fingerprint; raises :class:`PeerNotFound`."""

    def close(self) -> None: ...


class FixedDirectory:
    """Bindings given in advance, found by IP, nickname or fingerprint (thread-safe)."""

    def __init__(self, entries: list[DirectoryEntry] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[DirectoryEntry] = list(entries or [])

    def add(self, entry: DirectoryEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def lookup(self, query: str, by: LookupBy = None) -> DirectoryEntry:
        kind, value = query_kind(query)
        with self._lock:
            for entry in self._entries:
                if ((kind == "ip" and entry.ip == value) or (kind == "nick" and entry.nickname == value)
                        or (kind == "fp" and entry.fingerprint.hex() == value)):
                    return entry
        raise PeerNotFound(f"no record for {query} in the directory")

    def close(self) -> None:
        """Nothing to release."""


class LedgerDirectory:
    """Lookups through a light client of one ledger node (``ledger.client.LedgerClient``), which syncs and
    checks the headers and the Merkle proof of every answer and keeps the verified headers between lookups."""

    def __init__(self, ip: str, port: int, *, source_ip: str | None, network: str | None = None,
                 timeout: float = 10.0, pin_dir: Path | None = None) -> None:
        # pin_dir: the data directory whose pinned network id (ledger.network_pin) the answers must be on.
        self.client = LedgerClient(ip, port, source_ip=source_ip, network=network, timeout=timeout,
                                   pin_dir=pin_dir)

    @property
    def node(self) -> str:
        return self.client.node

    def move(self, ledger_ip: str | None, *, source_ip: str) -> None:
        """--host auto: this machine's address changed; ask from ``source_ip`` and, when the ledger node is this
        machine's own, at ``ledger_ip`` (each lookup opens its own connection, so the next one uses them)."""
        if ledger_ip is not None:
            self.client.ip = ledger_ip
        self.client.source_ip = source_ip

    def lookup(self, query: str, by: LookupBy = None) -> VerifiedBinding:
        try:
            return self.client.lookup(query, by=by)
        except LookupNotFound as exc:
            raise PeerNotFound(str(exc)) from None
        except PeerUnreachable as exc:
            raise PeerNotFound(f"could not ask the ledger node at {self.client.node}: {exc}") from None
        except UserError as exc:
            # Anything else is an answer the client refused to believe (bad proof, wrong network, ...).
            raise PeerNotFound(f"the ledger node at {self.client.node} gave no usable answer: {exc}") from None

    # --- the ledger cross-check of step 2 (p2pchat.handshake.LedgerView) ---

    def position(self) -> ChainPosition | None:
        try:
            where = self.client.position()
        except (LedgerError, sqlite3.Error) as exc:    # the header file (a local fault): no view, no cross-check
            log.warning("cannot read the verified ledger headers: %s", exc)
            return None
        return ChainPosition(*where) if where is not None else None

    def hash_at(self, height: int) -> bytes | None:
        try:
            header = self.client.header(height)
        except (LedgerError, sqlite3.Error) as exc:
            log.warning("cannot read the verified ledger headers: %s", exc)
            return None
        return header.hash if header is not None else None

    def report(self, peer: bytes, position: ChainPosition) -> str:
        """Hand a chat peer's disagreeing ledger position to our ledger node as evidence (network IO)."""
        return self.client.report_checkpoint(peer=peer, final_height=position.final_height,
                                             final_hash=position.final_hash, tip_height=position.tip_height,
                                             tip_hash=position.tip_hash)

    def close(self) -> None:
        """Each lookup uses its own short connection: nothing stays open."""
