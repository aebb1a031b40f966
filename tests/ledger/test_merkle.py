"""Merkle roots and inclusion proofs, including the duplicated-leaf ambiguity of CVE-2012-2459."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import EMPTY_ROOT, leaf_hash, merkle_path, merkle_root, node_hash, verify_merkle_path

ids_strategy = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70, unique=True)


def _ids(n):
    return [hashlib.sha256(bytes([i])).digest() for i in range(n)]


def test_small_trees_have_the_documented_shape():
    a, b, c = _ids(3)
    assert merkle_root([]) == EMPTY_ROOT
    assert merkle_root([a]) == leaf_hash(a)
    assert merkle_root([a, b]) == node_hash(leaf_hash(a), leaf_hash(b))
    assert merkle_root([a, b, c]) == node_hash(node_hash(leaf_hash(a), leaf_hash(b)),
                                               node_hash(leaf_hash(c), EMPTY_ROOT))


def test_duplicating_the_last_leaf_changes_the_root():
    for n in range(1, 12):
        ids = _ids(n)
        assert merkle_root(ids) != merkle_root([*ids, ids[-1]])


@settings(max_examples=150, deadline=None)
@given(ids_strategy, st.data())
def test_every_leaf_has_a_path_that_verifies(ids, data):
    root = merkle_root(ids)
    index = data.draw(st.integers(0, len(ids) - 1))
    path = merkle_path(ids, index)
    assert verify_merkle_path(ids[index], index, path, root)
    assert len(path) == (len(ids) - 1).bit_length()


@settings(max_examples=150, deadline=None)
@given(ids_strategy, st.data())
def test_a_path_does_not_verify_for_another_leaf_index_or_root(ids, data):
    root = merkle_root(ids)
    index = data.draw(st.integers(0, len(ids) - 1))
    path = merkle_path(ids, index)
    other = data.draw(st.binary(min_size=32, max_size=32).filter(lambda x: x != ids[index]))
    assert not verify_merkle_path(other, index, path, root)
    wrong_index = data.draw(st.integers(0, 2 ** len(path) + 3).filter(lambda i: i != index))
    assert not verify_merkle_path(ids[index], wrong_index, path, root)
    assert not verify_merkle_path(ids[index], index, path, hashlib.sha256(root).digest())
    if path:
        tampered = list(path)
        tampered[0] = bytes(32)
        assert not verify_merkle_path(ids[index], index, tampered, root)


def test_malformed_paths_are_refused_without_errors():
    ids = _ids(4)
    root = merkle_root(ids)
    path = merkle_path(ids, 1)
    assert not verify_merkle_path(ids[1], -1, path, root)
    assert not verify_merkle_path(ids[1], 1, [*path[:-1], b"short"], root)
    assert not verify_merkle_path(ids[1], 1, [bytes(32)] * 40, root)
