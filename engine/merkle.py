"""BLAKE2b Merkle trees over a file's blocks, and inclusion proofs.

Leaves and inner nodes are domain-separated (RFC 6962 style):
    leaf  = BLAKE2b-256(0x00 || block)
    node  = BLAKE2b-256(0x01 || left || right)
    empty = BLAKE2b-256(0x02)           (root of a file with no blocks)
A level with an odd count carries its last node up unchanged. A proof for leaf
i is the list of sibling hashes from the leaf level up (carried-up levels add
no hash); `verify_proof` folds it back to the root.
"""

from __future__ import annotations

import hashlib

HASH_SIZE = 32
EMPTY_ROOT = hashlib.blake2b(b"\x02", digest_size=HASH_SIZE).digest()


def leaf_hash(block: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(b"\x00", digest_size=HASH_SIZE)
    h.update(block)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.blake2b(b"\x01" + left + right, digest_size=HASH_SIZE).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    up = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        up.append(level[-1])
    return up


def tree_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """All levels, leaves first, root last."""
    if not leaves:
        return [[EMPTY_ROOT]]
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        levels.append(_next_level(levels[-1]))
    return levels


def root(leaves: list[bytes]) -> bytes:
    return tree_levels(leaves)[-1][0]


def split_leaves(blob: bytes) -> list[bytes]:
    return [blob[i:i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def proof_from_levels(levels: list[list[bytes]], index: int) -> list[bytes]:
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def proof_length(count: int, index: int) -> int:
    """How many hashes the proof of leaf `index` in a tree of `count` leaves has."""
    n = 0
    while count > 1:
        if (index ^ 1) < count:
            n += 1
        index //= 2
        count = (count + 1) // 2
    return n


def verify_proof(leaf: bytes, index: int, count: int, proof: list[bytes], expected_root: bytes) -> bool:
    """True when `leaf` at `index` of a `count`-leaf tree folds to `expected_root`."""
    if not 0 <= index < count or len(proof) != proof_length(count, index):
        return False
    h = leaf
    it = iter(proof)
    while count > 1:
        sibling = index ^ 1
        if sibling < count:
            s = next(it)
            h = node_hash(h, s) if index % 2 == 0 else node_hash(s, h)
        index //= 2
        count = (count + 1) // 2
    return h == expected_root
