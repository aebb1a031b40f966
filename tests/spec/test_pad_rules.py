"""pad.json as protocol.md §5.9 states it, exactly: a description the doc allows is taken, one it does not is
refused by the project's loader with the fault named (the loader was laxer: 1024.9 read as 1024, a string taken)."""

from __future__ import annotations

import json

import pytest

from p2pchat.pad import PadError, PadMeta
from tests.spec.impl.pad import write_pad


@pytest.fixture
def pad_dir(tmp_path):
    write_pad(tmp_path / "pad", b"\x01" * 32, b"\x02" * 32, 1024)
    return tmp_path / "pad"


def rewrite(directory, **changes):
    meta = json.loads((directory / "pad.json").read_text())
    meta.update(changes)
    (directory / "pad.json").write_text(json.dumps(meta))


def test_a_description_written_as_the_doc_says_is_taken(pad_dir):
    meta = PadMeta.load(pad_dir)
    assert (meta.half_size, meta.low, meta.high) == (1024, b"\x01" * 32, b"\x02" * 32)


@pytest.mark.parametrize(("changes", "named"), [
    ({"half_size": 200}, "half_size"),
    ({"half_size": 1024.9}, "half_size"),
    ({"half_size": "1024"}, "half_size"),
    ({"half_size": True}, "half_size"),
    ({"format": 2}, "format"),
    ({"format": 1.0}, "format"),
    ({"pad_id": "AB" * 16}, "pad_id"),
    ({"pad_id": "ab " * 15 + "ab"}, "pad_id"),
    ({"fingerprints": ["02" * 32, "01" * 32]}, "lower first"),
    ({"fingerprints": ["01" * 32, "02" * 32, "03" * 32]}, "fingerprints"),
    ({"sha256": {"a": "00" * 32}}, "sha256"),
])
def test_what_the_doc_does_not_allow_is_refused_naming_the_fault(pad_dir, changes, named):
    rewrite(pad_dir, **changes)
    with pytest.raises(PadError, match=named):
        PadMeta.load(pad_dir)
