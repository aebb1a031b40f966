"""Shared pieces of the fuzz tests: hypothesis settings sized for CI, strategies for msgpack values, schema-shaped
frame bodies and byte mutations, and sample valid frames of every protocol to mutate from.

The same strategies feed the atheris harness (tests/fuzz/atheris_targets.py) through plain functions, so a longer
run explores exactly the decoders the CI examples do.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from p2pchat.foundation.codec import Field, Protocol

# CI budget: every fuzz test is bounded by examples, never by wall-clock; FUZZ_SCALE=10 multiplies them for a
# longer local run (``FUZZ_SCALE=10 python3 -m pytest tests/fuzz``).
SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
# Reproducible examples by default (see tests/conftest.py); FUZZ_SCALE > 1 or HYPOTHESIS_EXPLORE=1 explores.
EXPLORE = SCALE > 1 or os.environ.get("HYPOTHESIS_EXPLORE") == "1"


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# --- msgpack values ---------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.binary(max_size=64),
)
msgpack_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.text(max_size=12), children, max_size=6)),
    max_leaves=25,
)


def value_for(spec: Field) -> st.SearchStrategy[Any]:
    """Values that are mostly of the field's kind and near its bounds, sometimes of another kind or missing."""
    kind = spec.kind
    if kind is int:
        lo = spec.lo if spec.lo is not None else -(2**63)
        hi = spec.hi if spec.hi is not None else 2**64 - 1
        edges = [v for v in (lo, hi, lo - 1, hi + 1, 0, -1) if -(2**63) <= v <= 2**64 - 1]
        good: st.SearchStrategy[Any] = st.one_of(st.integers(min_value=lo, max_value=hi), st.sampled_from(edges))
    elif kind is float:
        good = st.floats(allow_nan=True, allow_infinity=True)
    elif kind is bool:
        good = st.booleans()
    elif kind is str:
        n = spec.max_len if spec.max_len is not None else 64
        good = st.one_of(st.text(max_size=min(n + 2, 80)), st.sampled_from(["", "x" * (n + 1), "\u202e", "\x1b[2J"]))
    elif kind is bytes:
        n = spec.max_len if spec.max_len is not None else 64
        # a field of a fixed large size (e.g. a 384-byte group element) still gets values of its exact size
        good = st.one_of(st.binary(min_size=spec.min_len, max_size=max(spec.min_len, min(n, 80))),
                         st.binary(max_size=80), st.just(bytes(min(n + 1, 4096))))
    elif kind is list:
        item = value_for(spec.items) if spec.items is not None else msgpack_values
        good = st.lists(item, max_size=5)
    elif kind is dict:
        if spec.fields is not None:
            good = schema_maps(spec.fields)
        else:
            good = st.dictionaries(st.text(max_size=12), msgpack_values, max_size=6)
    else:  # pragma: no cover - every schema kind is listed above
        good = msgpack_values
    return st.one_of(good, good, good, msgpack_values)


def schema_maps(schema: dict[str, Field] | Any) -> st.SearchStrategy[dict[str, Any]]:
    """Maps shaped like ``schema``: each field present (from :func:`value_for`) or left out."""
    names = list(schema)
    if not names:
        return st.just({})
    return st.fixed_dictionaries({}, optional={name: value_for(schema[name]) for name in names})


def bodies_for(protocol: Protocol) -> st.SearchStrategy[bytes]:
    """msgpack bodies of every message type of ``protocol`` with fuzzed fields (and sometimes foreign types)."""
    def build(type_: str) -> st.SearchStrategy[bytes]:
        return schema_maps(protocol.messages[type_]).map(
            lambda fields: msgpack.packb({"t": type_, **fields}, use_bin_type=True))
    typed = st.sampled_from(sorted(protocol.messages)).flatmap(build)
    raw = msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True))
    return st.one_of(typed, typed, typed, raw)


# --- byte mutations ---------------------------------------------------------------------------------------------

@st.composite
def mutated(draw: st.DrawFn, base: bytes, max_edits: int = 4) -> bytes:
    """``base`` with a few random edits: bit flips, byte changes, cuts, insertions and duplicated slices."""
    data = bytearray(base)
    for _ in range(draw(st.integers(min_value=1, max_value=max_edits))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup", "truncate"]))
        pos = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif op == "cut" and data:
            end = pos + draw(st.integers(min_value=1, max_value=16))
            del data[pos:end]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dup" and data:
            end = pos + draw(st.integers(min_value=1, max_value=32))
            data[pos:pos] = data[pos:end]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def split_points(data: bytes) -> st.SearchStrategy[list[int]]:
    """Where to cut ``data`` into chunks (as a socket might deliver it)."""
    return st.lists(st.integers(min_value=0, max_value=len(data)), max_size=6).map(sorted)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]
