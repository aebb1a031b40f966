"""Fuzzing what the ledger parses from peers and from its own store: records, block headers, blocks, network
parameters, lookup answers and hellos, then whole blocks through chain validation. Anything malformed is refused
with ``LedgerError`` (or ``ProtocolError`` for a hello) naming the problem; anything accepted round-trips."""

from __future__ import annotations

import threading
from functools import cache

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.blocks import HEADER_SIZE, Block, BlockHeader
from ledger.chain import Chain
from ledger.errors import LedgerError
from ledger.local_ledger import LookupAnswer
from ledger.merkle import merkle_root
from ledger.miner import mine
from ledger.params import NetworkParams
from ledger.protocol import LEDGER_PROTOCOL, PeerHello, check_compatible
from ledger.records import Record, make_register, make_rotation
from p2pchat.foundation.errors import FrameError, ProtocolError
from tests.conftest import make_identities
from tests.fuzz.fuzz_kit import fuzz_settings, msgpack_values, mutated, schema_maps

PARAMS = NetworkParams(name="fuzznet", difficulty_bits=1)
T0 = 1_700_000_000
RECORD_FIELDS = ("kind", "key", "seq", "prev", "nickname", "ip", "port", "ledger_port", "relay", "issued", "expires",
                 "new_key", "sig", "new_sig")


@cache
def valid_records() -> tuple[Record, ...]:
    a, b = make_identities(2)
    first = make_register(a, network=PARAMS.name, seq=0, prev=bytes(32), nickname="alice", ip="10.0.0.1", port=8471,
                          ledger_port=8470, issued=T0, lifetime=86400)
    relay_only = make_register(b, network=PARAMS.name, seq=0, prev=bytes(32), nickname="bob", relay="10.0.0.9:8472",
                               issued=T0, lifetime=86400)
    rotation = make_rotation(a, b, network=PARAMS.name, seq=1, prev=first.id, nickname="alice", ip="10.0.0.1",
                             port=8471, ledger_port=8470, issued=T0 + 1, lifetime=86400)
    return first, relay_only, rotation


@cache
def chain_with_one_block() -> tuple[Chain, Block]:
    chain = Chain(PARAMS)
    rec = valid_records()[0]
    header = BlockHeader(PARAMS.version, PARAMS.network_id, 1, chain.tip_hash, merkle_root([rec.id]), T0 + 10,
                         PARAMS.difficulty_bits, 0)
    solved = mine(header, threading.Event())
    assert solved is not None
    block = Block(solved, (rec,))
    assert chain.add_block(block, T0 + 20).status == "added"
    return chain, block


def record_field_values() -> st.SearchStrategy[object]:
    return st.one_of(msgpack_values, st.binary(min_size=32, max_size=32), st.sampled_from(
        ["register", "rotate", "revoke", "10.0.0.1", "::1", "fe80::1%eth0", "1.2.3.4:5", "[::1]:8472", "ALICE",
         "ａｌｉｃｅ", " alice", "\u0301a", 0, 2**32, 2**40, -1, True, b""]))


@st.composite
def record_maps(draw: st.DrawFn) -> object:
    base = dict(draw(st.sampled_from(valid_records())).to_wire())
    for name in draw(st.lists(st.sampled_from(RECORD_FIELDS), max_size=3)):
        if draw(st.booleans()):
            base[name] = draw(record_field_values())
        else:
            base.pop(name, None)
    return draw(st.one_of(st.just(base), st.just(base), msgpack_values))


@fuzz_settings(120)
@given(wire=record_maps())
def test_record_wire_maps_parse_or_are_refused_with_a_reason(wire):
    try:
        record = Record.from_wire(wire)
    except LedgerError as exc:
        assert str(exc)
        return
    again = Record.from_wire(msgpack.unpackb(msgpack.packb(record.to_wire(), use_bin_type=True), raw=False))
    assert again == record and again.id == record.id
    try:
        record.verify_signatures(PARAMS.name)
    except LedgerError as exc:
        assert "signature" in str(exc) or "key" in str(exc)
    else:  # a record whose signature still verifies must be one of the signed originals
        assert record.id in {r.id for r in valid_records()}


@fuzz_settings(100)
@given(data=st.data())
def test_stored_record_bytes_mutated_are_refused_like_the_store_does(data):
    record = data.draw(st.sampled_from(valid_records()))
    raw = data.draw(mutated(msgpack.packb(record.to_wire(), use_bin_type=True)))
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return   # the store skips such a row with a warning (ledger/store.py)
    try:
        Record.from_wire(value)
    except LedgerError:
        pass


@fuzz_settings(200)
@given(data=st.one_of(st.binary(max_size=200), st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE),
                      msgpack_values))
def test_any_125_bytes_are_a_header_and_anything_else_is_refused(data):
    try:
        header = BlockHeader.unpack(data)
    except LedgerError as exc:
        assert not (isinstance(data, bytes) and len(data) == HEADER_SIZE)
        assert "125 bytes" in str(exc)
        return
    assert header.pack() == data and len(header.hash) == 32


@st.composite
def block_maps(draw: st.DrawFn) -> object:
    _, block = chain_with_one_block()
    wire = block.to_wire()
    choice = draw(st.sampled_from(["header", "records", "record", "drop", "raw"]))
    if choice == "header":
        wire["header"] = draw(st.one_of(mutated(block.header.packed), msgpack_values))
    elif choice == "records":
        wire["records"] = draw(st.one_of(st.lists(record_maps(), max_size=3), msgpack_values))
    elif choice == "record":
        wire["records"] = [draw(record_maps())]
    elif choice == "drop":
        wire.pop(draw(st.sampled_from(["header", "records"])))
    else:
        return draw(msgpack_values)
    return wire


@fuzz_settings(100)
@given(wire=block_maps())
def test_block_maps_parse_or_are_refused_and_never_corrupt_the_chain(wire):
    chain, _good = chain_with_one_block()
    tip_before = chain.tip_hash
    try:
        block = Block.from_wire(wire)
    except LedgerError as exc:
        assert str(exc)
        return
    result = chain.add_block(block, T0 + 20)
    assert result.status in ("added", "duplicate", "orphan", "invalid")
    if result.status == "invalid":
        assert result.reason
    # the fuzzed block may only be the original (duplicate) or a block that passed every rule
    if result.status == "added":
        assert block.header.meets_target() and block.computed_merkle_root() == block.header.merkle_root
    assert chain.tip_hash in (tip_before, block.hash)


@fuzz_settings(150)
@given(data=st.data())
def test_headers_with_random_fields_through_check_header_raise_ledger_error_only(data):
    chain, good = chain_with_one_block()
    fields = data.draw(st.fixed_dictionaries({
        "version": st.integers(0, 2**32 - 1), "height": st.integers(0, 2**64 - 1),
        "timestamp": st.integers(0, 2**64 - 1), "target_bits": st.integers(0, 255), "nonce": st.integers(0, 2**64 - 1),
        "network_id": st.sampled_from([PARAMS.network_id, bytes(32)]),
        "prev_hash": st.sampled_from([good.hash, chain.genesis.hash, bytes(32)]),
        "merkle_root": st.sampled_from([good.header.merkle_root, bytes(32)])}))
    header = BlockHeader(**fields)
    try:
        chain.check_header(header, T0 + 20)
        chain.check_headers([header], T0 + 20)
    except LedgerError as exc:
        assert str(exc)


@fuzz_settings(80)
@given(wire=st.one_of(st.dictionaries(
    st.sampled_from(list(NetworkParams().to_wire())), st.one_of(st.integers(-5, 2**40), msgpack_values), max_size=9),
    st.builds(lambda changes: {**NetworkParams().to_wire(), **changes}, st.dictionaries(
        st.sampled_from(list(NetworkParams().to_wire())), st.one_of(st.integers(-5, 2**33), msgpack_values),
        max_size=2)), msgpack_values),
    genesis=st.one_of(st.none(), st.just(NetworkParams().genesis_hash), st.binary(min_size=32, max_size=32)))
def test_announced_network_parameters_are_adopted_only_when_they_match_the_genesis(wire, genesis):
    try:
        params = NetworkParams.from_wire(wire, genesis)
    except LedgerError as exc:
        assert str(exc)
        return
    if genesis is not None:
        assert params.genesis_hash == genesis
    assert NetworkParams.from_wire(params.to_wire(), params.genesis_hash) == params


@fuzz_settings(80)
@given(data=st.data())
def test_lookup_answers_parse_or_are_refused_and_a_bad_proof_never_verifies(data):
    chain, block = chain_with_one_block()
    header, index, path = chain.proof(block.records[0].id)
    good = LookupAnswer(block.records[0], header, index, path, 1, 1).to_wire()
    wire = dict(good)
    for name in data.draw(st.lists(st.sampled_from(sorted(good)), max_size=3)):
        wire[name] = data.draw(st.one_of(msgpack_values, st.integers(0, 2**40), st.lists(
            st.binary(min_size=32, max_size=32), max_size=40), mutated(block.header.packed)))
    try:
        answer = LookupAnswer.from_wire(wire)
    except LedgerError:
        return
    try:
        answer.verify_proof()
    except LedgerError:
        return
    # a proof that still verifies proves the original record in the original block
    assert answer.record.id == block.records[0].id and answer.header.merkle_root == block.header.merkle_root


@pytest.mark.parametrize("type_", ["hello", "hello_ack"])
@fuzz_settings(50)
@given(data=st.data())
def test_hellos_are_read_or_refused_naming_what_this_node_speaks(type_, data):
    fields = data.draw(schema_maps(LEDGER_PROTOCOL.messages[type_]))
    try:
        msg = LEDGER_PROTOCOL.decode(msgpack.packb({"t": type_, **fields}, use_bin_type=True))
    except FrameError:
        return
    try:
        hello = PeerHello.from_message(msg)
        check_compatible(hello, network=PARAMS.name, genesis=PARAMS.genesis_hash)
    except ProtocolError as exc:
        text = str(exc)
        assert "version 1" in text or "network" in text or "role" in text or "missing" in text, text
        return
    assert hello.version == 1
