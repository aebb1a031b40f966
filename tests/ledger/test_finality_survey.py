"""A joining node's finality survey (red team 2026-12-07 night): a peer that reports a low final block (or none)
cannot turn the comparison off for the others; disagreements are still refused; the checkpoint is the highest
final block most of the peers vouch for. The last test runs the survey of ``ledger join`` against real nodes and a
hostile one on 127.x addresses."""

import argparse

import pytest
from gossip_kit import Net, config, grow, wait_until

from ledger.chain import FinalityPolicy
from ledger.cli import _join_checkpoint
from ledger.finality_survey import FinalitySurvey
from tests.ledger.gossip_kit import PARAMS
from tests.ledger.hostile_ledger import HostileLedgerNode

H = {h: bytes([h]) * 32 for h in range(1, 10)}
X = {h: bytes([0x80 + h]) * 32 for h in range(1, 10)}


def survey(finals, lower):
    """``finals``: peer -> (height, hash); ``lower``: peer -> {height: hash} it names below its own final."""
    s = FinalitySurvey()
    for peer, (height, digest) in finals.items():
        s.report(peer, height, digest)
    for peer, height in s.questions():
        s.answer(peer, height, lower.get(peer, {}).get(height))
    return s.verdict()


def test_a_peer_reporting_nothing_final_does_not_turn_the_comparison_off():
    verdict = survey({"a": (5, H[5]), "b": (6, H[6]), "evil": (0, PARAMS.genesis_hash)}, {"b": {5: H[5]}})
    assert verdict.checkpoint == (5, H[5]) and verdict.vouchers == ["a", "b"]


def test_a_peer_reporting_a_low_final_block_cannot_lower_the_checkpoint_below_what_most_vouch_for():
    verdict = survey({"a": (5, H[5]), "b": (5, H[5]), "evil": (1, H[1])}, {"a": {1: H[1]}, "b": {1: H[1]}})
    assert verdict.checkpoint == (5, H[5])


def test_peers_naming_different_blocks_at_a_height_both_call_final_disagree():
    verdict = survey({"a": (5, H[5]), "evil": (2, X[2])}, {"a": {2: H[2]}})
    assert verdict.checkpoint is None and list(verdict.conflicts) == [2]
    assert "evil says block 2 is" in verdict.listing(2) and "a says block 2 is" in verdict.listing(2)


def test_a_final_block_only_a_minority_vouches_for_is_not_pinned():
    # Three attacker addresses report a higher final block on their branch; the honest peer is not final there.
    verdict = survey({"a": (5, H[5]), "e1": (8, X[8]), "e2": (8, X[8]), "e3": (8, X[8])},
                     {p: {5: H[5]} for p in ("e1", "e2", "e3")})
    assert verdict.checkpoint == (8, X[8])   # a majority vouches: the survey cannot tell them from honest peers
    verdict = survey({"a": (5, H[5]), "b": (5, H[5]), "e1": (8, X[8])}, {"e1": {5: H[5]}})
    assert verdict.checkpoint == (5, H[5])


def test_one_peer_alone_is_followed_as_before():
    assert survey({"a": (5, H[5])}, {}).checkpoint == (5, H[5])


@pytest.fixture
def net(tmp_path):
    with Net(tmp_path / "nodes") as n:
        yield n


def test_ledger_join_pins_the_honest_final_block_beside_a_peer_that_says_nothing_is_final(net, tmp_path, capsys):
    def honest_node(name, seeds=()):
        ledger = net.ledger(name, finality=FinalityPolicy(min_hold=0))
        return net.node(ledger=ledger, seeds=seeds, config=config(register=False))

    a = honest_node("a")
    grow(a.ledger, 10)   # depth 6, no minimum hold: block 4 is final at once
    b = honest_node("b", seeds=[a.address])
    wait_until(lambda: b.ledger.height == 10, what="b to sync")
    final = a.ledger.checkpoint_answer(None, a.clock())
    assert final["final_height"] >= 4
    evil = HostileLedgerNode(PARAMS, lambda msg: [("checkpoint", {"final_height": 0,
                                                                  "final_hash": PARAMS.genesis_hash})])
    try:
        args = argparse.Namespace(checkpoint=None, host=None)
        peers = [(a.host, a.port), (evil.host, evil.port), (b.host, b.port)]
        pinned = _join_checkpoint(args, tmp_path / "joiner", PARAMS, peers)
    finally:
        evil.close()
    assert pinned is not None and pinned[0] >= 4
    assert pinned[1] == a.ledger.chain.main_at(pinned[0]).hash
    assert "2 peers agree that block" in capsys.readouterr().err
