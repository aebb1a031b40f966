"""The ``p2pchat`` command: ``chat``, ``listen``, ``bot``, ``contacts``, ``history``, ``demo``, ``gui`` and
``relay``.

With no subcommand it opens the window when a display is available and prints this help otherwise. Errors a
user can cause are printed as one plain sentence (exit status 1); usage errors exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from p2pchat import contacts_cli, group_cli, history_cli, pad_cli, passphrase
from p2pchat.display import visible
from p2pchat.flags import ACCEPT_FLAG, OVERRIDE_FLAG
from p2pchat.foundation.addresses import CHAT_PORT, HOST_AUTO, check_port, normalize_ip, parse_address
from p2pchat.foundation.errors import UsageError, UserError
from p2pchat.foundation.fingerprint_text import format_fingerprint
from p2pchat.foundation.help_format import ArgumentParser

# The chat node, the identity key (pycryptodome) and the window are imported by the command that needs them, so
# that `p2pchat --help` starts like a bare interpreter (bench/startup_bench.py).
if TYPE_CHECKING:
    from p2pchat.foundation.identity import Identity
    from p2pchat.node import ChatNode

PROG = "p2pchat"
MAX_NICKNAME = 32


def _add_node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="this machine's address: where it listens, what the ledger binds to its key, and where "
                        "outgoing connections come from (default 127.0.0.1); 'auto': this machine's address, "
                        "followed when it changes (run the ledger node with --host auto too)")
    p.add_argument("--port", type=int, default=CHAT_PORT, help=f"chat port to listen on (default {CHAT_PORT})")
    p.add_argument("--data-dir", help="where the identity key lives (default: $P2PCHAT_HOME or the per-user "
                                      "data directory)")
    p.add_argument("--network", default="p2pchat", help="network name; both peers must use the same one")
    p.add_argument("--nickname", help="name shown to peers (default: the nickname of your ledger record, else "
                                      "your login name)")
    p.add_argument("--ledger", metavar="ADDR",
                   help="ledger node to ask about peers, ip[:port] (default: the one at --host)")
    p.add_argument("--relay", metavar="ADDR", help="relay to register at and fall back to, ip[:port][#key] "
                                                       "(#key pins the relay's link key, printed by p2pchat relay)")
    p.add_argument("--no-inbound", action="store_true",
                   help="behave as if behind NAT: no listening socket, reachable only through --relay")
    p.add_argument("--direct-timeout", type=float, default=3.0,
                   help="seconds to try the direct path before the relay (default 3)")
    p.add_argument("--rotate-every", type=int, default=10,
                   help="rotate the sending key after this many messages (default 10)")
    p.add_argument("--step-timeout", type=float, default=10.0,
                   help="seconds a peer has to answer each handshake step (default 10)")
    passphrase.add_option(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log network activity to stderr")


def _add_file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--downloads", metavar="DIR", help="where received files go (default: downloads/ in the data "
                                                      "directory)")
    p.add_argument("--max-file-size", metavar="MiB", type=float, default=2048.0,
                   help="largest file accepted, in MiB (default 2048 = 2 GiB)")


def _add_key_change_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(ACCEPT_FLAG, metavar="FINGERPRINT", dest="accept_new_key",
                   help="accept this key (its full fingerprint, as the key-change message prints it) for a contact "
                        "whose pinned key the ledger no longer names; the decision is recorded")
    p.add_argument(OVERRIDE_FLAG, action="store_true", dest="override_verified",
                   help=f"with {ACCEPT_FLAG}: also for a contact you had verified (ask them in person first)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Peer-to-peer, end-to-end encrypted chat whose certificate authority is a proof-of-work "
                    "ledger. Without a subcommand: the window when a display is available, else this help.")
    # The subcommands' parsers are of the parser's class (its formatter spares argparse's shutil import).
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", metavar="COMMAND"))
    chat = sub.add_parser("chat", help="chat with PEER in this terminal",
                          description="Run the four handshake steps with PEER (printing each result), then send "
                                      "each line of standard input and print incoming messages. End of input or "
                                      "/quit says goodbye. /status and /verify show the session and its safety "
                                      "number.")
    chat.add_argument("peer", metavar="PEER", help="IP, IP:PORT, nickname or fingerprint of the peer, or a contact "
                                                   "(its local name, nickname or fingerprint prefix: p2pchat "
                                                   "contacts)")
    _add_node_options(chat)
    _add_file_options(chat)
    _add_key_change_options(chat)
    listen = sub.add_parser("listen", help="wait for chats in this terminal",
                            description="Wait for incoming chats, ask to accept or reject each (or accept all), "
                                        "print messages and send the lines you type to the latest chat.")
    listen.add_argument("--accept-all", action="store_true", help="accept every chat without asking")
    listen.add_argument("--once", action="store_true", help="exit when the first chat ends")
    listen.add_argument("--accept-files", action="store_true",
                        help="accept every file offered into the downloads folder without asking")
    listen.add_argument("--group", metavar="GROUP",
                        help="send the lines you type to this group (its name or the start of its id) while no "
                             "pairwise chat is chosen; `p2pchat group chat GROUP` is the same")
    listen.add_argument("--chats-per-peer", metavar="N", type=int, default=None,
                        help="incoming chats one peer's key may hold at once (default 16; a chat over it is "
                             "refused at step 3)")
    _add_node_options(listen)
    _add_file_options(listen)
    send = sub.add_parser("send", help="send one file to PEER and exit",
                          description="Run the four steps with PEER, offer the file, show progress until the "
                                      "receiver has checked the whole file against its SHA-256, and exit (0 once "
                                      "delivered). Sending the same file again to the same peer resumes where an "
                                      "interrupted transfer stopped.")
    send.add_argument("peer", metavar="PEER", help="IP, IP:PORT, nickname or fingerprint of the peer, or a contact")
    send.add_argument("path", metavar="PATH", help="the file to send")
    _add_node_options(send)
    _add_key_change_options(send)
    _add_key_change_options(listen)
    bot = sub.add_parser("bot", help="drive the chat node with JSON lines (for scripts)",
                         description="Listen for chats and take commands as JSON lines on standard input; "
                                     "write events and replies as JSON lines on standard output (schema: "
                                     "docs/bot.md; examples in examples/).")
    bot.add_argument("--accept-all", action="store_true",
                     help="accept every incoming chat (else each asks with an incoming_chat event)")
    _add_node_options(bot)
    contacts_cli.add_parser(sub)
    history_cli.add_parser(sub)
    pad_cli.add_parser(sub)     # issue 17: one-time pads
    group_cli.add_parser(sub)                      # [groups, issue 18]
    demo = sub.add_parser("demo", help="the whole flow on this machine (two windows, or the terminal demo)",
                          description="Start a small ledger network and two users on 127.0.0.x and run the "
                                      "four steps between them: two windows when a display is available, else "
                                      "(or with --headless) a narrated demo in this terminal.")
    demo.add_argument("--headless", action="store_true", help="the terminal demo even when a display exists")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary data directory")
    demo.add_argument("--hosts", metavar="IP,IP", default="127.0.0.2,127.0.0.3",
                      help="loopback addresses of the two demo users (default 127.0.0.2,127.0.0.3)")
    sub.add_parser("gui", help="open the window", add_help=False)
    sub.add_parser("relay", help="run a relay (see p2pchat relay --help)", add_help=False)
    return parser


def have_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _default_nickname(node_directory: object, identity: Identity) -> str:
    """The nickname of our own ledger record, else the login name (trimmed to a valid nickname)."""
    import getpass

    from p2pchat.peer_directory import PeerNotFound

    try:
        return node_directory.lookup(identity.fingerprint.hex()).nickname  # type: ignore[attr-defined]
    except PeerNotFound:
        pass
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "p2pchat-user"
    return "".join(ch for ch in name if ch.isprintable())[:MAX_NICKNAME] or "p2pchat-user"


def make_node(args: argparse.Namespace, *, listen: bool, auto_accept: bool = False,
              opened: passphrase.Opened | None = None, accept_files: bool = False) -> ChatNode:
    """A :class:`~p2pchat.node.ChatNode` configured from the command line (not started yet); ``opened``: the data
    directory already opened with its passphrase (:func:`p2pchat.passphrase.open_data_dir`)."""
    from p2pchat.admission import Admission
    from p2pchat.chat_protocol import MAX_ROTATE_EVERY
    from p2pchat.foundation.identity import Identity
    from p2pchat.foundation.keygen import TerminalProgress
    from p2pchat.node import ChatNode

    host_watch = None
    if args.host == HOST_AUTO:
        from p2pchat.foundation.host_address import HostWatch

        host_watch = HostWatch()
        args.host = host_watch.current
    host = normalize_ip(args.host)
    check_port(args.port)
    if args.ledger:
        parse_address(args.ledger, 1)
    if args.relay:
        from p2pchat.relay.link import parse_relay

        parse_relay(args.relay)      # IP[:PORT][#KEY] (relay link key pin, docs/relay.md)
    if args.no_inbound and not args.relay:
        raise UserError("--no-inbound needs --relay: without a listening socket, peers can only reach you "
                        "through a relay")
    if not 1 <= args.rotate_every <= MAX_ROTATE_EVERY:
        raise UserError(f"--rotate-every must be between 1 and {MAX_ROTATE_EVERY} (the protocol's maximum)")
    per_peer = getattr(args, "chats_per_peer", None)
    if per_peer is not None and per_peer < 1:
        raise UserError("--chats-per-peer must be at least 1")
    data_dir, secret, vault = opened or passphrase.open_data_dir(args)
    identity = Identity.load_or_create(data_dir, secret, progress=TerminalProgress(PROG))
    node = ChatNode(identity, host=host, port=args.port, network=args.network, nickname=args.nickname or "?",
                    ledger=args.ledger, relay=args.relay, no_inbound=args.no_inbound,
                    direct_timeout=args.direct_timeout, rotate_every=args.rotate_every,
                    step_timeout=args.step_timeout, auto_accept=auto_accept, listen=listen, data_dir=data_dir,
                    vault=vault, outbox=listen,
                    downloads=Path(args.downloads).expanduser() if getattr(args, "downloads", None) else None,
                    max_file_size=int(getattr(args, "max_file_size", 2048.0) * 2**20), accept_files=accept_files,
                    host_watch=host_watch, admission=None if per_peer is None else Admission(per_peer=per_peer))
    if not args.nickname:
        node.nickname = _default_nickname(node.directory, identity)
    return node


def _accept_key_change(node: ChatNode, args: argparse.Namespace) -> None:
    if args.override_verified and not args.accept_new_key:
        raise UsageError(f"{OVERRIDE_FLAG} goes with {ACCEPT_FLAG} FINGERPRINT")
    if args.accept_new_key:
        node.accept_new_key(args.accept_new_key, override_verified=args.override_verified)


def _run_chat(args: argparse.Namespace) -> int:
    from p2pchat.terminal import run_chat

    opened = passphrase.open_data_dir(args)
    peer, contact = contacts_cli.resolve_peer(opened.data_dir, args.peer, opened.vault)
    node = make_node(args, listen=False, opened=opened)
    try:
        _accept_key_change(node, args)
        if contact is not None:
            name = visible(contact.local_name or contact.nickname or args.peer)
            print(f"{PROG}: contact {name} ({format_fingerprint(contact.fingerprint, 4)}"
                  f"{', verified' if contact.verified else ''}) → {visible(peer)}", file=sys.stderr)
        node.start()
        return run_chat(node, peer, stdin_fd=sys.stdin.fileno(), out=sys.stdout)
    finally:
        node.close()


def _run_listen(args: argparse.Namespace) -> int:
    from p2pchat.terminal import run_listen

    node = make_node(args, listen=True, auto_accept=args.accept_all, accept_files=args.accept_files)
    try:
        _accept_key_change(node, args)
        node.start()
        return run_listen(node, stdin_fd=sys.stdin.fileno(), out=sys.stdout, accept_all=args.accept_all,
                          once=args.once, group=args.group)
    finally:
        node.close()


def _run_bot(args: argparse.Namespace) -> int:
    from p2pchat.bot import run_bot

    node = make_node(args, listen=True, auto_accept=args.accept_all)
    try:
        node.start()
        return run_bot(node, stdin_fd=sys.stdin.fileno(), out=sys.stdout)
    finally:
        node.close()


def _run_send(args: argparse.Namespace) -> int:
    from p2pchat.terminal import run_send

    opened = passphrase.open_data_dir(args)
    peer, _ = contacts_cli.resolve_peer(opened.data_dir, args.peer, opened.vault)
    node = make_node(args, listen=False, opened=opened)
    try:
        _accept_key_change(node, args)
        node.start()
        return run_send(node, peer, args.path, out=sys.stdout)
    finally:
        node.close()


def _run_gui(argv: list[str]) -> int:
    try:
        import gui.app
    except ImportError as exc:
        raise UserError(f"the window cannot start: {exc}") from None
    return int(gui.app.main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``p2pchat`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "relay":
        from p2pchat.relay.cli import main as relay_main

        return int(relay_main(argv[1:]) or 0)
    try:
        if argv and argv[0] == "gui":
            return _run_gui(argv[1:])
        parser = build_parser()
        if not argv:
            if have_display():
                return _run_gui([])
            parser.print_help()
            return 0
        args = parser.parse_args(group_cli.as_listen(argv))    # `group chat GROUP …` is `listen --group GROUP …`
        if getattr(args, "verbose", False):
            import logging

            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        if args.command == "chat":
            return _run_chat(args)
        if args.command == "listen":
            return _run_listen(args)
        if args.command == "bot":
            return _run_bot(args)
        if args.command == "send":
            return _run_send(args)
        if args.command == "contacts":
            return contacts_cli.run(args, sys.stdout)
        if args.command == "history":
            return history_cli.run(args, sys.stdout)
        if args.command == "pad":     # issue 17
            return pad_cli.run(args, sys.stdout)
        if args.command == "group":                # [groups, issue 18]
            return group_cli.run(args, sys.stdout)
        if args.command == "demo":
            from p2pchat.demo import main as demo_main

            hosts = [normalize_ip(h) for h in args.hosts.split(",")]
            if len(hosts) != 2 or hosts[0] == hosts[1]:
                raise UserError("--hosts takes two different addresses, e.g. 127.0.0.2,127.0.0.3")
            return demo_main(headless=args.headless or not have_display(), keep=args.keep, hosts=hosts)
        parser.print_help()
        return 2
    except UserError as exc:
        print(f"{PROG}: {visible(str(exc))}", file=sys.stderr)   # may quote a peer or a ledger
        return 1
    except KeyboardInterrupt:
        return 130
