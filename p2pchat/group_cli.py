"""``p2pchat group create|add|remove|list|show``: the data directory's groups without a running node (issue 18).

Changes made here are signed and kept at once; their frames wait in the group store and go out the next time
``p2pchat listen`` (or the window) runs, which calls the members with something waiting. While ``listen`` runs,
use its ``/group`` commands instead (a running node does not see changes another process makes to its groups).
"""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, TextIO

from p2pchat import passphrase
from p2pchat.foundation.errors import UsageError

if TYPE_CHECKING:      # `p2pchat --help` imports this module: the stores and crypto load only when it runs
    from p2pchat.contacts import ContactStore
    from p2pchat.foundation.identity import Identity
    from p2pchat.group_service import GroupService


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("group", help="group chats: create, add, remove, list, show, chat",
                       description="The groups of the data directory. create NAME MEMBER…, add GROUP MEMBER, "
                                   "remove GROUP MEMBER, list, show GROUP (GROUP: its name or the start of its "
                                   "id; MEMBER: a contact). What changes goes out the next time `p2pchat listen` "
                                   "runs. chat GROUP [listen's options]: run `p2pchat listen` with the lines you "
                                   "type going to GROUP (the same as `listen --group GROUP`).")
    p.add_argument("action", choices=("create", "add", "remove", "list", "show", "chat"))
    p.add_argument("words", nargs="*", metavar="ARG")
    p.add_argument("--data-dir", help="the data directory (default: $P2PCHAT_HOME or the per-user data directory)")
    passphrase.add_option(p)


def as_listen(argv: list[str]) -> list[str]:
    """``group chat GROUP [OPTIONS]`` is ``listen --group GROUP [OPTIONS]``: a running node writes to the group."""
    if len(argv) >= 3 and argv[0] == "group" and argv[1] == "chat" and not argv[2].startswith("-"):
        return ["listen", "--group", argv[2], *argv[3:]]
    return argv


class OfflineHost:
    """The offline stand-in for the node: no chat is ever open, so every frame waits in the store."""

    def live_session_with(self, fp: str) -> str | None:
        return None

    def send_group_frame(self, session: str, body: bytes) -> None:
        raise UsageError("no chat is open here")

    def want_contact(self, fp: str) -> None:
        pass

    def offer_file(self, session: str, path: str, size: int, sha256: bytes) -> str:
        raise UsageError("no chat is open here")

    def cancel_file(self, session: str, transfer: str) -> None:
        raise UsageError("no chat is open here")


class _OfflineNode:
    def __init__(self, identity: Identity, contacts: ContactStore, groups: GroupService) -> None:
        self.identity = identity
        self.contacts: ContactStore | None = contacts
        self.groups: GroupService | None = groups

    def group_member(self, query: str) -> tuple[str, bytes, str]:
        c = self.contacts.resolve(query) if self.contacts is not None else None
        if c is None:
            raise UsageError("no contact store")
        return c.fp, c.public_der, c.local_name or c.nickname or c.fp[:16]


def run(args: argparse.Namespace, out: TextIO) -> int:
    from p2pchat.contacts import ContactStore
    from p2pchat.display import Printer
    from p2pchat.foundation.identity import Identity
    from p2pchat.group_service import GroupService
    from p2pchat.group_store import GroupStore
    from p2pchat.group_terminal import GroupCommands
    from p2pchat.terminal_names import PeerNames

    if args.action == "chat":        # `group chat GROUP …` became `listen --group GROUP …` unless GROUP is missing
        raise UsageError("say which group: p2pchat group chat GROUP [the options of p2pchat listen]")
    data_dir, secret, vault = passphrase.open_data_dir(args, offer=False)
    identity = Identity.load_or_create(data_dir, secret)
    contacts = ContactStore.in_data_dir(data_dir, vault)
    service = GroupService(OfflineHost(), GroupStore.in_data_dir(data_dir, vault), identity, lambda ev: None)
    p = Printer(out)
    try:
        node = _OfflineNode(identity, contacts, service)
        GroupCommands(node, p, PeerNames(contacts)).command("/group", shlex.join([args.action, *args.words]))
    finally:
        service.close()
        contacts.close()
    return 0


__all__ = ["add_parser", "as_listen", "run"]
