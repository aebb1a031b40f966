import pytest

from p2pchat.foundation.addresses import format_address, parse_address
from p2pchat.foundation.errors import AddressError


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.2", ("127.0.0.2", 9)), ("127.0.0.2:80", ("127.0.0.2", 80)),
    ("[::1]:5", ("::1", 5)), ("::1", ("::1", 9)),
])
def test_addresses_parse(text, expected):
    assert parse_address(text, 9) == expected
    assert parse_address(format_address(*expected), 1) == expected


@pytest.mark.parametrize("text", ["", "host", "1.2.3.4:x", "1.2.3.4:70000", "999.1.1.1"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(AddressError):
        parse_address(text, 9)
