"""Network parameters: validation, wire form and the genesis block that commits to them."""

import dataclasses

import pytest

from ledger.errors import LedgerError
from ledger.merkle import EMPTY_ROOT
from ledger.params import NetworkParams, network_id


def test_genesis_is_deterministic_and_exempt_from_work():
    params = NetworkParams(name="lab", difficulty_bits=12)
    genesis = params.genesis()
    assert genesis == NetworkParams(name="lab", difficulty_bits=12).genesis()
    assert genesis.header.height == 0 and genesis.header.timestamp == 0 and genesis.header.nonce == 0
    assert genesis.records == ()
    assert genesis.header.merkle_root == EMPTY_ROOT
    assert genesis.header.network_id == network_id("lab")
    assert params.genesis_hash == genesis.hash


@pytest.mark.parametrize("change", [{"name": "other"}, {"difficulty_bits": 13}, {"max_block_records": 7},
                                    {"max_future_seconds": 60}, {"median_window": 5},
                                    {"max_record_lifetime": 40 * 86400}, {"version": 2}])
def test_every_parameter_changes_the_genesis_hash(change):
    base = NetworkParams(name="lab", difficulty_bits=12)
    assert dataclasses.replace(base, **change).genesis_hash != base.genesis_hash


def test_params_round_trip_through_the_wire_and_are_checked_against_the_genesis_hash():
    params = NetworkParams(name="lab", difficulty_bits=12)
    assert NetworkParams.from_wire(params.to_wire(), params.genesis_hash) == params
    other = NetworkParams(name="lab", difficulty_bits=13)
    with pytest.raises(LedgerError, match="do not match"):
        NetworkParams.from_wire(params.to_wire(), other.genesis_hash)


@pytest.mark.parametrize("data, message", [
    ("nope", "should be a map"),
    ({"name": "lab"}, "lack"),
])
def test_malformed_wire_params_are_refused(data, message):
    with pytest.raises(LedgerError, match=message):
        NetworkParams.from_wire(data)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": ""}, "network name"),
    ({"name": "has space"}, "network name"),
    ({"name": "../etc"}, "network name"),
    ({"difficulty_bits": 0}, "difficulty"),
    ({"difficulty_bits": 65}, "difficulty"),
    ({"difficulty_bits": True}, "whole number"),
    ({"max_block_bytes": 10}, "max_block_bytes"),
    ({"default_record_lifetime": 40 * 86400}, "lifetimes"),
])
def test_invalid_params_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(LedgerError, match=message):
        NetworkParams(**kwargs)
