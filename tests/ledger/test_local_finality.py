"""LocalLedger and finality: parked branches are stored, reported in status and in a WARNING naming the peer,
survive a restart without reopening final history, and are switched to only by the operator's accept."""

import logging

import pytest
from ledger_kit import PARAMS, T0, block_on, branch, reg

from ledger.chain import Chain, FinalityPolicy
from ledger.errors import LedgerError
from ledger.local_ledger import LocalLedger, verify_store
from tests.conftest import make_identities

POLICY = FinalityPolicy(depth=10**6, seconds=60)


@pytest.fixture(scope="module")
def ids():
    return make_identities(2)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _honest_and_attack(ids):
    chain = Chain(PARAMS)
    victim = reg(ids[0], ip="10.0.0.1", nickname="alice")
    honest = branch(chain, chain.genesis.header, 2, T0, records=[[victim]])
    attack = branch(chain, chain.genesis.header, 4, T0 + 5,
                    records=[[reg(ids[1], ip="10.0.0.1", nickname="alice")]])
    return victim, honest, attack


def test_a_parked_branch_is_stored_reported_and_survives_a_restart(tmp_path, ids, caplog):
    victim, honest, attack = _honest_and_attack(ids)
    clock = Clock(T0 + 10)
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        for block in honest:
            assert ledger.receive_block(block, clock.now).became_tip
        clock.now = T0 + 100   # the honest blocks have been held for 90 s: final
        with caplog.at_level(logging.WARNING, logger="ledger.local_ledger"):
            for block in attack:
                assert ledger.receive_block(block, clock.now, source="127.0.0.66:8470").status == "added"
        warning = [r.getMessage() for r in caplog.records if "PARKED" in r.getMessage()]
        # Once, when the branch first outweighs the main chain (then at most once a minute while it grows).
        # (attack[1] has as much work as the main chain: it outweighs it when its hash is lower.)
        assert len(warning) == 1 and "127.0.0.66:8470" in warning[0]
        assert any(b.hash.hex() in warning[0] for b in attack[1:3])
        assert PARAMS.genesis_hash.hex()[:16] in warning[0]   # the fork point
        status = ledger.status()
        assert status["final_height"] == 2 and status["parked"][0]["tip"] == attack[3].hash.hex()
        assert len(status["alerts"]) == 1 and "ledger reorg --accept" in status["alerts"][0]
        assert ledger.lookup("ip", "10.0.0.1", clock.now).record == victim
    # Restart much later: final history stays final, the branch stays parked, its blocks are still stored.
    clock.now = T0 + 10_000
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        assert ledger.tip_info()[1] == honest[1].hash
        assert [b.tip_hash for b in ledger.parked_branches()] == [attack[3].hash]
        assert ledger.lookup("ip", "10.0.0.1", clock.now).record == victim
    report = verify_store(ledger.path, now=clock.now)
    assert report.ok and report.tip == honest[1].hash.hex(), report.problems


def test_a_restart_keeps_the_clock_of_blocks_that_were_not_final_yet(tmp_path, ids):
    _, honest, attack = _honest_and_attack(ids)
    clock = Clock(T0 + 10)
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        for block in honest:
            ledger.receive_block(block, clock.now)
        clock.now = T0 + 40
    clock.now = T0 + 75   # held 65 s, of which 35 s while the node was down
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        for block in attack:
            ledger.receive_block(block, clock.now, source="peer")
        assert ledger.tip_info()[1] == honest[1].hash and ledger.parked_branches()[0].heavier


def test_the_operator_accepts_a_parked_branch_deliberately_and_the_choice_survives_a_restart(tmp_path, ids,
                                                                                              caplog):
    _, honest, attack = _honest_and_attack(ids)
    clock = Clock(T0 + 10)
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        for block in honest:
            ledger.receive_block(block, clock.now)
        clock.now = T0 + 100
        for block in attack:
            ledger.receive_block(block, clock.now, source="peer")
        with pytest.raises(LedgerError, match="no parked branch"):
            ledger.accept_branch(honest[1].hash.hex(), clock.now)
        with pytest.raises(LedgerError, match="at least 8 hex digits"):
            ledger.accept_branch("abc", clock.now)
        with pytest.raises(LedgerError, match="no parked branch"):
            ledger.accept_branch(attack[2].hash.hex()[:16], clock.now)   # a prefix names a tip only
        with caplog.at_level(logging.WARNING, logger="ledger.local_ledger"):
            result = ledger.accept_branch(attack[2].hash.hex(), clock.now)   # as named in the warning
        assert result.became_tip and ledger.tip_info()[1] == attack[3].hash
        assert any("operator accepted" in r.getMessage() for r in caplog.records)
        assert ledger.status()["alerts"] == []
    clock.now = T0 + 10_000
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        assert ledger.tip_info()[1] == attack[3].hash
        # The former honest blocks conflict with the new final history; they are lighter: no alert.
        assert ledger.status()["alerts"] == []


def test_a_checkpoint_given_at_join_is_kept_enforced_and_final_once_held(tmp_path, ids):
    _, honest, attack = _honest_and_attack(ids)
    clock = Clock(T0 + 10)
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY,
                     checkpoint=(1, honest[0].hash)) as ledger:
        assert ledger.receive_block(attack[0], clock.now).status == "invalid"
        assert ledger.receive_block(honest[0], clock.now).became_tip
    with LocalLedger(tmp_path, PARAMS, clock=clock, finality=POLICY) as ledger:
        assert ledger.status()["checkpoint"] == {"height": 1, "hash": honest[0].hash.hex()}
        # Held on the main chain, the checkpoint is final at once: a conflicting block is parked, not followed.
        assert ledger.status()["final_height"] == 1
        other = block_on(PARAMS.genesis().header, [], T0 + 50)
        result = ledger.receive_block(other, clock.now)
        assert result.status == "added" and not result.became_tip
        assert [b.tip_hash for b in ledger.parked_branches()] == [other.hash]


def test_a_node_answers_the_finality_survey_with_its_final_block_and_the_block_at_a_final_height(tmp_path):
    import dataclasses

    from gossip_kit import FAST, Net

    from ledger.client import LedgerClient

    with Net(tmp_path) as net:
        ledger = LocalLedger(tmp_path / "survey", PARAMS, finality=FinalityPolicy(depth=2, min_hold=0, seconds=10**9))
        node = net.node(ledger=ledger, config=dataclasses.replace(FAST, register=False, mine=False))
        chain = Chain(PARAMS)
        blocks = branch(chain, chain.genesis.header, 3, int(node.clock()) - 100)
        for block in blocks:
            ledger.receive_block(block, node.clock())
        client = LedgerClient(node.host, node.port)
        final_height, final_hash, at = client.checkpoint()
        assert (final_height, final_hash, at) == (2, blocks[1].hash, None)
        assert client.checkpoint(1) == (2, blocks[1].hash, blocks[0].hash)
        assert client.checkpoint(3)[2] is None   # not final there: no hash
