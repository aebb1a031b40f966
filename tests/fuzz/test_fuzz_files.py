"""Fuzzing the files a node reads at start-up besides its ledger: the identity key file (PEM, plain or protected by
a passphrase, with any permissions) and the GUI's settings file (JSON). A damaged file gives a clear
``IdentityError`` or falls back to defaults; it never crashes the program, and no message shows key material."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gui import settings as gui_settings
from p2pchat.foundation.errors import IdentityError
from p2pchat.foundation.identity import Identity
from tests.conftest import make_identities
from tests.fuzz.fuzz_kit import fuzz_settings, mutated

PASSPHRASE = "correct horse"


@cache
def pems() -> tuple[bytes, bytes]:
    ident = make_identities(1)[0]
    return ident.to_pem(), ident.to_pem(PASSPHRASE)


def secret_numbers(ident: Identity) -> list[str]:
    """Decimal and hex forms of the private exponent's first digits: none may appear in any message."""
    d = ident._key.d  # the test owns this key; only used to check that no message leaks it
    return [str(d)[:24], format(d, "x")[:24]]


def write_key(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def load_or_refuse(path: Path, passphrase: str | None) -> Identity | None:
    try:
        return Identity.load(path, passphrase)
    except IdentityError as exc:
        text = str(exc)
        assert str(path) in text, text          # the message names the file
        for secret in secret_numbers(make_identities(1)[0]):
            assert secret not in text
        return None


@fuzz_settings(150)
@given(data=st.data())
def test_a_damaged_plain_key_file_is_refused_with_a_clear_error(tmp_path_factory, data):
    plain, _ = pems()
    raw = data.draw(st.one_of(mutated(plain, max_edits=6), st.binary(max_size=3000),
                              st.just(plain.replace(b"PRIVATE", b"PUBLIC"))))
    path = write_key(tmp_path_factory.mktemp("key") / "identity.pem", raw)
    ident = load_or_refuse(path, None)
    if ident is not None:   # what loads is a usable key of at least 3072 bits (maybe not the original)
        assert ident._key.size_in_bits() >= 3072 and len(ident.fingerprint) == 32


@fuzz_settings(12)
@given(data=st.data())
def test_a_damaged_passphrase_protected_key_file_is_refused_with_a_clear_error(tmp_path_factory, data):
    _, protected = pems()
    raw = data.draw(mutated(protected, max_edits=3))
    path = write_key(tmp_path_factory.mktemp("key") / "identity.pem", raw)
    load_or_refuse(path, data.draw(st.sampled_from([PASSPHRASE, "wrong", None])))


@fuzz_settings(40)
@given(mode=st.integers(min_value=0o400, max_value=0o777))
def test_a_key_file_others_may_touch_is_refused_with_the_chmod_that_fixes_it(tmp_path_factory, mode):
    plain, _ = pems()
    path = write_key(tmp_path_factory.mktemp("key") / "identity.pem", plain, mode)
    if mode & 0o077:
        with pytest.raises(IdentityError, match=r"chmod 600"):
            Identity.load(path)
    else:
        assert Identity.load(path).fingerprint == make_identities(1)[0].fingerprint


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
settings_maps = st.dictionaries(st.sampled_from(["width", "height", "x", "y", "scaling", "appearance", "other"]),
                                st.one_of(json_values, st.integers(-20_000, 20_000),
                                          st.sampled_from([0.8, 1.25, 2.0, 3.0, "Dark", "dark", True, False, 1])),
                                max_size=7)


def check_settings(s: gui_settings.Settings) -> None:
    assert type(s.width) is int and gui_settings.MIN_WIDTH <= s.width <= gui_settings.MAX_SIDE
    assert type(s.height) is int and gui_settings.MIN_HEIGHT <= s.height <= gui_settings.MAX_SIDE
    for v in (s.x, s.y):
        assert v is None or (type(v) is int and -gui_settings.MAX_SIDE <= v <= gui_settings.MAX_SIDE)
    assert type(s.scaling) is float and s.scaling in gui_settings.SCALINGS
    assert s.appearance in gui_settings.APPEARANCES


@fuzz_settings(150)
@given(content=st.one_of(settings_maps.map(json.dumps), json_values.map(json.dumps), st.binary(max_size=300)))
def test_any_settings_file_loads_as_valid_settings_or_the_defaults(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("gui")
    path = folder / gui_settings.FILE_NAME
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    loaded = gui_settings.load(folder)
    check_settings(loaded)
    gui_settings.save(folder, loaded)
    assert gui_settings.load(folder) == loaded


def test_a_settings_file_with_true_as_scaling_falls_back_to_the_default_scaling(tmp_path):
    # Found by this fuzzing (gui/settings.py _from_json, since fixed): ``True in SCALINGS`` holds because
    # True == 1.0, so a hand-edited ``"scaling": true`` was kept as the bool True.
    (tmp_path / gui_settings.FILE_NAME).write_text('{"scaling": true}')
    loaded = gui_settings.load(tmp_path)
    assert type(loaded.scaling) is float and loaded.scaling == 1.0


def test_a_deeply_nested_settings_file_falls_back_to_the_defaults(tmp_path):
    # Found by this fuzzing (gui/settings.py load, since fixed): json.loads raises RecursionError on deep nesting,
    # which stopped the GUI at start-up instead of falling back to the defaults.
    (tmp_path / gui_settings.FILE_NAME).write_text("[" * 100_000)
    assert gui_settings.load(tmp_path) == gui_settings.Settings()


@fuzz_settings(100)
@given(geometry=st.one_of(st.text(max_size=30), st.from_regex(r"\d{1,6}x\d{1,6}(\+-?\d{1,6}\+-?\d{1,6})?",
                                                              fullmatch=True)))
def test_any_geometry_answer_gives_valid_settings(geometry):
    check_settings(gui_settings.Settings().with_geometry(geometry))
