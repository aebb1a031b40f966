"""A hostile ledger node for light-client tests: a real server on a 127.x address that completes the handshake
like a node of ``params`` and answers each request with what a script returns (red team 2026-12-07 night)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ledger.blocks import BlockHeader
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, ROLE_PEER, PeerHello, hello_fields
from p2pchat.foundation import crypto
from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.transport import FramedSocket, FrameServer
from tests.conftest import free_loopback_ip
from tests.ledger.ledger_kit import solve

# What a script returns for one request: messages to send, or raw bytes to send one at a time ``drip`` apart.
Reply = list[tuple[str, dict]]
Script = Callable[[Message], Reply | bytes]



def answer_hello(conn: FramedSocket, p: NetworkParams) -> None:
    """Read the client's ``hello`` and answer as a node of network ``p`` at height 0."""
    PeerHello.from_message(conn.recv(5.0))
    conn.send("hello_ack", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=p.name,
                                          genesis=p.genesis_hash, params=p.to_wire(), height=0,
                                          tip=p.genesis_hash, work=0, listen_port=None, time=int(time.time())))

class HostileLedgerNode:
    """Serves ``script``'s answers; counts the requests it got (``requests``) and can drip raw bytes."""

    def __init__(self, params: NetworkParams, script: Script, *, drip: float = 1.0, max_requests: int = 2000) -> None:
        self.params = params
        self.script = script
        self.drip = drip
        self.max_requests = max_requests      # bounds a test's loop whatever the client does
        self.requests: list[str] = []
        self._stop = threading.Event()
        self.server = FrameServer(free_loopback_ip(), 0, LEDGER_PROTOCOL, self._serve, name="hostile").start()
        self.host, self.port = self.server.host, self.server.port
        self.address = format_address(self.host, self.port)

    def _serve(self, conn: FramedSocket) -> None:
        answer_hello(conn, self.params)
        try:
            while not self._stop.is_set() and len(self.requests) < self.max_requests:
                msg = conn.recv(30.0)
                self.requests.append(msg.type)
                reply = self.script(msg)
                if isinstance(reply, bytes):
                    for i in range(len(reply)):
                        if self._stop.wait(self.drip):
                            return
                        conn.sock.sendall(reply[i:i + 1])
                else:
                    for type_, fields in reply:
                        conn.send(type_, **fields)
        except (UserError, OSError):
            return

    def close(self) -> None:
        self._stop.set()
        self.server.close()


def header_on(parent: BlockHeader, params: NetworkParams, timestamp: int, *, mined: bool = True,
              salt: int = 0) -> BlockHeader:
    """A header (no body: the empty Merkle root) on ``parent``; mined to the target unless ``mined`` is False."""
    header = BlockHeader(version=params.version, network_id=params.network_id, height=parent.height + 1,
                         prev_hash=parent.hash, merkle_root=salt.to_bytes(32, "big"), timestamp=timestamp,
                         target_bits=params.difficulty_bits, nonce=0)
    return solve(header) if mined else header


def header_chain(parent: BlockHeader, params: NetworkParams, n: int, start: int, *, mined: bool = True,
                 salt: int = 0) -> list[BlockHeader]:
    out: list[BlockHeader] = []
    for i in range(n):
        out.append(header_on(out[-1] if out else parent, params, start + i, mined=mined, salt=salt))
    return out


def after_locator(chain: Sequence[BlockHeader], locator: Sequence[bytes], limit: int) -> list[bytes]:
    """What an honest node serving ``chain`` (from genesis) answers to ``get_headers``."""
    index = {h.hash: h.height for h in chain}
    start = next((index[h] for h in locator if h in index), 0)
    return [h.packed for h in chain[start + 1:start + 1 + limit]]
