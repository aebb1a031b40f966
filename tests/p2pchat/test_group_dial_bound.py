"""A hostile group member cannot make this node call many keys at once or often: it adds twenty keys whose
registered addresses accept a connection and never answer (the costliest dial: each holds a connection and a
handshake until it times out); a group text goes to each of them, yet the node has at most ``MAX_DIALING`` calls
to such strangers (keys that are not contacts) under way at a time, and over all of them starts at most
``DIAL_BURST`` at once, then ``DIALS_PER_MINUTE`` a minute (p2pchat/outbox.py). Calls to contacts are not held
back by them: the creator's invitation still reaches its contact at once."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from p2pchat.events import GroupNotice
from p2pchat.foundation.identity import Identity
from p2pchat.outbox import DIAL_BURST, DIALS_PER_MINUTE, MAX_DIALING, RetrySchedule
from p2pchat.peer_directory import FixedDirectory
from tests.conftest import free_loopback_ip, make_identities
from tests.helpers import wait_until
from tests.p2pchat.node_kit import entry
from tests.p2pchat.test_node_groups import _start


def test_calls_to_strangers_start_in_a_burst_then_at_the_paced_rate_and_never_hold_back_a_contact() -> None:
    s = RetrySchedule()
    for i in range(200):
        s.mark(f"k{i}", True)
        s.now_please(f"k{i}", 0.0)
    started: list[float] = []
    now = 0.0
    while now < 120.0:
        nxt = s.next_due()
        assert nxt is not None
        now = max(now, nxt[1])
        s.attempt_started(nxt[0], now)
        s.failed(nxt[0], now, still_wanted=True)      # refused at once: the cheapest, fastest failure
        started.append(now)
    in_first_minute = sum(t < 60.0 for t in started)
    assert sum(t == 0.0 for t in started) == DIAL_BURST
    assert in_first_minute <= DIAL_BURST + DIALS_PER_MINUTE
    assert sum(60.0 <= t < 120.0 for t in started) <= DIALS_PER_MINUTE + 1
    s.now_please("alice", now)                       # a contact: called now, ahead of every stranger still due
    assert s.next_due() == ("alice", now)
    assert s.next_due(strangers=False) == ("alice", now)
    s.attempt_started("alice", now)
    assert s.next_due(strangers=False) is None       # strangers wait while MAX_DIALING of their calls are out


class Blackhole:
    """Listening sockets that accept every connection and never send a byte; counts the connections each source
    address holds at once."""

    def __init__(self, count: int) -> None:
        self.listeners = []
        for _ in range(count):
            s = socket.socket()
            s.bind((free_loopback_ip(), 0))
            s.listen(8)
            s.settimeout(0.05)
            self.listeners.append(s)
        self.held: list[socket.socket] = []
        self.most: dict[str, int] = {}          # source address -> most connections it held at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole")
        self._thread.start()

    def address(self, i: int) -> tuple[str, int]:
        host, port = self.listeners[i].getsockname()
        return host, port

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in self.listeners:
                try:
                    conn, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.held.append(conn)
            for c in list(self.held):            # a caller that gave up closed its end
                c.setblocking(False)
                try:
                    if c.recv(65536) == b"":
                        self.held.remove(c)
                        c.close()
                except BlockingIOError:
                    pass
                except OSError:
                    self.held.remove(c)
                    c.close()
            now: dict[str, int] = {}
            for c in self.held:
                try:
                    source = c.getpeername()[0]
                except OSError:
                    continue
                now[source] = now.get(source, 0) + 1
            for source, n in now.items():
                self.most[source] = max(self.most.get(source, 0), n)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for c in self.held + self.listeners:
            c.close()


def test_a_hostile_member_adding_many_keys_cannot_make_this_node_call_them_all_at_once(
        tmp_path: Path, identities: list[Identity]) -> None:
    extra = make_identities(25)[5:]                          # twenty keys the attacker registered (not contacts)
    hole = Blackhole(len(extra))
    directory = FixedDirectory()
    for i, ident in enumerate(extra):
        ip, port = hole.address(i)
        directory.add(entry(ident, f"k{i}", ip, port))
    alice, mallory = (_start(i, identities, directory, tmp_path) for i in range(2))
    try:
        assert mallory.node.groups is not None
        members = [mallory.node.group_member("alice")] + [(k.fingerprint.hex(), k.public_der, f"k{i}")
                                                          for i, k in enumerate(extra)]
        gid = mallory.node.groups.create("trap", members)
        # the invitation reaches alice (a contact) at once, however many strangers' calls hang
        alice.log.wait(GroupNotice, 20, group=gid.hex(), text="you were added to 'trap' (22 members)")
        # alice says something in the group: it goes to every member over its own chat, one call each
        assert alice.node.groups is not None
        alice.node.groups.say(gid, "hello?")
        wait_until(lambda: hole.most.get(alice.ip, 0) >= MAX_DIALING, 30, what="alice's calls to the added keys")
        assert hole.most[alice.ip] == MAX_DIALING, f"{hole.most} calls under way at once"
        assert hole.most.get(mallory.ip, 0) <= MAX_DIALING          # the creator's own invitations: the same bound
    finally:
        for p in (alice, mallory):
            p.node.close()
        hole.close()
