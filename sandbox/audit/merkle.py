"""RFC 6962 Merkle trees: tree heads, audit paths, consistency proofs and their verification.

Pure and small: bytes in, bytes out. The audit log commits to its entries with these trees
(``docs/audit.md``); an auditor holding a signed checkpoint checks that one entry is in it
(inclusion) or that a later checkpoint extends it (consistency) with a few hashes instead of the
whole log.

Hashes are SHA-256 with the RFC 6962 domain separation: a leaf is ``SHA-256(0x00 || data)``, an
interior node ``SHA-256(0x01 || left || right)``, and the empty tree's head is ``SHA-256("")``.
The tree over ``n`` leaves splits at ``k``, the largest power of two below ``n``. Proofs are
built as RFC 6962 §2.1.1 / §2.1.2 describe and verified with the algorithms of RFC 9162
§2.1.3.2 / §2.1.4.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "Frontier",
    "consistency_proof",
    "empty_root",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_BYTES = 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    return hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree head over ``leaves`` (leaf hashes, in order)."""
    if not leaves:
        return empty_root()
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


class Frontier:
    """A tree grown one leaf at a time, keeping only the roots of its perfect subtrees
    (at most log2(n) hashes): the head of the first ``n`` leaves in O(log n) per leaf."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (height, subtree root), left to right

    def append(self, leaf: bytes) -> None:
        self.size += 1
        height, node = 0, leaf
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            height, node = height + 1, node_hash(left, node)
        self._stack.append((height, node))

    def copy(self) -> Frontier:
        """An independent copy (a frontier to go back to)."""
        found = Frontier()
        found.size, found._stack = self.size, list(self._stack)
        return found

    def root(self) -> bytes:
        """The head of the tree so far: the subtree roots folded from the right."""
        if not self._stack:
            return empty_root()
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree over ``leaves`` (RFC 6962 §2.1.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    # Walk down from the root; each level contributes its sibling subtree's head. The path
    # lists siblings from the leaf upwards, so they are collected and reversed at the end.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], head: bytes
) -> bool:
    """Whether ``path`` proves ``leaf`` is leaf ``index`` of the tree of ``size`` with ``head``."""
    if not 0 <= index < size or any(len(p) != HASH_BYTES for p in path):
        return False
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == head


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree over ``leaves[:first]`` is a prefix of the tree over ``leaves``
    (RFC 6962 §2.1.2). Empty when ``first`` is 0 or the whole tree."""
    if not 0 <= first <= len(leaves):
        raise ValueError("the first tree must not be larger than the second")
    if first in (0, len(leaves)):
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, len(leaves), first, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaves[lo : lo + k]))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(root(leaves[lo:hi]))
    proof.reverse()
    return proof


def verify_consistency(
    first: int, second: int, first_head: bytes, second_head: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``first`` leaves with ``first_head`` is a prefix of
    the tree of ``second`` leaves with ``second_head``."""
    if not 0 <= first <= second or any(len(p) != HASH_BYTES for p in proof):
        return False
    if first == second:
        return not proof and first_head == second_head
    if first == 0:
        return not proof and first_head == empty_root()
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first tree is a subtree of the second
        path.insert(0, first_head)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_head and sr == second_head and sn == 0
