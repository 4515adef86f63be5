"""Verification of the audit log: every entry, the chain, the MACs, the head, every checkpoint.

One pass over the entries in ``seq`` order (``docs/audit.md`` has the algorithm step by step):

1. ``seq`` is contiguous from 1 — a gap is a deleted entry;
2. the body is canonical JSON and its SHA-256 is the stored hash — else it was edited;
3. the body's ``seq`` is the row's and its ``prev`` is the previous body's hash — else entries
   were reordered, deleted or edited (and the hashes recomputed);
4. the MAC under the named HMAC key matches — else the chain was rebuilt by someone without the
   key (skipped when the HMAC keys are not at hand, e.g. an auditor verifying remotely);
5. the filter columns agree with the body;
6. the head row names the last entry — else entries after it were removed (truncation);
7. every checkpoint: a known key, a valid signature, a tree size the entries reach (else
   truncation), a root equal to the tree head over that many entries, sizes that never shrink.

Problems are listed by entry ``seq`` or checkpoint id with a stable code; nothing stops at the
first. Tail truncation after the last checkpoint, with the head row rewritten to match, is the
one change no check here can see: keeping copies of checkpoints (or asking for consistency
proofs) bounds it to one checkpoint interval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select

from sandbox.audit import merkle
from sandbox.audit.checkpoint import checkpoint_problem
from sandbox.audit.entry import GENESIS, canonical_body, format_at
from sandbox.canonical import canonical_json
from sandbox.clock import utc
from sandbox.errors import NotCanonicalizable
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

_COLUMNS = ("kind", "action", "status", "code")


@dataclass(frozen=True)
class EntryRow:
    """One stored entry. ``columns``: the filter columns as stored (``None``: not compared)."""

    seq: int
    body: str
    hash: str
    mac: str | None
    columns: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CheckpointRow:
    id: int
    document: Mapping[str, Any]
    columns: Mapping[str, Any] | None = None  # tree_size, root, key_id as stored


@dataclass(frozen=True)
class Problem:
    where: str  # entry | checkpoint | head
    ref: int  # entry seq or checkpoint id
    code: str
    detail: str

    def line(self) -> str:
        return f"{self.where} {self.ref}: {self.code}: {self.detail}"


@dataclass(frozen=True)
class Report:
    """What a verification found: ``ok`` when no problem was."""

    entries: int
    checkpoints: int
    last_seq: int
    macs_checked: bool
    problems: tuple[Problem, ...] = ()
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", not self.problems)


def verify_rows(
    entries: Iterable[EntryRow],
    checkpoints: Sequence[CheckpointRow],
    public_keys: Mapping[str, Ed25519PublicKey],
    hmac_ring: HmacRing | None,
    head: tuple[int, str] | None,
) -> Report:
    """Verify entries (in ``seq`` order), checkpoints (in id order) and the head row."""
    problems: list[Problem] = []
    wanted: dict[int, list[CheckpointRow]] = {}
    good: list[CheckpointRow] = []
    for cp in checkpoints:
        code = checkpoint_problem(cp.document, public_keys)
        if code is not None:
            problems.append(Problem("checkpoint", cp.id, code, _CHECKPOINT_DETAIL[code]))
            continue
        if cp.columns is not None and (
            cp.columns.get("tree_size") != cp.document["tree_size"]
            or cp.columns.get("root") != cp.document["root"]
            or cp.columns.get("key_id") != cp.document["key_id"]
        ):
            problems.append(
                Problem("checkpoint", cp.id, "checkpoint_columns_mismatch",
                        "the stored columns differ from the signed document")
            )  # fmt: skip
        good.append(cp)
        wanted.setdefault(int(cp.document["tree_size"]), []).append(cp)
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
        problems.extend(_check_entry(row, prev, hmac_ring))
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
    return Report(
        entries=count,
        checkpoints=len(checkpoints),
        last_seq=last_seq,
        macs_checked=hmac_ring is not None,
        problems=tuple(sorted(problems, key=lambda p: (p.where != "entry", p.ref, p.code))),
    )


_CHECKPOINT_DETAIL = {
    "checkpoint_malformed": "not a checkpoint document",
    "checkpoint_unknown_key": "signed with a key that is not a published audit key",
    "checkpoint_bad_signature": "the signature does not match the document",
}


def _check_entry(row: EntryRow, prev: str, hmac_ring: HmacRing | None) -> Iterator[Problem]:
    def problem(code: str, detail: str) -> Problem:
        return Problem("entry", row.seq, code, detail)

    raw = row.body.encode("utf-8")
    digest = hashlib.sha256(raw)
    if digest.hexdigest() != row.hash:
        yield problem("entry_hash_mismatch", "the body does not hash to the stored hash (edited)")
    try:
        body = json.loads(row.body)
        canonical = canonical_entry(body) == raw
    except (ValueError, NotCanonicalizable):
        yield problem("entry_malformed", "the body is not JSON")
        return
    if not isinstance(body, dict):
        yield problem("entry_malformed", "the body is not a JSON object")
        return
    if not canonical:
        yield problem("entry_not_canonical", "the body is not canonical JSON")
    if body.get("seq") != row.seq:
        yield problem("entry_seq_mismatch", f"the body says seq {body.get('seq')} (moved)")
    if body.get("prev") != prev:
        yield problem(
            "entry_broken_link",
            "prev is not the previous entry's hash (reordered, deleted or rewritten)",
        )
    if hmac_ring is not None:
        expected = hmac_ring.mac(str(body.get("mac_key")), digest.digest())
        if expected is None:
            yield problem("entry_unknown_mac_key", "the HMAC key it names is not in the ring")
        elif row.mac != expected:
            yield problem("entry_bad_mac", "the MAC does not match (the chain was rebuilt)")
    if row.columns is not None:
        stored = {name: row.columns.get(name) for name in _COLUMNS}
        stored["at"] = _at(row.columns.get("at"))
        claimed = {name: body.get(name) for name in _COLUMNS}
        claimed["at"] = body.get("at")
        if stored != claimed:
            yield problem("entry_columns_mismatch", "the filter columns differ from the body")


def canonical_entry(body: Any) -> bytes:
    """Canonical JSON of a parsed body: the fast form for what the writer produces, the general
    one otherwise (both give the same bytes where both apply)."""
    try:
        return canonical_body(body)
    except NotCanonicalizable:
        return canonical_json(body)


def _at(value: Any) -> str | None:
    return format_at(utc(value)) if isinstance(value, datetime) else None


def verify(engine: Engine, keys: AuditKeys | None = None, *, batch: int = 5000) -> Report:
    """Verify the log in ``engine`` with the audit keys (``None``: signatures against nothing).
    Streams the entries, so memory stays flat however long the log is."""
    public_keys = keys.signing.public_keys() if keys is not None else {}
    hmac_ring = keys.hmac if keys is not None else None
    with engine.connect() as con:
        head_row = con.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
        cps = [
            CheckpointRow(
                int(r.id),
                _json(r.document),
                {"tree_size": int(r.tree_size), "root": r.root, "key_id": r.key_id},
            )
            for r in con.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.id))
        ]
    head = None if head_row is None else (int(head_row.seq), str(head_row.hash))
    return verify_rows(_stream(engine, batch), cps, public_keys, hmac_ring, head)


def _json(text: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stream(engine: Engine, batch: int) -> Iterator[EntryRow]:
    after = -1
    columns = [audit_entries.c[name] for name in ("seq", "at", *_COLUMNS, "body", "hash", "mac")]
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
                int(r.seq),
                r.body,
                r.hash,
                r.mac,
                {
                    "at": r.at,
                    "kind": r.kind,
                    "action": r.action,
                    "status": r.status,
                    "code": r.code,
                },
            )
        after = int(rows[-1].seq)
