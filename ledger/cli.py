"""``ledger`` command line: run a node (``serve``, ``join``), ask one (``lookup``, ``status``), act on this
machine's own binding through its running node (``update``, ``rotate-key``, ``revoke``), check the local store
(``verify``) and inspect or deliberately accept branches that conflict with final history (``reorg``).

Exit status: 0 success; 1 "not found" (lookup) or "invalid" (verify); 2 a usage or environment error, shown as
one line on stderr. Ctrl-C or SIGTERM stops a running node cleanly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

# Only what parsing the command line needs is imported here; each command imports the ledger core, the store,
# the network code and pycryptodome when it runs, so `ledger --help` starts like a bare interpreter
# (bench/startup_bench.py, tests/test_startup_imports.py).
from ledger.defaults import (
    DEFAULT_DIFFICULTY_BITS,
    DEFAULT_NETWORK,
    FINALITY_DEPTH,
    FINALITY_MIN_HOLD,
    FINALITY_SECONDS,
    MAX_DIFFICULTY_BITS,
    MIN_DIFFICULTY_BITS,
    PRUNE_KEEP,
)
from ledger.errors import LedgerError, StoreError
from p2pchat.foundation.addresses import (
    CHAT_PORT,
    HOST_AUTO,
    LEDGER_PORT,
    check_port,
    format_address,
    normalize_ip,
    parse_address,
)
from p2pchat.foundation.datadir import default_data_dir, resolve_data_dir
from p2pchat.foundation.errors import PeerUnreachable, UserError
from p2pchat.foundation.help_format import ArgumentParser
from p2pchat.foundation.lazylog import LazyLogger

if TYPE_CHECKING:
    import logging

    from ledger import own_record
    from ledger.assume_valid import AssumeValid
    from ledger.chain import FinalityPolicy
    from ledger.client import LedgerClient
    from ledger.local_ledger import LocalLedger
    from ledger.params import NetworkParams
    from ledger.sync import SyncProgress
    from p2pchat.foundation.identity import Identity



log = LazyLogger("ledger")   # logging is imported when a command first logs (start-up time)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DIFFICULTY = DEFAULT_DIFFICULTY_BITS
JOIN_WAIT_SECONDS = 20.0
PASSPHRASE_ENV = "P2PCHAT_PASSPHRASE"
OWN_WAIT_SECONDS = 120.0
MAX_PEERS_SHOWN = 32   # `ledger status` lists at most this many peer addresses (a node has 16 at most)


class CliError(UserError):
    """A usage error found after parsing (exit status 2)."""


# --- argument parsing ------------------------------------------------------------------------------------------

def _ip(text: str) -> str:
    if text == HOST_AUTO:
        return text
    try:
        return normalize_ip(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        return check_port(int(text))
    except (ValueError, UserError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a TCP port (1–65535)") from None


def _nickname(text: str) -> str:
    from ledger.records import validate_nickname

    try:
        return validate_nickname(text)
    except LedgerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _difficulty(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not MIN_DIFFICULTY_BITS <= value <= MAX_DIFFICULTY_BITS:
        raise argparse.ArgumentTypeError(f"difficulty must be {MIN_DIFFICULTY_BITS}–{MAX_DIFFICULTY_BITS} bits")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of at least 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _checkpoint(text: str) -> tuple[int, bytes]:
    height, _, digest = text.partition(":")
    try:
        value = (int(height), bytes.fromhex(digest.replace(" ", "")))
    except ValueError:
        value = (0, b"")
    if value[0] < 1 or len(value[1]) != 32:
        raise argparse.ArgumentTypeError(f"'{text}' is not HEIGHT:HASH (a block height ≥ 1 and 64 hex digits)")
    return value


def _relay(text: str) -> str:
    try:
        ip, port = parse_address(text, 0)
        check_port(port)
    except UserError as exc:
        raise argparse.ArgumentTypeError(f"relay hint: {exc} (expected IP:PORT)") from None
    return format_address(ip, port)


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options every command takes. On subcommands their default is "not given" so that the same option
    given before the subcommand is not overwritten."""
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parser.add_argument("--host", type=_ip, default=d(None),
                        help=f"address this node binds, claims in the ledger and sends from (default {DEFAULT_HOST}); "
                             "'auto': this machine's address, followed when it changes (DHCP)")
    parser.add_argument("--port", type=_port, default=d(None), help=f"ledger port (default {LEDGER_PORT})")
    parser.add_argument("--data-dir", default=d(None),
                        help="where the identity key and ledger live (default $P2PCHAT_HOME or the user data dir)")
    parser.add_argument("--network", default=d(None), help=f"ledger network name (default {DEFAULT_NETWORK}; "
                                                           "join adopts the peer's)")
    parser.add_argument("-v", "--verbose", action="count", default=d(0), help="more log output (-vv for debug)")


def _node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nickname", type=_nickname,
                        help="nickname to register (default: the one this key has, else user-<fingerprint prefix>)")
    parser.add_argument("--chat-port", type=_port, default=CHAT_PORT, help=f"chat port to register ({CHAT_PORT})")
    parser.add_argument("--relay", type=_relay, help="relay hint IP:PORT to publish with this machine's record")
    parser.add_argument("--no-inbound", action="store_true",
                        help="this host cannot be dialled (NAT): publish no address, only the --relay hint")
    parser.add_argument("--max-peers", type=int, default=16, help="most gossip peers to keep (default 16)")
    parser.add_argument("--peer", action="append", default=[], metavar="ADDR",
                        help="another node to connect to (repeatable)")
    parser.add_argument("--no-mine", action="store_true", help="do not mine blocks")
    parser.add_argument("--recover", action="store_true",
                        help="if the ledger database is damaged, move it aside and resync from peers")
    _finality_options(parser)
    parser.add_argument("--prune", action="store_true",
                        help="drop superseded records from old block bodies as blocks become final (see 'ledger "
                             "prune'); this node then serves no bodies at or below its prune height")
    _prune_keep_option(parser)
    parser.add_argument("--verify-rate", type=float, default=0.0, metavar="BLOCKS",
                        help="blocks a second to check in the background after a fast join (default: unlimited)")
    parser.add_argument("--verify-all", action="store_true",
                        help="join: check every signature before serving (no history assumed valid)")


def _finality_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--finality-depth", type=_positive_int, default=FINALITY_DEPTH, metavar="BLOCKS",
                        help=f"a block is final at this depth… (default {FINALITY_DEPTH})")
    parser.add_argument("--finality-seconds", type=_positive_int, default=int(FINALITY_SECONDS), metavar="SECONDS",
                        help=f"…or once held this long on the main chain (default {int(FINALITY_SECONDS)})")
    parser.add_argument("--finality-hold", type=_count, default=int(FINALITY_MIN_HOLD), metavar="SECONDS",
                        help="depth counts only for blocks held at least this long, so a burst of blocks cannot "
                             f"finalize a branch before the network is heard (default {int(FINALITY_MIN_HOLD)})")


def _finality(args: argparse.Namespace) -> FinalityPolicy:
    """The policy the options of :func:`_finality_options` name."""
    from ledger.chain import FinalityPolicy

    return FinalityPolicy(depth=args.finality_depth, seconds=args.finality_seconds, min_hold=args.finality_hold)


def _prune_keep_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prune-keep", type=_count, default=PRUNE_KEEP, metavar="BLOCKS",
                        help=f"pruning keeps every body of this many blocks below the final one (default "
                             f"{PRUNE_KEEP})")


def _own_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", help="the running node of this data dir: IP or IP:PORT (default: --host)")
    parser.add_argument("--wait", type=float, default=OWN_WAIT_SECONDS, metavar="SECONDS",
                        help=f"how long to wait for a block to hold the record (default {OWN_WAIT_SECONDS:g})")
    _common(parser, defaults=False)


class _Subcommand(ArgumentParser):
    """A subcommand's parser that is made when it is used (parsed, or its help or usage shown): ``ledger lookup``
    builds one subcommand's parser and options, not every command's. argparse's own ``__init__`` runs then too —
    each parser's looks its messages up in gettext's catalogues, a file-system search each time (start-up time,
    bench/startup_bench.py). argparse asks a subcommand's parser for nothing but the methods below."""

    def __init__(self, *, fill: Callable[[argparse.ArgumentParser], None], **kwargs: Any) -> None:
        self._pending: tuple[Callable[[argparse.ArgumentParser], None], dict[str, Any]] | None = (fill, kwargs)

    def _made(self) -> None:
        if self._pending is not None:
            fill, kwargs = self._pending
            self._pending = None
            super().__init__(**kwargs)
            fill(self)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._made()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._made()
        return super().format_usage()

    def format_help(self) -> str:
        self._made()
        return super().format_help()


def _fill_serve(serve: argparse.ArgumentParser) -> None:
    _common(serve, defaults=False)
    serve.add_argument("--difficulty", type=_difficulty,
                       help=f"proof-of-work bits of a network being created (default {DEFAULT_DIFFICULTY})")
    _node_options(serve)


def _fill_join(join: argparse.ArgumentParser) -> None:
    join.add_argument("peers", nargs="+", metavar="PEER", help="a node of the network: IP or IP:PORT")
    join.add_argument("--network-id", metavar="ID",
                      help="the network id 'ledger serve' printed on a machine you trust (at least its first 8 "
                           "groups); without it the first join pins the id the peer announces (trust on first use)")
    join.add_argument("--wait", type=float, default=JOIN_WAIT_SECONDS, metavar="SECONDS",
                      help=f"how long to wait for PEER to answer on a first join (default {JOIN_WAIT_SECONDS:g})")
    join.add_argument("--checkpoint", type=_checkpoint, metavar="HEIGHT:HASH",
                      help="the final block this node must follow (to decide when the peers disagree)")
    _common(join, defaults=False)
    _node_options(join)


def _fill_lookup(lookup: argparse.ArgumentParser) -> None:
    lookup.add_argument("query", metavar="IP|NAME|FINGERPRINT")
    lookup.add_argument("--node", help="which node to ask: IP or IP:PORT (default: the one at --host)")
    lookup.add_argument("--by", choices=("ip", "nick", "fp"), help="what the query is (default: detected)")
    lookup.add_argument("--json", action="store_true", help="print JSON")
    lookup.add_argument("--prove", action="store_true",
                        help="check the node's proof even when it is this data directory's own running node "
                             "(by default that node is asked over its local socket and trusted)")
    _common(lookup, defaults=False)


def _fill_status(status: argparse.ArgumentParser) -> None:
    status.add_argument("--node", help="which node to ask: IP or IP:PORT (default: the one at --host)")
    status.add_argument("--json", action="store_true", help="print JSON")
    _common(status, defaults=False)


def _fill_update(update: argparse.ArgumentParser) -> None:
    update.add_argument("--nickname", type=_nickname, help="the new nickname ('' for none)")
    update.add_argument("--ip", type=_ip, help="the new address (a ledger node with this key must answer there)")
    update.add_argument("--chat-port", type=_port, help="the new chat port")
    _own_options(update)


def _fill_revoke(revoke: argparse.ArgumentParser) -> None:
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _own_options(revoke)


def _fill_verify(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--json", action="store_true", help="print JSON")
    _common(verify, defaults=False)


def _fill_prune(prune: argparse.ArgumentParser) -> None:
    _prune_keep_option(prune)
    _finality_options(prune)
    prune.add_argument("--no-compact", action="store_true",
                       help="do not rewrite the database file to give the freed space back (faster)")
    _common(prune, defaults=False)


def _fill_reorg(reorg: argparse.ArgumentParser) -> None:
    what = reorg.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list the parked branches (the default)")
    what.add_argument("--accept", metavar="HASH",
                      help="switch to the parked branch whose tip hash starts with HASH (stop the node first)")
    reorg.add_argument("--node", help="with --list while the node runs: which node to ask (default: --host)")
    reorg.add_argument("--json", action="store_true", help="print JSON")
    _common(reorg, defaults=False)


# name, help line, what fills its options
_SUBCOMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("serve", "run a node, creating the network if this data dir has none", _fill_serve),
    ("join", "run a node that joins the network through PEER", _fill_join),
    ("lookup", "look up a binding by IP, nickname or fingerprint (proof checked)", _fill_lookup),
    ("status", "height, tip, work, peers, pending records and own record of a node", _fill_status),
    ("update", "change this machine's nickname and/or address in the ledger", _fill_update),
    ("rotate-key", "replace this machine's identity key, keeping its binding", _own_options),
    ("revoke", "end this machine's identity for good (asks for confirmation)", _fill_revoke),
    ("verify", "revalidate the local ledger database from genesis", _fill_verify),
    ("prune", "drop the records no rule needs any more from old block bodies (node stopped), then compact the "
              "database", _fill_prune),
    ("reorg", "list branches that conflict with final history, or accept one", _fill_reorg),
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ledger", description="p2pchat's proof-of-work ledger: the certificate authority "
                            "that binds IP addresses to identity keys.")
    _common(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Subcommand)
    sub.required = True
    for name, help_text, fill in _SUBCOMMANDS:
        sub.add_parser(name, help=help_text, fill=fill)
    return parser


def _finish_args(args: argparse.Namespace) -> argparse.Namespace:
    args.host_given = args.host is not None
    args.host = args.host or DEFAULT_HOST
    args.host_watch = None
    if args.host == HOST_AUTO:   # serve/join follow the address (ledger.node); other commands use today's
        from p2pchat.foundation.host_address import HostWatch

        args.host_watch = HostWatch()
        args.host = args.host_watch.current
    args.port = args.port or LEDGER_PORT
    return args


# --- commands --------------------------------------------------------------------------------------------------

def _node_address(args: argparse.Namespace) -> tuple[str, int]:
    if getattr(args, "node", None):
        return parse_address(args.node, LEDGER_PORT)
    return args.host, args.port


def _existing_data_dir(args: argparse.Namespace) -> Path | None:
    """The data directory if it exists (asking a node must not create one): where the pinned network id is."""
    explicit = args.data_dir or os.environ.get("P2PCHAT_HOME")
    path = Path(explicit).expanduser() if explicit else default_data_dir()
    return path if path.is_dir() else None


def _client(args: argparse.Namespace) -> LedgerClient:
    from ledger.client import LedgerClient

    ip, port = _node_address(args)
    # Send from --host when one was given (as nodes do); otherwise let the system pick the source address.
    source = args.host if args.host_given and getattr(args, "node", None) else None
    return LedgerClient(ip, port, source_ip=source, network=args.network, timeout=10.0,
                        pin_dir=_existing_data_dir(args))


def _own_node_answer(args: argparse.Namespace) -> int | None:
    """``ledger lookup`` answered by this data directory's own running node over its control socket
    (ledger/control.py; the rule is in docs/ledger.md, "Asking this machine's own node"); None when that node
    is not the one asked, is on another network, did not check the record's block itself, or does not answer."""
    data_dir = _existing_data_dir(args)
    if args.prove or data_dir is None:
        return None
    from ledger import control

    answer = control.ask(data_dir, args.query, args.by)
    if answer is None or answer["node"] != format_address(*_node_address(args)):
        return None
    if args.network is not None and answer["network"] != args.network:
        return None
    if not answer["checked"]:
        return None
    if not answer["found"]:
        print(f"ledger: no ledger record for '{_shown(args.query.strip(), 256)}' at {_shown(answer['node'], 64)} "
              f"({_shown(answer.get('reason') or 'not found', 1000)})", file=sys.stderr)
        return 1
    _print_binding(answer["binding"], args.json, "answered by this data directory's own ledger node, which "
                                                 "checked the block itself")
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    own = _own_node_answer(args)
    if own is not None:
        return own
    _setup_logging(args)
    from ledger.client import LookupNotFound

    try:
        binding = _client(args).lookup(args.query, by=args.by)
    except LookupNotFound as exc:   # the node's reason is quoted in it
        print(f"ledger: {_shown(exc, 2000)}", file=sys.stderr)
        return 1
    _print_binding(binding.to_json(), args.json, f"checked against {binding.node}'s header chain")
    return 0


def _print_binding(binding: dict[str, Any], as_json: bool, proof: str) -> None:
    """A lookup's binding (the map of ``VerifiedBinding.to_json``), as JSON or for a person."""
    if as_json:
        import json

        print(json.dumps(binding, indent=2))
        return
    from p2pchat.foundation.fingerprint_text import format_fingerprint

    ip, port, relay, confirmations = binding["ip"], binding["port"], binding["relay"], binding["confirmations"]
    where = format_address(ip, port) if ip is not None and port is not None else "no direct address"
    print(f"{binding['nickname']}  {where}" + (f"  relay {relay}" if relay else ""))
    print(f"  fingerprint   {format_fingerprint(bytes.fromhex(binding['fingerprint']))}")
    print(f"  block         {binding['height']} ({binding['block'][:16]}), "
          f"{confirmations} confirmation{'s' if confirmations != 1 else ''}")
    print(f"  expires       {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(binding['expires']))}")
    print(f"  proof         {proof}")
    if binding["disputed"] is not None:
        print(f"  DISPUTED      {binding['disputed']['text']}")


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    status = client.status()
    if args.json:
        import json

        print(json.dumps(status, indent=2, default=str))   # JSON escapes every control and bidi character
        return 0
    # Every string of the answer is the node's (any node --node names): shown escaped, one line, bounded; and a
    # map of the wrong shape is the node's fault, said in one line, never a traceback.
    try:
        lines = _status_lines(_shown_tree(status))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CliError(f"the ledger node at {client.node} answered with a status this command cannot read "
                       f"({type(exc).__name__}: {_shown(exc, 200)}); ask another node with --node") from None
    print("\n".join(lines))
    return 0


def _status_lines(status: dict[str, Any]) -> list[str]:
    """``ledger status`` for a person, from a status map whose strings were made safe (:func:`_shown_tree`)."""
    from p2pchat.foundation import crypto

    out: list[str] = []
    out.append(f"node          {_shown(status.get('nickname'), 64)} at {_shown(status.get('address'), 64)} "
               f"({_shown(status.get('network'), 64)}, difficulty {_shown(status.get('difficulty_bits'), 8)} bits)")
    out.append(f"fingerprint   {crypto.format_fingerprint(bytes.fromhex(status.get('fingerprint', '')))}")
    if status.get("network_id"):
        out.append(f"network id    {status['network_id']}")
    out.append(f"height        {_shown(status.get('height'), 20)}  tip {_shown(status.get('tip'), 16)}  "
               f"work {_shown(status.get('cumulative_work'), 80)}")
    check = status.get("background_verification")
    if isinstance(check, dict):
        out.append(f"history check {_shown(check.get('state'), 16)}: {_shown(check.get('verified'), 20)} of "
              f"{_shown(check.get('target'), 20)} blocks assumed valid at join checked")
        if check.get("problem"):
            out.append(f"ALERT         {_shown(check.get('problem'), 400)}")
    pruned = status.get("pruned")
    if isinstance(pruned, dict) and (pruned.get("height") or pruned.get("keep") is not None):
        out.append(f"pruned        {_pruned_text(pruned)}")
    if status.get("final_height") is not None:
        out.append(f"final         block {status.get('final_height')} ({_shown(status.get('final_hash'), 16)})"
              + (f", checkpoint {_shown(status['checkpoint'].get('hash'), 16)}"
                 if isinstance(status.get("checkpoint"), dict) else ""))
    for alert in status.get("alerts") or []:
        out.append(f"ALERT         {_shown(alert, 400)}")
    lighter = [b for b in status.get("parked") or [] if isinstance(b, dict) and not b.get("heavier")]
    if lighter:
        out.append(f"parked        {len(lighter)} lighter branch{'es' if len(lighter) != 1 else ''} conflicting with "
              "final history (ledger reorg --list)")
    sync = status.get("sync")
    if status.get("syncing") and sync:
        out.append(f"sync          {_shown(sync['phase'], 16)} from {_shown(sync['peer'], 64)}: "
                   f"{_shown(sync['height'], 20)}/{_shown(sync['target'], 20)}")
    peers = status.get("peers") or []
    shown = ", ".join(_shown(p["address"], 64) for p in peers[:MAX_PEERS_SHOWN])
    more = f", … {len(peers) - MAX_PEERS_SHOWN} more" if len(peers) > MAX_PEERS_SHOWN else ""
    out.append(f"peers         {len(peers)}" + (f": {shown}{more}" if peers else ""))
    out.append(f"pending       {_shown(status.get('pending'), 20)} records; "
               f"mining: {'yes' if status.get('mining') else 'no'}")
    own = status.get("own_record")
    if own:
        where = (f"{_shown(own['ip'], 64)}:{_shown(own['port'], 8)}" if own.get("ip")
                 else f"relay {_shown(own.get('relay'), 64)}")
        mined = f"mined in block {own['height']}" if own.get("height") is not None else own["state"]
        out.append(f"own record    '{_shown(own['nickname'], 64)}' at {where}, seq {_shown(own['seq'], 20)}, "
                   f"{_shown(mined, 80)}")
        if own.get("warning"):
            out.append(f"              {_shown(own['warning'], 400)}")
    else:
        out.append("own record    none yet")
    if status.get("registration_error"):
        out.append(f"registration  {status['registration_error']}")
    clock = status.get("clock")
    if isinstance(clock, dict) and clock.get("warning"):   # network-adjusted time (ledger/nettime.py)
        out.append(f"CLOCK         {_shown(clock['warning'], 400)}")
    if status.get("nickname_problem"):
        out.append(f"nickname      {status['nickname_problem']}")
    for alert in status.get("binding_alerts") or []:       # owner watch (ledger/watch.py)
        out.append(f"ALERT         {_shown(alert.get('text'), 400)}")
    for conflict in status.get("binding_conflicts") or []:  # evidence from owners (ledger/disputes.py)
        out.append(f"conflict      {_shown(conflict.get('text'), 400)} (from {_shown(conflict.get('source'), 64)})")
    for mark in status.get("disputes") or []:
        out.append(f"disputed      {_shown(mark.get('text'), 400)}")
    for report in status.get("checkpoint_evidence") or []:    # chat nodes' reports (ledger/checkpoint_evidence.py)
        out.append(f"evidence      {_shown(report.get('text'), 400)}")
    return out


def _own_context(args: argparse.Namespace) -> tuple[LedgerClient, Path, str | None, own_record.OwnRecord, NetworkParams,
                                                   Identity]:
    from ledger import own_record

    data_dir = resolve_data_dir(args.data_dir)
    passphrase = os.environ.get(PASSPHRASE_ENV) or None
    identity = own_record.load_identity(data_dir, passphrase)
    client = _client(args)
    own = own_record.own_record(client.status(), identity)
    return client, data_dir, passphrase, own, client.network(), identity


def _publish(client: LedgerClient, record: own_record.Record, wait: float, what: str) -> int:
    from ledger import own_record

    print(f"publishing {what}:")
    for line in own_record.describe(record):
        print(f"  {line}")
    try:
        result = own_record.publish_and_wait(client, record, wait,
                                             progress=lambda text: print(f"  … {text}", flush=True))
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    if not result.mined:
        print(f"ledger: the record is still pending after {wait:g} s; the node keeps it and mines it when it can "
              "('ledger status' shows when it is in a block)", file=sys.stderr)
        return 1
    print(f"mined in block {result.height}.")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from ledger import own_record

    client, _data_dir, _pp, own, params, identity = _own_context(args)
    try:
        record = own_record.build_update(identity, own, params, time.time(), nickname=args.nickname, ip=args.ip,
                                         chat_port=args.chat_port)
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    return _publish(client, record, args.wait, "an update of this machine's record")


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from ledger import own_record

    client, data_dir, passphrase, own, params, identity = _own_context(args)
    print(f"current key {identity.short_fingerprint}; generating the new key…", flush=True)
    new = own_record.next_key(data_dir, passphrase, own)
    print(f"new key     {new.short_fingerprint}, written to {data_dir / own_record.NEXT_KEY_FILE} "
          "(the current key stays in use until the rotation is mined)")
    record = own_record.build_rotation(identity, new, own, params, time.time())
    code = _publish(client, record, args.wait, "a key rotation signed by both keys")
    if code != 0:
        print("ledger: the node switches to the new key by itself once the rotation is mined", file=sys.stderr)
        return code
    switched = own_record.switch_to_rotated_key(data_dir, new.fingerprint, passphrase)
    if switched is None:
        raise CliError(f"the rotation is mined but {data_dir / own_record.NEXT_KEY_FILE} could not be moved into "
                       "place; see the log")
    print(f"identity key is now {switched.short_fingerprint}; the old key is kept in "
          f"{data_dir / own_record.retired_key_file(identity.fingerprint)} (it can sign nothing more)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from ledger import own_record

    client, _data_dir, _pp, own, params, identity = _own_context(args)
    record = own_record.build_revocation(identity, own, params, time.time())
    if not args.yes:
        print(f"Revoking ends the identity {identity.short_fingerprint} ('{own.nickname}' at "
              f"{own.ip or own.relay}) for good: its address and nickname are released and this key can never "
              "register again.")
        try:
            answer = input("Type 'revoke' to confirm: ")
        except EOFError:
            answer = ""
        if answer.strip() != "revoke":
            print("ledger: not revoked", file=sys.stderr)
            return 1
    return _publish(client, record, args.wait, "a revocation")
def _shown(value: object, limit: int) -> str:
    """A value from another node, safe to print on one line: every character that is not printable (controls and
    terminal escapes, bidi and other format characters, line breaks) written as ``<U+XXXX>``, cut at ``limit``."""
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"<U+{ord(c):04X}>" for c in text)
    return text[:limit]


def _shown_tree(value: Any, limit: int = 400) -> Any:
    """``value`` (a map, list, … from another node) with every string in it made safe by :func:`_shown`."""
    if isinstance(value, str):
        return _shown(value, limit)
    if isinstance(value, dict):
        return {_shown(k, 64): _shown_tree(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown_tree(v, limit) for v in value]
    return value


def _pruned_text(pruned: dict[str, object]) -> str:
    height, keep = pruned.get("height"), pruned.get("keep")
    kept = "" if keep is None else f" (keeps every body of the last {_shown(keep, 12)} blocks below the final one)"
    if not height:
        return "nothing yet" + kept
    size = pruned.get("bytes")
    mib = f"{size / 2**20:.1f}" if isinstance(size, int) else "?"
    return (f"bodies up to block {_shown(height, 12)}: {_shown(pruned.get('records'), 12)} superseded records "
            f"dropped, {mib} MiB saved; serves bodies above it only{kept}")


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune the local store (node stopped), with progress, then compact the file."""
    from ledger.assume_valid import AssumeValid
    from ledger.local_ledger import LocalLedger, stored_params
    from ledger.prune import prune_all

    data_dir = resolve_data_dir(args.data_dir)
    network = _find_network(data_dir, args.network)
    params = stored_params(data_dir, network)
    if params is None:
        raise CliError(f"there is no ledger of network '{network}' in {data_dir}")
    if AssumeValid.load(data_dir, params) is not None:
        raise CliError("this node is still checking, in the background, the history it assumed valid when it "
                       "joined; prune once 'ledger status' no longer shows the history check")
    try:
        ledger = LocalLedger(data_dir, params,
                             finality=_finality(args))
    except StoreError as exc:
        if "already using" in str(exc):
            raise CliError(f"the ledger node using {data_dir} is running; it prunes by itself when started with "
                           "--prune, or stop it and run 'ledger prune' again") from None
        raise
    last = [0.0]

    def shown(state: object, target: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            print(f"ledger: pruning… block {getattr(state, 'height', '?')} of {target}", file=sys.stderr,
                  flush=True)

    with ledger:
        before = ledger.path.stat().st_size
        state = prune_all(ledger, args.prune_keep, progress=shown)
        if state is None:
            raise CliError("the ledger could not be pruned now; try again")
        print(f"{ledger.path}: {state.describe()}; final block {ledger.chain.final_height}, bodies above block "
              f"{state.height} kept in full")
        if not args.no_compact:
            print("ledger: compacting the database file…", file=sys.stderr, flush=True)
            ledger.store.vacuum()
            after = ledger.path.stat().st_size
            print(f"database file {before / 2**20:.1f} MiB → {after / 2**20:.1f} MiB")
    return 0


def cmd_reorg(args: argparse.Namespace) -> int:
    """List parked branches (from the store, or from the running node) or accept one (node stopped)."""
    from ledger.local_ledger import LocalLedger, stored_params

    data_dir = resolve_data_dir(args.data_dir)
    network = _find_network(data_dir, args.network)
    params = stored_params(data_dir, network)
    if params is None:
        raise CliError(f"there is no ledger of network '{network}' in {data_dir}")
    try:
        ledger = LocalLedger(data_dir, params)
    except StoreError as exc:
        if "already using" not in str(exc):
            raise
        if args.accept:
            raise CliError(f"the ledger node using {data_dir} is running; stop it (Ctrl-C), run 'ledger reorg "
                           "--accept' again, then start the node again") from None
        parked = _client(args).status().get("parked") or []
        return _print_parked([p for p in parked if isinstance(p, dict)], args.json)
    with ledger:
        if not args.accept:
            return _print_parked([b.to_json() for b in ledger.parked_branches()], args.json)
        try:
            result = ledger.accept_branch(args.accept, time.time())
        except LedgerError as exc:
            raise CliError(str(exc)) from None
        height, tip, _ = ledger.tip_info()
        if result.became_tip:
            print(f"accepted: the main chain is now the branch ending at {tip.hex()[:16]} (height {height}); "
                  f"{len(result.disconnected)} blocks left the main chain, {len(result.connected)} joined it")
        else:
            print(f"accepted, but the branch is not the one with the most valid work: the main chain stays at "
                  f"{tip.hex()[:16]} (height {height})")
    return 0


def _print_parked(parked: list[dict[str, object]], as_json: bool) -> int:
    if as_json:
        import json

        print(json.dumps(parked, indent=2))
        return 0
    if not parked:
        print("no parked branches: nothing conflicts with final history")
        return 0
    for b in parked:
        mark = "HEAVIER " if b.get("heavier") else ""
        print(f"{mark}branch {_shown(b.get('tip'), 64)}  height {_shown(b.get('tip_height'), 12)}, "
              f"{_shown(b.get('blocks'), 12)} blocks, work {_shown(b.get('work'), 40)} (main "
              f"{_shown(b.get('main_work'), 40)})\n  forks after block {_shown(b.get('fork_height'), 12)} "
              f"({_shown(b.get('fork'), 16)}), sent by {_shown(b.get('source') or 'unknown', 64)}")
    print("accept one deliberately (node stopped): ledger reorg --accept HASH")
    return 0


def _find_network(data_dir: Path, network: str | None) -> str:
    if network:
        return network
    found = sorted(p.name[len("ledger-"):-len(".sqlite3")] for p in data_dir.glob("ledger-*.sqlite3"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise CliError(f"there is no ledger in {data_dir} (run 'ledger serve' or 'ledger join PEER' first)")
    raise CliError(f"{data_dir} holds ledgers of several networks ({', '.join(found)}); choose one with --network")


def cmd_verify(args: argparse.Namespace) -> int:
    from ledger.local_ledger import store_path, verify_store, verify_workers

    data_dir = resolve_data_dir(args.data_dir)
    network = _find_network(data_dir, args.network)
    path = store_path(data_dir, network)
    if not path.exists():
        raise CliError(f"there is no ledger of network '{network}' in {data_dir}")
    try:
        report = verify_store(path, workers=verify_workers())
    except StoreError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import json

        print(json.dumps({"ok": report.ok, "path": str(report.path), "network": report.network,
                          "height": report.height, "tip": report.tip, "blocks": report.blocks,
                          "records": report.records, "pending": report.pending, "problems": report.problems,
                          "unchecked": report.unchecked},
                         indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1


def _peer_params(peers: Sequence[tuple[str, int]], host: str,
                 network: str | NetworkParams | None) -> NetworkParams | None:
    """The network parameters of the first peer that answers (checked against its genesis, and against every
    pinned parameter when ``network`` is a :class:`NetworkParams`), or None."""
    from ledger.client import LedgerClient

    last: UserError | None = None
    for ip, port in peers:
        try:
            return LedgerClient(ip, port, source_ip=host, network=network, timeout=5.0).network()
        except PeerUnreachable as exc:
            last = exc
    if last is not None:
        log.warning("%s", last)
    return None


def _params_for_join(args: argparse.Namespace, data_dir: Path, peers: list[tuple[str, int]]) -> NetworkParams:
    """Learn the network from the peers (waiting a while for one to answer); fall back to the stored network.

    The network id is pinned: by ``--network-id``, by the pin file of an earlier join (or by the stored ledger),
    or on this first join by the first peer that answers (trust on first use). A peer on another network id is
    refused with both ids named."""
    from ledger.local_ledger import store_path, stored_params
    from ledger.network_pin import pin_path
    from ledger.params import matches_network_id, parse_network_id

    stored = (stored_params(data_dir, args.network, recover=args.recover) if args.network
              else _stored_default(data_dir, args.recover))
    name = args.network or (stored.name if stored is not None else None)
    pinned = _pinned(data_dir, name)
    if pinned is None and stored is not None:
        pinned = stored
    given = parse_network_id(args.network_id) if args.network_id else None
    if given is not None and pinned is not None and not matches_network_id(pinned.genesis_hash, given):
        raise CliError(f"--network-id {_given_text(given)} "
                       f"is not the network this data dir pinned ({pinned.name}, id {pinned.id_text}, in "
                       f"{pin_path(data_dir, pinned.name)}); use another --data-dir or delete that file")
    deadline = time.monotonic() + args.wait
    said = False
    while True:
        params = _peer_params(peers, args.host, pinned or args.network)
        if params is not None:
            break
        if pinned is not None:
            log.warning("no peer answers yet; starting with the pinned %s and retrying in the background",
                        pinned.describe())
            _pin(data_dir, pinned, first=False)
            return pinned
        if time.monotonic() >= deadline:
            names = ", ".join(format_address(*p) for p in peers)
            raise CliError(f"cannot reach {names} to learn the network; is a ledger node running there?")
        if not said:
            log.warning("waiting for %s to answer…", format_address(*peers[0]))
            said = True
        time.sleep(1.0)
    if given is not None and not matches_network_id(params.genesis_hash, given):
        raise CliError(f"the peer is on network '{params.name}' with id {params.id_text}, not the id given with "
                       f"--network-id ({_given_text(given)}); refusing it (another or a forged network)")
    mine = stored_params(data_dir, params.name, recover=args.recover)
    if mine is not None and mine != params:
        raise CliError(f"{store_path(data_dir, params.name)} holds {mine.describe()}, but the peer runs "
                       f"{params.describe()}; use another --data-dir")
    _pin(data_dir, params, first=pinned is None and given is None)
    return params


def _given_text(given: str) -> str:
    return " ".join(given[i:i + 4] for i in range(0, len(given), 4))


def _pinned(data_dir: Path, name: str | None) -> NetworkParams | None:
    from ledger.network_pin import find_pin

    try:
        return find_pin(data_dir, name)
    except LedgerError as exc:
        raise CliError(str(exc)) from None


def _pin(data_dir: Path, params: NetworkParams, *, first: bool) -> None:
    """Write the pin file if it is missing; on a first join by trust, say what was pinned and how to check."""
    from ledger.network_pin import load_pin, save_pin

    if load_pin(data_dir, params.name) is not None:
        return
    path = save_pin(data_dir, params)
    if first:
        print(f"ledger: first join of network '{params.name}': pinned its network id {params.id_text} in {path} "
              "(trust on first use). Compare it with the id 'ledger serve' printed on a machine you trust; if "
              "they differ, stop this node, delete that file and join with --network-id.",
              file=sys.stderr, flush=True)


def _join_checkpoint(args: argparse.Namespace, data_dir: Path, params: NetworkParams,
                     peers: Sequence[tuple[str, int]]) -> tuple[int, bytes] | None:
    """A node with no history of its own asks every peer it was given for its newest final block, and each peer
    for its final block at the heights the others reported (ledger/finality_survey.py). The highest final block a
    majority of them vouch for is pinned as this node's checkpoint; a disagreement is refused unless the operator
    chose with ``--checkpoint`` (never the heavier one by itself)."""
    from ledger.client import LedgerClient
    from ledger.finality_survey import FinalitySurvey
    from ledger.local_ledger import store_path
    from ledger.store import Store

    chosen: tuple[int, bytes] | None = args.checkpoint
    path = store_path(data_dir, params.name)
    if path.exists():
        with Store(path) as store:
            if store.block_count() > 0:
                return chosen  # history of its own: its finality decides (a --checkpoint is checked against it)
    survey = FinalitySurvey()
    clients: dict[str, LedgerClient] = {}
    for ip, port in peers:
        address = format_address(ip, port)
        client = LedgerClient(ip, port, source_ip=args.host, network=params, timeout=5.0)
        try:
            final_height, final_hash, _ = client.checkpoint()
        except (PeerUnreachable, LedgerError) as exc:
            log.warning("%s did not answer the finality survey: %s", _shown(address, 64), _shown(exc, 1000))
            continue
        survey.report(address, final_height, final_hash)
        clients[address] = client
    if not any(h for h, _ in survey.finals.values()):
        if clients:
            print("ledger: no peer has final blocks yet; nothing to compare", file=sys.stderr, flush=True)
        return chosen
    for address, height in survey.questions():
        try:
            _, _, at = clients[address].checkpoint(height)
        except (PeerUnreachable, LedgerError) as exc:
            log.warning("%s did not answer the finality survey: %s", _shown(address, 64), _shown(exc, 1000))
            continue
        survey.answer(address, height, at)
    verdict = survey.verdict()
    compared = min(verdict.conflicts) if verdict.conflicts else (verdict.checkpoint or (0, b""))[0]
    listing = verdict.listing(compared)
    if chosen is not None:
        print(f"ledger: following the chosen checkpoint {chosen[0]}:{chosen[1].hex()[:16]} ({listing})",
              file=sys.stderr, flush=True)
        return chosen
    if verdict.conflicts:
        log.warning("peers disagree about final history: %s", listing)
        raise CliError(f"the peers disagree about final history: {listing}. This node adopts neither by itself: "
                       "ask a member you trust which block is right and join again with --checkpoint "
                       f"{compared}:HASH (or through other peers)")
    if verdict.checkpoint is None:
        print(f"ledger: no final block is vouched for by most of the {verdict.answered} peers that answered; "
              "nothing pinned (give more peers you trust, or --checkpoint)", file=sys.stderr, flush=True)
        return None
    common, digest = verdict.checkpoint
    who = verdict.vouchers
    note = "" if len(who) > 1 else " (only one peer to compare with: give several peers to 'ledger join')"
    print(f"ledger: {len(who)} peer{'s' if len(who) > 1 else ''} agree that block {common} ({digest.hex()[:16]}) is "
          f"final; this node will only follow chains that hold it{note}", file=sys.stderr, flush=True)
    return common, digest


def _assume_valid(args: argparse.Namespace, data_dir: Path, params: NetworkParams,
                  peers: Sequence[tuple[str, int]], checkpoint: tuple[int, bytes] | None,
                  ledger: LocalLedger) -> AssumeValid | None:
    """A fresh ``join`` with an agreed checkpoint takes the history up to it without checking its signatures and
    checks them in the background (ledger/assume_valid.py); a node that did so before resumes the check."""
    from ledger.assume_valid import AssumeValid
    from ledger.client import LedgerClient

    try:
        resumed = AssumeValid.load(data_dir, params)
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    if resumed is not None:
        print(f"ledger: background verification of the history up to block {resumed.height}: "
              f"{resumed.state.value}, {resumed.verified} blocks checked", file=sys.stderr, flush=True)
        return resumed
    if args.command != "join" or args.verify_all or checkpoint is None or checkpoint[0] == 0 or ledger.height > 0:
        return None
    height, digest = checkpoint
    problems = []
    for ip, port in peers:
        client = LedgerClient(ip, port, source_ip=args.host, network=params, timeout=10.0, pin_dir=data_dir)
        try:
            client.sync_headers()
            store = client.header_store
            assert store is not None
            av = AssumeValid.begin(data_dir, params, height, digest, store)
        except (PeerUnreachable, LedgerError) as exc:
            problems.append(f"{format_address(ip, port)}: {exc}")
            client.close()
            continue
        print(f"ledger: {client.height} headers checked; taking the history up to the agreed checkpoint "
              f"{height} ({digest.hex()[:16]}) without checking its signatures now: they are checked in the "
              "background ('ledger status' shows the progress; a forged one stops this node from answering)",
              file=sys.stderr, flush=True)
        return av
    raise CliError("no peer served a header chain holding the agreed checkpoint: " + "; ".join(problems))


def _stored_default(data_dir: Path, recover: bool) -> NetworkParams | None:
    from ledger.local_ledger import stored_params

    try:
        return stored_params(data_dir, _find_network(data_dir, None), recover=recover)
    except CliError:
        return None


def _params_for_serve(args: argparse.Namespace, data_dir: Path) -> NetworkParams:
    from ledger.local_ledger import stored_params
    from ledger.params import NetworkParams

    network = args.network or DEFAULT_NETWORK
    stored = stored_params(data_dir, network, recover=args.recover) or _pinned(data_dir, network)
    if stored is not None:
        if args.difficulty is not None and args.difficulty != stored.difficulty_bits:
            raise CliError(f"this data dir already holds {stored.describe()}; --difficulty only applies to a new "
                           "network (drop it, or use another --data-dir)")
        _pin(data_dir, stored, first=False)
        return stored
    params = NetworkParams(name=network, difficulty_bits=args.difficulty or DEFAULT_DIFFICULTY)
    _pin(data_dir, params, first=False)
    return params


def cmd_run(args: argparse.Namespace) -> int:
    """``serve`` and ``join``: run a node in the foreground until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from ledger import own_record
    from ledger.local_ledger import LocalLedger
    from ledger.node import LedgerNode, NodeConfig
    from p2pchat.foundation.identity import Identity
    from p2pchat.foundation.keygen import TerminalProgress

    if args.no_inbound and not args.relay:
        raise CliError("--no-inbound needs --relay IP:PORT (peers must learn how to reach this host)")
    if args.max_peers < 1:
        raise CliError("--max-peers must be at least 1")
    data_dir = resolve_data_dir(args.data_dir)
    seeds = [parse_address(p, LEDGER_PORT) for p in (getattr(args, "peers", []) + args.peer)]
    seeds = [s for s in seeds if s != (args.host, args.port)]
    checkpoint: tuple[int, bytes] | None = None
    if args.command == "join":
        params = _params_for_join(args, data_dir, seeds)
        checkpoint = _join_checkpoint(args, data_dir, params, seeds)
    else:
        params = _params_for_serve(args, data_dir)
    identity = Identity.load_or_create(data_dir, os.environ.get(PASSPHRASE_ENV) or None,
                                       progress=TerminalProgress("ledger"))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        ledger = LocalLedger(data_dir, params, recover=args.recover, checkpoint=checkpoint,
                             finality=_finality(args))
    except LedgerError as exc:  # a --checkpoint that contradicts this node's own history
        raise CliError(str(exc)) from None
    if ledger.store.recovered_from is not None:
        log.warning("the damaged ledger database was moved to %s", ledger.store.recovered_from)
    try:
        assume_valid = _assume_valid(args, data_dir, params, seeds, checkpoint, ledger)
    except BaseException:
        ledger.close()
        raise
    try:
        node = LedgerNode(identity, ledger, host=args.host, port=args.port, chat_port=args.chat_port,
                          seeds=[format_address(*s) for s in seeds], nickname=args.nickname, relay=args.relay,
                          no_inbound=args.no_inbound, max_peers=args.max_peers,
                          config=NodeConfig(mine=not args.no_mine, verify_rate=args.verify_rate,
                                            prune_keep=args.prune_keep if args.prune else None),
                          on_progress=_ProgressPrinter(),
                          reload_identity=lambda fp: own_record.switch_to_rotated_key(
                              data_dir, fp, os.environ.get(PASSPHRASE_ENV) or None),
                          assume_valid=assume_valid, host_watch=args.host_watch)
        node.start()
    except BaseException:
        ledger.close()
        raise
    damage: list[str] = []

    def on_damage(message: str) -> None:   # the whole-file check owed after a clean shutdown found damage
        damage.append(message)
        stop.set()

    ledger.check_store_in_background(on_damage)
    print(f"ledger node at {node.address} on {params.describe()}; height {ledger.height}; "
          f"fingerprint {identity.short_fingerprint}. Ctrl-C stops it.", file=sys.stderr, flush=True)
    print(f"ledger: network id {params.id_text} (nodes joining should check it: ledger join --network-id "
          f"'{params.id_text}' {node.address})", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("ledger: stopping…", file=sys.stderr, flush=True)
        node.close()
        ledger.close()
    return 1 if damage else 0   # the damage was logged (once) by the ledger


class _ProgressPrinter:
    """Sync progress on stderr, at most once a second (the end of a sync is logged by the node)."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, progress: SyncProgress) -> None:
        now = time.monotonic()
        if progress.phase in ("done", "interrupted") or now - self._last < 1.0:
            return
        self._last = now
        print(f"ledger: {progress.describe()}", file=sys.stderr, flush=True)


def _asking_a_node(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn "cannot connect" into a message that says what to do about it."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except PeerUnreachable as exc:
            raise CliError(f"{exc} (is a ledger node running there? start one with 'ledger serve' or "
                           "'ledger join PEER', or pick another with --node)") from None
    return run


COMMANDS = {"serve": cmd_run, "join": cmd_run, "lookup": _asking_a_node(cmd_lookup),
            "status": _asking_a_node(cmd_status), "verify": cmd_verify, "prune": cmd_prune,
            "update": _asking_a_node(cmd_update), "rotate-key": _asking_a_node(cmd_rotate_key),
            "revoke": _asking_a_node(cmd_revoke), "reorg": _asking_a_node(cmd_reorg)}


def _setup_logging(args: argparse.Namespace) -> None:
    import logging

    running = args.command in ("serve", "join")
    level = logging.WARNING
    if args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose == 1 or running:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter())
    logging.basicConfig(level=level, handlers=[handler])


def log_formatter() -> logging.Formatter:
    """The formatter of every log line a command writes. Log lines quote peers (error reasons, addresses,
    nicknames): each message is shown escaped and on one line (:func:`_shown`), so no peer can write to the
    operator's terminal; a traceback keeps its lines."""
    import logging

    class ShownFormatter(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:
            record.message = _shown(record.message, 4000)
            return super().formatMessage(record)

    return ShownFormatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = _finish_args(args)
        if args.command != "lookup":   # a lookup sets logging up only if it needs more than its own node
            _setup_logging(args)
        return COMMANDS[args.command](args)
    except UserError as exc:   # its text may quote a node (a refusal's reason): shown escaped
        print(f"ledger: {_shown(exc, 2000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ledger: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1

