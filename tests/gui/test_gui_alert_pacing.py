"""The pacing of the window's notifications and bell (gui/alert_pacing.py), without Tk: a flood is told once at
once and then summed once a gap, however many ticks and chats bring news."""

from __future__ import annotations

from gui.alert_pacing import NAMES_SHOWN, AlertPacer, News
from tests.gui.helpers import Clock


def texts(n: int, *names: str, prep: str = "from") -> News:
    return News("New message", "new message", prep, n, names)


def test_the_first_news_is_told_at_once_and_a_flood_after_it_waits_for_the_gap(clock: Clock):
    pacer = AlertPacer(clock, gap=10.0)
    assert pacer.news(texts(1, "bob")) == "1 new message from bob"
    for _ in range(250):                       # 25 ticks a second with news, for ten seconds
        clock.now += 0.039
        assert pacer.news(texts(8, "bob")) is None
        assert pacer.due() == []
    clock.now += 0.3
    assert pacer.due() == [("New message", "2,000 new messages from bob")]
    assert pacer.due() == []                   # said once
    clock.now += 10.0
    assert pacer.news(texts(1, "bob")) == "1 new message from bob"


def test_a_body_names_a_few_chats_however_many_bring_news(clock: Clock):
    pacer = AlertPacer(clock, gap=10.0)
    names = tuple(f"peer{i}" for i in range(40))
    first = pacer.news(texts(40, *names))
    assert first == f"40 new messages from {', '.join(names[:NAMES_SHOWN])} and {40 - NAMES_SHOWN} more"
    for name in names:
        pacer.news(texts(1, name))
    clock.now += 10.0
    [(_summary, body)] = pacer.due()
    assert body.endswith(f"and {40 - NAMES_SHOWN} more") and len(body) < 200


def test_news_held_back_is_dropped_once_the_user_has_seen_the_window(clock: Clock):
    pacer = AlertPacer(clock, gap=10.0)
    pacer.news(texts(1, "bob"))
    pacer.news(texts(5, "bob"))
    pacer.seen()
    clock.now += 11.0
    assert pacer.due() == []


def test_callers_and_group_texts_are_paced_apart_from_chat_texts(clock: Clock):
    pacer = AlertPacer(clock, gap=10.0)
    assert pacer.news(texts(1, "bob")) is not None
    assert pacer.news(texts(1, "lab", prep="in")) == "1 new message in lab"
    call = News("Incoming chat", "chat request", "from", 1, ("«carol»",), "Someone at … wants to chat with you.")
    assert pacer.news(call) == "Someone at … wants to chat with you."
    assert pacer.news(call) is None
    clock.now += 10.0
    assert pacer.due() == [("Incoming chat", "1 chat request from «carol»")]


def test_the_bell_rings_at_most_once_per_gap(clock: Clock):
    pacer = AlertPacer(clock, bell_gap=2.0)
    rings = 0
    for _ in range(100):
        rings += pacer.bell()
        clock.now += 0.04
    assert rings == 2
