"""A tiny reachability probe for checking the lab's wiring without the project's own commands.

``python -m netns_lab.probe serve IP PORT`` answers every connection with the address it sees the caller
at; ``python -m netns_lab.probe dial IP PORT [--source IP]`` prints ``seen as ADDRESS`` and exits 0, or
prints why it could not connect and exits 1. Both use the project's frame codec and transport.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from p2pchat.foundation.codec import Field, Protocol
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.transport import FramedSocket, FrameServer, connect

PROBE = Protocol("lab-probe", {"ask": {}, "seen": {"address": Field(str, max_len=64)}}, max_frame=1024)


def _answer(conn: FramedSocket) -> None:
    conn.recv()
    conn.send("seen", address=conn.peer[0])


def serve(ip: str, port: int) -> int:
    server = FrameServer(ip, port, PROBE, _answer, name="probe", timeout=5.0).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"probe listening on {ip}:{server.port}", flush=True)
    try:
        stop.wait()
    finally:
        server.close()
    return 0


def dial(ip: str, port: int, source: str | None, timeout: float) -> int:
    try:
        with connect(ip, port, PROBE, source_ip=source, timeout=timeout) as conn:
            conn.send("ask")
            answer = conn.recv()
    except UserError as exc:
        print(f"unreachable: {exc}", flush=True)
        return 1
    print(f"seen as {answer['address']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netns_lab.probe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("ip")
    s.add_argument("port", type=int)
    d = sub.add_parser("dial")
    d.add_argument("ip")
    d.add_argument("port", type=int)
    d.add_argument("--source")
    d.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.ip, args.port)
    return dial(args.ip, args.port, args.source, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
