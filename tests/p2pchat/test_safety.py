"""Safety numbers: order-independent, key-dependent, easy to read out."""

from __future__ import annotations

import re

import pytest

from p2pchat.foundation import crypto
from p2pchat.safety import safety_number, safety_number_from_fingerprints


def test_both_sides_compute_the_same_number(identities):
    a, b = identities[0].public_der, identities[1].public_der
    assert safety_number(a, b) == safety_number(b, a)


def test_the_number_is_twelve_digits_in_groups_of_four(identities):
    number = safety_number(identities[0].public_der, identities[1].public_der)
    assert re.fullmatch(r"\d{4} \d{4} \d{4}", number)


def test_another_key_on_either_side_changes_the_number(identities):
    a, b, c = (i.public_der for i in identities[:3])
    assert len({safety_number(a, b), safety_number(a, c), safety_number(c, b)}) == 3


def test_numbers_are_spread_over_the_whole_range():
    fps = [crypto.sha256(str(n).encode()) for n in range(400)]
    numbers = {safety_number_from_fingerprints(fps[0], fp) for fp in fps[1:]}
    assert len(numbers) == 399
    assert {n[0] for n in numbers} == set("0123456789")        # leading zeros are kept, every digit occurs


def test_the_length_and_grouping_can_be_chosen():
    fp1, fp2 = crypto.sha256(b"1"), crypto.sha256(b"2")
    assert re.fullmatch(r"\d{5} \d{5} \d{5}", safety_number_from_fingerprints(fp1, fp2, digits=15, group=5))
    with pytest.raises(ValueError, match="between 1 and 18 digits"):
        safety_number_from_fingerprints(fp1, fp2, digits=19)
    with pytest.raises(ValueError, match="32-byte"):
        safety_number_from_fingerprints(b"short", fp2)
