"""The receipts issued: the ``receipts`` table read back, their status, and their revocation.

This module owns what happens to a receipt after its answer transaction stored it: who may list
and read it (a subject every receipt about it, a verifier its tenant's, admins and auditors all),
its public status (``valid`` or ``revoked`` with a reason code from a fixed set), revocation by
admins and operators, and the published keys that check it offline (:class:`ReceiptService`,
which returns :class:`IssuedReceipt`, :class:`ReceiptStatus` and :class:`PublishedKey` results
and records revocations in the audit log).
The answering flow reads stored documents by id here for a tenant's own repeats. The receipt
format and its signature are :mod:`sandbox.verification.receipts`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from sandbox.access.model import ZONE_WIDE, Actor, MemberRole
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now, utc
from sandbox.errors import NotFound
from sandbox.keys.signing import SigningKeys, public_key_document
from sandbox.store.schema import receipts
from sandbox.store.statements import Prepared
from sandbox.verification.consents import own_ref
from sandbox.verification.receipts import SignedReceipt
from sandbox.verification.rows import chunks

__all__ = [
    "IssuedReceipt",
    "PublishedKey",
    "ReceiptService",
    "ReceiptStatus",
    "RevocationReason",
    "stored_documents",
]

log = logging.getLogger("veil.verification")


class RevocationReason(StrEnum):
    """Why a receipt was revoked: a fixed set, so the status endpoint never carries free text."""

    DATA_CORRECTION = "data_correction"
    ISSUED_IN_ERROR = "issued_in_error"
    KEY_COMPROMISE = "key_compromise"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class ReceiptStatus:
    """A receipt's public status: ``valid``, or ``revoked`` with when and why (``None`` while
    valid)."""

    receipt_id: str
    status: str
    revoked_at: datetime | None
    reason: str | None


@dataclass(frozen=True)
class IssuedReceipt:
    """A stored receipt: its status (as :class:`ReceiptStatus`) and the signed document."""

    receipt_id: str
    status: str
    revoked_at: datetime | None
    reason: str | None
    receipt: SignedReceipt


@dataclass(frozen=True)
class PublishedKey:
    """A public key that may have signed a live receipt (``GET /v1/keys``)."""

    key_id: str
    algorithm: str
    public_key: str
    status: str  # current | retired


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


def _status(row: Any) -> ReceiptStatus:
    if row.status != "revoked":
        return ReceiptStatus(row.id, row.status, None, None)
    return ReceiptStatus(row.id, row.status, utc(row.revoked_at), row.reason)


def _issued(row: Any) -> IssuedReceipt:
    status = _status(row)
    return IssuedReceipt(
        status.receipt_id,
        status.status,
        status.revoked_at,
        status.reason,
        SignedReceipt.of(json.loads(row.document)),
    )


class ReceiptService:
    """Listing, reading, checking and revoking issued receipts, and the public key document;
    built once with the state store's audit log."""

    def __init__(
        self, engine: Engine, audit: AuditLog, keys: SigningKeys, zone_secret: bytes
    ) -> None:
        self.engine = engine
        self.audit = require_log(audit, "receipts")
        self.keys = keys
        self.zone_secret = zone_secret

    def public_keys(self) -> list[PublishedKey]:
        """Public: every key that may have signed a live receipt, current first."""
        document = public_key_document(self.keys.ring())
        entries = document["keys"]
        assert isinstance(entries, list)
        return [PublishedKey(**entry) for entry in entries]

    def _receipt_scope(self, actor: Actor) -> Any:
        member = actor.member
        if member is not None and member.role == MemberRole.SUBJECT:
            return receipts.c.subject_ref == own_ref(actor, self.zone_secret)
        if member is not None and member.role == MemberRole.VERIFIER:
            return receipts.c.tenant_id == member.tenant_id
        actor.require(MemberRole.SUBJECT, MemberRole.VERIFIER, *ZONE_WIDE)
        return None

    def list_receipts(self, actor: Actor, limit: int = 100) -> list[IssuedReceipt]:
        """A subject: every receipt about it, whoever asked. A verifier: its tenant's. Admins,
        auditors and the local administrator: all. Newest first."""
        scope = self._receipt_scope(actor)
        query = select(receipts).order_by(receipts.c.issued_at.desc(), receipts.c.id).limit(limit)
        if scope is not None:
            query = query.where(scope)
        with self.engine.connect() as con:
            return [_issued(r) for r in con.execute(query)]

    def get_receipt(self, actor: Actor, receipt_id: str) -> IssuedReceipt:
        """One receipt the actor may see (others are not found)."""
        scope = self._receipt_scope(actor)
        query = select(receipts).where(receipts.c.id == receipt_id)
        if scope is not None:
            query = query.where(scope)
        with self.engine.connect() as con:
            row = con.execute(query).first()
        if row is None:
            raise NotFound("no such receipt")
        return _issued(row)

    def receipt_status(self, receipt_id: str) -> ReceiptStatus:
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
        self, actor: Actor, receipt_id: str, reason: RevocationReason
    ) -> ReceiptStatus:
        """Withdraw a receipt (e.g. after a data correction); its status says so from now on.
        Admins, operators and the local administrator."""
        actor.require(MemberRole.ADMIN, MemberRole.OPERATOR)
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
            self.audit.append(
                con,
                Event(
                    "verification",
                    "receipt.revoke",
                    refs={"receipt": receipt_id, "reason": reason.value},
                ),
                actor,
            )
            after = con.execute(
                select(r.id, r.status, r.revoked_at, r.reason).where(r.id == receipt_id)
            ).one()
        log.info("receipt revoked id=%s reason=%s", receipt_id, reason.value)
        return _status(after)
