"""Records: construction rules, canonical encoding, wire round trips and signatures."""

import dataclasses
import unicodedata

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_kit import NET, T0, reg

from ledger.errors import LedgerError
from ledger.nicknames import check_nickname
from ledger.records import (
    ZERO_HASH,
    Record,
    clear_caches,
    make_revocation,
    make_rotation,
    nickname_key,
    public_key,
)
from p2pchat.foundation import crypto
from tests.conftest import make_identities


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


def test_a_register_record_is_signed_by_its_key_for_its_network(ids):
    record = reg(ids[0])
    record.verify_signatures(NET)
    assert record.fingerprint == ids[0].fingerprint == record.signer_fingerprint
    with pytest.raises(LedgerError, match="bad signature"):
        record.verify_signatures("othernet")


def test_any_changed_field_breaks_the_signature(ids):
    record = reg(ids[0])
    for change in [{"seq": 1, "prev": b"\x01" * 32}, {"nickname": "mallory"}, {"ip": "10.0.0.9"},
                   {"port": 9999}, {"expires": T0 + 999_999}, {"relay": "10.9.9.9:8472"}]:
        with pytest.raises(LedgerError, match="bad signature"):
            dataclasses.replace(record, **change).verify_signatures(NET)


def test_a_signature_by_another_key_does_not_verify(ids):
    forged = dataclasses.replace(reg(ids[0]), key=ids[1].public_der)
    with pytest.raises(LedgerError, match="bad signature"):
        forged.verify_signatures(NET)


def test_a_rotation_needs_both_signatures(ids):
    rotation = make_rotation(ids[0], ids[1], network=NET, seq=1, prev=b"\x07" * 32, nickname="alice",
                             ip="10.0.0.1", port=8471, issued=T0, lifetime=3600)
    rotation.verify_signatures(NET)
    assert rotation.fingerprint == ids[1].fingerprint
    assert rotation.signer_fingerprint == ids[0].fingerprint
    swapped = dataclasses.replace(rotation, new_key=ids[2].public_der)
    with pytest.raises(LedgerError):
        swapped.verify_signatures(NET)
    without_new = dataclasses.replace(rotation, new_sig=rotation.sig)
    with pytest.raises(LedgerError, match="new key"):
        without_new.verify_signatures(NET)


def test_a_revocation_carries_no_binding(ids):
    revocation = make_revocation(ids[0], network=NET, seq=3, prev=b"\x01" * 32, issued=T0)
    revocation.verify_signatures(NET)
    assert revocation.nickname == "" and revocation.ip is None and revocation.expires == T0
    with pytest.raises(LedgerError, match="no address"):
        dataclasses.replace(revocation, ip="10.0.0.1", port=1)


@pytest.mark.parametrize("change, message", [
    ({"ip": None, "port": None, "ledger_port": None}, "IP address or a relay"),
    ({"ip": None, "relay": "10.0.0.5:8472"}, "cannot name ports"),
    ({"ip": "10.000.0.1"}, "not an IP address"),
    ({"ip": "::FFFF:10.0.0.1"}, "canonical"),
    ({"port": 0}, "not a TCP port"),
    ({"port": None}, "chat port"),
    ({"relay": "10.0.0.5"}, "relay hint"),
    ({"relay": "10.0.0.5:08472"}, "canonical"),
    ({"nickname": "a\u0441"}, "mixes letters of several scripts"),
    ({"nickname": "x" * 33}, "at most 32"),
    ({"nickname": " alice"}, "spaces"),
    ({"nickname": "al\nice"}, "control"),
    ({"nickname": "e\u0301"}, "NFC"),
    ({"seq": 1}, "seq 0"),
    ({"prev": b"\x01" * 32}, "seq 0"),
    ({"prev": b"short"}, "32-byte"),
    ({"seq": -1}, "seq"),
    ({"seq": True}, "seq"),
    ({"expires": T0}, "expires before"),
    ({"issued": -5}, "issued"),
    ({"kind": "delete"}, "unknown record kind"),
    ({"kind": "rotate"}, "new key"),
    ({"new_key": b"k"}, "no new key"),
    ({"key": b""}, "key is 0 bytes"),
    ({"sig": b"x" * 2000}, "signature is too long"),
    ({"nickname": 5}, "nickname"),
])
def test_malformed_records_cannot_be_built(ids, change, message):
    with pytest.raises(LedgerError, match=message):
        dataclasses.replace(reg(ids[0]), **change)


def test_relay_only_records_are_allowed(ids):
    record = reg(ids[0], ip=None, relay="10.0.0.5:8472")
    record.verify_signatures(NET)
    assert record.ip is None and record.port is None


def test_wire_round_trip_through_msgpack_preserves_the_id(ids):
    for record in [reg(ids[0]), reg(ids[1], ip="::1", relay="[::1]:8472"),
                   make_revocation(ids[2], network=NET, seq=1, prev=b"\x02" * 32, issued=T0)]:
        wire = msgpack.unpackb(msgpack.packb(record.to_wire(), use_bin_type=True), raw=False)
        back = Record.from_wire(wire)
        assert back == record and back.id == record.id
        back.verify_signatures(NET)


@pytest.mark.parametrize("mangle, message", [
    (lambda w: [w], "should be a map"),
    (lambda w: {k: v for k, v in w.items() if k != "sig"}, "'sig' is missing"),
    (lambda w: {**w, "seq": "1"}, "seq"),
    (lambda w: {**w, "key": "text"}, "key"),
    (lambda w: {**w, "port": "8471"}, "port"),
    (lambda w: {**w, "ip": 7}, "ip"),
])
def test_malformed_wire_records_are_refused_with_a_reason(ids, mangle, message):
    with pytest.raises(LedgerError, match=message):
        Record.from_wire(mangle(reg(ids[0]).to_wire()))


def test_unknown_wire_fields_are_ignored_and_do_not_change_the_id(ids):
    record = reg(ids[0])
    assert Record.from_wire({**record.to_wire(), "extra": 1}).id == record.id


def test_bad_keys_are_refused_when_verifying(ids):
    record = dataclasses.replace(reg(ids[0]), key=b"\x30\x03\x02\x01\x05")
    with pytest.raises(LedgerError, match="key is unusable"):
        record.verify_signatures(NET)


def test_a_verified_signature_is_cached_per_network_and_id(ids):
    clear_caches()
    record = reg(ids[0])
    record.verify_signatures(NET)
    record.verify_signatures(NET)
    with pytest.raises(LedgerError):
        record.verify_signatures("othernet")
    assert public_key(ids[0].public_der) is public_key(ids[0].public_der)


def test_nicknames_compare_case_and_width_insensitively():
    assert nickname_key("Alice") == nickname_key("ALICE") == nickname_key("ａｌｉｃｅ")
    assert nickname_key("alice") != nickname_key("alicia")


# --- property tests: wire round trips of arbitrary well-formed records ----------------------------------------

_ips = st.one_of(st.none(), st.ip_addresses().map(str))
_nick = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn", "Mn", "Mc",
                                                    "Me")), min_size=1, max_size=32)


def _nickname_ok(name: str) -> bool:
    try:
        check_nickname(name)
    except LedgerError:
        return False
    return True


@st.composite
def records(draw):
    ip = draw(_ips)
    relay = draw(st.one_of(st.none(), st.ip_addresses(v=4).map(lambda a: f"{a}:8472")))
    if ip is None and relay is None:
        relay = "10.1.2.3:8472"
    seq = draw(st.integers(0, 2**32 - 1))
    issued = draw(st.integers(0, 2**39))
    kind = draw(st.sampled_from(["register", "rotate"]))
    key = draw(st.binary(min_size=1, max_size=600))
    return Record(kind=kind, key=key, seq=seq,
                  prev=ZERO_HASH if seq == 0 else draw(st.binary(min_size=32, max_size=32).filter(any)),
                  nickname=draw(_nick.filter(lambda s: s == s.strip() and s.isprintable()
                                            and unicodedata.normalize("NFC", s) == s and _nickname_ok(s))),
                  ip=ip, port=draw(st.integers(1, 65535)) if ip else None,
                  ledger_port=draw(st.one_of(st.none(), st.integers(1, 65535))) if ip else None,
                  relay=relay, issued=issued, expires=issued + draw(st.integers(1, 10**6)),
                  new_key=draw(st.binary(min_size=1, max_size=600).filter(lambda k: k != key))
                  if kind == "rotate" else None,
                  sig=draw(st.binary(max_size=512)),
                  new_sig=draw(st.binary(max_size=512)) if kind == "rotate" else None)


@settings(max_examples=200, deadline=None)
@given(records())
def test_any_well_formed_record_round_trips_through_the_wire(record):
    wire = msgpack.unpackb(msgpack.packb(record.to_wire(), use_bin_type=True), raw=False)
    back = Record.from_wire(wire)
    assert back == record
    assert back.id == record.id == crypto.sha256(record.encoded)


def test_record_signatures_interoperate_with_standard_pss(ids):
    # Signatures are plain RSA-PSS-SHA256 (MGF1-SHA256, salt = digest size): any PSS implementation checks them.
    from Crypto.Hash import SHA256
    from Crypto.Signature import pss

    record = reg(ids[0])
    message = SHA256.new(crypto.DOMAIN + b"ledger-record\x00" + record.signing_bytes(NET))
    pss.new(ids[0].public_key).verify(message, record.sig)
    standard = pss.new(ids[0]._key).sign(message)
    crypto.verify(ids[0].public_der, "ledger-record", record.signing_bytes(NET), standard)
