"""The bounded UI event queue (p2pchat.event_queue)."""

from __future__ import annotations

import threading

from p2pchat.event_queue import EVENT_COST, SESSION_BYTES, SESSION_EVENTS, EventQueue
from p2pchat.events import Event, MessageReceived, PeerTyping, SessionInfo, SessionUpdated
from tests.helpers import wait_until


def message(sid: str, size: int) -> MessageReceived:
    return MessageReceived(sid, 1, "x" * size, "bob", 0.0, 0.0)


def test_a_session_over_its_bytes_has_no_room_until_the_ui_takes_events():
    q = EventQueue()
    q.put(message("s1", SESSION_BYTES))
    assert not q.has_room("s1") and q.has_room("s2")
    q.get_nowait()
    assert q.has_room("s1") and q.waiting("s1") == (0, 0)


def test_events_the_user_caused_do_not_count_against_the_reader():
    q = EventQueue()
    for _ in range(SESSION_EVENTS + 5):
        q.put(SessionUpdated(SessionInfo(session="s1", peer_query="bob")))
    assert q.has_room("s1")
    for _ in range(SESSION_EVENTS):
        q.put(PeerTyping("s1", True))
    assert not q.has_room("s1")


def test_taking_an_event_reports_it_after_the_queue_lock_is_released_and_wakes_a_waiting_reader():
    taken: list[Event] = []
    q = EventQueue(on_taken=lambda ev: taken.append(ev) or q.qsize())   # re-entering the queue must not block
    q.put(message("s1", SESSION_BYTES))
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(q.wait_for_room("s1", 10.0)), name="test-waiter")
    waiter.start()
    ev = q.get(timeout=1)
    waiter.join()
    assert taken == [ev] and results == [True]


def test_wait_for_room_gives_up_after_its_timeout_and_honours_the_extra_condition():
    q = EventQueue()
    assert not q.wait_for_room("s1", 0.01, also=lambda: False)
    assert q.wait_for_room("s1", 0.01, also=lambda: True)


def test_events_put_while_answering_are_queued_in_order_but_wake_the_ui_only_at_the_end():
    """A node thread answering a peer must not wake the UI's thread (which would take the interpreter lock from it
    at its next system call, the write of the answer) until the answer is out; the events are queued at once."""
    q = EventQueue()
    got: list[Event] = []
    ui = threading.Thread(target=lambda: got.extend(q.get(timeout=30) for _ in range(3)), name="test-ui")
    ui.start()
    waiters = q.not_empty._waiters          # type: ignore[attr-defined]   # Condition's queue of sleepers
    wait_until(lambda: len(waiters) == 1, what="the UI thread asleep in get()")
    events = [PeerTyping("s1", True), PeerTyping("s1", False), PeerTyping("s2", True)]
    with q.answering():
        q.put(events[0])
        with q.answering():                 # nested: still held
            q.put(events[1])
        assert len(waiters) == 1 and q.qsize() == 2 and q.waiting("s1") == (2, 2 * EVENT_COST)
    wait_until(lambda: len(got) == 2, what="the UI thread woken at the end of the block")
    q.put(events[2])                        # outside the block: wakes at once, as before
    ui.join()
    assert got == events and q.qsize() == 0


def test_answering_holds_back_only_the_wake_ups_of_its_own_thread():
    q = EventQueue()
    got: list[Event] = []
    ui = threading.Thread(target=lambda: got.append(q.get(timeout=30)), name="test-ui")
    ui.start()
    wait_until(lambda: len(q.not_empty._waiters) == 1, what="the UI thread asleep in get()")  # type: ignore[attr-defined]
    with q.answering():
        other = threading.Thread(target=q.put, args=(PeerTyping("s2", True),), name="test-other")
        other.start()
        other.join()
        wait_until(lambda: got, what="the UI thread woken by another thread's event")
    ui.join()
    assert got == [PeerTyping("s2", True)]


def test_the_byte_bound_counts_what_a_text_holds_in_memory_not_its_characters():
    """A 1 MiB text of four-byte characters is 262,144 characters and 1 MiB in memory: counted by characters, a
    peer's emoji texts held four times the 4 MiB a session may have waiting (red team, 2026-12-07 night)."""
    q = EventQueue()
    wide = MessageReceived("s1", 1, "😀" * (1 << 18), "bob", 0.0, 0.0)       # 262,144 characters, 1 MiB held
    count = 0
    while q.has_room("s1") and count < 64:
        q.put(wide)
        count += 1
    assert count == SESSION_BYTES // (1 << 20)           # 4, not 16
    assert q.waiting("s1")[1] >= SESSION_BYTES
