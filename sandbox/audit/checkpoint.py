"""Signed checkpoints of the audit log, chained, and the proofs checked against them.

A checkpoint is the RFC 6962 tree head (:mod:`sandbox.audit.merkle`) over the first ``tree_size``
entries — leaf ``i`` is ``SHA-256(0x00 || hash of entry i+1)`` — signed with the audit Ed25519
key. Checkpoints form a chain: ``number`` runs 1, 2, 3, … without a gap and each signs ``prev``,
the hash of the checkpoint before it (64 zeros for number 1), so a checkpoint deleted from the
middle, or one signed beside the chain, shows. The server writes one at startup, every
``VEIL_AUDIT_CHECKPOINT_S`` seconds (also when nothing happened: a head that did not move is
evidence too) and at a clean shutdown; the database decides which server process writes it:
the writer holds the chain's lock and skips if a fresh one exists.

Before it signs, the writer checks what it is about to sign (:meth:`Checkpointer.write`): every
entry since the last checkpoint (hash, form, link, MAC, columns), that the entries up to the last
checkpoint still hash to its signed root, that the last checkpoint is intact and no checkpoint it
has seen (or the witness holds) is gone. If anything fails it signs nothing and raises
:class:`~sandbox.errors.AuditChainBroken`, logged at error level.

The signed document (canonical JSON without ``signature``; ``docs/audit.md``)::

    {"type": "veil.audit.checkpoint.v2", "number": 7, "prev": "<64 hex>", "tree_size": 42,
     "root": "<64 hex>", "at": "2026-03-01T08:30:00.000000Z", "key_id": "<16 hex>",
     "signature": "<base64url>"}

A checkpoint's hash is SHA-256 of the canonical JSON of the whole document, signature included.
Checkpoints written before the chain (``veil.audit.checkpoint.v1``: no ``number``, no ``prev``)
still verify one by one.

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
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Row, select

from sandbox.audit import merkle, witness
from sandbox.audit.checks import COLUMNS, EntryRow, check_entry
from sandbox.audit.entry import GENESIS, format_at
from sandbox.canonical import b64url_decode, b64url_encode, canonical_json
from sandbox.clock import now, utc
from sandbox.errors import AuditChainBroken, AuditNotCheckpointed, NotFound
from sandbox.keys.audit import HmacRing
from sandbox.keys.signing import KeyRing, SigningKeys, key_id
from sandbox.store.schema import audit_checkpoints, audit_entries, audit_head

__all__ = [
    "CHECKPOINT_TYPE",
    "LEGACY_TYPE",
    "Checkpoint",
    "Checkpointer",
    "ConsistencyProof",
    "InclusionProof",
    "checkpoint_hash",
    "checkpoint_problem",
    "consistency",
    "inclusion",
    "list_checkpoints",
    "run_checkpoints",
    "sign_checkpoint",
    "verify_inclusion_proof",
]

log = logging.getLogger("veil.audit")

CHECKPOINT_TYPE: Final = "veil.audit.checkpoint.v2"
LEGACY_TYPE: Final = "veil.audit.checkpoint.v1"  # before the chain: no number, no prev
LEGACY_FIELDS: Final = frozenset({"type", "tree_size", "root", "at", "key_id", "signature"})
CHECKPOINT_FIELDS: Final = LEGACY_FIELDS | {"number", "prev"}


def sign_checkpoint(
    ring: KeyRing,
    tree_size: int,
    root: bytes,
    at: datetime,
    *,
    number: int | None = None,
    prev: str = GENESIS,
) -> dict[str, Any]:
    """The signed document: checkpoint ``number`` of the chain, after the one of hash ``prev``
    (without ``number``: a document of the format before the chain)."""
    document: dict[str, Any] = {"type": LEGACY_TYPE if number is None else CHECKPOINT_TYPE}
    if number is not None:
        document |= {"number": number, "prev": prev}
    document |= {
        "tree_size": tree_size,
        "root": root.hex(),
        "at": format_at(at),
        "key_id": ring.current_id,
    }
    document["signature"] = b64url_encode(ring.current.sign(canonical_json(document)))
    return document


def checkpoint_hash(document: Mapping[str, Any]) -> str:
    """What the next checkpoint's ``prev`` names: SHA-256 of the whole signed document."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def chained(document: Mapping[str, Any]) -> bool:
    """Whether ``document`` is a checkpoint of the chain (not one from before it)."""
    return document.get("type") == CHECKPOINT_TYPE


def _hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def checkpoint_problem(
    document: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Why a checkpoint document does not verify (a problem code), or ``None`` if it does."""
    if not isinstance(document, Mapping):
        return "checkpoint_malformed"
    kind = document.get("type")
    fields = CHECKPOINT_FIELDS if kind == CHECKPOINT_TYPE else LEGACY_FIELDS
    if kind not in (CHECKPOINT_TYPE, LEGACY_TYPE) or set(document) != fields:
        return "checkpoint_malformed"
    if kind == CHECKPOINT_TYPE and not (_count(document["number"], 1) and _hex64(document["prev"])):
        return "checkpoint_malformed"
    signature = document["signature"]
    if (
        not _count(document["tree_size"], 0)
        or not _hex64(document["root"])
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


_ENTRY_COLUMNS = ("seq", *COLUMNS)


def _last_checkpoint(con: Connection) -> Row[Any] | None:
    """The last checkpoint of the chain, else the last one from before it, else ``None``."""
    chain = con.execute(
        select(audit_checkpoints)
        .where(audit_checkpoints.c.number.is_not(None))
        .order_by(audit_checkpoints.c.number.desc())
        .limit(1)
    ).first()
    if chain is not None:
        return chain
    return con.execute(
        select(audit_checkpoints).order_by(audit_checkpoints.c.id.desc()).limit(1)
    ).first()


class Checkpointer:
    """Writes the checkpoints of one engine, after checking what it signs. Keeps the Merkle
    frontier of the entries it has checked (at most log2(n) hashes) and the hash of the last,
    so each checkpoint reads only the new entries.

    ``hmac``: the HMAC ring the entries' MACs are checked with before signing (``None``:
    hashes and links only). ``witness``: where each signed checkpoint is also written
    (:mod:`sandbox.audit.witness`). ``broken``: why the last attempt refused to sign."""

    def __init__(
        self,
        engine: Engine,
        signing: SigningKeys,
        interval_s: float,
        *,
        hmac: HmacRing | None = None,
        witness: Path | None = None,
    ) -> None:
        self.engine = engine
        self.signing = signing
        self.hmac = hmac
        self.witness = witness
        self.interval = timedelta(seconds=interval_s)
        self.broken: str | None = None
        self._frontier = merkle.Frontier()
        self._last_hash = GENESIS  # the hash of the frontier's last entry
        self._anchors: dict[int, str] = {}  # tree size -> root the entries must hash to
        self._number = 0  # the highest checkpoint number seen or signed by this writer
        self._witnessed: dict[str, Any] | None = None
        self._seen = "seen by this process"  # where ``_number`` comes from
        self._started = False
        self._mark: tuple[merkle.Frontier, str] | None = None  # the frontier at the last checkpoint
        self._lock = threading.Lock()

    def write(self, *, force: bool = False) -> dict[str, Any] | None:
        """Check the log, then write a checkpoint over every committed entry, unless another
        process wrote one within the interval (``force``: write regardless). Returns the
        document written; raises :class:`AuditChainBroken` (and signs nothing) if the check
        fails."""
        with self._lock:
            try:
                if self.broken is not None:  # until restarted: never sign after a failure
                    raise AuditChainBroken(self.broken)
                document = self._write(force)
            except AuditChainBroken as exc:
                self.broken = exc.detail
                log.error("audit_chain_broken: %s; no checkpoint signed", exc.detail)
                raise
            if document is not None:
                log.info(
                    "audit checkpoint number=%d tree_size=%d key=%s",
                    document["number"], document["tree_size"], document["key_id"],
                )  # fmt: skip
                if self.witness is not None:  # in number order, after the commit
                    witness.append(self.witness, document)
        return document

    def _start(self) -> None:
        """Once per writer: the last head the witness holds must be in the state store."""
        self._started = True
        if self.witness is None:
            return
        head = witness.latest(self.witness)
        if head is None:
            return
        if (
            not chained(head)
            or checkpoint_problem(head, self.signing.ring().public_keys()) is not None
        ):
            raise AuditChainBroken(f"the witness's last head ({self.witness}) does not verify")
        self._witnessed = head
        self._number = int(head["number"])
        self._seen = "held by the witness"
        self._anchors[int(head["tree_size"])] = str(head["root"])

    def _write(self, force: bool) -> dict[str, Any] | None:
        if not self._started:
            self._start()
        with self.engine.connect() as con:  # catch up outside the chain's lock
            head = con.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).first()
            last = _last_checkpoint(con)
            if head is not None:
                self._check_last(con, last)
                self._advance(con, int(head.seq), last)
        with self.engine.begin() as con:
            head = con.execute(
                select(audit_head.c.seq, audit_head.c.hash)
                .where(audit_head.c.id == 1)
                .with_for_update()
            ).first()
            size = 0 if head is None else int(head.seq)
            last = _last_checkpoint(con)
            self._check_last(con, last)
            self._advance(con, size, last)
            if head is not None and str(head.hash) != self._last_hash:
                raise AuditChainBroken(f"the head row does not name entry {size}'s hash")
            at = now()
            if not force:
                latest = con.execute(
                    select(audit_checkpoints.c.at).order_by(audit_checkpoints.c.id.desc()).limit(1)
                ).first()
                if latest is not None and at - utc(latest.at) < self.interval * 0.9:
                    if self._mark is not None:  # check the uncovered entries again next time
                        self._frontier, self._last_hash = self._mark
                    return None
            number, prev = 1, GENESIS
            if last is not None and last.number is not None:
                number, prev = int(last.number) + 1, str(last.hash)
            document = sign_checkpoint(
                self.signing.ring(), size, self._frontier.root(), at, number=number, prev=prev
            )
            con.execute(
                audit_checkpoints.insert().values(
                    tree_size=size,
                    root=document["root"],
                    at=at,
                    key_id=document["key_id"],
                    document=json.dumps(document, sort_keys=True),
                    number=number,
                    hash=checkpoint_hash(document),
                )
            )
        self._number = number
        return document

    def _check_last(self, con: Connection, last: Row[Any] | None) -> None:
        """The last stored checkpoint is intact, and none this writer saw (or the witness
        holds) is gone. Its tree head becomes an anchor the entries must reach."""
        number = 0 if last is None or last.number is None else int(last.number)
        if number < self._number:
            raise AuditChainBroken(
                f"checkpoint {self._number} ({self._seen}) is gone: the state store's "
                f"checkpoints end at "
                f"{number} (deleted; the log may be truncated)"
            )
        if last is None:
            return
        try:
            document = json.loads(last.document)
        except ValueError:
            document = None
        intact = (
            isinstance(document, dict)
            and checkpoint_problem(document, self.signing.ring().public_keys()) is None
            and document["tree_size"] == int(last.tree_size)
            and document["root"] == last.root
        )
        if intact and last.number is not None:
            intact = document.get("number") == number and checkpoint_hash(document) == last.hash
        if not intact:
            raise AuditChainBroken(f"the last checkpoint (id {int(last.id)}) does not verify")
        if self._witnessed is not None:
            held = con.execute(
                select(audit_checkpoints.c.hash).where(
                    audit_checkpoints.c.number == int(self._witnessed["number"])
                )
            ).scalar()
            if held != checkpoint_hash(self._witnessed):
                raise AuditChainBroken(
                    f"the witness's checkpoint {self._witnessed['number']} is not the state store's"
                )
            self._witnessed = None  # checked once, at the start
        self._number, self._seen = number, "seen by this process"
        size = int(last.tree_size)
        if size > self._frontier.size:
            self._anchors[size] = str(last.root)
        elif size == self._frontier.size and self._frontier.root().hex() != last.root:
            raise AuditChainBroken(f"the last checkpoint (id {int(last.id)}) does not verify")

    def _advance(self, con: Connection, upto: int, last: Row[Any] | None) -> None:
        """Take the entries after the frontier up to ``upto`` into it: those the last
        checkpoint covers by their stored hashes (their tree head is checked against it), the
        ones after it checked in full."""
        covered = 0 if last is None else int(last.tree_size)
        if self._frontier.size < min(covered, upto):
            rows = con.execute(
                select(audit_entries.c.seq, audit_entries.c.hash)
                .where(
                    audit_entries.c.seq > self._frontier.size,
                    audit_entries.c.seq <= min(covered, upto),
                )
                .order_by(audit_entries.c.seq)
            )
            for row in rows:
                self._take(int(row.seq), str(row.hash))
        # Where to go back to when nothing is signed: the entries after the last checkpoint
        # are then checked again next time (an edit meanwhile would otherwise go unseen).
        if self._frontier.size == covered:
            self._mark = (self._frontier.copy(), self._last_hash)
        elif self._mark is not None and self._mark[0].size != covered:
            self._mark = None
        if self._frontier.size < upto:
            columns = [audit_entries.c[name] for name in _ENTRY_COLUMNS]
            rows = con.execute(
                select(*columns, audit_entries.c.body, audit_entries.c.hash, audit_entries.c.mac)
                .where(audit_entries.c.seq > self._frontier.size, audit_entries.c.seq <= upto)
                .order_by(audit_entries.c.seq)
            )
            for row in rows:
                stored = EntryRow(
                    int(row.seq),
                    row.body,
                    row.hash,
                    row.mac,
                    {name: getattr(row, name) for name in _ENTRY_COLUMNS[1:]},
                )
                for problem in check_entry(stored, self._last_hash, self.hmac):
                    raise AuditChainBroken(problem.line())
                self._take(stored.seq, stored.hash)
        if self._frontier.size != upto:
            raise AuditChainBroken(
                f"the head names entry {upto}, the entries end at {self._frontier.size}"
            )
        if any(size > upto for size in self._anchors):
            raise AuditChainBroken(
                f"a checkpoint covers {max(self._anchors)} entries, the log has {upto} (truncated)"
            )

    def _take(self, seq: int, digest: str) -> None:
        if seq != self._frontier.size + 1:
            raise AuditChainBroken(f"entry {self._frontier.size + 1}: entry_missing")
        self._frontier.append(merkle.leaf_hash(bytes.fromhex(digest)))
        self._last_hash = digest
        wanted = self._anchors.pop(self._frontier.size, None)
        if wanted is not None and self._frontier.root().hex() != wanted:
            raise AuditChainBroken(
                f"the first {seq} entries no longer hash to the signed tree head "
                "(rewritten before the last checkpoint)"
            )


async def run_checkpoints(checkpointer: Checkpointer) -> None:
    """The server's checkpoint loop (cancelled at shutdown): one attempt per interval, the
    first one interval after the startup checkpoint. A broken chain is logged at each attempt
    (:meth:`Checkpointer.write`) and stays in ``checkpointer.broken``."""
    seconds = checkpointer.interval.total_seconds()
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(checkpointer.write)
        except AuditChainBroken:
            pass  # logged by the writer; /healthz reports it
        except Exception as exc:  # keep the loop alive; the next interval retries
            log.error("audit checkpoint failed: %s", type(exc).__name__)


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
