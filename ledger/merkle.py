"""Merkle tree over record ids, with inclusion proofs.

Leaves and inner nodes are hashed with different prefixes (``0x00`` / ``0x01``), so a leaf can never pass
for an inner node (second-preimage across levels). A level with an odd number of nodes is padded with the
constant :data:`EMPTY` (``SHA-256(0x02)``), never by duplicating its last node: Bitcoin's duplication is what
made two different record lists share a root (CVE-2012-2459). No leaf or inner hash can equal ``EMPTY``
because their preimages start with a different byte, so the padding is unambiguous.

A path lists one sibling hash per level, bottom-up; the leaf's index says on which side each sibling sits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_LEN = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY = hashlib.sha256(b"\x02").digest()
EMPTY_ROOT = EMPTY
MAX_DEPTH = 32


def leaf_hash(item: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + item).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    if len(level) % 2:
        level = [*level, EMPTY]
    return [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]


def merkle_root(ids: Sequence[bytes]) -> bytes:
    """Root over ``ids`` (record ids, in block order); :data:`EMPTY_ROOT` for no records."""
    if not ids:
        return EMPTY_ROOT
    level = [leaf_hash(i) for i in ids]
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_path(ids: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from the leaf at ``index`` up to the root."""
    if not 0 <= index < len(ids):
        raise IndexError(f"leaf {index} is outside a tree of {len(ids)} leaves")
    level = [leaf_hash(i) for i in ids]
    path: list[bytes] = []
    while len(level) > 1:
        if len(level) % 2:
            level.append(EMPTY)
        path.append(level[index ^ 1])
        level = _next_level(level)
        index //= 2
    return path


def verify_merkle_path(leaf: bytes, index: int, path: Sequence[bytes], root: bytes) -> bool:
    """True if ``leaf`` (a record id) sits at ``index`` of the tree whose root is ``root``."""
    if not isinstance(index, int) or index < 0 or len(path) > MAX_DEPTH or index >= 1 << len(path):
        return False
    if any(not isinstance(p, bytes) or len(p) != HASH_LEN for p in path):
        return False
    h = leaf_hash(leaf)
    for sibling in path:
        h = node_hash(sibling, h) if index & 1 else node_hash(h, sibling)
        index >>= 1
    return h == root
