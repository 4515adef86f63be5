"""What a ``corrected`` resolution of an issue does to receipts: it revokes them.

An issue about a subject keeps only the subject's reference, the zone-keyed HMAC that receipts
carry (:func:`sandbox.verification.receipts.subject_ref`), so the receipts about that subject can
be found without the subject itself. A correction revokes the subject's valid receipts that were
answered from an older version of the dataset (found through the verification events'
``dataset``/``dataset_version``), with the fixed reason code ``data_correction`` (the public
receipt status never carries free text), and records each in ``issue_revocations``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import Connection, func, select, update

from sandbox.store.schema import issue_revocations, receipts, verification_events
from sandbox.verification.issued import RevocationReason

__all__ = ["revocation_counts", "revoke_older"]


def revoke_older(
    con: Connection, issue_id: str, ref: str, dataset: str, version: int, at: datetime
) -> int:
    """Revoke the subject's valid receipts answered from versions of ``dataset`` before
    ``version``; record them against the issue. Returns how many."""
    found = con.execute(
        select(receipts.c.id, verification_events.c.dataset_version)
        .join(verification_events, verification_events.c.receipt_id == receipts.c.id)
        .where(
            receipts.c.subject_ref == ref,
            receipts.c.status == "valid",
            verification_events.c.dataset == dataset,
        )
    ).all()
    ids = []
    for row in found:
        with contextlib.suppress(ValueError):
            if int(row.dataset_version) < version:
                ids.append(row.id)
    if not ids:
        return 0
    con.execute(
        update(receipts)
        .where(receipts.c.id.in_(ids), receipts.c.status == "valid")
        .values(status="revoked", revoked_at=at, reason=RevocationReason.DATA_CORRECTION.value)
    )
    con.execute(
        issue_revocations.insert(),
        [{"issue_id": issue_id, "receipt_id": r, "created_at": at} for r in ids],
    )
    return len(ids)


def revocation_counts(con: Connection, ids: list[str]) -> dict[str, int]:
    """How many receipts each of these issues revoked (issues that revoked none are absent)."""
    if not ids:
        return {}
    rows = con.execute(
        select(issue_revocations.c.issue_id, func.count())
        .where(issue_revocations.c.issue_id.in_(ids))
        .group_by(issue_revocations.c.issue_id)
    ).all()
    return {r[0]: int(r[1]) for r in rows}
