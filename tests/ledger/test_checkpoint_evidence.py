"""Checkpoint evidence from chat nodes (ledger/checkpoint_evidence.py): judged against this node's own chain, acted
on once per block, rate-limited per sender, dialling only the ledger node that this node's own ledger names for the
chat peer; a reported block that sits in a parked branch is the existing ALERT's business."""

import pytest
from ledger_kit import PARAMS, T0, branch, reg

from ledger.chain import Chain, FinalityPolicy
from ledger.checkpoint_evidence import CheckpointEvidence, EvidenceConfig
from ledger.local_ledger import LocalLedger
from tests.conftest import make_identities

POLICY = FinalityPolicy(depth=10**6, seconds=60)


@pytest.fixture(scope="module")
def ids():
    return make_identities(2)


def report(fp: bytes, block_height: int, block_hash: bytes) -> dict:
    return {"peer": fp, "final_height": block_height, "final_hash": block_hash, "tip_height": block_height + 1,
            "tip_hash": bytes(32)}


def test_a_report_is_judged_against_our_chain_and_dials_the_ledger_node_our_ledger_names(tmp_path, ids):
    chain = Chain(PARAMS)
    carol = reg(ids[1], ip="10.0.0.7", nickname="carol")
    honest = branch(chain, chain.genesis.header, 3, T0, records=[[reg(ids[0], ip="10.0.0.1"), carol]])
    other = branch(chain, chain.genesis.header, 5, T0 + 5)        # another history, never sent to our node
    dialled: list[tuple[str, int]] = []
    now = [T0 + 10.0]
    with LocalLedger(tmp_path, PARAMS, clock=lambda: now[0], finality=POLICY) as ledger:
        for block in honest:
            assert ledger.receive_block(block, now[0]).became_tip
        evidence = CheckpointEvidence(ledger, dial=lambda ip, port: dialled.append((ip, port)) or f"{ip}:{port}",
                                      clock=lambda: now[0], config=EvidenceConfig(burst=10))
        # our own block: nothing to do
        assert evidence.receive(report(carol.fingerprint, 2, honest[1].hash), sender_ip="127.0.0.5")[0] == "on-chain"
        assert dialled == [] and evidence.status() == []
        # another block at a height we hold: kept, and carol's ledger node (from our ledger) is dialled once
        verdict, detail = evidence.receive(report(carol.fingerprint, 2, other[1].hash), sender_ip="127.0.0.5")
        assert verdict == "recorded" and "holds another block at that height" in detail
        assert dialled == [("10.0.0.7", carol.ledger_port)] and f"10.0.0.7:{carol.ledger_port}" in detail
        assert evidence.receive(report(carol.fingerprint, 2, other[1].hash), sender_ip="127.0.0.5")[0] == "recorded"
        assert len(dialled) == 1                                   # the same block: acted on once per ttl
        # above our tip; and a peer our ledger has no record of is not dialled at all
        stranger = bytes(range(32))
        verdict, detail = evidence.receive(report(stranger, 5, other[4].hash), sender_ip="127.0.0.6")
        assert verdict == "recorded" and "does not reach that height" in detail and "names no ledger node" in detail
        assert len(dialled) == 1
        shown = evidence.status()
        assert [s["final_height"] for s in shown] == [5, 2] and not any(s["confirmed"] for s in shown)
        # once the other branch reaches us it is parked (it forks below our final history): the report is confirmed
        now[0] = T0 + 100
        for block in other:
            ledger.receive_block(block, now[0], source="10.0.0.7:8470")
        assert ledger.status()["alerts"]
        assert all(s["confirmed"] for s in evidence.status())
        assert evidence.receive(report(carol.fingerprint, 3, other[2].hash), sender_ip="127.0.0.5")[0] == "parked"
        newest = evidence.status()[0]
        assert newest["verdict"] == "parked" and newest["confirmed"] and newest["asked"] is None
        assert len(dialled) == 1                                   # a parked branch is known here: nothing to fetch


def test_reports_are_rate_limited_per_sender(tmp_path, ids):
    chain = Chain(PARAMS)
    honest = branch(chain, chain.genesis.header, 2, T0)
    with LocalLedger(tmp_path, PARAMS, clock=lambda: T0 + 10.0, finality=POLICY) as ledger:
        for block in honest:
            ledger.receive_block(block, T0 + 10.0)
        evidence = CheckpointEvidence(ledger, dial=lambda ip, port: None, clock=lambda: T0 + 10.0,
                                      config=EvidenceConfig(burst=3, kept=2))
        verdicts = [evidence.receive(report(bytes(32), 1, bytes([n]) * 32), sender_ip="127.0.0.9")[0]
                    for n in range(5)]
        assert verdicts == ["recorded"] * 3 + ["refused"] * 2
        assert evidence.receive(report(bytes(32), 1, b"\x07" * 32), sender_ip="127.0.0.10")[0] == "recorded"
        assert len(evidence.status()) == 2                         # bounded: the newest reports only
