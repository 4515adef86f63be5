"""The audit log for auditors and admins: entries, proofs, checkpoints, keys, verification.

An entry's body and a checkpoint's document are passed through member for member: the entry's
hash (and so the chain and every Merkle proof) and the checkpoint's signature are computed over
all of their members, so they are opaque JSON objects here (their members: docs/audit.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sandbox.api.responses.base import View
from sandbox.api.responses.verification import PublicKey
from sandbox.audit import checkpoint, store, verify


class AuditEntry(View):
    mirrors = store.StoredEntry
    omit_none = frozenset({"unsealed"})

    seq: int
    hash: str
    mac: str
    entry: dict[str, Any] = Field(description="The canonical, hashed entry body.")
    unsealed: dict[str, Any] | None = Field(
        None, description="The sealed members, opened (auditors who asked with decrypt=true)."
    )


class AuditEntries(View):
    entries: list[AuditEntry]
    next: int | None = Field(description="Pass as after= for the next page; null at the end.")


class InclusionProof(View):
    mirrors = checkpoint.InclusionProof

    seq: int
    leaf_index: int
    tree_size: int
    entry: dict[str, Any] = Field(description="The canonical, hashed entry body.")
    entry_hash: str
    path: list[str]
    checkpoint: dict[str, Any] = Field(description="The signed checkpoint document.")


class Checkpoint(View):
    mirrors = checkpoint.Checkpoint

    id: int
    document: dict[str, Any] = Field(description="The signed checkpoint document.")


class CheckpointList(View):
    checkpoints: list[Checkpoint]
    next: int | None


class ConsistencyProof(View):
    mirrors = checkpoint.ConsistencyProof

    first: int
    second: int
    first_root: str
    second_root: str
    path: list[str]


class AuditKeys(View):
    keys: list[PublicKey]


class VerifyProblem(View):
    mirrors = verify.Problem

    where: str = Field(description="entry, checkpoint or head.")
    ref: int = Field(description="The entry's seq or the checkpoint's id.")
    code: str
    detail: str


class AuditReport(View):
    mirrors = verify.Report

    ok: bool
    entries: int
    checkpoints: int
    last_seq: int
    macs_checked: bool
    problems: list[VerifyProblem]
    uncovered: int = Field(description="Entries after the last checkpoint: no signature yet.")
    witnessed: int = Field(description="Witnessed heads checked (0: no witness given).")
