"""``p2pchat relay``: run a relay, or show the status of a running one (``--status [--json]``).

Also runnable as ``python -m p2pchat.relay``. The relay runs until SIGINT or SIGTERM, then tells its clients
it is shutting down and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pchat.foundation.addresses import (
    LEDGER_PORT,
    RELAY_PORT,
    check_port,
    format_address,
    normalize_ip,
    parse_address,
)
from p2pchat.foundation.datadir import resolve_data_dir
from p2pchat.foundation.errors import UserError
from p2pchat.relay.callers import CallerCheck, KeySetCallers, LedgerCallers
from p2pchat.relay.link import connect_link
from p2pchat.relay.protocol import DEFAULT_MAX_FRAME, VERSION, check_version, expect
from p2pchat.relay.secure import RelayKey
from p2pchat.relay.server import RelayServer

KEY_FILE_NAME = "relay_key"

PROG = "p2pchat relay"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run a relay that pairs p2pchat clients who cannot reach each other directly and forwards "
                    "their end-to-end encrypted frames (it never sees what they say), or query a running relay.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (or of the relay to query with --status); default 127.0.0.1, "
                        "use this machine's public address or 0.0.0.0 to serve other machines")
    p.add_argument("--port", type=int, default=RELAY_PORT, help=f"TCP port (default {RELAY_PORT})")
    p.add_argument("--status", action="store_true", help="show sessions and counters of a running relay and exit")
    p.add_argument("--json", action="store_true", help="with --status: print the status as JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="with --status: seconds to wait for the relay")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-connections", type=int, default=512, help="connections in all (default 512)")
    limits.add_argument("--max-per-ip", type=int, default=16, help="connections per source address (default 16)")
    limits.add_argument("--max-pending", type=int, default=256,
                        help="calls waiting for the callee to answer (default 256)")
    limits.add_argument("--rate", type=int, default=4_000_000,
                        help="bytes per second per session, both directions together; 0 = unlimited "
                             "(default 4000000)")
    limits.add_argument("--max-frame", type=int, default=DEFAULT_MAX_FRAME,
                        help=f"largest relay frame in bytes (default {DEFAULT_MAX_FRAME})")
    limits.add_argument("--no-box-records", action="store_true",
                        help="never agree on box records (a chat frame's box forwarded unsealed, up to 1.25 MiB a "
                             "record; docs/relay.md): every payload in pair records of at most --max-frame")
    limits.add_argument("--idle-timeout", type=float, default=90.0,
                        help="seconds of silence from one side before a session is dropped (default 90)")
    limits.add_argument("--pair-timeout", type=float, default=15.0,
                        help="seconds a callee has to answer an invitation (default 15)")
    limits.add_argument("--heartbeat", type=float, default=20.0,
                        help="heartbeat interval of registrations in seconds (default 20)")
    limits.add_argument("--login-timeout", type=float, default=10.0,
                        help="seconds a new connection has to prove its key (default 10)")
    limits.add_argument("--send-timeout", type=float, default=10.0,
                        help="seconds a write to a client may stay blocked (a side that does not read) before its "
                             "session ends (default 10)")
    p.add_argument("--key-file", metavar="PATH",
                   help=f"the relay's static link key (created on first start; default <data dir>/{KEY_FILE_NAME}, "
                        "the data dir being $P2PCHAT_HOME or the platform's default)")
    p.add_argument("--ledger", metavar="IP[:PORT]",
                   help="ledger node that checks callers' keys: hosts that did not register with "
                        "'accept unregistered callers' are rung only by keys with a ledger record "
                        "(default: this machine's ledger node, at --host, or 127.0.0.1 for 0.0.0.0)")
    p.add_argument("--no-ledger", action="store_true",
                   help="check no caller: only hosts that accept unregistered callers can be called")
    p.add_argument("--allow", metavar="FILE",
                   help="instead of --ledger: a file of caller fingerprints (64 hex digits each, one per line, "
                        "'#' comments) that count as having a ledger record (a closed classroom relay)")
    limits.add_argument("--rings-per-minute", type=int, default=3,
                        help="calls one key may make to one host per minute (default 3)")
    limits.add_argument("--connects-per-minute", type=int, default=600,
                        help="new connections one address may open per minute, a tenth of them at once "
                             "(default 600)")
    limits.add_argument("--max-pending-per-callee", type=int, default=8,
                        help="calls waiting for one host to answer (default 8)")
    p.add_argument("--public", metavar="IP:PORT",
                   help="the address clients dial, if it differs from --host:--port (port forwarding)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every connection (default: sessions only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``p2pchat relay``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        host = normalize_ip(args.host)
        port = check_port(args.port)
        if args.status:
            return _print_status(host, port, as_json=args.json, timeout=args.timeout)
        return _serve(args, host, port)
    except UserError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # limits out of range, checked by RelayServer
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def query_status(host: str, port: int, *, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the relay at ``host:port`` for its status (only answered to clients on the relay's machine)."""
    relay_text = format_address(host, port)
    with connect_link((host, port), pin=None, source_ip=None, timeout=timeout, known=None) as conn:
        challenge = expect(conn, "challenge", timeout, relay_text)
        check_version(challenge["version"], f"the relay at {relay_text}")
        conn.send("status", version=VERSION)
        return dict(expect(conn, "status_result", timeout, relay_text).fields)


def _print_status(host: str, port: int, *, as_json: bool, timeout: float) -> int:
    status = query_status(host, port, timeout=timeout)
    if as_json:
        print(json.dumps({**status, "relay_key": status["relay_key"].hex()}, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def format_status(status: dict[str, Any]) -> str:
    """The status answer as text for a terminal."""
    limits = status["limits"]
    rate = limits["bytes_per_second"]
    lines = [
        f"relay {status['address']}  (relay protocol {status['version']}, up {_duration(status['uptime_s'])})",
        f"relay key: {status['relay_key'].hex()}   (clients pin it with --relay {status['address']}#KEY)",
        f"registered hosts: {status['registered']}   pending pairings: {status['pending']}   "
        f"sessions: {status['session_count']}",
    ]
    if status["sessions"]:
        lines.append("sessions (caller -> callee, fingerprint prefixes):")
        for s in status["sessions"]:
            lines.append(f"  {s['a']} -> {s['b']}   age {_duration(s['age_s'])}   idle {_duration(s['idle_s'])}   "
                         f"sent {_size(s['bytes_ab'])} / received {_size(s['bytes_ba'])}")
        if status["session_count"] > len(status["sessions"]):
            lines.append(f"  … and {status['session_count'] - len(status['sessions'])} more")
    lines.append("counters: " + ", ".join(f"{k} {v}" for k, v in status["counters"].items()))
    lines.append(
        f"limits: {limits['max_connections']} connections, {limits['max_per_ip']} per address, "
        f"{limits['max_pending']} pending, frames up to {_size(limits['max_frame'])}, "
        f"{(_size(rate) + '/s') if rate else 'unlimited'} per session, "
        f"idle {limits['idle_timeout_ms'] / 1000:g} s, answer within {limits['pair_timeout_ms'] / 1000:g} s, "
        f"heartbeat {limits['heartbeat_ms'] / 1000:g} s, {limits['rings_per_minute']} calls per minute per "
        f"caller and host, {limits['max_pending_per_callee']} waiting per host, "
        f"callers checked by {limits['ledger'] or 'nobody (--no-ledger)'}")
    return "\n".join(lines)


def _read_allow_list(path: Path) -> set[bytes]:
    """Fingerprints from an ``--allow`` file: 64 hex digits per line (spaces allowed), ``#`` starts a comment."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the allow-list {path}: {exc.strerror or exc}") from None
    keys = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].replace(" ", "").strip()
        if not text:
            continue
        try:
            fp = bytes.fromhex(text)
        except ValueError:
            fp = b""
        if len(fp) != 32:
            raise UserError(f"{path}, line {number}: not a fingerprint (64 hex digits)")
        keys.add(fp)
    return keys


def _serve(args: argparse.Namespace, host: str, port: int) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        # Each refused or dropped connection is logged by the transport; keep the default log to sessions.
        logging.getLogger("p2pchat.foundation.transport").setLevel(logging.ERROR)
    public = None
    if args.public:
        public = format_address(*parse_address(args.public, port))
    key = RelayKey.load_or_create(Path(args.key_file) if args.key_file else resolve_data_dir() / KEY_FILE_NAME)
    callers: CallerCheck | None = None
    if sum(map(bool, (args.ledger, args.allow, args.no_ledger))) > 1:
        raise UserError("give one of --ledger, --allow and --no-ledger")
    if args.allow:
        callers = KeySetCallers(_read_allow_list(Path(args.allow)), f"allow-list {args.allow}")
    elif not args.no_ledger:
        from ledger.client import LedgerClient  # only a relay that checks callers needs the ledger client

        own = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        ledger_ip, ledger_port = parse_address(args.ledger or own, LEDGER_PORT)
        callers = LedgerCallers(LedgerClient(ledger_ip, ledger_port, source_ip=host if host != "0.0.0.0" else None),
                                f"ledger {format_address(ledger_ip, ledger_port)}")
    server = RelayServer(
        host, port, max_connections=args.max_connections, max_per_ip=args.max_per_ip,
        max_pending=args.max_pending, login_timeout=args.login_timeout, heartbeat=args.heartbeat,
        idle_timeout=args.idle_timeout, pair_timeout=args.pair_timeout, send_timeout=args.send_timeout,
        bytes_per_second=args.rate or None, max_frame=args.max_frame, public_address=public, key=key,
        callers=callers, rings_per_minute=args.rings_per_minute, connects_per_minute=args.connects_per_minute,
        max_pending_per_callee=args.max_pending_per_callee, box_records=not args.no_box_records)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"relay listening on {server.address} (Ctrl-C to stop)", flush=True)
    print(f"relay key: {key.public.hex()}  (clients pin it with --relay {server.address}#{key.public.hex()})",
          flush=True)
    print(f"callers checked by {callers.description if callers else 'nobody (--no-ledger)'}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.close()
    print("relay stopped", flush=True)
    return 0
