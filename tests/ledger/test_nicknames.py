"""Nickname rules (consensus): confusable skeletons clash, mixed-script nicknames are malformed, an empty
nickname claims nothing — applied the same way in blocks and in the pending pool."""

import unicodedata

import pytest
from ledger_kit import PARAMS, T0, add, block_on, reg

from ledger.chain import Chain
from ledger.errors import LedgerError
from ledger.nicknames import check_nickname, nickname_key, nickname_keys, script_of, skeleton
from ledger.pool import Mempool
from tests.conftest import make_identities

LOOKALIKES = {
    "Cyrillic с": "\u0441arol",
    "Greek ο": "car\u03bfl",
    "small capital ᴄ": "\u1d04arol",
    "combining acute": unicodedata.normalize("NFC", "c\u0301arol"),
    "combining marks below": unicodedata.normalize("NFC", "ca\u0323rol\u0330"),
    "capitals": "CAROL",
    "fullwidth": "\uff43\uff41\uff52\uff4f\uff4c",
    "digit one for l": "caro1",
}


@pytest.fixture(scope="module")
def ids():
    return make_identities(3)


@pytest.mark.parametrize("name", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_a_lookalike_of_carol_is_refused_as_mixed_script_or_as_a_clash(name, ids):
    try:
        check_nickname(name)
    except LedgerError as exc:
        assert "mixes letters of several scripts" in str(exc)
        return
    assert set(nickname_keys(name)) & set(nickname_keys("carol"))
    chain = Chain(PARAMS)
    add(chain, [reg(ids[0], nickname="carol", ip="10.0.0.1")])
    with pytest.raises(LedgerError, match="is taken by another key"):
        chain.bindings.check(reg(ids[1], nickname=name, ip="10.0.0.2"), T0 + 1)


def test_mixed_script_nicknames_are_malformed_records():
    for name in ("\u0441arol", "car\u03bfl", "\u0441\u0430rol"):
        with pytest.raises(LedgerError, match=r"mixes letters of several scripts \(Cyrillic, Latin\)|Greek, Latin"):
            reg(make_identities(1)[0], nickname=name)


def test_single_script_and_the_allowed_combinations_pass():
    for name in ("carol", "Алиса", "Ελένη", "山田たろう", "김민준", "Zoë-2", "山田 Taro", "alice_01"):
        check_nickname(name)
    assert script_of("a") == "LATIN" and script_of("\u0441") == "CYRILLIC" and script_of("1") == "COMMON"


def test_an_all_cyrillic_lookalike_is_a_clash_not_a_new_name():
    lookalike = "\u0441\u0430\u0440\u043e"  # "саро" written entirely in Cyrillic
    check_nickname(lookalike)
    assert nickname_key(lookalike) == nickname_key("capo")


def test_capital_i_also_claims_lowercase_l():
    assert "lris" in nickname_keys("Iris") and nickname_key("Iris") == nickname_key("iris")
    assert nickname_key("iris") != nickname_key("lris")


def test_unassigned_characters_and_stacked_marks_are_refused():
    with pytest.raises(LedgerError, match="does not assign"):
        check_nickname("bob\U000e01f0x")
    with pytest.raises(LedgerError, match="combining marks"):
        check_nickname("a\u0300\u0301\u0302\u0303")


def test_the_skeleton_is_the_uts39_mapping():
    assert skeleton("\u0441") == "c" and skeleton("m") == "rn" and skeleton("0") == "O"


def test_the_same_clash_is_refused_by_the_pool_and_inside_a_block(ids):
    chain = Chain(PARAMS)
    add(chain, [reg(ids[0], nickname="carol", ip="10.0.0.1")])
    clash = reg(ids[1], nickname="\u1d04arol", ip="10.0.0.2", issued=T0 + 1)
    pool = Mempool(PARAMS)
    with pytest.raises(LedgerError, match="taken by another key"):
        pool.add(clash, chain, T0 + 2)
    result = chain.add_block(block_on(chain.tip, [clash], T0 + 2), T0 + 2)
    assert result.status != "added" and "taken by another key" in (result.reason or "")


def test_an_empty_nickname_binds_the_address_and_claims_no_name(ids):
    chain = Chain(PARAMS)
    add(chain, [reg(ids[0], nickname="carol", ip="10.0.0.1"), reg(ids[1], nickname="", ip="10.0.0.2"),
                reg(ids[2], nickname="", ip="10.0.0.3")])
    assert chain.bindings.lookup_ip("10.0.0.2", T0).record.nickname == ""
    assert chain.bindings.lookup_nickname("", T0) is None
    assert chain.bindings.lookup_nickname("CAROL", T0).record.key == ids[0].public_der


def test_the_ascii_shortcut_agrees_with_the_tables():
    from ledger import nicknames

    for cp in range(0x20, 0x7F):
        char = chr(cp)
        assert nicknames.script_of(char) in ("LATIN", "COMMON") and not nicknames._is_mark(char)
    every_ascii = "".join(chr(cp) for cp in range(128))
    assert nicknames._strip_marks(every_ascii) == "".join(c for c in every_ascii if not nicknames._is_mark(c))
