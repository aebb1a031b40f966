"""docs/ledger.md's and docs/ledger-protocol.md's vectors, recomputed by tests/spec/impl."""

from __future__ import annotations

import hashlib
import re

import msgpack

from tests.spec.docvectors import DOCS, find, hexblock, vector, x
from tests.spec.impl import ledgerspec as ls
from tests.spec.impl.wire import pack


def _code_block_after(doc: str, marker: str) -> str:
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index(marker)
    return text[text.index("```", start) + 3:].split("```", 1)[0]


def test_parameter_digest_genesis_and_network_id():
    block = _code_block_after("ledger.md", "Vector, the default parameters")
    serialized = "".join(re.findall(r"^(?:serialized)?\s+([0-9a-f]{20,})\s*$", block.split("(180 bytes")[0], re.M))
    assert ls.params_serialized(ls.DEFAULT_PARAMS).hex() == serialized
    assert len(bytes.fromhex(serialized)) == 180
    digest = find(r"digest\s+([0-9a-f]{64})", block)
    assert ls.params_digest(ls.DEFAULT_PARAMS).hex() == digest
    gen = ls.genesis(ls.DEFAULT_PARAMS)
    assert gen.hash.hex() == find(r"genesis hash\s+([0-9a-f]{64})", block)
    assert ls.network_id_text(gen.hash) == find(r"network id\s+([0-9a-f ]+)\n", block).strip()
    assert len(gen.pack()) == 125


def test_merkle_vectors():
    text = (DOCS / "ledger.md").read_text(encoding="utf-8")
    one = find(r"record id `000102…1f`.*?root\s+`([0-9a-f]{64})`", text, re.S)
    assert ls.merkle_root([bytes(range(32))]).hex() == one
    assert ls.merkle_path([bytes(range(32))], 0) == []
    five = [bytes([i]) * 32 for i in range(5)]
    section = text[text.index("**Path-index bit order.**"):text.index("## Blocks")]
    hashes = re.findall(r"`([0-9a-f]{64})`", section)
    root, path, empty = hashes[0], hashes[1:4], hashes[4]
    assert ls.EMPTY.hex() == empty
    assert ls.merkle_root(five).hex() == root
    assert [h.hex() for h in ls.merkle_path(five, 2)] == path
    assert ls.verify_merkle_path(five[2], 2, [bytes.fromhex(h) for h in path], bytes.fromhex(root))
    assert not ls.verify_merkle_path(five[2], 3, [bytes.fromhex(h) for h in path], bytes.fromhex(root))
    assert not ls.verify_merkle_path(five[2], 8, [bytes.fromhex(h) for h in path], bytes.fromhex(root))
    assert ls.merkle_root([]) == ls.EMPTY


def test_median_time_past_examples():
    assert ls.mtp([0, 1000]) == 1000
    assert ls.mtp([0]) == 0
    assert ls.mtp(list(range(0, 200, 10))) == sorted(range(0, 200, 10))[-11:][5]


def test_ledger_protocol_vectors():
    assert pack("hello", version=1, role="client", nonce=bytes(range(8)), network="p2pchat",
                agent="p2pchat-ledger/0.1") == hexblock("ledger-protocol.md", "hello-client")
    gen = ls.genesis({**ls.DEFAULT_PARAMS})
    assert pack("get_headers", locator=[gen.hash], limit=2000) == hexblock("ledger-protocol.md", "get-headers-genesis")
    data = ls.reachability_data("p2pchat", "127.0.0.21", bytes(range(32)))
    assert data == hexblock("ledger-protocol.md", "reachability-data")
    digest = hashlib.sha256(b"p2pchat/ledger-reachability\x00" + data).digest()
    assert digest == hexblock("ledger-protocol.md", "reachability-digest")
    assert (3072).to_bytes(2, "big").hex() == "0c00"
    assert pack("lookup", query="127.0.0.21") == hexblock("ledger-protocol.md", "control-lookup")
    assert pack("lookup_result", found=False, reason="no live binding for ip 127.0.0.21", checked=False,
                node="127.0.0.1:8470", network="p2pchat") == hexblock("ledger-protocol.md", "control-not-found")


def test_record_vector():
    v = vector("ledger.md", "record")
    record = ls.Record("register", b"alice's public key", 0, bytes(32), "alice", "127.0.0.2", 8471, 8470, None,
                       1700000000, 1700604800, None, b"alice's signature", None)
    signed = record.signed_bytes("p2pchat")
    assert signed == x(v["signed_bytes"])
    assert hashlib.sha256(b"p2pchat/ledger-record\x00" + signed).hexdigest() == v["signed_message_sha256"]
    assert record.encoded() == x(v["encoded"])
    assert record.id.hex() == v["id"]
    assert msgpack.packb(record.to_wire(), use_bin_type=True) == x(v["wire"])
    assert ls.record_from_wire(msgpack.unpackb(x(v["wire"]))) == record


def test_the_project_encodes_a_record_as_the_spec_implementation_does():
    """The record vector uses stand-in bytes the project's parser refuses (not an RSA key), so the project's
    encoder is compared on a real record made by the spec implementation: same signed bytes, id and wire map."""
    import time

    from ledger.records import Record as ProjectRecord
    from tests.spec.harness import make_record, spec_key

    ours = make_record(spec_key(), "127.0.0.2", "alice", int(time.time()))
    theirs = ProjectRecord.from_wire(msgpack.unpackb(msgpack.packb(ours.to_wire(), use_bin_type=True)))
    assert theirs.signing_bytes("p2pchat") == ours.signed_bytes("p2pchat")
    assert theirs.id == ours.id
    assert msgpack.packb(theirs.to_wire(), use_bin_type=True) == msgpack.packb(ours.to_wire(), use_bin_type=True)
    theirs.verify_signatures("p2pchat")           # raises unless the spec signature verifies


def test_binding_evidence_id_vectors():
    record_id, header_hash = bytes(range(32)), bytes(range(32, 64))
    label = b"p2pchat-binding-evidence-v1\x00"
    assert hashlib.sha256(label + record_id + header_hash).digest() == hexblock("ledger-protocol.md",
                                                                                 "binding-evidence-id")
    assert hashlib.sha256(label + record_id).digest() == hexblock("ledger-protocol.md", "binding-evidence-id-no-header")
