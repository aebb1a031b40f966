"""Per-address allowances of strangers (p2pchat.admission), on a fake clock."""

from __future__ import annotations

from p2pchat.admission import WINDOW, Admission, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_holds_at_most_its_unauthenticated_connections_and_others_are_unaffected():
    adm = Admission(per_address=2, per_minute=100)
    a1, a2 = adm.admit("10.0.0.1"), adm.admit("10.0.0.1")
    assert isinstance(a1, Ticket) and isinstance(a2, Ticket)
    refused = adm.admit("10.0.0.1")
    assert isinstance(refused, str) and "at most 2" in refused
    assert isinstance(adm.admit("10.0.0.2"), Ticket)
    adm.release(a1)
    assert isinstance(adm.admit("10.0.0.1"), Ticket)


def test_authenticating_frees_the_place_and_gives_back_the_handshake_of_the_minute():
    clock = Clock()
    adm = Admission(per_address=1, per_minute=2, clock=clock)
    first = adm.admit("10.0.0.1")
    assert isinstance(first, Ticket)
    assert adm.authenticated(first, b"k" * 32) is None
    second = adm.admit("10.0.0.1")
    assert isinstance(second, Ticket)               # the proven one no longer counts
    adm.release(second)                             # an unproven one does
    third = adm.admit("10.0.0.1")
    assert isinstance(third, Ticket)
    adm.release(third)
    refusal = adm.admit("10.0.0.1")
    assert isinstance(refusal, str) and "in the last minute" in refusal
    clock.now += WINDOW
    assert isinstance(adm.admit("10.0.0.1"), Ticket)


def test_prompts_per_address_are_bounded_and_come_back_when_answered_or_released():
    adm = Admission(per_address=10, prompts=1, per_minute=100)
    t1, t2 = adm.admit("a"), adm.admit("a")
    assert isinstance(t1, Ticket) and isinstance(t2, Ticket)
    assert adm.ask_user(t1) and adm.ask_user(t1)    # asking again for the same connection costs nothing
    assert not adm.ask_user(t2)
    adm.answered(t1)
    assert adm.ask_user(t2)
    adm.release(t2)
    adm.release(t2)                                 # idempotent
    assert adm.counts("a") == (1, 0)


def test_the_total_of_strangers_is_bounded_across_addresses():
    adm = Admission(per_address=5, total=3, per_minute=100)
    assert all(isinstance(adm.admit(f"10.0.0.{i}"), Ticket) for i in range(3))
    assert "too many unauthenticated" in str(adm.admit("10.0.0.9"))
