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


# The vector of docs/ledger.md ("Parameter digest and network id"): the default parameters.
VECTOR_SERIALIZED = (
    "9992b764656661756c745f7265636f72645f6c69666574696d65ce00093a8092af646966666963756c74795f626974731492af6d61785f"
    "626c6f636b5f6279746573ce000f424092b16d61785f626c6f636b5f7265636f726473cd01f492b26d61785f6675747572655f7365636f"
    "6e64737892b36d61785f7265636f72645f6c69666574696d65ce00278d0092ad6d656469616e5f77696e646f770b92a46e616d65a77032"
    "706368617492a776657273696f6e01")
VECTOR_DIGEST = "f79b4b5b55db9e1d74bd4635fb7d914a45abc704b0e4f31a7abd72ded1527682"
VECTOR_GENESIS = "3ebf3e1e044c21655423f000011b696d20289cde2fbd7e1c813fd68bafb870dd"


def test_parameter_digest_matches_the_documented_vector_byte_for_byte():
    import hashlib

    from ledger.params import PARAMS_DOMAIN

    params = NetworkParams()
    assert params.serialized.hex() == VECTOR_SERIALIZED
    # Built by hand as docs/ledger.md describes it: an array of [name, value] pairs sorted by name.
    by_hand = bytes([0x90 | 9])
    for name, value in sorted(params.to_wire().items()):
        by_hand += b"\x92" + bytes([0xA0 | len(name)]) + name.encode()
        if isinstance(value, str):
            by_hand += bytes([0xA0 | len(value)]) + value.encode()
        elif value < 128:
            by_hand += bytes([value])
        elif value < 2**16:
            by_hand += b"\xcd" + value.to_bytes(2, "big")
        else:
            by_hand += b"\xce" + value.to_bytes(4, "big")
    assert by_hand.hex() == VECTOR_SERIALIZED
    assert PARAMS_DOMAIN == b"p2pchat-ledger-params/1"
    assert hashlib.sha256(PARAMS_DOMAIN + by_hand).hexdigest() == VECTOR_DIGEST == params.digest.hex()
    assert params.genesis_hash.hex() == VECTOR_GENESIS
    assert params.id_text == "3ebf 3e1e 044c 2165 5423 f000 011b 696d"


def test_network_ids_typed_by_people_are_parsed_and_matched():
    from ledger.errors import LedgerError
    from ledger.params import matches_network_id, parse_network_id

    genesis = bytes.fromhex(VECTOR_GENESIS)
    assert matches_network_id(genesis, parse_network_id("3ebf 3e1e 044c 2165 5423 f000 011b 696d"))
    assert matches_network_id(genesis, parse_network_id(VECTOR_GENESIS.upper()))
    assert not matches_network_id(genesis, parse_network_id("3ebf 3e1e 044c 2165 5423 f000 011b 696e"))
    with pytest.raises(LedgerError, match="at least 32"):
        parse_network_id("3ebf 3e1e")
    with pytest.raises(LedgerError, match="not hexadecimal"):
        parse_network_id("zebf 3e1e 044c 2165 5423 f000 011b 696d")


def test_a_pin_file_round_trips_and_a_damaged_one_is_reported(tmp_path):
    from ledger.errors import LedgerError
    from ledger.network_pin import check_pinned, find_pin, load_pin, pin_path, save_pin

    params = NetworkParams(name="pinned", difficulty_bits=12)
    assert load_pin(tmp_path, "pinned") is None
    save_pin(tmp_path, params)
    assert load_pin(tmp_path, "pinned") == params == find_pin(tmp_path, None)
    forged = NetworkParams(name="pinned", difficulty_bits=1)
    with pytest.raises(LedgerError, match="difficulty 1 bits instead of 12") as err:
        check_pinned(forged, params, "the node at 127.0.0.9")
    assert forged.id_text in str(err.value) and params.id_text in str(err.value)
    text = pin_path(tmp_path, "pinned").read_text().replace('"difficulty_bits": 12', '"difficulty_bits": 1')
    pin_path(tmp_path, "pinned").write_text(text)
    with pytest.raises(LedgerError, match="damaged"):
        load_pin(tmp_path, "pinned")
