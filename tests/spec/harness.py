"""The real processes the spec tests talk to: one `ledger serve` (with the spec peer's record mined in advance)
and `p2pchat` nodes, started with the project's test fixtures. The spec peer itself is tests/spec/impl."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Crypto.PublicKey import RSA

from ledger.records import Record as ProjectRecord
from tests.conftest import TEST_KEYS, free_loopback_ip, make_identities
from tests.integration.procs import Cluster, LedgerProcess, premine
from tests.spec.impl import chatcrypto as cc
from tests.spec.impl import ledgerspec as ls
from tests.spec.impl.peer import MAX_FRAME, ChatPeer, LedgerView
from tests.spec.impl.wire import socket_stream

NETWORK = "p2pchat"
CHAT_PORT = 8471
LEDGER_PORT = 8470
SPEC_KEY_INDEX = 23            # the last stored test key: make_identities hands them out from the first


def spec_key(index: int = SPEC_KEY_INDEX) -> RSA.RsaKey:
    """A stored test key the spec implementation signs with (the last ones: fixtures hand out the first)."""
    end = "-----END PRIVATE KEY-----"
    blocks = [b for b in TEST_KEYS.read_text(encoding="ascii").split(end) if b.strip()]
    return RSA.import_key(blocks[index] + end)


def make_record(key: RSA.RsaKey, ip: str | None, nickname: str, now: int, ledger_port: int | None = LEDGER_PORT,
                relay: str | None = None) -> ls.Record:
    """A first `register` record, made and signed as docs/ledger.md "Records" says."""
    unsigned = ls.Record("register", key.public_key().export_key(format="DER"), 0, bytes(32), nickname, ip,
                         CHAT_PORT if ip else None, ledger_port if ip else None, relay, now - 300,
                         now - 300 + 7 * 86400, None, b"", None)
    return dataclasses.replace(unsigned, sig=cc.sign(key, "ledger-record", unsigned.signed_bytes(NETWORK)))


@dataclass
class SpecWorld:
    cluster: Cluster
    host: str                  # the ledger node's and the p2pchat node's address
    spec_ip: str               # the spec peer's address
    node: LedgerProcess
    key: RSA.RsaKey            # the spec peer's identity
    host_key: RSA.RsaKey       # the p2pchat node's identity (read from its data directory)
    records: list[ls.Record]   # as made by the spec implementation: [spec peer, host]
    node_process: Any = None   # the p2pchat process a test started on ``host``, if any

    @property
    def data_dir(self) -> Path:
        return self.cluster.data_dir(self.host)

    def ledger_view(self) -> LedgerView:
        """The spec peer's view of the ledger: a light-client sync, then proofs checked for every lookup."""
        with ls.LedgerConnection(self.host, LEDGER_PORT, source=self.spec_ip) as conn:
            chain = ls.sync_headers(conn)
            checkpoint = conn.ask("get_checkpoint")

        def peer_key(by: str, value: str) -> bytes:
            with ls.LedgerConnection(self.host, LEDGER_PORT, source=self.spec_ip) as conn:
                answer = conn.ask("lookup", by=by, value=value)
            return ls.check_lookup(answer, chain, NETWORK, by, value, int(time.time())).key

        def header_at(height: int) -> bytes | None:
            return chain[height].hash if height < len(chain) else None

        return LedgerView(peer_key, checkpoint["final_height"], checkpoint["final_hash"], len(chain) - 1,
                          chain[-1].hash, header_at)


def start_world(tmp_path: Path, spec_relay: str | None = None, spec_ip: str | None = None) -> SpecWorld:
    """A ledger node on a fresh address whose chain holds the spec peer's record and the node's own, both made
    by the spec implementation (the project's parser must take them with the same ids: the record layout of
    docs/ledger.md)."""
    host, spec_ip = free_loopback_ip(), spec_ip or free_loopback_ip()
    cluster = Cluster(tmp_path, make_identities(1))
    data_dir = cluster.data_dir(host)
    host_key = RSA.import_key((data_dir / "identity.pem").read_bytes())
    now = int(time.time())
    key = spec_key()
    records = [make_record(key, None if spec_relay else spec_ip, "spec-peer", now, relay=spec_relay),
               make_record(host_key, host, "spec-host", now)]
    project = [ProjectRecord.from_wire(r.to_wire()) for r in records]
    assert [p.id for p in project] == [r.id for r in records]
    premine(data_dir, 3, records=project)
    node = cluster.serve(host)
    node.wait_ready()
    return SpecWorld(cluster, host, spec_ip, node, key, host_key, records)


def connect_from(source: str, host: str, port: int, timeout: float = 20.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout, (source, 0))
    sock.settimeout(timeout)
    return sock


@contextlib.contextmanager
def called_peer(world: SpecWorld, **options: Any) -> Iterator[ChatPeer]:
    """The spec peer dials the node at ``world.host`` from ``world.spec_ip`` and runs the four steps as the
    initiator (protocol.md §3); yields it established, and closes the socket after. ``options``: ChatPeer's."""
    sock = connect_from(world.spec_ip, world.host, CHAT_PORT)
    with sock:
        peer = ChatPeer(world.key, "spec-peer", f"{world.spec_ip}:{CHAT_PORT}", world.ledger_view(),
                        sock.sendall, socket_stream(sock, MAX_FRAME), NETWORK, **options)
        peer.initiate("ip", world.host)
        yield peer
