"""A complete little p2pchat world in one process, for the demos (terminal and GUI) and for tests.

:class:`DemoWorld` makes a temporary data root, one identity per user (or takes given ones), one ledger node per
user on its own 127.0.0.x address (the first one starts the network, the others join it; low proof-of-work
difficulty so blocks come at once), waits until every user's record is mined into a block that every node has,
and then starts one :class:`~p2pchat.node.ChatNode` per user that asks its own ledger node about peers.
``close()`` stops everything in reverse order and joins every thread.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.local_ledger import LocalLedger
from ledger.node import LedgerNode, NodeConfig
from ledger.params import NetworkParams
from p2pchat.foundation.addresses import CHAT_PORT, LEDGER_PORT, format_address
from p2pchat.foundation.errors import UserError
from p2pchat.foundation.identity import KEY_FILE, Identity
from p2pchat.node import ChatNode

DEMO_HOSTS = ("127.0.0.2", "127.0.0.3")
DEMO_NICKNAMES = ("alice", "bob")
DEMO_NETWORK = "p2pchat-demo"
DEMO_DIFFICULTY = 10

Say = Callable[[str], None]


@dataclass
class RecordInfo:
    """Where a user's ledger record ended up, as the user's peers see it."""

    height: int
    confirmations: int


@dataclass
class DemoUser:
    nickname: str
    host: str
    data_dir: Path
    identity: Identity
    ledger: LocalLedger
    ledger_node: LedgerNode
    chat: ChatNode | None = None
    record: RecordInfo | None = None

    @property
    def ledger_address(self) -> str:
        return self.ledger_node.address


@dataclass
class DemoWorld:
    """See the module docstring. Use as a context manager, or call :meth:`start` and :meth:`close`."""

    root: Path | None = None
    hosts: Sequence[str] = DEMO_HOSTS
    nicknames: Sequence[str] = DEMO_NICKNAMES
    network: str = DEMO_NETWORK
    difficulty: int = DEMO_DIFFICULTY
    rotate_every: int = 3
    chat_port: int = CHAT_PORT
    ledger_port: int = LEDGER_PORT
    identities: Sequence[Identity] | None = None
    auto_accept: bool = False
    chat_options: dict[str, Any] = field(default_factory=dict)
    keep: bool = False
    say: Say | None = None
    users: list[DemoUser] = field(default_factory=list)
    _own_root: bool = False

    @property
    def params(self) -> NetworkParams:
        return NetworkParams(name=self.network, difficulty_bits=self.difficulty)

    def _say(self, text: str) -> None:
        if self.say is not None:
            self.say(text)

    def start(self, timeout: float = 60.0) -> DemoWorld:
        """Start the ledger network, wait for every record to be mined, start the chat nodes."""
        if len(self.hosts) != len(self.nicknames) or len(self.hosts) < 2:
            raise ValueError("a demo world needs at least two users, each with a host and a nickname")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="p2pchat-demo-"))
            self._own_root = True
        try:
            self._start_ledgers()
            self._wait_for_records(timeout)
            self._start_chats()
        except BaseException:
            self.close()
            raise
        return self

    def _start_ledgers(self) -> None:
        assert self.root is not None
        given = list(self.identities or [])
        first: str | None = None
        for i, (host, nick) in enumerate(zip(self.hosts, self.nicknames, strict=True)):
            data_dir = self.root / nick
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if i < len(given):
                identity = given[i]
                if not (data_dir / KEY_FILE).exists():
                    identity.save(data_dir / KEY_FILE)
            else:
                identity = Identity.load_or_create(data_dir)
            ledger = LocalLedger(data_dir, self.params)
            node = LedgerNode(identity, ledger, host=host, port=self.ledger_port, chat_port=self.chat_port,
                              seeds=[first] if first else [], nickname=nick,
                              config=NodeConfig(register_grace=2.0, backoff_base=0.2, backoff_cap=2.0))
            user = DemoUser(nick, host, data_dir, identity, ledger, node)
            self.users.append(user)
            try:
                node.start()
            except BaseException:
                ledger.close()
                self.users.remove(user)
                raise
            first = first or node.address
            self._say(f"ledger node of {nick} on {node.address} (key {identity.short_fingerprint})")

    def _wait_for_records(self, timeout: float) -> None:
        """Until every node holds every user's record in a block."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.time()
            missing = []
            for user in self.users:
                answers = [u.ledger.lookup("ip", user.host, now) for u in self.users]
                if any(a is None or a.record.fingerprint != user.identity.fingerprint for a in answers):
                    missing.append(user.nickname)
                    continue
                mine = answers[0]
                assert mine is not None
                user.record = RecordInfo(mine.height, mine.confirmations)
            if not missing:
                return
            if time.monotonic() > deadline:
                errors = "; ".join(f"{u.nickname}: {u.ledger_node.registration_error}" for u in self.users
                                   if u.ledger_node.registration_error)
                raise UserError(f"the demo ledger did not confirm the records of {', '.join(missing)} within "
                                f"{timeout:g} s" + (f" ({errors})" if errors else ""))
            time.sleep(0.05)

    def _start_chats(self) -> None:
        for user in self.users:
            options = {"auto_accept": self.auto_accept, "rotate_every": self.rotate_every,
                       "downloads": user.data_dir / "downloads", **self.chat_options}   # files (issue 16)
            user.chat = ChatNode(user.identity, host=user.host, port=self.chat_port, network=self.network,
                                 nickname=user.nickname, ledger=user.ledger_address, **options)
            user.chat.start()
            self._say(f"chat node of {user.nickname} listening on {user.chat.address}")

    def user(self, nickname: str) -> DemoUser:
        return next(u for u in self.users if u.nickname == nickname)

    def chat_address(self, nickname: str) -> str:
        user = self.user(nickname)
        return format_address(user.host, self.chat_port)

    def close(self) -> None:
        """Stop the chat nodes, then the ledger nodes and their stores; remove the temporary root."""
        for user in reversed(self.users):
            if user.chat is not None:
                user.chat.close()
        for user in reversed(self.users):
            user.ledger_node.close()
            user.ledger.close()
        self.users.clear()
        if self._own_root and self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DemoWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
