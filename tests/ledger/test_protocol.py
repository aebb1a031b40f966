"""The ledger wire protocol: docs/ledger-protocol.md's test vectors, the hello checks and frame limits."""

import re
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.control import CONTROL_PROTOCOL
from ledger.params import NetworkParams, format_network_id
from ledger.protocol import (
    LEDGER_PROTOCOL,
    MAX_FRAME,
    MAX_GET_BLOCKS,
    REACHABILITY_CONTEXT,
    ROLE_CLIENT,
    ROLE_PEER,
    PeerHello,
    check_compatible,
    hello_fields,
    reachability_data,
    work_from_bytes,
    work_to_bytes,
)
from ledger.prune import not_served
from p2pchat.foundation import crypto
from p2pchat.foundation.codec import Message
from p2pchat.foundation.errors import FrameError, ProtocolError

DOC = Path(__file__).resolve().parents[2] / "docs" / "ledger-protocol.md"


def vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    found = re.findall(r"```vector ([\w-]+)\n(.*?)```", text, flags=re.S)
    return {name: bytes.fromhex("".join(body.split())) for name, body in found}


def test_the_documented_vectors_are_what_the_code_produces():
    v = vectors()
    assert set(v) == {"hello-client", "get-headers-genesis", "reachability-data", "reachability-digest",
                      "binding-evidence-id", "binding-evidence-id-no-header",   # these two: test_disputes.py
                      "blocks-pruned", "control-lookup", "control-not-found"}
    hello = LEDGER_PROTOCOL.encode("hello", **hello_fields(role=ROLE_CLIENT, nonce=bytes(range(8)),
                                                           network="p2pchat"))
    assert hello == v["hello-client"]
    genesis = NetworkParams().genesis_hash
    assert genesis.hex() in DOC.read_text()
    assert LEDGER_PROTOCOL.encode("get_headers", locator=[genesis], limit=2000) == v["get-headers-genesis"]
    data = reachability_data(bytes(range(32)), "127.0.0.21", "p2pchat")
    assert data == v["reachability-data"]
    assert crypto.sha256(b"p2pchat/" + REACHABILITY_CONTEXT.encode() + b"\x00" + data) == v["reachability-digest"]
    assert work_to_bytes(3072).hex() == "0c00" and "`0c00`" in DOC.read_text()
    # pruning: a node that pruned bodies up to block 1000 answers a get_blocks for one of them
    assert LEDGER_PROTOCOL.encode("blocks", blocks=[], pruned=1000, reason=not_served(1000)) == v["blocks-pruned"]
    # the local control socket (§8.1)
    assert CONTROL_PROTOCOL.encode("lookup", query="127.0.0.21") == v["control-lookup"]
    assert CONTROL_PROTOCOL.encode("lookup_result", found=False, reason="no live binding for ip 127.0.0.21",
                                   checked=False, node="127.0.0.1:8470", network="p2pchat") == v["control-not-found"]


def test_every_frame_type_is_documented():
    text = DOC.read_text()
    for type_ in LEDGER_PROTOCOL.messages:
        assert f"`{type_}`" in text, type_


def decode(frame: bytes) -> Message:
    (msg,) = LEDGER_PROTOCOL.reader().feed(frame)
    return msg


def node_hello(**changes):
    params = NetworkParams(name="testnet", difficulty_bits=8)
    fields = hello_fields(role=ROLE_PEER, nonce=b"abcdefgh", network=params.name, genesis=params.genesis_hash,
                          params=params.to_wire(), height=5, tip=bytes(32), work=2**70, listen_port=8470)
    fields.update(changes)
    return decode(LEDGER_PROTOCOL.encode("hello", **fields)), params


def test_a_node_hello_round_trips_with_work_beyond_64_bits():
    msg, params = node_hello()
    hello = PeerHello.from_message(msg)
    assert hello.work == 2**70 and hello.complete and hello.listen_port == 8470
    check_compatible(hello, network="testnet", genesis=params.genesis_hash)


def test_a_node_hello_must_be_complete_but_a_client_hello_need_not_be():
    msg, _ = node_hello(tip=None)
    with pytest.raises(ProtocolError, match="missing the network, genesis"):
        PeerHello.from_message(msg)
    client = decode(LEDGER_PROTOCOL.encode("hello", **hello_fields(role=ROLE_CLIENT, nonce=b"12345678")))
    hello = PeerHello.from_message(client)
    assert not hello.complete
    check_compatible(hello, network="testnet", genesis=bytes(32))  # a client that did not say is not refused


def test_mismatches_name_what_this_side_speaks():
    msg, _ = node_hello(version=7)
    with pytest.raises(ProtocolError, match="version 7 is not supported; this node speaks version 1"):
        PeerHello.from_message(msg)
    msg, _ = node_hello(role="miner")
    with pytest.raises(ProtocolError, match="unknown role 'miner'"):
        PeerHello.from_message(msg)
    hello = PeerHello.from_message(node_hello()[0])
    with pytest.raises(ProtocolError, match="the peer is on 'testnet', this node is on 'p2pchat'"):
        check_compatible(hello, network="p2pchat", genesis=None)
    ours = NetworkParams(name="testnet")
    with pytest.raises(ProtocolError, match="same name, other parameters") as err:
        check_compatible(hello, network="testnet", genesis=ours.genesis_hash)
    assert ours.id_text in str(err.value) and format_network_id(hello.genesis) in str(err.value)
    other = decode(LEDGER_PROTOCOL.encode("status"))
    with pytest.raises(ProtocolError, match="first frame must be hello"):
        PeerHello.from_message(other)


@pytest.mark.parametrize("type_, fields, error", [
    ("get_headers", {"locator": [b"x" * 31], "limit": 10}, "too short"),
    ("get_headers", {"locator": [], "limit": 5000}, "above the maximum"),
    ("get_blocks", {"hashes": []}, "too short"),
    ("prove", {"nonce": b"short"}, "too short"),
    ("peers", {"addrs": ["x" * 65]}, "too long"),
])
def test_out_of_bounds_fields_are_refused(type_, fields, error):
    with pytest.raises(FrameError, match=error):
        LEDGER_PROTOCOL.encode(type_, **fields)


def test_the_frame_limit_fits_the_largest_block_the_parameters_allow():
    assert MAX_FRAME > 2 * 3_000_000 >= 2 * NetworkParams().max_block_bytes


@given(st.integers(min_value=0, max_value=2**512))
def test_work_bytes_round_trip(work):
    assert work_from_bytes(work_to_bytes(work)) == work
    assert len(work_to_bytes(work)) <= 65


def _blocks_of_empty_maps(blocks: int, maps_each: int) -> bytes:
    """A ``blocks`` frame whose every block holds ``records``: ``maps_each`` empty maps (1 byte each on the wire)."""
    block = b"\x81\xa7records\xdd" + struct.pack(">I", maps_each) + b"\x80" * maps_each
    return b"\x82\xa1t\xa6blocks\xa6blocks\xdc" + struct.pack(">H", blocks) + block * blocks


def test_a_frame_of_empty_maps_is_refused_while_it_is_read():
    body = _blocks_of_empty_maps(10, 100_000)    # 1 MB: ~1M dicts, 68 MB of Python objects if it were built
    tracemalloc.start()
    try:
        with pytest.raises(FrameError, match="more maps and lists than any ledger message may"):
            LEDGER_PROTOCOL.decode(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000     # the budget's ~17k containers (~1 MB), not a million dicts


def test_the_leanest_honest_blocks_answer_fits_the_container_budget():
    empty = {"header": bytes(125), "records": []}     # a block without records: the most maps per byte
    answer = LEDGER_PROTOCOL.encode_body("blocks", blocks=[empty] * MAX_GET_BLOCKS)
    assert len(LEDGER_PROTOCOL.decode(answer)["blocks"]) == MAX_GET_BLOCKS
    small = LEDGER_PROTOCOL.encode_body("blocks", blocks=[empty])
    assert len(LEDGER_PROTOCOL.decode(small)["blocks"]) == 1
