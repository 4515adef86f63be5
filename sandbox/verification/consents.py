"""Consents: a subject's authorisation for one tenant to run one template version on one claim.

This module owns the consent model and the ``consents`` table: granting (a subject member, or
the local administrator for a subject reference), listing and revoking (:class:`ConsentService`,
which returns :class:`Consent` results and records every change in the audit log), and the two
statements the answering flow runs on it — reading the
consents a call names as the decision needs them (:class:`Held`) and adding the uses an answer
took. Whether a consent covers a request is decided with the rest of the request, in
:mod:`sandbox.verification.decision`, so that every failure looks the same.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, bindparam, select, update

from policies.templates.loader import TemplateSet
from policies.templates.model import ClaimType
from sandbox.access.model import ZONE_WIDE, Actor, ActorKind, MemberRole, new_id
from sandbox.access.tenants import find_tenant
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now, utc
from sandbox.errors import Forbidden, InvalidRequest, NotFound
from sandbox.store import db
from sandbox.store.schema import consents
from sandbox.store.statements import Prepared
from sandbox.verification.receipts import subject_ref
from sandbox.verification.requests import PURPOSE, ConsentRequest
from sandbox.verification.rows import chunks

__all__ = [
    "MAX_CONSENT_DAYS",
    "MAX_CONSENT_USES",
    "Consent",
    "ConsentService",
    "Held",
    "add_uses",
    "held_consents",
    "own_ref",
]

log = logging.getLogger("veil.verification")

MAX_CONSENT_DAYS: Final = 366
MAX_CONSENT_USES: Final = 100_000
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
# What a consent's audit entry seals, per consent (docs/audit.md).
_CONSENT_AUDIT: Final = (
    "id",
    "tenant_id",
    "subject_ref",
    "template_id",
    "template_version",
    "purpose",
)


@dataclass(frozen=True)
class Consent:
    """A consent as its subject, the tenant holding it and the zone see it: never the claim,
    only its commitment, and the subject only by reference. ``state`` is as of when it was
    read: ``active``, ``expired``, ``revoked`` or ``used_up``."""

    id: str
    tenant: str
    subject_ref: str
    template: str
    version: int
    claim_commitment: str | None
    purpose: str
    max_uses: int
    uses: int
    expires_at: datetime
    revoked_at: datetime | None
    created_at: datetime
    state: str


def _state(*, revoked: bool, expires_at: datetime, uses: int, max_uses: int, at: datetime) -> str:
    if revoked:
        return "revoked"
    if expires_at <= at:
        return "expired"
    if uses >= max_uses:
        return "used_up"
    return "active"


@dataclass(frozen=True)
class Held:
    """A consent as the decision needs it: its bindings, its use count, and whether it is live
    (neither revoked nor expired at the decision time, as the state store compares them)."""

    id: str
    tenant_id: str
    subject_ref: str
    template_id: str
    template_version: int
    claim_commitment: str | None
    purpose: str
    max_uses: int
    uses: int
    live: bool


def _consent(row: Any, at: datetime) -> Consent:
    """A stored consent (a ``consents`` row, or the row about to be stored) as of ``at``."""
    expires_at = utc(row["expires_at"])
    revoked_at = utc(row["revoked_at"]) if row["revoked_at"] is not None else None
    return Consent(
        id=row["id"],
        tenant=row["tenant_id"],
        subject_ref=row["subject_ref"],
        template=row["template_id"],
        version=row["template_version"],
        claim_commitment=row["claim_commitment"],
        purpose=row["purpose"],
        max_uses=row["max_uses"],
        uses=row["uses"],
        expires_at=expires_at,
        revoked_at=revoked_at,
        created_at=utc(row["created_at"]),
        state=_state(
            revoked=revoked_at is not None,
            expires_at=expires_at,
            uses=row["uses"],
            max_uses=row["max_uses"],
            at=at,
        ),
    )


# Statements of the answering flow, built once: building SQLAlchemy expressions per request
# costs more than running them.
_c = consents.c
_CONSENTS_BY_ID = Prepared(
    select(  # the fields of Held, in order
        _c.id,
        _c.tenant_id,
        _c.subject_ref,
        _c.template_id,
        _c.template_version,
        _c.claim_commitment,
        _c.purpose,
        _c.max_uses,
        _c.uses,
        and_(_c.revoked_at.is_(None), _c.expires_at > bindparam("at")).label("live"),
    ).where(_c.id.in_(bindparam("ids", expanding=True)))
)
_BUMP_USES = Prepared(
    update(consents)
    .where(_c.id.in_(bindparam("ids", expanding=True)))
    .values(uses=_c.uses + bindparam("n"))
)


def held_consents(con: Connection, ids: set[str], at: datetime) -> dict[str, Held]:
    """The consents ``ids`` that exist, by id, live or not at ``at``."""
    found: dict[str, Held] = {}
    for chunk in chunks(sorted(ids)):
        for row in _CONSENTS_BY_ID.execute(con, {"ids": list(chunk), "at": at}):
            # by position, not by name: a batch reads thousands
            cid, tenant, ref, template, version, commitment, purpose, most, uses, live = row
            found[cid] = Held(
                cid, tenant, ref, template, version, commitment, purpose, most, uses, bool(live)
            )
    return found


def add_uses(con: Connection, bumped: Mapping[str, int], held: Mapping[str, Held]) -> None:
    """Add each consent's new uses (``bumped``: consent id -> its new use count, ``held``: as
    read), grouped by how many (one statement per group and chunk of ids rather than one per
    consent)."""
    by_count: dict[int, list[str]] = defaultdict(list)
    for consent_id, uses in bumped.items():
        by_count[uses - held[consent_id].uses].append(consent_id)
    for count, ids in by_count.items():
        for chunk in chunks(ids):
            _BUMP_USES.execute(con, {"ids": list(chunk), "n": count})


def own_ref(actor: Actor, zone_secret: bytes) -> str:
    """The subject reference of the ``subject`` member acting: what its consents and the
    receipts about it are filed under."""
    member = actor.require_member(MemberRole.SUBJECT)
    if member.subject_id is None:
        raise Forbidden("this subject member is not bound to a subject")
    return subject_ref(member.subject_id, zone_secret)


class ConsentService:
    """Granting, listing and revoking consents, built once with the state store's audit log.
    ``templates`` is loaded once at startup."""

    def __init__(
        self, engine: Engine, audit: AuditLog, templates: TemplateSet, zone_secret: bytes
    ) -> None:
        self.engine = engine
        self.audit = require_log(audit, "consents")
        self.templates = templates
        self.zone_secret = zone_secret

    def create_consent(self, actor: Actor, request: ConsentRequest) -> Consent:
        """The subject authorises one tenant to verify one claim with one template version."""
        ref = own_ref(actor, self.zone_secret)
        assert actor.member is not None
        (consent,) = self._grant(actor, [(ref, request)], granted_by=actor.member.id)
        return consent

    def grant_consents(
        self, actor: Actor, items: Sequence[tuple[str, ConsentRequest]]
    ) -> list[Consent]:
        """Record consents for subject references in one transaction: ``(subject reference,
        request)`` pairs. Only the local administrator records consents a subject did not
        grant through its own key (set-up and bulk onboarding); members go through
        :meth:`create_consent`."""
        if actor.kind != ActorKind.LOCAL:
            raise Forbidden("only the local administrator records consents for a subject")
        return self._grant(actor, items, granted_by=None)

    def _grant(
        self,
        actor: Actor,
        items: Sequence[tuple[str, ConsentRequest]],
        *,
        granted_by: str | None,
    ) -> list[Consent]:
        at = now()
        rows: list[dict[str, Any]] = []
        known_tenants: set[str] = set()
        for subject, request in items:
            if request.tenant not in known_tenants:
                find_tenant(self.engine, request.tenant)
                known_tenants.add(request.tenant)
            rows.append(self._row(subject, request, at, granted_by))
        if rows:
            with self.engine.begin() as con:
                db.insert_many(con, consents, rows)
                self.audit.append(
                    con,
                    Event(
                        "verification",
                        "consent.grant",
                        tenant=rows[0]["tenant_id"] if len(rows) == 1 else None,
                        refs={"count": len(rows), "consents": [r["id"] for r in rows[:100]]},
                        sealed={"consents": [[r[k] for k in _CONSENT_AUDIT] for r in rows]},
                    ),
                    actor,
                )
        for row in rows:
            log.info(
                "consent granted id=%s tenant=%s template=%s",
                row["id"],
                row["tenant_id"],
                row["template_id"],
            )
        return [_consent(row, at) for row in rows]

    def _row(
        self, subject: str, request: ConsentRequest, at: datetime, granted_by: str | None
    ) -> dict[str, Any]:
        """The ``consents`` row of a checked request."""
        if not _HEX64.match(subject):
            raise InvalidRequest("a subject reference is 64 lowercase hex digits")
        template = self.templates.get(request.template, request.version)
        commitment = request.claim_commitment
        if template.claim.type == ClaimType.NONE:
            if commitment is not None:
                raise InvalidRequest(
                    f"{template.id} takes no claim: send no claim_commitment",
                    field="claim_commitment",
                )
        elif commitment is None or not _HEX64.match(commitment):
            raise InvalidRequest(
                f"{template.id} takes a claim: claim_commitment is the 64 lowercase hex digits "
                "of SHA-256(salt || canonical JSON of the claim)",
                field="claim_commitment",
            )
        if not PURPOSE.match(request.purpose):
            raise InvalidRequest(
                "purpose is a lowercase code like credit_underwriting", field="purpose"
            )
        expires = request.expires_at
        if expires.tzinfo is None or expires.utcoffset() is None:
            raise InvalidRequest("expires_at needs a UTC offset", field="expires_at")
        if not at < expires <= at + timedelta(days=MAX_CONSENT_DAYS):
            raise InvalidRequest(
                f"expires_at lies in the next {MAX_CONSENT_DAYS} days", field="expires_at"
            )
        if not 1 <= request.max_uses <= MAX_CONSENT_USES:
            raise InvalidRequest(f"max_uses is between 1 and {MAX_CONSENT_USES}", field="max_uses")
        return {
            "id": new_id("cns"),
            "tenant_id": request.tenant,
            "subject_ref": subject,
            "granted_by": granted_by,
            "template_id": template.id,
            "template_version": template.version,
            "claim_commitment": commitment,
            "purpose": request.purpose,
            "max_uses": request.max_uses,
            "uses": 0,
            "expires_at": utc(expires),
            "revoked_at": None,
            "created_at": at,
        }

    def list_consents(self, actor: Actor, limit: int = 100) -> list[Consent]:
        """A subject: its consents, to every tenant. A verifier: those its tenant holds. Admins,
        auditors and the local administrator: all. Newest first."""
        query = select(consents).order_by(consents.c.created_at.desc(), consents.c.id).limit(limit)
        member = actor.member
        if member is not None and member.role == MemberRole.SUBJECT:
            query = query.where(consents.c.subject_ref == own_ref(actor, self.zone_secret))
        elif member is not None and member.role == MemberRole.VERIFIER:
            query = query.where(consents.c.tenant_id == member.tenant_id)
        else:
            actor.require(MemberRole.SUBJECT, MemberRole.VERIFIER, *ZONE_WIDE)
        at = now()
        with self.engine.connect() as con:
            return [_consent(r._mapping, at) for r in con.execute(query)]

    def revoke_consent(self, actor: Actor, consent_id: str) -> None:
        """The subject withdraws a consent; later requests under it are refused."""
        ref = own_ref(actor, self.zone_secret)
        with self.engine.begin() as con:
            row = con.execute(
                select(consents.c.id, consents.c.revoked_at).where(
                    consents.c.id == consent_id, consents.c.subject_ref == ref
                )
            ).first()
            if row is None:
                raise NotFound("no such consent")
            if row.revoked_at is None:
                con.execute(
                    update(consents).where(consents.c.id == consent_id).values(revoked_at=now())
                )
            self.audit.append(
                con, Event("verification", "consent.revoke", refs={"consent": consent_id}), actor
            )
        log.info("consent revoked id=%s", consent_id)
