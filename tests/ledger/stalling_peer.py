"""A stalling sync peer, run as its own process: ``python -m tests.ledger.stalling_peer HOST PORT``.

It speaks the ledger protocol through the project's codec over real sockets. Its hello claims far more work
than any chain has; it holds a real chain of ``--blocks`` empty blocks from genesis (valid proof of work, more
work than a freshly started network) and answers ``get_headers`` at once, so a node that checks headers finds
its chain genuinely heavier, but it answers ``get_blocks`` with a single block every ``--drip`` seconds.
It prints ``ready`` once it listens. Used by tests/integration/test_sync_attacks.py.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from ledger.blocks import Block, BlockHeader
from ledger.merkle import EMPTY_ROOT
from ledger.miner import mine
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, MAX_HEADERS, ROLE_PEER, PeerHello, hello_fields
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.transport import FramedSocket, FrameServer


def build_chain(params: NetworkParams, count: int) -> list[Block]:
    stop = threading.Event()
    chain = [params.genesis()]
    start = int(time.time()) - count - 120
    for i in range(count):
        tip = chain[-1].header
        header = BlockHeader(version=params.version, network_id=params.network_id, height=tip.height + 1,
                             prev_hash=tip.hash, merkle_root=EMPTY_ROOT, timestamp=start + i,
                             target_bits=params.difficulty_bits, nonce=0)
        solved = mine(header, stop)
        assert solved is not None
        chain.append(Block(solved, ()))
    return chain


def serve(conn: FramedSocket, params: NetworkParams, chain: list[Block], drip: float, stop: threading.Event) -> None:
    index = {b.hash: i for i, b in enumerate(chain)}
    first = conn.recv(10.0)
    PeerHello.from_message(first)
    conn.send("hello_ack", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=params.name,
                                          genesis=params.genesis_hash, params=params.to_wire(), height=10**6,
                                          tip=crypto.random_bytes(32), work=2**200, listen_port=None))
    while not stop.is_set():
        msg = conn.recv(600.0)
        if msg.type == "ping":
            conn.send("pong", nonce=msg["nonce"])
        elif msg.type == "get_headers":
            start = next((index[h] for h in msg["locator"] if h in index), 0)
            headers = [b.header.packed for b in chain[start + 1:start + 1 + min(msg["limit"], MAX_HEADERS)]]
            conn.send("headers", headers=headers)
        elif msg.type == "get_blocks":
            wanted = [chain[index[h]] for h in msg["hashes"] if h in index]
            if stop.wait(drip):
                return
            conn.send("blocks", blocks=[b.to_wire() for b in wanted[:1]])
        elif msg.type == "get_peers":
            conn.send("peers", addrs=[])
        elif msg.type == "error":
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--difficulty", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--drip", type=float, default=30.0)
    args = parser.parse_args(argv)
    params = NetworkParams(difficulty_bits=args.difficulty)
    chain = build_chain(params, args.blocks)
    stop = threading.Event()

    def handler(conn: FramedSocket) -> None:
        try:
            serve(conn, params, chain, args.drip, stop)
        except UserError:
            pass

    server = FrameServer(args.host, args.port, LEDGER_PROTOCOL, handler, name="staller", timeout=30.0).start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # runs until the test closes our stdin (or kills us)
    finally:
        stop.set()
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
