"""``ledger verify``'s signature workers: they skip the form checks the parent's replay makes, vouch only for
record ids, and refuse a key that is not in canonical DER form exactly like the node's validation does."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from ledger_kit import NET, PARAMS, T0, block_on, reg

from ledger.local_ledger import verify_store
from ledger.records import SIGN_CONTEXT, Record, clear_caches
from ledger.store import Store
from ledger.verify_worker import _unchecked, verify_chunk
from tests.conftest import make_identities


@pytest.fixture(scope="module")
def ids():
    return make_identities(2)


def _signed(record: Record, identity) -> Record:
    return replace(record, sig=identity.sign(SIGN_CONTEXT, record.signing_bytes(NET)))


def _long_form(der: bytes) -> bytes:
    """The same key with its outer DER length in a longer, non-canonical form (a zero byte in front)."""
    assert der[0] == 0x30 and der[1] == 0x82
    return b"\x30\x83\x00" + der[2:]


def _store_with(tmp_path, records_per_block):
    path = tmp_path / "ledger.sqlite3"
    parent = PARAMS.genesis().header
    with Store(path) as store:
        store.save_params(PARAMS)
        for i, records in enumerate(records_per_block):
            block = block_on(parent, records, T0 + 10 + i)
            store.save_block(block)
            parent = block.header
    return path


def test_a_record_signed_over_a_non_canonical_key_is_refused_by_the_workers_and_the_replay(tmp_path, ids):
    good = reg(ids[0])
    bad = _signed(replace(reg(ids[1], ip="10.0.0.2", nickname="bob"), key=_long_form(ids[1].public_der)), ids[1])
    assert bad.key != ids[1].public_der
    clear_caches()
    assert verify_chunk((NET, [msgpack.packb([good.to_wire(), bad.to_wire()], use_bin_type=True)])) == [good.id]
    path = _store_with(tmp_path, [[good], [bad]])
    for workers in (1, 2):
        clear_caches()
        report = verify_store(path, now=T0 + 100, workers=workers)
        assert not report.ok and report.height == 1
        assert "canonical DER" in "\n".join(report.problems), report.problems


def test_a_worker_vouches_only_for_ids_so_a_malformed_record_it_verified_is_still_refused(tmp_path, ids):
    wire = reg(ids[0]).to_wire()
    wire["ip"] = "010.0.0.1"   # not canonical: Record.from_wire refuses it, the worker does not look
    unchecked = _unchecked(wire)
    assert unchecked is not None
    wire["sig"] = ids[0].sign(SIGN_CONTEXT, unchecked.signing_bytes(NET))
    packed = msgpack.packb([wire], use_bin_type=True)
    clear_caches()
    assert verify_chunk((NET, [packed])) == [_unchecked(wire).id]   # a valid signature over those fields
    path = _store_with(tmp_path, [[reg(ids[1], ip="10.0.0.2", nickname="bob")]])
    with Store(path) as store:   # put the malformed record in the block row by hand (Block refuses it)
        store._write([("UPDATE blocks SET records=? WHERE height=1", (packed,))])
    for workers in (1, 2):
        report = verify_store(path, now=T0 + 100, workers=workers)
        assert not report.ok and "damaged" in report.problems[0] and "010.0.0.1" in report.problems[0]


def test_damaged_wire_maps_are_skipped_by_a_worker_not_raised(ids):
    good = reg(ids[0])
    bodies = [b"\xc1", msgpack.packb([{"kind": "register", "key": 5}, [1, 2], {b"x": 1}, good.to_wire()]),
              msgpack.packb({"not": "a list"})]
    assert verify_chunk((NET, bodies)) == [good.id]
