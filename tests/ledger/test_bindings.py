"""Binding rules, applied directly to the binding state (no mining): sequence chains, one live key per IP,
unique nicknames, expiry, renewal, rotation and revocation, and undo."""

import pytest
from ledger_kit import DAY, NET, PARAMS, T0, reg

from ledger.bindings import RECLAIM_GRACE_SECONDS, Bindings
from ledger.errors import LedgerError
from ledger.records import make_revocation, make_rotation
from tests.conftest import make_identities


@pytest.fixture(scope="module")
def ids():
    return make_identities(4)


@pytest.fixture
def state():
    return Bindings(PARAMS)


def apply(state, record, at=T0, height=1):
    state.apply(record, at, height, 0, [])


def test_first_claim_binds_ip_nickname_and_fingerprint(state, ids):
    record = reg(ids[0], nickname="Alice", ip="10.0.0.1")
    apply(state, record)
    for info in (state.lookup_ip("10.0.0.1", T0), state.lookup_nickname("alice", T0),
                 state.lookup_fingerprint(ids[0].fingerprint, T0)):
        assert info is not None and info.record == record and info.height == 1
    assert state.lookup_ip("10.0.0.2", T0) is None
    assert state.lookup_ip("not an ip", T0) is None


def test_a_second_key_cannot_claim_a_live_ip(state, ids):
    apply(state, reg(ids[0], ip="10.0.0.1", nickname="alice"))
    with pytest.raises(LedgerError, match=r"IP 10\.0\.0\.1 is bound to another key"):
        apply(state, reg(ids[1], ip="10.0.0.1", nickname="mallory"))
    assert state.lookup_ip("10.0.0.1", T0).record.key == ids[0].public_der


def test_a_nickname_is_unique_among_live_bindings_ignoring_case(state, ids):
    apply(state, reg(ids[0], ip="10.0.0.1", nickname="alice"))
    with pytest.raises(LedgerError, match="nickname 'ALICE' is taken"):
        apply(state, reg(ids[1], ip="10.0.0.2", nickname="ALICE"))


def test_sequence_numbers_must_follow_without_replay_or_gap(state, ids):
    first = reg(ids[0])
    apply(state, first)
    with pytest.raises(LedgerError, match="replayed"):
        apply(state, reg(ids[0], issued=T0 + 1))
    with pytest.raises(LedgerError, match="skips"):
        apply(state, reg(ids[0], seq=2, prev=first.id, issued=T0 + 1))
    with pytest.raises(LedgerError, match="does not follow"):
        apply(state, reg(ids[0], seq=1, prev=b"\x05" * 32, issued=T0 + 1))
    with pytest.raises(LedgerError, match="seq 0"):
        apply(state, reg(ids[1], seq=1, prev=b"\x05" * 32))
    apply(state, reg(ids[0], seq=1, prev=first.id, issued=T0 + 1))


def test_renewal_extends_the_binding(state, ids):
    first = reg(ids[0], lifetime=DAY)
    apply(state, first)
    renewal = reg(ids[0], seq=1, prev=first.id, issued=T0 + DAY - 100, lifetime=DAY)
    apply(state, renewal, at=T0 + DAY - 50)
    assert state.lookup_ip("10.0.0.1", T0 + DAY + 10).record == renewal


def test_an_update_moves_the_binding_and_frees_the_old_ip(state, ids):
    first = reg(ids[0], ip="10.0.0.1")
    apply(state, first)
    apply(state, reg(ids[0], seq=1, prev=first.id, ip="10.0.0.7", nickname="alice2", issued=T0 + 1))
    assert state.lookup_ip("10.0.0.1", T0 + 2) is None
    assert state.lookup_nickname("alice", T0 + 2) is None
    assert state.lookup_ip("10.0.0.7", T0 + 2).record.nickname == "alice2"
    apply(state, reg(ids[1], ip="10.0.0.1", nickname="alice", issued=T0 + 2), at=T0 + 2)


def test_an_expired_binding_becomes_claimable_after_the_grace_period_and_its_owner_cannot_take_it_back(state, ids):
    first = reg(ids[0], ip="10.0.0.1", lifetime=DAY)
    apply(state, first)
    lapsed = T0 + DAY + 1
    assert state.lookup_ip("10.0.0.1", lapsed) is None
    with pytest.raises(LedgerError, match="reserved for it"):
        apply(state, reg(ids[1], ip="10.0.0.1", nickname="bob", issued=lapsed, lifetime=DAY), at=lapsed)
    later = T0 + DAY + RECLAIM_GRACE_SECONDS
    with pytest.raises(LedgerError, match="already expired"):
        apply(state, reg(ids[1], issued=T0, lifetime=DAY), at=later)
    taker = reg(ids[1], ip="10.0.0.1", nickname="bob", issued=later, lifetime=DAY)
    apply(state, taker, at=later)
    with pytest.raises(LedgerError, match="bound to another key"):
        apply(state, reg(ids[0], seq=1, prev=first.id, ip="10.0.0.1", issued=later), at=later)
    # The former owner may renew elsewhere, and reclaim the IP once the taker's binding expired and its grace ended.
    renewed = reg(ids[0], seq=1, prev=first.id, ip="10.0.0.9", issued=later)
    apply(state, renewed, at=later)
    much_later = later + DAY + RECLAIM_GRACE_SECONDS
    apply(state, reg(ids[0], seq=2, prev=renewed.id, ip="10.0.0.1", issued=much_later), at=much_later)


def test_during_the_grace_period_only_the_former_holder_may_renew_a_lapsed_binding(state, ids):
    first = reg(ids[0], ip="10.0.0.1", nickname="alice", lifetime=DAY)
    apply(state, first)
    in_grace = T0 + DAY + RECLAIM_GRACE_SECONDS - 1
    for claim in (reg(ids[1], ip="10.0.0.1", nickname="bob", issued=in_grace),
                  reg(ids[1], ip="10.0.0.2", nickname="alice", issued=in_grace)):
        with pytest.raises(LedgerError, match=r"reserved for it|taken by another key"):
            apply(state, claim, at=in_grace)
    apply(state, reg(ids[0], seq=1, prev=first.id, ip="10.0.0.1", nickname="alice", issued=in_grace), at=in_grace)


def test_the_lapse_is_judged_at_the_median_time_not_at_the_records_own_time(state, ids):
    apply(state, reg(ids[0], ip="10.0.0.1", lifetime=DAY))
    end_of_grace = T0 + DAY + RECLAIM_GRACE_SECONDS
    claim = reg(ids[1], ip="10.0.0.1", nickname="bob", issued=end_of_grace + 100)
    with pytest.raises(LedgerError, match="reserved for it"):
        state.check(claim, end_of_grace + 100, lapse_at=end_of_grace - 1)
    state.check(claim, end_of_grace + 100, lapse_at=end_of_grace)


def test_an_expired_owner_may_renew_if_nobody_took_the_ip(state, ids):
    first = reg(ids[0], lifetime=DAY)
    apply(state, first)
    later = T0 + 3 * DAY
    apply(state, reg(ids[0], seq=1, prev=first.id, issued=later), at=later)
    assert state.lookup_ip("10.0.0.1", later).record.seq == 1


def test_rotation_moves_the_binding_to_the_new_key_and_retires_the_old_one(state, ids):
    first = reg(ids[0])
    apply(state, first)
    rotation = make_rotation(ids[0], ids[1], network=NET, seq=1, prev=first.id, nickname="alice", ip="10.0.0.1",
                             port=8471, issued=T0 + 1, lifetime=DAY)
    apply(state, rotation, at=T0 + 1)
    assert state.lookup_ip("10.0.0.1", T0 + 2).record == rotation
    assert state.lookup_fingerprint(ids[1].fingerprint, T0 + 2).record == rotation
    assert state.lookup_fingerprint(ids[0].fingerprint, T0 + 2) is None
    with pytest.raises(LedgerError, match="retired by a key rotation"):
        apply(state, reg(ids[0], seq=2, prev=rotation.id, issued=T0 + 2), at=T0 + 2)
    # The new key continues the same sequence chain.
    apply(state, reg(ids[1], seq=2, prev=rotation.id, issued=T0 + 2), at=T0 + 2)


def test_a_rotated_or_known_key_cannot_be_rotated_to(state, ids):
    a0 = reg(ids[0], ip="10.0.0.1", nickname="a")
    b0 = reg(ids[1], ip="10.0.0.2", nickname="b")
    apply(state, a0)
    apply(state, b0)
    onto_b = make_rotation(ids[0], ids[1], network=NET, seq=1, prev=a0.id, nickname="a", ip="10.0.0.1",
                           port=8471, issued=T0, lifetime=DAY)
    with pytest.raises(LedgerError, match="new key was already used"):
        apply(state, onto_b)
    to_c = make_rotation(ids[0], ids[2], network=NET, seq=1, prev=a0.id, nickname="a", ip="10.0.0.1",
                         port=8471, issued=T0, lifetime=DAY)
    apply(state, to_c)
    back_to_a = make_rotation(ids[2], ids[0], network=NET, seq=2, prev=to_c.id, nickname="a", ip="10.0.0.1",
                              port=8471, issued=T0, lifetime=DAY)
    with pytest.raises(LedgerError, match="new key was already used"):
        apply(state, back_to_a)


def test_revocation_ends_the_binding_for_good(state, ids):
    first = reg(ids[0])
    apply(state, first)
    revocation = make_revocation(ids[0], network=NET, seq=1, prev=first.id, issued=T0 + 1)
    apply(state, revocation, at=T0 + 1)
    assert state.lookup_ip("10.0.0.1", T0 + 2) is None
    assert state.lookup_nickname("alice", T0 + 2) is None
    assert state.identity(ids[0].fingerprint).status == "revoked"
    with pytest.raises(LedgerError, match="revoked"):
        apply(state, reg(ids[0], seq=2, prev=revocation.id, issued=T0 + 2), at=T0 + 2)
    apply(state, reg(ids[1], ip="10.0.0.1", nickname="alice", issued=T0 + 2), at=T0 + 2)


@pytest.mark.parametrize("kwargs, at, message", [
    ({"lifetime": 31 * DAY}, T0, "exceeds"),
    ({"issued": T0 + 3600}, T0, "issued in the future"),
    ({"lifetime": 100}, T0 + 100, "already expired"),
])
def test_record_times_are_checked_against_the_block_time(state, ids, kwargs, at, message):
    with pytest.raises(LedgerError, match=message):
        apply(state, reg(ids[0], **kwargs), at=at)


def test_apply_all_is_atomic_and_undo_restores_the_previous_state(state, ids):
    a0 = reg(ids[0], ip="10.0.0.1", nickname="a")
    log = state.apply_all([a0], T0, 1)
    before = (dict(state.identities), dict(state.by_ip), dict(state.by_nick))
    b0 = reg(ids[1], ip="10.0.0.2", nickname="b")
    a1 = reg(ids[0], seq=1, prev=a0.id, ip="10.0.0.3", nickname="a", issued=T0 + 1)
    clash = reg(ids[2], ip="10.0.0.2", nickname="c")
    with pytest.raises(LedgerError):
        state.apply_all([b0, a1, clash], T0 + 1, 2)
    assert (state.identities, state.by_ip, state.by_nick) == before
    log2 = state.apply_all([b0, a1], T0 + 1, 2)
    assert state.lookup_ip("10.0.0.3", T0 + 1) is not None
    state.undo(log2)
    assert (state.identities, state.by_ip, state.by_nick) == before
    state.undo(log)
    assert state.identities == {} and state.by_ip == {} and state.by_nick == {}


def test_an_overlay_sees_the_base_but_never_changes_it(state, ids):
    a0 = reg(ids[0], ip="10.0.0.1", nickname="a")
    apply(state, a0)
    view = state.overlay()
    a1 = reg(ids[0], seq=1, prev=a0.id, ip="10.0.0.5", nickname="a", issued=T0 + 1)
    view.apply(a1, T0 + 1, None, None, None)
    view.apply(reg(ids[1], ip="10.0.0.1", nickname="b", issued=T0 + 1), T0 + 1, None, None, None)
    assert view.lookup_ip("10.0.0.1", T0 + 1).record.key == ids[1].public_der
    assert view.lookup_ip("10.0.0.5", T0 + 1).record == a1
    assert state.lookup_ip("10.0.0.1", T0 + 1).record == a0
    assert state.lookup_ip("10.0.0.5", T0 + 1) is None
    with pytest.raises(TypeError):
        view.counts(T0)
    assert state.counts(T0)["live_bindings"] == 1
    assert [b.record for b in state.live_with_prefix(ids[0].fingerprint.hex()[:8], T0)[0]] == [a0]
