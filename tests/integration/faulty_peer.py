"""A ledger peer that serves a real chain but fails at block bodies, run as its own process:
``python -m tests.integration.faulty_peer HOST PORT DATA_DIR --mode wrong|stall|drop``.

It speaks the ledger protocol through the project's codec over real sockets and answers the handshake, the
finality survey (``get_checkpoint``), ``get_headers`` and ``get_peers`` from the ledger in ``DATA_DIR`` (a copy of
an honest node's store), so a joining node finds its headers valid and asks it for bodies. Then, by ``--mode``:
``wrong`` answers every ``get_blocks`` with bodies whose records are not the ones their headers commit to,
``stall`` never answers ``get_blocks`` (it keeps answering pings), ``drop`` closes the connection at the first
``get_blocks`` (whatever it was asked for goes unanswered). It prints ``ready`` once it listens.
Used by tests/integration/test_multisync.py.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from ledger.blocks import Block
from ledger.local_ledger import LocalLedger
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, MAX_HEADERS, ROLE_PEER, PeerHello, hello_fields
from p2pchat.foundation import crypto
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.transport import FramedSocket, FrameServer


def serve(conn: FramedSocket, ledger: LocalLedger, port: int, mode: str, stop: threading.Event) -> None:
    params = ledger.params
    PeerHello.from_message(conn.recv(10.0))
    height, tip, work = ledger.tip_info()
    conn.send("hello_ack", **hello_fields(role=ROLE_PEER, nonce=crypto.random_bytes(8), network=params.name,
                                          genesis=params.genesis_hash, params=params.to_wire(), height=height,
                                          tip=tip, work=work, listen_port=port, time=int(time.time())))
    filler = next((b.records for b in (ledger.chain.main_at(h) for h in range(1, height + 1))
                   if b is not None and b.records), ())
    while not stop.is_set():
        msg = conn.recv(600.0)
        if msg.type == "ping":
            conn.send("pong", nonce=msg["nonce"])
        elif msg.type == "get_checkpoint":
            conn.send("checkpoint", **ledger.checkpoint_answer(msg.fields.get("height"), time.time()))
        elif msg.type == "get_headers":
            headers = ledger.headers_after(msg["locator"], min(msg["limit"], MAX_HEADERS))
            conn.send("headers", headers=[h.packed for h in headers])
        elif msg.type == "get_peers":
            conn.send("peers", addrs=[])
        elif msg.type == "get_blocks":
            blocks = ledger.get_blocks(msg["hashes"])
            if mode == "stall":
                continue
            if mode == "drop":
                return
            if mode == "wrong":
                # The same headers (so the hashes asked for) with other records: the Merkle roots do not match.
                blocks = [Block(b.header, () if b.records else filler) for b in blocks]
            conn.send("blocks", blocks=[b.to_wire() for b in blocks])
        elif msg.type == "error":
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("data_dir")
    parser.add_argument("--mode", choices=("wrong", "stall", "drop"), required=True)
    parser.add_argument("--network", default="p2pchat")
    parser.add_argument("--difficulty", type=int, default=8)
    args = parser.parse_args(argv)
    ledger = LocalLedger(args.data_dir, NetworkParams(name=args.network, difficulty_bits=args.difficulty))
    stop = threading.Event()

    def handler(conn: FramedSocket) -> None:
        try:
            serve(conn, ledger, args.port, args.mode, stop)
        except UserError:
            pass

    server = FrameServer(args.host, args.port, LEDGER_PROTOCOL, handler, name="faulty-peer", timeout=30.0).start()
    print("ready", flush=True)
    try:
        sys.stdin.read()   # runs until the test closes our stdin
    finally:
        stop.set()
        server.close()
        ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
