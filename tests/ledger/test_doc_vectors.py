"""The byte vectors docs/ledger.md gives for the Merkle tree (one leaf; the path-index bit order)."""

from ledger.merkle import EMPTY, leaf_hash, merkle_path, merkle_root, node_hash, verify_merkle_path


def test_a_single_record_tree_has_the_leaf_hash_as_root_and_an_empty_path():
    rid = bytes(range(32))
    assert merkle_root([rid]).hex() == "699cacdb4c39d8e0bb1223352765a7f7acdc51dec6694f7b54c3d0a47f0cc409"
    assert merkle_root([rid]) == leaf_hash(rid) and merkle_path([rid], 0) == []
    assert verify_merkle_path(rid, 0, [], leaf_hash(rid)) and not verify_merkle_path(rid, 1, [], leaf_hash(rid))


def test_the_path_index_bits_give_the_side_from_the_leaves_up():
    ids = [bytes([i]) * 32 for i in range(5)]
    root = merkle_root(ids)
    path = merkle_path(ids, 2)
    assert root.hex() == "eea6ccb3dee0cec8ae5e3da50f58b66c7940f358ed9dfec09d550d9955a82bc2"
    assert [p.hex() for p in path] == ["acaa04663a8547a2f70c60cc18f9378796b13c4f9a08f70d6adae662365b30c6",
                                       "28fb81e496897e0ce886f08602392e9239b65c659041e5202163e58ad898f444",
                                       "83587d2f1e9ca7389e4fb501bb534f88ab3a7cdc9ad39d8c76a62a58ee4670fc"]
    assert EMPTY.hex() == "dbc1b4c900ffe48d575b5da5c638040125f65db0fe3e24494b76ea986457d986"
    # index 2 = 0b010: left at level 0, right at level 1, left at level 2 — computed by hand from the doc's rule.
    h = node_hash(leaf_hash(ids[2]), path[0])
    h = node_hash(path[1], h)
    h = node_hash(h, path[2])
    assert h == root and path[0] == leaf_hash(ids[3])
    assert path[2] == node_hash(node_hash(leaf_hash(ids[4]), EMPTY), EMPTY)
    assert verify_merkle_path(ids[2], 2, path, root) and not verify_merkle_path(ids[2], 6, path, root)
