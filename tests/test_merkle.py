import hashlib
import os

import pytest

from dattui.engine import merkle


def test_golden_roots():
    assert merkle.EMPTY_ROOT == hashlib.blake2b(b"\x02", digest_size=32).digest()
    a, b, c = (merkle.leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert a == hashlib.blake2b(b"\x00a", digest_size=32).digest()
    ab = hashlib.blake2b(b"\x01" + a + b, digest_size=32).digest()
    assert merkle.root([a]) == a
    assert merkle.root([a, b]) == ab
    # odd level: c is carried up unchanged
    assert merkle.root([a, b, c]) == hashlib.blake2b(b"\x01" + ab + c, digest_size=32).digest()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 100])
def test_every_proof_verifies_and_tampering_fails(n):
    leaves = [merkle.leaf_hash(os.urandom(8)) for _ in range(n)]
    levels = merkle.tree_levels(leaves)
    root = levels[-1][0]
    for i in range(n):
        proof = merkle.proof_from_levels(levels, i)
        assert len(proof) == merkle.proof_length(n, i)
        assert merkle.verify_proof(leaves[i], i, n, proof, root)
        assert not merkle.verify_proof(merkle.leaf_hash(b"evil"), i, n, proof, root)
        if proof:
            bad = list(proof)
            bad[0] = bytes(32)
            assert not merkle.verify_proof(leaves[i], i, n, bad, root)
            assert not merkle.verify_proof(leaves[i], i, n, proof[:-1], root)
        assert not merkle.verify_proof(leaves[i], i, n, proof + [bytes(32)], root)
    assert not merkle.verify_proof(leaves[0], n, n, [], root)
    assert not merkle.verify_proof(leaves[0], -1, n, [], root)


def test_leaf_is_not_an_inner_node():
    """A block that looks like two hashes concatenated never hashes like a node."""
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)
