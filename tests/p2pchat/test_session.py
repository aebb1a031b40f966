"""A session's explicit phases (p2pchat.session)."""

from __future__ import annotations

import pytest

from p2pchat.session import TRANSITIONS, Farewell, Phase, Session


def test_a_session_moves_only_along_its_transition_table():
    s = Session("s1", "bob", incoming=False)
    assert s.phase is Phase.NEW and not s.ended
    for to in (Phase.CONNECTING, Phase.HANDSHAKE, Phase.CHAT, Phase.ENDED, Phase.CLOSED):
        s.move(to)
    assert s.ended
    with pytest.raises(RuntimeError, match="no transition from CLOSED to CHAT"):
        s.move(Phase.CHAT)


def test_every_phase_can_end_and_nothing_leaves_closed():
    for phase, targets in TRANSITIONS.items():
        if phase not in (Phase.ENDED, Phase.CLOSED):
            assert Phase.ENDED in targets
    assert TRANSITIONS[Phase.CLOSED] == frozenset()


def test_the_peer_leaving_overrides_our_goodbye():
    s = Session("s1", "bob", incoming=True)
    s.farewell = Farewell.GOODBYE
    s.peer_gone()
    assert s.peer_left and s.farewell is Farewell.PEER_GONE
