"""Every block validation rule of the chain, one test each, on an 8-bit test network."""

import dataclasses

import pytest
from ledger_kit import DAY, NET, PARAMS, T0, add, block_on, fail_pow, reg, solve

from ledger.bindings import RECLAIM_GRACE_SECONDS
from ledger.blocks import Block
from ledger.chain import Chain
from ledger.errors import LedgerError
from ledger.params import NetworkParams
from ledger.records import make_revocation, make_rotation
from tests.conftest import make_identities


@pytest.fixture(scope="module")
def ids():
    return make_identities(4)


@pytest.fixture
def chain():
    return Chain(PARAMS)


def refused(chain, block, now=T0, match=""):
    result = chain.add_block(block, now)
    assert result.status == "invalid", result
    assert match in result.reason, result.reason
    assert chain.height == 0 or block.hash not in chain
    return result.reason


def test_a_valid_block_extends_the_chain(chain, ids):
    record = reg(ids[0])
    block = add(chain, [record])
    assert chain.height == 1 and chain.tip_hash == block.hash
    assert chain.tip_work == 256
    assert chain.has_record(record.id)
    assert chain.add_block(block, T0).status == "duplicate"
    assert chain.add_block(PARAMS.genesis(), T0).status == "duplicate"


def test_too_little_work_is_refused(chain):
    good = block_on(chain.tip, [], T0)
    bad = Block(fail_pow(good.header), ())
    refused(chain, bad, match="too little proof of work")
    # The refusal is remembered, so a resent copy costs nothing.
    assert chain.add_block(bad, T0).status == "invalid"


def test_a_block_on_an_unknown_parent_waits_as_an_orphan(chain):
    first = block_on(chain.tip, [], T0)
    second = block_on(first.header, [], T0 + 1)
    result = chain.add_block(second, T0)
    assert result.status == "orphan" and chain.height == 0
    result = chain.add_block(first, T0)
    assert result.status == "added" and chain.height == 2
    assert [b.hash for b in result.accepted] == [first.hash, second.hash]
    assert [b.hash for b in result.connected] == [first.hash, second.hash]


def test_a_wrong_height_is_refused(chain):
    refused(chain, block_on(chain.tip, [], T0, height=5), match="claims height 5")


@pytest.mark.parametrize("changes, message", [
    ({"network_id": NetworkParams(name="other").network_id}, "another network"),
    ({"version": 2}, "ledger version 2"),
    ({"target_bits": 9}, "target 9 bits"),
])
def test_wrong_network_version_or_target_is_refused(chain, changes, message):
    refused(chain, block_on(chain.tip, [], T0, **changes), match=message)


def test_height_zero_is_reserved_for_genesis(chain):
    refused(chain, block_on(chain.tip, [], T0, height=0), match="height 0")


def test_a_wrong_merkle_root_is_refused(chain, ids):
    block = block_on(chain.tip, [reg(ids[0])], T0)
    swapped = Block(block.header, (reg(ids[1], ip="10.0.0.2", nickname="bob"),))
    refused(chain, swapped, match="Merkle root")


def test_a_block_from_the_future_is_refused_but_accepted_later(chain):
    block = block_on(chain.tip, [], T0 + 1000)
    refused(chain, block, now=T0, match="in the future")
    assert chain.add_block(block, T0 + 1000 - PARAMS.max_future_seconds).status == "added"


def test_a_timestamp_not_after_the_median_of_recent_blocks_is_refused(chain):
    for i in range(11):
        add(chain, [], at=T0 + 100 * i)
    median = chain.median_time_past()
    assert median == T0 + 500
    refused(chain, block_on(chain.tip, [], median), now=T0 + 2000, match="not after the median")
    assert chain.add_block(block_on(chain.tip, [], median + 1), T0 + 2000).status == "added"


def test_too_many_records_are_refused(ids):
    chain = Chain(dataclasses.replace(PARAMS, max_block_records=1))
    block = block_on(chain.tip, [reg(ids[0]), reg(ids[1], ip="10.0.0.2", nickname="b")], T0, chain.params)
    refused(chain, block, match="2 records (at most 1)")


def test_an_oversize_block_is_refused(ids):
    chain = Chain(dataclasses.replace(PARAMS, max_block_bytes=1500))
    block = block_on(chain.tip, [reg(ids[0]), reg(ids[1], ip="10.0.0.2", nickname="b")], T0, chain.params)
    refused(chain, block, match="bytes (at most 1500)")


def test_a_bad_record_signature_is_refused(chain, ids):
    forged = dataclasses.replace(reg(ids[0]), nickname="mallory")
    refused(chain, block_on(chain.tip, [forged], T0), match="bad signature")


def test_a_record_signed_for_another_network_is_refused(chain, ids):
    refused(chain, block_on(chain.tip, [reg(ids[0], network="othernet")], T0), match="bad signature")


def test_the_same_record_twice_in_a_block_is_refused(chain, ids):
    record = reg(ids[0])
    refused(chain, block_on(chain.tip, [record, record], T0), match="same record twice")


def test_a_record_already_in_the_chain_is_refused(chain, ids):
    record = reg(ids[0])
    add(chain, [record])
    result = chain.add_block(block_on(chain.tip, [record], T0 + 1), T0 + 1)
    assert result.status == "invalid" and "already in the chain" in result.reason
    assert chain.height == 1


def test_replayed_and_skipped_sequence_numbers_are_refused(chain, ids):
    first = reg(ids[0])
    add(chain, [first])
    _connect_fails(chain, [reg(ids[0], issued=T0 + 5)], T0 + 5, "replayed")
    _connect_fails(chain, [reg(ids[0], seq=2, prev=first.id, issued=T0 + 5)], T0 + 6, "skips")
    _connect_fails(chain, [reg(ids[0], seq=1, prev=b"\x09" * 32, issued=T0 + 5)], T0 + 7, "does not follow")
    add(chain, [reg(ids[0], seq=1, prev=first.id, issued=T0 + 5)], at=T0 + 8)


def _connect_fails(chain, records, at, match):
    block = block_on(chain.tip, records, at)
    height = chain.height
    result = chain.add_block(block, at)
    assert chain.height == height, "block should not connect"
    assert result.status == "invalid" and match in result.reason, result.reason
    assert result.invalidated == [block.hash] and result.accepted == []
    assert block.hash not in chain
    assert chain.add_block(block, at).status == "invalid"  # remembered


def test_a_second_key_claiming_a_live_ip_is_refused(chain, ids):
    add(chain, [reg(ids[0], ip="10.0.0.1", nickname="alice")])
    _connect_fails(chain, [reg(ids[1], ip="10.0.0.1", nickname="mallory", issued=T0 + 1)], T0 + 1,
                   "IP 10.0.0.1 is bound to another key")


def test_a_taken_nickname_is_refused(chain, ids):
    add(chain, [reg(ids[0], ip="10.0.0.1", nickname="alice")])
    _connect_fails(chain, [reg(ids[1], ip="10.0.0.2", nickname="Alice", issued=T0 + 1)], T0 + 1, "is taken")


def test_two_claims_on_one_ip_in_the_same_block_are_refused(chain, ids):
    _connect_fails(chain, [reg(ids[0], ip="10.0.0.1", nickname="a"), reg(ids[1], ip="10.0.0.1", nickname="b")],
                   T0, "bound to another key")


def test_a_revoked_identity_cannot_publish(chain, ids):
    first = reg(ids[0])
    revocation = make_revocation(ids[0], network=NET, seq=1, prev=first.id, issued=T0)
    add(chain, [first, revocation])
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 1) is None
    _connect_fails(chain, [reg(ids[0], seq=2, prev=revocation.id, issued=T0 + 1)], T0 + 1, "revoked")


def test_a_rotated_key_cannot_be_reused(chain, ids):
    first = reg(ids[0])
    rotation = make_rotation(ids[0], ids[1], network=NET, seq=1, prev=first.id, nickname="alice", ip="10.0.0.1",
                             port=8471, issued=T0, lifetime=DAY)
    add(chain, [first, rotation])
    assert chain.bindings.lookup_ip("10.0.0.1", T0 + 1).record == rotation
    _connect_fails(chain, [reg(ids[0], seq=2, prev=rotation.id, issued=T0 + 1)], T0 + 1, "retired")
    back = make_rotation(ids[1], ids[0], network=NET, seq=2, prev=rotation.id, nickname="alice", ip="10.0.0.1",
                         port=8471, issued=T0 + 1, lifetime=DAY)
    _connect_fails(chain, [back], T0 + 2, "already used")


def test_an_expired_binding_can_be_claimed_once_the_median_time_passes_the_grace_period(chain, ids):
    add(chain, [reg(ids[0], ip="10.0.0.1", lifetime=3600)])
    free_at = T0 + 3600 + RECLAIM_GRACE_SECONDS
    taker = reg(ids[1], ip="10.0.0.1", nickname="bob", issued=free_at)
    # The median time past (genesis at 0, block 1 at T0) is still T0: the claim waits, whatever the block says.
    _connect_fails(chain, [taker], free_at, "reserved for it")
    add(chain, at=free_at)
    _connect_fails(chain, [taker], free_at + 1, "reserved for it")
    add(chain, at=free_at + 1)
    assert chain.median_time_past() == free_at
    add(chain, [taker], at=free_at + 2)
    assert chain.bindings.lookup_ip("10.0.0.1", free_at + 2).record == taker


def test_a_block_dated_119_seconds_ahead_cannot_take_a_lapsed_address_early(chain, ids):
    holder = reg(ids[0], ip="10.0.0.1", lifetime=3600)
    add(chain, [holder])
    free_at = holder.expires + RECLAIM_GRACE_SECONDS
    for i in range(6):  # honest blocks up to just before the end of the grace period
        add(chain, at=free_at - 120 + i)
    now = free_at - 100  # honest clocks; the holder's reservation still has 100 s to run
    ahead = now + 119
    claim = reg(ids[1], ip="10.0.0.1", nickname="mallory", issued=ahead)
    block = block_on(chain.tip, [claim], ahead)
    result = chain.add_block(block, now)
    assert result.status == "invalid" and "reserved for it" in result.reason
    assert chain.bindings.lookup_ip("10.0.0.1", now) is None and chain.height == 7
    with pytest.raises(LedgerError, match="reserved for it"):
        chain.check_record(claim, ahead)  # the pool judges it the same way


def test_an_expired_record_cannot_be_mined(chain, ids):
    _connect_fails(chain, [reg(ids[0], lifetime=3600)], T0 + 3600, "already expired")


def test_check_record_validates_against_the_tip(chain, ids):
    record = reg(ids[0])
    chain.check_record(record, T0)
    add(chain, [record])
    with pytest.raises(LedgerError, match="already in the ledger"):
        chain.check_record(record, T0)
    with pytest.raises(LedgerError, match="bound to another key"):
        chain.check_record(reg(ids[1], ip="10.0.0.1", nickname="x"), T0)
    with pytest.raises(LedgerError, match="bad signature"):
        chain.check_record(dataclasses.replace(reg(ids[2], ip="10.0.0.3", nickname="y"), port=1), T0)


def test_check_header_verifies_work_time_and_linkage(chain):
    block = block_on(chain.tip, [], T0)
    chain.check_header(block.header, T0)
    with pytest.raises(LedgerError, match="too little proof of work"):
        chain.check_header(fail_pow(block.header), T0)
    with pytest.raises(LedgerError, match="in the future"):
        chain.check_header(block.header, T0 - 1000)
    orphan = block_on(block.header, [], T0 + 1)
    with pytest.raises(LedgerError, match="does not know"):
        chain.check_header(orphan.header, T0)
    chain.check_header(orphan.header, T0, prev=block.header)
    with pytest.raises(LedgerError, match="does not link"):
        chain.check_header(orphan.header, T0, prev=orphan.header)


def test_check_headers_validates_a_batch_and_returns_its_work(chain):
    headers = []
    parent = chain.tip
    for i in range(15):
        parent = solve(dataclasses.replace(block_on(parent, [], T0 + i).header))
        headers.append(parent)
    assert chain.check_headers(headers, T0 + 100) == 15 * 256
    stale = solve(dataclasses.replace(block_on(headers[-1], [], T0).header))
    with pytest.raises(LedgerError, match="not after the median"):
        chain.check_headers([*headers, stale], T0 + 100)
    with pytest.raises(LedgerError, match="does not link"):
        chain.check_headers([headers[0], headers[2]], T0 + 100)
    with pytest.raises(LedgerError, match="does not know"):
        chain.check_headers(headers[1:], T0 + 100)
