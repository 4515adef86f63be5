"""Signed checkpoints of the audit log, and the proofs checked against them.

A checkpoint is the RFC 6962 tree head (:mod:`sandbox.audit.merkle`) over the first ``tree_size``
entries — leaf ``i`` is ``SHA-256(0x00 || hash of entry i+1)`` — signed with the audit Ed25519
key. The server writes one every ``VEIL_AUDIT_CHECKPOINT_S`` seconds, also when nothing
happened (a head that did not move is evidence too), and the database decides which server
process writes it: the writer holds the chain's lock and skips if a fresh one exists.

The signed document (canonical JSON without ``signature``; ``docs/audit.md``)::

    {"type": "veil.audit.checkpoint.v1", "tree_size": 42, "root": "<64 hex>",
     "at": "2026-03-01T08:30:00.000000Z", "key_id": "<16 hex>", "signature": "<base64url>"}

An auditor who keeps checkpoints can later ask for an *inclusion proof* (this entry is leaf
``seq − 1`` of that checkpoint's tree) or a *consistency proof* (the later checkpoint's tree
extends the earlier one) and check either with the published audit keys alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, select

from sandbox.audit import merkle
from sandbox.audit.entry import format_at
from sandbox.canonical import b64url_decode, b64url_encode, canonical_json
from sandbox.clock import now, utc
from sandbox.errors import AuditNotCheckpointed, NotFound
from sandbox.keys.signing import KeyRing, SigningKeys, key_id
from sandbox.store.schema import audit_checkpoints, audit_entries, audit_head

__all__ = [
    "CHECKPOINT_TYPE",
    "Checkpoint",
    "Checkpointer",
    "ConsistencyProof",
    "InclusionProof",
    "checkpoint_problem",
    "consistency",
    "inclusion",
    "list_checkpoints",
    "run_checkpoints",
    "verify_inclusion_proof",
]

log = logging.getLogger("veil.audit")

CHECKPOINT_TYPE: Final = "veil.audit.checkpoint.v1"
CHECKPOINT_FIELDS: Final = frozenset({"type", "tree_size", "root", "at", "key_id", "signature"})


def sign_checkpoint(ring: KeyRing, tree_size: int, root: bytes, at: datetime) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": CHECKPOINT_TYPE,
        "tree_size": tree_size,
        "root": root.hex(),
        "at": format_at(at),
        "key_id": ring.current_id,
    }
    document["signature"] = b64url_encode(ring.current.sign(canonical_json(document)))
    return document


def checkpoint_problem(
    document: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Why a checkpoint document does not verify (a problem code), or ``None`` if it does."""
    if not isinstance(document, Mapping) or set(document) != CHECKPOINT_FIELDS:
        return "checkpoint_malformed"
    size, root, signature = document["tree_size"], document["root"], document["signature"]
    if (
        document["type"] != CHECKPOINT_TYPE
        or not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or not isinstance(root, str)
        or len(root) != 64
        or not isinstance(signature, str)
    ):
        return "checkpoint_malformed"
    public = public_keys.get(str(document["key_id"]))
    if public is None or key_id(public) != document["key_id"]:
        return "checkpoint_unknown_key"
    try:
        raw = b64url_decode(signature)
        message = canonical_json({k: v for k, v in document.items() if k != "signature"})
        public.verify(raw, message)
    except (ValueError, InvalidSignature):
        return "checkpoint_bad_signature"
    return None


def _leaves(con: Connection, size: int) -> list[bytes]:
    rows = con.execute(
        select(audit_entries.c.hash)
        .where(audit_entries.c.seq <= size)
        .order_by(audit_entries.c.seq)
    )
    return [merkle.leaf_hash(bytes.fromhex(r.hash)) for r in rows]


@dataclass(frozen=True)
class Checkpoint:
    """A stored checkpoint: its id and the signed document."""

    id: int
    document: dict[str, Any]


@dataclass(frozen=True)
class InclusionProof:
    """Entry ``seq`` (its canonical body and hash) is leaf ``leaf_index`` of the tree of
    ``tree_size`` entries that ``checkpoint`` signs: ``path`` is its audit path."""

    seq: int
    leaf_index: int
    tree_size: int
    entry: dict[str, Any]
    entry_hash: str
    path: tuple[str, ...]
    checkpoint: dict[str, Any]


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``second`` entries extends the tree of ``first`` entries."""

    first: int
    second: int
    first_root: str
    second_root: str
    path: tuple[str, ...]


class Checkpointer:
    """Writes the checkpoints of one engine. Keeps the Merkle frontier of the entries it has
    seen (entries never change once written), so each checkpoint reads only the new ones."""

    def __init__(self, engine: Engine, signing: SigningKeys, interval_s: float) -> None:
        self.engine = engine
        self.signing = signing
        self.interval = timedelta(seconds=interval_s)
        self._frontier = merkle.Frontier()
        self._lock = threading.Lock()

    def _extend(self, con: Connection, upto: int) -> bool:
        """Add the entries after the frontier up to ``upto``; ``False`` on a gap in ``seq``."""
        rows = con.execute(
            select(audit_entries.c.seq, audit_entries.c.hash)
            .where(audit_entries.c.seq > self._frontier.size, audit_entries.c.seq <= upto)
            .order_by(audit_entries.c.seq)
        )
        for row in rows:
            if int(row.seq) != self._frontier.size + 1:
                log.error("audit chain has a gap before seq=%d: no checkpoint", int(row.seq))
                return False
            self._frontier.append(merkle.leaf_hash(bytes.fromhex(row.hash)))
        return self._frontier.size == upto

    def write(self, *, force: bool = False) -> dict[str, Any] | None:
        """Write a checkpoint over every committed entry, unless another process wrote one
        within the interval (``force``: write regardless). Returns the document written."""
        with self._lock:
            with self.engine.connect() as con:  # catch up outside the chain's lock
                head = con.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).first()
                if head is not None:
                    self._extend(con, int(head.seq))
            with self.engine.begin() as con:
                head = con.execute(
                    select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()
                ).first()
                size = 0 if head is None else int(head.seq)
                at = now()
                if not force:
                    latest = con.execute(
                        select(audit_checkpoints.c.at)
                        .order_by(audit_checkpoints.c.id.desc())
                        .limit(1)
                    ).first()
                    if latest is not None and at - utc(latest.at) < self.interval * 0.9:
                        return None
                if size < self._frontier.size or not self._extend(con, size):
                    return None
                document = sign_checkpoint(self.signing.ring(), size, self._frontier.root(), at)
                con.execute(
                    audit_checkpoints.insert().values(
                        tree_size=size,
                        root=document["root"],
                        at=at,
                        key_id=document["key_id"],
                        document=json.dumps(document, sort_keys=True),
                    )
                )
        log.info("audit checkpoint tree_size=%d key=%s", size, document["key_id"])
        return document


async def run_checkpoints(checkpointer: Checkpointer) -> None:
    """The server's checkpoint loop (cancelled at shutdown): one attempt per interval."""
    seconds = checkpointer.interval.total_seconds()
    while True:
        try:
            await asyncio.to_thread(checkpointer.write)
        except Exception as exc:  # keep the loop alive; the next interval retries
            log.error("audit checkpoint failed: %s", type(exc).__name__)
        await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------------------------
# Proofs
# ---------------------------------------------------------------------------------------------


def _checkpoint(con: Connection, tree_size: int | None) -> tuple[int, dict[str, Any]]:
    query = select(audit_checkpoints).order_by(audit_checkpoints.c.id.desc()).limit(1)
    if tree_size is not None:
        query = query.where(audit_checkpoints.c.tree_size == tree_size)
    row = con.execute(query).first()
    if row is None:
        if tree_size is None:
            raise AuditNotCheckpointed("no checkpoint has been written yet")
        raise NotFound(f"no checkpoint of tree size {tree_size}")
    return int(row.tree_size), json.loads(row.document)


def list_checkpoints(engine: Engine, after: int = 0, limit: int = 100) -> list[Checkpoint]:
    """Checkpoints with an id above ``after``, oldest first."""
    with engine.connect() as con:
        rows = con.execute(
            select(audit_checkpoints.c.id, audit_checkpoints.c.document)
            .where(audit_checkpoints.c.id > after)
            .order_by(audit_checkpoints.c.id)
            .limit(limit)
        )
        return [Checkpoint(int(r.id), json.loads(r.document)) for r in rows]


def inclusion(engine: Engine, seq: int, tree_size: int | None = None) -> InclusionProof:
    """The proof that entry ``seq`` is in a checkpoint's tree: the latest checkpoint, or the
    one of ``tree_size``. Reads every entry hash up to the tree size (O(n))."""
    with engine.connect() as con:
        entry = con.execute(
            select(audit_entries.c.body, audit_entries.c.hash).where(audit_entries.c.seq == seq)
        ).first()
        if entry is None:
            raise NotFound(f"no audit entry {seq}")
        size, document = _checkpoint(con, tree_size)
        if size < seq:
            raise AuditNotCheckpointed(
                f"entry {seq} is after the checkpoint (tree size {size}); "
                "ask again after the next one"
            )
        leaves = _leaves(con, size)
    path = merkle.inclusion_proof(seq - 1, leaves)
    return InclusionProof(
        seq=seq,
        leaf_index=seq - 1,
        tree_size=size,
        entry=json.loads(entry.body),
        entry_hash=entry.hash,
        path=tuple(p.hex() for p in path),
        checkpoint=document,
    )


def consistency(engine: Engine, first: int, second: int | None = None) -> ConsistencyProof:
    """The proof that the tree of ``second`` entries (default: all) extends the tree of
    ``first`` entries (each usually a checkpoint's tree size), with both tree heads."""
    with engine.connect() as con:
        head = con.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar_one()
        second = int(head) if second is None else second
        if not 0 <= first <= second <= int(head):
            raise NotFound(f"tree sizes must satisfy 0 <= first <= second <= {int(head)}")
        leaves = _leaves(con, second)
    return ConsistencyProof(
        first=first,
        second=second,
        first_root=merkle.root(leaves[:first]).hex(),
        second_root=merkle.root(leaves).hex(),
        path=tuple(p.hex() for p in merkle.consistency_proof(first, leaves)),
    )


def verify_inclusion_proof(
    proof: InclusionProof | Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Check an inclusion proof offline (as a server hands it out, or as :func:`inclusion`
    made it): the checkpoint's signature, the entry's hash (from its canonical JSON) and the
    audit path. A problem code, or ``None`` if it holds."""
    if isinstance(proof, InclusionProof):
        proof = dataclasses.asdict(proof)
    checkpoint = proof.get("checkpoint")
    if not isinstance(checkpoint, Mapping):
        return "checkpoint_malformed"
    problem = checkpoint_problem(checkpoint, public_keys)
    if problem is not None:
        return problem
    try:
        entry_bytes = canonical_json(proof["entry"])
        digest = merkle.leaf_hash(bytes.fromhex(_sha256_hex(entry_bytes)))
        path: Sequence[bytes] = [bytes.fromhex(p) for p in proof["path"]]
        index, size = int(proof["leaf_index"]), int(checkpoint["tree_size"])
        root = bytes.fromhex(checkpoint["root"])
    except (KeyError, TypeError, ValueError):
        return "proof_malformed"
    if proof["entry"].get("seq") != index + 1:
        return "proof_wrong_entry"
    if not merkle.verify_inclusion(index, size, digest, path, root):
        return "proof_does_not_verify"
    return None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
