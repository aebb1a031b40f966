"""Assumed-valid join (ledger/assume_valid.py): only blocks of the agreed header chain up to the checkpoint skip
their signatures, the background verification finds a forged one and the node then refuses lookups, and an
unfinished verification resumes where it stopped."""

import dataclasses
import json
import time

import pytest
from gossip_kit import Net, config
from ledger_kit import PARAMS, block_on, reg

from ledger.assume_valid import AssumeValid, BackgroundVerifier, VerifyState, progress_path
from ledger.client import LedgerClient, LookupNotFound
from ledger.errors import LedgerError
from ledger.header_store import HeaderStore
from ledger.local_ledger import LocalLedger
from ledger.sync import HeaderChain
from tests.conftest import make_identities
from tests.helpers import wait_until


def history(forge_at: int | None = None, length: int = 6):
    """``length`` blocks, blocks 1–3 holding one record each; the record of block ``forge_at`` has a forged
    signature (its block's Merkle root commits to the forged record, so only a signature check finds it)."""
    ids = make_identities(3)
    now = int(time.time())
    parent, blocks = PARAMS.genesis().header, []
    for height in range(1, length + 1):
        records = []
        if height <= 3:
            record = reg(ids[height - 1], nickname=f"user{height}", ip=f"10.0.0.{height}", issued=now - 3600)
            if height == forge_at:
                record = dataclasses.replace(record, sig=bytes(len(record.sig)))
            records.append(record)
        block = block_on(parent, records, now - 600 + height)
        blocks.append(block)
        parent = block.header
    return blocks


def assumed(tmp_path, blocks, height):
    headers = HeaderChain(PARAMS, HeaderStore(PARAMS))
    headers.extend([b.header for b in blocks], time.time())
    return AssumeValid.begin(tmp_path, PARAMS, height, blocks[height - 1].hash, headers.store)


def test_only_blocks_of_the_agreed_header_chain_up_to_the_checkpoint_are_assumed_valid(tmp_path):
    blocks = history()
    av = assumed(tmp_path, blocks, 4)
    assert [av.covers(b) for b in blocks] == [True, True, True, True, False, False]
    other = block_on(blocks[1].header, [], blocks[1].header.timestamp + 5)   # a block at height 3 off the chain
    assert not av.covers(other)
    av.update(state=VerifyState.FAILED)
    assert not av.covers(blocks[0])


def test_the_agreed_headers_read_a_window_at_a_time_give_the_same_answers_in_any_order(tmp_path, monkeypatch):
    monkeypatch.setattr("ledger.assume_valid.COVER_WINDOW", 2)
    blocks = history(length=7)
    av = assumed(tmp_path, blocks, 5)
    off_chain = [block_on(b.header, [], b.header.timestamp + 7) for b in blocks[:6]]   # heights 2-7, other hashes
    for order in (blocks, blocks[::-1], [blocks[i] for i in (3, 0, 6, 1, 5, 2, 4)]):
        assert [av.covers(b) for b in order] == [b.height <= 5 for b in order]
        assert not any(av.covers(b) for b in off_chain)   # a height already read, another hash


def test_a_checkpoint_that_is_not_on_the_verified_headers_is_refused(tmp_path):
    blocks = history()
    headers = HeaderChain(PARAMS, HeaderStore(PARAMS))
    headers.extend([b.header for b in blocks], time.time())
    with pytest.raises(LedgerError, match=r"has [0-9a-f]{64} at block 4, not the agreed checkpoint "
                                          r"ab{63}; refusing to assume its history valid"):
        AssumeValid.begin(tmp_path, PARAMS, 4, bytes.fromhex("a" + "b" * 63), headers.store)
    assert not progress_path(tmp_path, PARAMS).exists()


def test_a_forged_signature_in_the_assumed_history_fails_loudly_and_the_node_stops_answering(tmp_path, caplog):
    blocks = history(forge_at=2)
    with Net(tmp_path) as net:
        ledger = LocalLedger(tmp_path / "joiner", PARAMS)
        for block in blocks:   # what the sync does for blocks the checkpoint covers
            assert ledger.receive_block(block, time.time(), assume_valid=True).status == "added"
        av = assumed(tmp_path, blocks, 5)
        node = net.node(ledger=ledger, config=config(register=False, mine=False), assume_valid=av)
        client = LedgerClient(node.host, node.port)
        wait_until(lambda: av.state is VerifyState.FAILED, what="the background verification to fail")
        assert av.verified == 1
        assert "BACKGROUND VERIFICATION FAILED" in av.problem and "block 2 (" in av.problem
        assert "this node stops answering lookups" in av.problem
        assert any(r.levelname == "CRITICAL" and "forged record" in r.getMessage() for r in caplog.records)
        status = client.status()["background_verification"]
        assert status["state"] == "failed" and status["verified"] == 1 and status["target"] == 5
        with pytest.raises(LookupNotFound, match="background verification found a forged record"):
            client.lookup("10.0.0.1")
    saved = json.loads(progress_path(tmp_path, PARAMS).read_text())
    assert saved["state"] == "failed"
    reloaded = AssumeValid.load(tmp_path, PARAMS)
    assert reloaded is not None and reloaded.failed   # a restart keeps refusing


def test_an_unfinished_verification_resumes_where_it_stopped(tmp_path):
    blocks = history()
    with LocalLedger(tmp_path / "joiner", PARAMS) as ledger:
        for block in blocks:
            ledger.receive_block(block, time.time(), assume_valid=True)
        av = assumed(tmp_path, blocks, 5)
        av.update(verified=3, state=VerifyState.RUNNING)
        av.save()
        resumed = AssumeValid.load(tmp_path, PARAMS)
        assert resumed is not None and resumed.verified == 3 and resumed.headers is None
        verifier = BackgroundVerifier(ledger, resumed)
        verifier.start()
        wait_until(lambda: resumed.state is VerifyState.DONE, what="the verification to finish")
        verifier.close()
        assert resumed.verified == 5
    assert AssumeValid.load(tmp_path, PARAMS) is None   # done: nothing left to resume
