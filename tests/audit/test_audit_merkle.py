"""RFC 6962 Merkle trees (sandbox/merkle.py): the published test vectors and property tests of
inclusion and consistency proofs — they verify for every size and index, and fail for any other
leaf, index, size, root or path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.audit import merkle

# The leaves and tree heads of the Certificate Transparency reference test vectors.
VECTOR_INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def leaves(n: int, salt: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


def test_tree_heads_match_the_reference_vectors() -> None:
    hashed = [merkle.leaf_hash(x) for x in VECTOR_INPUTS]
    assert merkle.root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for n, expected in enumerate(VECTOR_ROOTS, 1):
        assert merkle.root(hashed[:n]).hex() == expected


def test_reference_audit_path_of_leaf_0_in_8() -> None:
    """The reference vectors' path for leaf 0 of the 8-leaf tree."""
    hashed = [merkle.leaf_hash(x) for x in VECTOR_INPUTS]
    assert [p.hex() for p in merkle.inclusion_proof(0, hashed)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_proofs_verify_and_bind(case: tuple[int, int]) -> None:
    n, index = case
    tree = leaves(n)
    head = merkle.root(tree)
    path = merkle.inclusion_proof(index, tree)
    assert merkle.verify_inclusion(index, n, tree[index], path, head)
    assert not merkle.verify_inclusion(index, n, merkle.leaf_hash(b"forged"), path, head)
    assert not merkle.verify_inclusion(index, n, tree[index], path, merkle.leaf_hash(b"x"))
    # (the tree size itself is bound by the signed checkpoint, next to the root)
    grown = merkle.root([*tree, merkle.leaf_hash(b"appended")])
    assert not merkle.verify_inclusion(index, n + 1, tree[index], path, grown)
    if n > 1:
        other = (index + 1) % n
        assert not merkle.verify_inclusion(other, n, tree[index], path, head)
        tampered = [path[0][:-1] + bytes([path[0][-1] ^ 1]), *path[1:]]
        assert not merkle.verify_inclusion(index, n, tree[index], tampered, head)
        assert not merkle.verify_inclusion(index, n, tree[index], path[:-1], head)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_proofs_verify_and_bind(case: tuple[int, int]) -> None:
    first, second = case
    tree = leaves(second)
    old, new = merkle.root(tree[:first]), merkle.root(tree)
    proof = merkle.consistency_proof(first, tree)
    assert merkle.verify_consistency(first, second, old, new, proof)
    if 0 < first < second:
        forged = merkle.root(leaves(first, salt=1))  # another history of the same size
        assert not merkle.verify_consistency(first, second, forged, new, proof)
        assert not merkle.verify_consistency(first, second, old, merkle.leaf_hash(b"x"), proof)
        grown = merkle.root([*tree, merkle.leaf_hash(b"appended")])
        assert not merkle.verify_consistency(first, second + 1, old, grown, proof)
        assert not merkle.verify_consistency(first, second, old, new, proof[:-1])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 500))
def test_frontier_equals_the_recursive_definition(n: int) -> None:
    tree = leaves(n)

    def mth(items: list[bytes]) -> bytes:
        if not items:
            return merkle.empty_root()
        if len(items) == 1:
            return items[0]
        k = 1 << ((len(items) - 1).bit_length() - 1)
        return merkle.node_hash(mth(items[:k]), mth(items[k:]))

    frontier = merkle.Frontier()
    for leaf in tree:
        frontier.append(leaf)
    assert frontier.size == n
    assert frontier.root() == merkle.root(tree) == mth(tree)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(3, leaves(3))
    with pytest.raises(ValueError):
        merkle.consistency_proof(4, leaves(3))
    assert not merkle.verify_inclusion(0, 0, merkle.leaf_hash(b""), [], merkle.empty_root())
    assert merkle.verify_consistency(0, 5, merkle.empty_root(), merkle.root(leaves(5)), [])
