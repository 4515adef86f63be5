"""Verification of the audit log: every entry, the chain, the MACs, the head, the checkpoint
chain, and the heads a witness holds.

One pass over the entries in ``seq`` order (``docs/audit.md`` has the algorithm step by step):

1. ``seq`` is contiguous from 1 — a gap is a deleted entry;
2. the body is canonical JSON and its SHA-256 is the stored hash — else it was edited;
3. the body's ``seq`` is the row's and its ``prev`` is the previous body's hash — else entries
   were reordered, deleted or edited (and the hashes recomputed);
4. the MAC under the named HMAC key matches — else the chain was rebuilt by someone without the
   key (skipped when the HMAC keys are not at hand, e.g. an auditor verifying remotely);
5. the stored columns readers filter on or show agree with the body;
6. the head row names the last entry — else entries after it were removed (truncation);
7. every checkpoint: a known key, a valid signature, a tree size the entries reach (else
   truncation), a root equal to the tree head over that many entries, sizes that never shrink;
   and the checkpoints form one chain: numbered 1, 2, 3, … without a gap, each signing the hash
   of the one before;
8. every head a witness holds: a valid signature, the same document as the state store's
   checkpoint of its number, and a log whose first ``tree_size`` entries hash to its root —
   that is, the log is a consistent extension of it.

Problems are listed by entry ``seq``, checkpoint id or witnessed checkpoint number with a
stable code; nothing stops at the first. What no check here can see without a witness — the
newest entries and checkpoints deleted together and the head rewound — is in ``docs/audit.md``
("What it does not protect against").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select

from sandbox.audit import merkle
from sandbox.audit.checkpoint import chained, checkpoint_hash, checkpoint_problem
from sandbox.audit.checks import COLUMNS, EntryRow, Problem, canonical_entry, check_entry
from sandbox.audit.entry import GENESIS
from sandbox.keys.audit import AuditKeys, HmacRing
from sandbox.store.schema import audit_checkpoints, audit_entries, audit_head

__all__ = [
    "CheckpointRow",
    "EntryRow",
    "Problem",
    "Report",
    "canonical_entry",
    "verify",
    "verify_rows",
]


@dataclass(frozen=True)
class CheckpointRow:
    id: int
    document: Mapping[str, Any]
    columns: Mapping[str, Any] | None = None  # tree_size, root, key_id, number, hash as stored


@dataclass(frozen=True)
class Report:
    """What a verification found: ``ok`` when no problem was. ``uncovered``: entries after
    the last valid checkpoint (no signature covers them yet); ``witnessed``: the witness's
    heads checked (0: no witness given)."""

    entries: int
    checkpoints: int
    last_seq: int
    macs_checked: bool
    problems: tuple[Problem, ...] = ()
    uncovered: int = 0
    witnessed: int = 0
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", not self.problems)


def verify_rows(
    entries: Iterable[EntryRow],
    checkpoints: Sequence[CheckpointRow],
    public_keys: Mapping[str, Ed25519PublicKey],
    hmac_ring: HmacRing | None,
    head: tuple[int, str] | None,
    witness: Sequence[Mapping[str, Any]] | None = None,
) -> Report:
    """Verify entries (in ``seq`` order), checkpoints (in id order), the head row and the heads
    of a witness (``None``: none given)."""
    problems: list[Problem] = []
    wanted: dict[int, list[CheckpointRow]] = {}
    good: list[CheckpointRow] = []
    linked: list[CheckpointRow] = []  # well formed: in the chain, even if not verifiable here
    for cp in checkpoints:
        code = checkpoint_problem(cp.document, public_keys)
        if code != "checkpoint_malformed":
            linked.append(cp)
        if code is not None:
            problems.append(Problem("checkpoint", cp.id, code, _CHECKPOINT_DETAIL[code]))
            continue
        if cp.columns is not None and _columns(cp.document) != {
            name: cp.columns.get(name) for name in _CHECKPOINT_COLUMNS
        }:
            problems.append(
                Problem("checkpoint", cp.id, "checkpoint_columns_mismatch",
                        "the stored columns differ from the signed document")
            )  # fmt: skip
        good.append(cp)
        wanted.setdefault(int(cp.document["tree_size"]), []).append(cp)
    problems.extend(_chain(linked))
    heads = _witness_heads(witness or (), public_keys, problems)
    for doc in heads:
        wanted.setdefault(int(doc["tree_size"]), [])
    frontier = merkle.Frontier()
    roots: dict[int, bytes] = {}
    if 0 in wanted:
        roots[0] = merkle.empty_root()
    expected, prev, last_hash = 1, GENESIS, GENESIS
    for row in entries:
        if row.seq != expected:
            if row.seq > expected:
                problems.append(
                    Problem("entry", expected, "entry_missing",
                            f"entries {expected}..{row.seq - 1} are missing (deleted)")
                )  # fmt: skip
            else:
                problems.append(
                    Problem("entry", row.seq, "entry_out_of_order", "seq is not increasing")
                )
        problems.extend(check_entry(row, prev, hmac_ring))
        digest = hashlib.sha256(row.body.encode("utf-8")).hexdigest()
        prev = last_hash = digest
        expected = max(expected, row.seq) + 1
        frontier.append(merkle.leaf_hash(bytes.fromhex(digest)))  # what the body hashes to
        if frontier.size in wanted:
            roots[frontier.size] = frontier.root()
    count = frontier.size
    last_seq = expected - 1
    if head is not None and (head[0] != last_seq or head[1] != last_hash):
        code, detail = "head_mismatch", "the head row does not name the last entry"
        if head[0] > last_seq:
            code, detail = (
                "log_truncated",
                f"the head names seq {head[0]}, the log ends at {last_seq}",
            )
        problems.append(Problem("head", head[0], code, detail))
    largest = -1
    for cp in good:
        size = int(cp.document["tree_size"])
        if size < largest:
            problems.append(
                Problem("checkpoint", cp.id, "checkpoint_regression",
                        f"tree size {size} is below an earlier checkpoint's {largest}")
            )  # fmt: skip
        largest = max(largest, size)
        if size > count:
            problems.append(
                Problem("checkpoint", cp.id, "log_truncated",
                        f"signed over {size} entries, only {count} present")
            )  # fmt: skip
        elif roots.get(size, b"").hex() != cp.document["root"]:
            problems.append(
                Problem("checkpoint", cp.id, "checkpoint_root_mismatch",
                        f"the entries do not hash to the signed root of tree size {size}")
            )  # fmt: skip
    problems.extend(_against_witness(heads, good, roots, count))
    return Report(
        entries=count,
        checkpoints=len(checkpoints),
        last_seq=last_seq,
        macs_checked=hmac_ring is not None,
        problems=tuple(sorted(problems, key=_order)),
        uncovered=max(0, count - max(0, largest)) if good else count,
        witnessed=len(witness or ()),
    )


_WHERE = {"entry": 0, "head": 1, "checkpoint": 2, "witness": 3}


def _order(problem: Problem) -> tuple[int, int, str]:
    return (_WHERE.get(problem.where, 4), problem.ref, problem.code)


_CHECKPOINT_DETAIL = {
    "checkpoint_malformed": "not a checkpoint document",
    "checkpoint_unknown_key": "signed with a key that is not a published audit key",
    "checkpoint_bad_signature": "the signature does not match the document",
}
_CHECKPOINT_COLUMNS = ("tree_size", "root", "key_id", "number", "hash")


def _columns(document: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a checkpoint must be stored with."""
    link = chained(document)
    return {
        "tree_size": document["tree_size"],
        "root": document["root"],
        "key_id": document["key_id"],
        "number": document["number"] if link else None,
        "hash": checkpoint_hash(document) if link else None,
    }


def _chain(linked: Sequence[CheckpointRow]) -> Iterator[Problem]:
    """The checkpoints of the chain: numbered 1, 2, 3, … with no gap or repeat, each signing
    the hash of the one before; none from before the chain after its start."""
    started = False
    for cp in linked:  # in id order
        if chained(cp.document):
            started = True
        elif started:
            yield Problem(
                "checkpoint", cp.id, "checkpoint_unchained",
                "a checkpoint without a place in the chain, written after the chain began",
            )  # fmt: skip
    links = sorted(
        (cp for cp in linked if chained(cp.document)),
        key=lambda cp: (int(cp.document["number"]), cp.id),
    )
    expected, prev = 1, GENESIS
    for cp in links:
        number = int(cp.document["number"])
        if number > expected:
            yield Problem(
                "checkpoint", cp.id, "checkpoint_missing",
                f"checkpoints {expected}..{number - 1} of the chain are missing (deleted)",
            )  # fmt: skip
        elif number < expected:
            yield Problem(
                "checkpoint", cp.id, "checkpoint_duplicate",
                f"a second checkpoint numbered {number}",
            )  # fmt: skip
            continue  # the chain goes on from the first of that number
        if cp.document["prev"] != prev:
            yield Problem(
                "checkpoint", cp.id, "checkpoint_broken_link",
                "prev is not the hash of the checkpoint before it",
            )  # fmt: skip
        expected, prev = number + 1, checkpoint_hash(cp.document)


def _witness_heads(
    witness: Sequence[Mapping[str, Any]],
    public_keys: Mapping[str, Ed25519PublicKey],
    problems: list[Problem],
) -> list[Mapping[str, Any]]:
    """The witness's heads that verify on their own; the others go to ``problems``."""
    heads: list[Mapping[str, Any]] = []
    for i, doc in enumerate(witness, start=1):
        code = checkpoint_problem(doc, public_keys)
        if code is None and not chained(doc):
            code = "checkpoint_malformed"
        if code is not None:
            number = doc.get("number") if isinstance(doc, Mapping) else None
            ref = number if isinstance(number, int) else i
            detail = f"the witness's head (line or file {i}): {_CHECKPOINT_DETAIL[code]}"
            problems.append(Problem("witness", ref, code, detail))
            continue
        heads.append(doc)
    return heads


def _against_witness(
    heads: Sequence[Mapping[str, Any]],
    good: Sequence[CheckpointRow],
    roots: Mapping[int, bytes],
    count: int,
) -> Iterator[Problem]:
    """Each witnessed head against the log: its checkpoint is the state store's, and the log's
    first ``tree_size`` entries hash to its root (the log extends it consistently)."""
    stored = {int(cp.document["number"]): cp for cp in good if chained(cp.document)}
    last = max(stored, default=0)
    for doc in heads:
        number, size = int(doc["number"]), int(doc["tree_size"])

        def problem(code: str, detail: str, number: int = number) -> Problem:
            return Problem("witness", number, code, detail)

        if number > last or size > count:
            yield problem(
                "log_truncated",
                f"the witness holds checkpoint {number} over {size} entries; the log has "
                f"checkpoints up to {last} and {count} entries",
            )
            continue
        held = stored.get(number)
        if held is None or checkpoint_hash(held.document) != checkpoint_hash(doc):
            yield problem(
                "witness_mismatch",
                f"the state store's checkpoint {number} is not the one the witness holds",
            )
        elif roots.get(size, b"").hex() != doc["root"]:
            yield problem(
                "witness_mismatch",
                f"the log's first {size} entries do not hash to the witnessed root: the log "
                "is not an extension of it",
            )


def verify(
    engine: Engine,
    keys: AuditKeys | None = None,
    *,
    batch: int = 5000,
    witness: Sequence[Mapping[str, Any]] | None = None,
) -> Report:
    """Verify the log in ``engine`` with the audit keys (``None``: signatures against nothing)
    and the heads of a witness (:func:`sandbox.audit.witness.read_witness`). Streams the
    entries, so memory stays flat however long the log is."""
    public_keys = keys.signing.public_keys() if keys is not None else {}
    hmac_ring = keys.hmac if keys is not None else None
    with engine.connect() as con:
        head_row = con.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
        cps = [
            CheckpointRow(
                int(r.id),
                _json(r.document),
                {
                    "tree_size": int(r.tree_size),
                    "root": r.root,
                    "key_id": r.key_id,
                    "number": None if r.number is None else int(r.number),
                    "hash": r.hash,
                },
            )
            for r in con.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.id))
        ]
    head = None if head_row is None else (int(head_row.seq), str(head_row.hash))
    return verify_rows(_stream(engine, batch), cps, public_keys, hmac_ring, head, witness)


def _json(text: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_STORED = COLUMNS


def _stream(engine: Engine, batch: int) -> Iterator[EntryRow]:
    after = -1
    columns = [audit_entries.c[name] for name in ("seq", *_STORED, "body", "hash", "mac")]
    while True:
        with engine.connect() as con:
            rows = con.execute(
                select(*columns)
                .where(audit_entries.c.seq > after)
                .order_by(audit_entries.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        for r in rows:
            yield EntryRow(
                int(r.seq), r.body, r.hash, r.mac, {name: getattr(r, name) for name in _STORED}
            )
        after = int(rows[-1].seq)
