"""The receipts issued: the ``receipts`` table read back, their status, and their revocation.

This module owns what happens to a receipt after its answer transaction stored it: who may list
and read it (a subject every receipt about it, a verifier its tenant's, admins and auditors all),
its public status (``valid`` or ``revoked`` with a reason code from a fixed set), revocation by
admins and operators, and the published keys that check it offline (:class:`ReceiptService`).
The answering flow reads stored documents by id here for a tenant's own repeats. The receipt
format and its signature are :mod:`sandbox.verification.receipts`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from sandbox.access.model import ZONE_WIDE, Member, MemberRole
from sandbox.audit import log as audit
from sandbox.clock import now
from sandbox.errors import NotFound
from sandbox.keys.signing import KeyRing, public_key_document
from sandbox.store.schema import receipts
from sandbox.store.statements import Prepared
from sandbox.verification.consents import own_ref
from sandbox.verification.rows import chunks, iso

__all__ = ["ReceiptService", "RevocationReason", "stored_documents"]

log = logging.getLogger("veil.verification")


class RevocationReason(StrEnum):
    """Why a receipt was revoked: a fixed set, so the status endpoint never carries free text."""

    DATA_CORRECTION = "data_correction"
    ISSUED_IN_ERROR = "issued_in_error"
    KEY_COMPROMISE = "key_compromise"
    SUPERSEDED = "superseded"


_STORED_DOCUMENTS = Prepared(
    select(receipts.c.id, receipts.c.document).where(
        receipts.c.id.in_(bindparam("ids", expanding=True))
    )
)


def stored_documents(con: Connection, ids: Sequence[str]) -> dict[str, dict[str, object]]:
    """The stored receipt documents ``ids``, by receipt id."""
    found: dict[str, dict[str, object]] = {}
    for chunk in chunks(sorted(set(ids))):
        for row in _STORED_DOCUMENTS.execute(con, {"ids": list(chunk)}):
            found[row.id] = json.loads(row.document)
    return found


def _receipt_view(row: Any) -> dict[str, Any]:
    return {**_status(row), "receipt": json.loads(row.document)}


def _status(row: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"receipt_id": row.id, "status": row.status}
    if row.status == "revoked":
        view["revoked_at"] = iso(row.revoked_at)
        view["reason"] = row.reason
    return view


class ReceiptService:
    """Listing, reading, checking and revoking issued receipts, and the public key document."""

    def __init__(self, engine: Engine, keys: KeyRing, zone_secret: bytes) -> None:
        self.engine = engine
        self.keys = keys
        self.zone_secret = zone_secret

    def keys_document(self) -> dict[str, object]:
        return public_key_document(self.keys)

    def _receipt_scope(self, member: Member) -> Any:
        if member.role == MemberRole.SUBJECT:
            return receipts.c.subject_ref == own_ref(member, self.zone_secret)
        if member.role == MemberRole.VERIFIER:
            return receipts.c.tenant_id == member.tenant_id
        member.require(MemberRole.SUBJECT, MemberRole.VERIFIER, *ZONE_WIDE)
        return None

    def list_receipts(self, member: Member, limit: int = 100) -> list[dict[str, Any]]:
        """A subject: every receipt about it, whoever asked. A verifier: its tenant's. Admins
        and auditors: all. Newest first."""
        scope = self._receipt_scope(member)
        query = select(receipts).order_by(receipts.c.issued_at.desc(), receipts.c.id).limit(limit)
        if scope is not None:
            query = query.where(scope)
        with self.engine.connect() as con:
            return [_receipt_view(r) for r in con.execute(query)]

    def get_receipt(self, member: Member, receipt_id: str) -> dict[str, Any]:
        scope = self._receipt_scope(member)
        query = select(receipts).where(receipts.c.id == receipt_id)
        if scope is not None:
            query = query.where(scope)
        with self.engine.connect() as con:
            row = con.execute(query).first()
        if row is None:
            raise NotFound("no such receipt")
        return _receipt_view(row)

    def receipt_status(self, receipt_id: str) -> dict[str, Any]:
        """Public: ``valid`` or ``revoked`` (with the reason code), for anyone holding a receipt."""
        r = receipts.c
        with self.engine.connect() as con:
            row = con.execute(
                select(r.id, r.status, r.revoked_at, r.reason).where(r.id == receipt_id)
            ).first()
        if row is None:
            raise NotFound("no such receipt")
        return _status(row)

    def revoke_receipt(
        self, member: Member | None, receipt_id: str, reason: RevocationReason
    ) -> dict[str, Any]:
        """Withdraw a receipt (e.g. after a data correction); its status says so from now on."""
        if member is not None:
            member.require(MemberRole.ADMIN, MemberRole.OPERATOR)
        r = receipts.c
        with self.engine.begin() as con:
            row = con.execute(select(r.id, r.status).where(r.id == receipt_id)).first()
            if row is None:
                raise NotFound("no such receipt")
            if row.status != "revoked":
                con.execute(
                    update(receipts)
                    .where(r.id == receipt_id)
                    .values(status="revoked", revoked_at=now(), reason=reason.value)
                )
            audit.append(
                con,
                audit.Event(
                    "verification",
                    "receipt.revoke",
                    refs={"receipt": receipt_id, "reason": reason.value},
                ),
            )
            after = con.execute(
                select(r.id, r.status, r.revoked_at, r.reason).where(r.id == receipt_id)
            ).one()
        log.info("receipt revoked id=%s reason=%s", receipt_id, reason.value)
        return _status(after)
