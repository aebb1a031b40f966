"""The bounded UI event queue (p2pchat.event_queue)."""

from __future__ import annotations

import threading

from p2pchat.event_queue import SESSION_BYTES, SESSION_EVENTS, EventQueue
from p2pchat.events import Event, MessageReceived, PeerTyping, SessionInfo, SessionUpdated


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
