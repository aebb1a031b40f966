"""Maintained indexes of the binding state: after any sequence of applied and undone blocks the counts, the
sorted live fingerprints and the expiry index equal a recomputation from scratch, and prefix lookups agree with
a plain scan."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_kit import DAY, NET, PARAMS, T0, reg

from ledger.bindings import Bindings
from ledger.errors import LedgerError
from ledger.index import IdentityTable, SortedList
from ledger.records import make_revocation, make_rotation
from tests.conftest import make_identities


def recomputed(table: IdentityTable, now: float) -> dict:
    live = sorted(fp for fp, s in table.items() if s.status == "live")
    return {
        "live": live,
        "expiry": sorted((s.record.expires, fp) for fp, s in table.items() if s.status == "live"),
        "status": {k: sum(1 for s in table.values() if s.status == k) for k in ("live", "revoked", "rotated")},
        "live_now": sum(1 for s in table.values() if s.status == "live" and s.record.expires > now),
    }


def indexed(state: Bindings, now: float) -> dict:
    table = state.identities
    counts = state.counts(now)
    return {"live": list(table.live), "expiry": list(table.live_expiry),
            "status": {k: counts[k] for k in ("live", "revoked", "rotated")}, "live_now": counts["live_bindings"]}


def test_sorted_list_matches_a_sorted_python_list_through_many_adds_and_removes():
    rng = random.Random(7)
    items: list[int] = []
    sl: SortedList[int] = SortedList()
    for _ in range(6000):
        if items and rng.random() < 0.4:
            x = items.pop(rng.randrange(len(items)))
            sl.remove(x)
        else:
            x = rng.randrange(3000)
            items.append(x)
            sl.add(x)
        if rng.random() < 0.02:
            assert list(sl) == sorted(items)
    ref = sorted(items)
    assert list(sl) == ref and len(sl) == len(ref)
    for probe in (-1, 0, 5, 1500, 2999, 3000):
        assert sl.count_below(probe) == sum(1 for v in ref if v < probe)
        assert sl.count_at_most(probe) == sum(1 for v in ref if v <= probe)
        assert list(sl.from_item(probe))[:5] == [v for v in ref if v >= probe][:5]
    with pytest.raises(KeyError):
        sl.remove(10_000)


def test_the_identity_table_refuses_bulk_changes_that_would_bypass_its_indexes():
    table = IdentityTable()
    for method in ("update", "clear", "popitem", "setdefault"):
        with pytest.raises(TypeError):
            getattr(table, method)({}) if method in ("update", "setdefault") else getattr(table, method)()


@pytest.fixture(scope="module")
def ids():
    return make_identities(6)


actions = st.lists(st.tuples(st.sampled_from(["block", "block", "block", "undo"]),
                             st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["reg", "reg", "rot", "rev"]),
                                                st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=3)),
                   min_size=1, max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=actions)
def test_indexes_equal_a_recomputation_after_random_apply_and_undo(ids, plan):
    state = Bindings(PARAMS)
    logs = []
    for step, (what, picks) in enumerate(plan):
        at = T0 + step * 10
        if what == "undo":
            if logs:
                state.undo(logs.pop())
        else:
            undo: list = []
            for who, kind, ip, nick in picks:
                record = _record_for(state, ids, who, kind, ip, nick, at)
                if record is None:
                    continue
                try:
                    state.apply(record, at, step + 1, 0, undo)
                except LedgerError:
                    pass
            logs.append(undo)
        for now in (at, at + DAY // 2, at + 2 * DAY):
            assert indexed(state, now) == recomputed(state.identities, now)
        for fp in list(state.identities)[:3]:
            found, complete = state.live_with_prefix(fp.hex()[:8], at, limit=10)
            expected = [fp2 for fp2, s in state.identities.items() if fp2.hex().startswith(fp.hex()[:8])
                        and s.status == "live" and s.record.expires > at]
            assert complete and sorted(i.record.fingerprint for i in found) == sorted(expected)
    while logs:
        state.undo(logs.pop())
    assert indexed(state, T0) == recomputed(state.identities, T0) and len(state.identities) == 0


def _record_for(state, ids, who, kind, ip, nick, at):
    identity = ids[who]
    current = state.identity(identity.fingerprint)
    if current is not None and current.status != "live":
        return None
    seq, prev = (0, bytes(32)) if current is None else (current.record.seq + 1, current.record.id)
    lifetime = DAY // 4 + who * 3600
    if kind == "rev":
        return make_revocation(identity, network=NET, seq=seq, prev=prev, issued=at)
    if kind == "rot":
        fresh = [i for i in ids if state.identity(i.fingerprint) is None and i is not identity]
        if not fresh:
            return None
        return make_rotation(identity, fresh[0], network=NET, seq=seq, prev=prev, nickname=f"n{nick}",
                             ip=f"10.0.0.{ip + 1}", port=1, ledger_port=2, issued=at, lifetime=lifetime)
    return reg(identity, seq=seq, prev=prev, nickname=f"n{nick}", ip=f"10.0.0.{ip + 1}", issued=at,
               lifetime=lifetime)
