"""The parts behind ChatNode, each on its own concern: errors in pool tasks, ledger lookups without locks, the
writer's accounting, and whose fault an error is (real sockets on loopback)."""

from __future__ import annotations

import logging
import threading

from p2pchat.channel import Channel
from p2pchat.chat_protocol import MAX_TEXT_BYTES
from p2pchat.events import MessageReceived, NodeError, SessionEnded, StepResult
from p2pchat.foundation.errors import LocalFault, UsageError
from p2pchat.peer_directory import DirectoryEntry, FixedDirectory, LookupBy
from p2pchat.session import Session
from p2pchat.session_writer import OUTBOX_LIMIT, SessionWriter
from p2pchat.steps import Step
from tests.conftest import make_identities
from tests.p2pchat.node_kit import connect_all, make_peer, pair
from tests.p2pchat.test_channel import synthetic_established


class GatedDirectory(FixedDirectory):
    """A directory whose answers about one address wait for a gate: a slow ledger node."""

    def __init__(self, slow_ip: str) -> None:
        super().__init__()
        self.slow_ip = slow_ip
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def lookup(self, query: str, by: LookupBy = None) -> DirectoryEntry:
        if query == self.slow_ip:
            self.waiting.set()
            self.gate.wait(30)
        return super().lookup(query, by)


def test_a_programming_error_in_a_pool_task_is_logged_and_fails_only_its_session(identities, caplog):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        other, _ = connect_all(alice, bob)
        session = alice.node._get(sid)

        def broken(s: Session) -> None:
            raise ZeroDivisionError("a bug")

        with caplog.at_level(logging.ERROR, logger="p2pchat.node"):
            alice.node._rt.submit(broken, session)
            ended = alice.log.wait(SessionEnded, session=sid)
        assert "internal error (ZeroDivisionError: a bug)" in ended.reason and not ended.clean
        assert any("internal error" in r.getMessage() and r.exc_info for r in caplog.records)
        # After step 4 the peer is told in a sealed goodbye (an unsealed error's text would never be shown).
        assert "internal error" in bob.log.wait(SessionEnded, session=bsid).reason
        alice.node.send_text(other, "still here")            # the other session goes on
        assert alice.node.session_info(other).steps_done == tuple(Step)


def test_a_usage_error_in_a_task_is_reported_and_ends_nothing_and_a_local_fault_blames_no_peer(identities):
    with pair(identities) as (alice, bob, _):
        sid, bsid = connect_all(alice, bob)
        session = alice.node._get(sid)

        def misuse(s: Session) -> None:
            raise UsageError("not now")

        alice.node._rt.submit(misuse, session)
        assert alice.log.wait(NodeError, text="not now").session == sid
        alice.node.send_text(sid, "the chat goes on")

        def disk_full(s: Session) -> None:
            raise LocalFault("no space left on the disk")

        alice.node._rt.submit(disk_full, session)
        assert "could not go on: no space left" in alice.log.wait(SessionEnded, session=sid).reason
        told = bob.log.wait(SessionEnded, session=bsid).reason
        assert "problem of its own" in told and "disk" not in told


def test_a_slow_ledger_lookup_holds_no_lock_ui_calls_and_other_sessions_go_on():
    ids = make_identities(3)
    directory = GatedDirectory(slow_ip="")
    bob = make_peer(ids[1], "bob", directory, auto_accept=True)
    alice = make_peer(ids[0], "alice", directory)
    carol = make_peer(ids[2], "carol", directory)
    directory.slow_ip = alice.ip
    try:
        slow = alice.node.open_session(f"{bob.ip}:{bob.node.port}")
        alice.node.run_all(slow)
        assert directory.waiting.wait(15)                      # bob's check of alice's key is stuck at the ledger
        bsid = bob.log.wait(StepResult, step=Step.CONNECT, ok=True).session
        bob.node.session_info(bsid)                            # answered at once, no lock held by the lookup
        bob.node.run_step(bsid, Step.AUTHENTICATE)             # refused at once (bob answers, does not drive)
        fast, _ = connect_all(carol, bob)                      # another session's step 2 is not held up
        assert carol.node.session_info(fast).steps_done == tuple(Step)
        assert Step.SWAP_KEYS not in bob.node.session_info(bsid).steps_done
        directory.gate.set()
        alice.log.wait(StepResult, 15, session=slow, step=Step.AGREE_KEY, ok=True)
    finally:
        directory.gate.set()
        for peer in (alice, bob, carol):
            peer.node.close()


def test_the_writer_counts_what_waits_for_the_wire_and_lets_it_go_at_once_on_discard():
    session = Session("s1", "bob", incoming=False)
    writer = SessionWriter(session)
    writer.queue(b"x" * 1000)
    writer.queue_all([b"y" * 24])
    assert writer.pending_bytes == 1024
    assert writer.room_for(OUTBOX_LIMIT - 1024) and not writer.room_for(OUTBOX_LIMIT)
    writer.discard()
    assert writer.pending_bytes == 0 and not writer.outbox
    assert writer.room_for(10 * OUTBOX_LIMIT)                 # an empty outbox takes any one text


def test_texts_held_back_while_our_key_rotates_still_count_against_the_outbox_limit():
    """While a rotation waits for its ack the channel seals at most rotate_every more texts, then holds them; the
    texts it holds are still waiting for the wire, so a fast sender gets OutboxFull instead of queueing without
    bound."""
    mine, _ = synthetic_established()
    session = Session("s1", "bob", incoming=False)
    session.channel = Channel(mine, rotate_every=1)
    writer = SessionWriter(session)
    writer.before_text()
    session.channel.queue_text("a" * 1000, 1.0)
    writer.queue_text()
    writer.seal_queued_now()                     # the text, then the rotate frame: the key now waits for its ack
    assert session.channel.rotating
    writer.before_text()
    session.channel.queue_text("c" * 1000, 1.5)
    writer.queue_text()
    writer.seal_queued_now()                     # one more (rotate_every) goes out under the old key meanwhile
    assert session.channel.queued == 0
    on_the_wire = writer.pending_bytes
    big = "b" * MAX_TEXT_BYTES
    for n in range(1, 4):
        writer.before_text()
        session.channel.queue_text(big, 2.0)
        writer.queue_text()
        writer.seal_queued_now()                 # nothing is sealed until the ack comes
        assert session.channel.queued == n
        assert writer.pending_bytes == on_the_wire + n * MAX_TEXT_BYTES
    assert not writer.room_for(OUTBOX_LIMIT - on_the_wire - 2 * MAX_TEXT_BYTES)


class _RecordingLink:
    """Takes every write at once and keeps it, as the writer handed it over."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send_nowait(self, data: bytes) -> int:
        self.writes.append(data)
        return len(data)


def test_the_writer_hands_a_long_channel_box_to_the_link_alone_and_joins_everything_else():
    """[relaypath] a relay link carries a long box the channel sealed without sealing it again, but only when the
    write holds that one frame (docs/relay.md, box records); small frames are still joined into one write."""
    from p2pchat.foundation.codec import CLEAR_BOX_MIN, BoxedFrame

    session = Session("s1", "bob", incoming=False)
    writer = SessionWriter(session)
    link = _RecordingLink()
    session.link = link  # type: ignore[assignment]
    long_box = BoxedFrame(b"h" * 40 + b"b" * CLEAR_BOX_MIN, 40)
    short_box = BoxedFrame(b"h" * 40 + b"b" * 100, 40)
    writer.queue_all([b"a" * 10, short_box, long_box, b"c" * 10, b"d" * 10])
    writer.kick()
    assert link.writes == [b"a" * 10 + short_box, long_box, b"c" * 10 + b"d" * 10]
    assert isinstance(link.writes[1], BoxedFrame) and link.writes[1].box_at == 40
    assert writer.pending_bytes == 0
def test_the_responder_starts_its_step_4_keys_on_the_work_ahead_thread_which_the_node_joins(identities):
    """One job per handshake on the responder (once the initiator's auth verified), none on the initiator; the
    chat works whichever thread made the keys; the node's one work-ahead thread is joined when it closes."""
    started: dict[str, list[object]] = {"alice": [], "bob": []}
    with pair(identities) as (alice, bob, _):
        for peer in (alice, bob):
            original = peer.node._rt.ahead

            def record(fn, original=original, name=peer.nickname):
                started[name].append(fn)
                original(fn)
            peer.node._rt.ahead = record            # type: ignore[method-assign]
        sid, bsid = connect_all(alice, bob)
        assert len(started["bob"]) == 1 and started["alice"] == []
        alice.node.send_text(sid, "keys agreed")
        assert bob.log.wait(MessageReceived, session=bsid).text == "keys agreed"
        thread = bob.node._rt._ahead_thread
        assert thread is not None and thread.is_alive() and thread.name == "chatnode-ahead"
    assert not thread.is_alive()


def test_a_programming_error_on_the_work_ahead_thread_is_reported_and_the_thread_goes_on(identities, caplog):
    with pair(identities) as (alice, _bob, _):
        ran = threading.Event()

        def broken() -> None:
            raise ZeroDivisionError("a bug")

        with caplog.at_level(logging.ERROR, logger="p2pchat.node"):
            alice.node._rt.ahead(broken)
            error = alice.log.wait(NodeError)
        assert "internal error (ZeroDivisionError: a bug)" in error.text
        alice.node._rt.ahead(ran.set)
        assert ran.wait(10)
