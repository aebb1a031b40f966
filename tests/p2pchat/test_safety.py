"""Safety numbers: order-independent, key-dependent, easy to read out."""

from __future__ import annotations

import re

import pytest

from p2pchat.foundation import crypto
from p2pchat.safety import half_number, safety_number, safety_number_from_fingerprints


def test_both_sides_compute_the_same_number(identities):
    a, b = identities[0].public_der, identities[1].public_der
    assert safety_number(a, b) == safety_number(b, a)


def test_the_number_is_sixty_digits_in_twelve_groups_of_five(identities):
    number = safety_number(identities[0].public_der, identities[1].public_der)
    assert re.fullmatch(r"\d{5}( \d{5}){11}", number)


def test_each_key_contributes_its_own_half(identities):
    a, b, c = (i.public_der for i in identities[:3])
    ab, ac = safety_number(a, b).replace(" ", ""), safety_number(a, c).replace(" ", "")
    half_a = half_number(crypto.fingerprint(a))
    assert half_a in (ab[:30], ab[30:]) and half_a in (ac[:30], ac[30:])


def test_another_key_on_either_side_changes_the_number(identities):
    a, b, c = (i.public_der for i in identities[:3])
    assert len({safety_number(a, b), safety_number(a, c), safety_number(c, b)}) == 3


def test_numbers_are_spread_over_the_whole_range():
    fps = [crypto.sha256(str(n).encode()) for n in range(60)]
    halves = {half_number(fp) for fp in fps}
    assert len(halves) == 60
    assert {h[0] for h in halves} == set("0123456789")        # leading zeros are kept, every digit occurs


def test_a_fingerprint_must_be_32_bytes():
    with pytest.raises(ValueError, match="32-byte"):
        safety_number_from_fingerprints(b"short", crypto.sha256(b"2"))
