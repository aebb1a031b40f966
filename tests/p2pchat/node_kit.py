"""Helpers for chat-node tests: an event log that waits for events with a deadline, and pairs of nodes on fresh
loopback addresses that find each other through a fixed directory (tests about the ledger itself use real
ledger nodes instead)."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from p2pchat.events import Event, StepResult
from p2pchat.foundation.identity import Identity
from p2pchat.node import ChatNode
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory
from p2pchat.steps import Step
from tests.conftest import free_loopback_ip
from tests.helpers import wait_until

_PUMP_LOCK = threading.RLock()


class EventLog:
    """Everything a node reported, in order; ``wait`` polls the node's queue until a matching event arrives.

    Looking at any log takes the events of every reading log of the test (``pump_all``), the way every UI drains
    its node's queue on its own: a delivery receipt means the peer's UI took the message, so a test waiting for
    receipts at alice needs bob's UI to read too. ``reading = False`` makes a UI that does not read."""

    _live: ClassVar[weakref.WeakSet[EventLog]] = weakref.WeakSet()

    def __init__(self, node: ChatNode, *, reading: bool = True) -> None:
        self.node = node
        self.events: list[Event] = []
        self.reading = reading
        EventLog._live.add(self)

    def pump(self) -> None:
        with _PUMP_LOCK:        # tests may pump from several threads; each log keeps its queue's order
            for log in list(EventLog._live):
                if log is self or log.reading:
                    log.take()

    def take(self) -> None:
        while True:
            try:
                self.events.append(self.node.events.get_nowait())
            except queue.Empty:
                return

    def wait(self, kind_: type, timeout: float = 10.0, **fields: Any) -> Any:
        """The first event of type ``kind`` whose attributes equal ``fields`` (searching from the start)."""
        def found() -> Any:
            self.pump()
            return next((e for e in self.events if isinstance(e, kind_)
                         and all(getattr(e, k) == v for k, v in fields.items())), None)
        return wait_until(found, timeout, what=f"{kind_.__name__} {fields} (seen: {self.kinds()})")

    def all(self, kind_: type, **fields: Any) -> list[Any]:
        self.pump()
        return [e for e in self.events if isinstance(e, kind_) and all(getattr(e, k) == v for k, v in fields.items())]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events[-12:]]


@contextmanager
def reading_ui(*logs: EventLog) -> Iterator[None]:
    """The UIs of ``logs`` read their events on a thread of their own while the block runs (for tests whose main
    thread is busy elsewhere, e.g. running the terminal UI of another node); the thread is joined on exit."""
    stop = threading.Event()

    def pump() -> None:
        while not stop.wait(0.01):
            for log in logs:
                with _PUMP_LOCK:
                    log.take()

    thread = threading.Thread(target=pump, name="test-ui-reader")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass
class Peer:
    node: ChatNode
    log: EventLog
    identity: Identity
    ip: str
    nickname: str


def entry(identity: Identity, nickname: str, ip: str | None, port: int | None = None,
          relay: str | None = None) -> DirectoryEntry:
    return DirectoryEntry(public_der=identity.public_der, nickname=nickname, ip=ip, port=port, relay=relay,
                          height=5, confirmations=2)


def make_peer(identity: Identity, nickname: str, directory: FixedDirectory, *, ip: str | None = None,
              register: bool = True, **kw: Any) -> Peer:
    """A started node on a fresh loopback address (port chosen by the OS), listed in ``directory``."""
    ip = ip or free_loopback_ip()
    kw.setdefault("step_timeout", 5.0)
    kw.setdefault("direct_timeout", 1.0)
    node = ChatNode(identity, host=ip, port=kw.pop("port", 0), nickname=nickname, directory=directory, **kw)
    node.start()
    if register:
        directory.add(entry(identity, nickname, ip, node.port if node.listen else None, kw.get("relay")))
    return Peer(node, EventLog(node), identity, ip, nickname)


@contextmanager
def pair(identities: list[Identity], **kw: Any) -> Iterator[tuple[Peer, Peer, FixedDirectory]]:
    """alice (caller) and bob (auto-accepting callee), closed on exit."""
    directory = FixedDirectory()
    bob_kw = {"auto_accept": True, **kw.pop("bob", {})}
    alice = make_peer(identities[0], "alice", directory, **kw)
    bob = make_peer(identities[1], "bob", directory, **{**kw, **bob_kw})
    try:
        yield alice, bob, directory
    finally:
        alice.node.close()
        bob.node.close()


def connect_all(alice: Peer, bob: Peer, timeout: float = 15.0) -> tuple[str, str]:
    """Run the four steps from alice to bob; returns (alice's session, bob's session)."""
    sid = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
    alice.node.run_all(sid)
    alice.log.wait(StepResult, timeout, session=sid, step=Step.AGREE_KEY, ok=True)
    ready = bob.log.wait(StepResult, timeout, step=Step.AGREE_KEY, ok=True)
    return sid, ready.session
