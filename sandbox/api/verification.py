"""Verification over HTTP: templates, consents, verifications (single and batch), receipts and
the public keys. Logic in :mod:`sandbox.verification`; see docs/verification.md.

Every answer goes out through its response model (``sandbox/api/responses/verification.py``).
The verifications, single and batch, are serialised by the model's compiled serializer straight
to JSON (:func:`_send`): the route's response model is the one definition of the body, without
FastAPI's second pass over a large batch.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sandbox.access.model import MemberRole
from sandbox.api.deps import ActorDep, Services, ServicesDep
from sandbox.api.responses import verification as views
from sandbox.api.responses.base import View, ViewRoute
from sandbox.errors import PayloadTooLarge, VeilError
from sandbox.verification.answers import BatchAnswer
from sandbox.verification.consents import MAX_CONSENT_USES
from sandbox.verification.issued import RevocationReason
from sandbox.verification.requests import (
    MAX_BATCH_LINES,
    ConsentRequest,
    VerifyRequest,
    parse_batch,
)

router = APIRouter(prefix="/v1", tags=["verification"], route_class=ViewRoute)

MAX_BATCH_BYTES = 32 * 2**20
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")]


class ConsentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(max_length=64, description="The tenant (e.g. a bank) allowed to verify.")
    template: str = Field(max_length=64, description="Template id.")
    version: int | None = Field(
        None, ge=1, strict=True, description="Template version; default the latest (then fixed)."
    )
    claim_commitment: str | None = Field(
        None,
        min_length=64,
        max_length=64,
        description="Hex SHA-256(salt || canonical JSON of the claim); the subject keeps the "
        "salt and hands it to the tenant. Omit for templates without a claim.",
    )
    purpose: str = Field(max_length=64, description="Purpose code, e.g. credit_underwriting.")
    expires_at: datetime = Field(description="RFC 3339 with an offset, within 366 days.")
    max_uses: int = Field(1, ge=1, le=MAX_CONSENT_USES, strict=True)

    def request(self) -> ConsentRequest:
        return ConsentRequest(
            tenant=self.tenant,
            template=self.template,
            version=self.version,
            claim_commitment=self.claim_commitment,
            purpose=self.purpose,
            expires_at=self.expires_at,
            max_uses=self.max_uses,
        )


class VerificationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(max_length=64, description="Template id.")
    version: int | None = Field(None, ge=1, strict=True, description="Default: the latest.")
    subject: str = Field(max_length=64, description="The subject's id (credit code).")
    claim: int | None = Field(
        None, strict=True, description="The claimed value, for templates that take one."
    )
    salt: str | None = Field(
        None, max_length=128, description="The consent's salt, hex (16 to 64 bytes)."
    )
    consent: str = Field(max_length=64, description="The consent id the subject gave you.")
    purpose: str = Field(max_length=64, description="Must be the consent's purpose code.")

    def request(self) -> VerifyRequest:
        return VerifyRequest(
            template=self.template,
            version=self.version,
            subject=self.subject,
            claim=self.claim,
            salt=self.salt,
            consent=self.consent,
            purpose=self.purpose,
        )


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Literal["data_correction", "issued_in_error", "key_compromise", "superseded"]


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota: int = Field(ge=1, le=10**9, strict=True, description="Answers per window.")


def _send(view: View) -> Response:
    """``view`` as the body, serialised by its compiled serializer (members in ``omit_none``
    left out when ``None``)."""
    return Response(view.model_dump_json(exclude_unset=True), media_type="application/json")


# -- templates and keys --------------------------------------------------------------------------


@router.get("/templates", response_model=views.TemplateList)
def list_templates(actor: ActorDep, services: ServicesDep) -> views.TemplateList:
    """Every published template version: question, claim, outcomes, limits."""
    return views.TemplateList.model_validate({"templates": services.templates.list_templates()})


@router.get("/templates/{template_id}", response_model=views.TemplateDetail)
def get_template(
    template_id: str,
    actor: ActorDep,
    services: ServicesDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> views.TemplateDetail:
    """One template version (default the latest), with the list of its versions."""
    return views.TemplateDetail.of(services.templates.template(template_id, version))


@router.get("/keys", response_model=views.KeyDocument)
def public_keys(services: ServicesDep) -> views.KeyDocument:
    """The receipt signing keys, current and retired: public, no key needed."""
    return views.KeyDocument.model_validate({"keys": services.receipts.public_keys()})


# -- consents ------------------------------------------------------------------------------------


@router.post("/consents", status_code=201, response_model=views.Consent)
def create_consent(body: ConsentBody, actor: ActorDep, services: ServicesDep) -> views.Consent:
    """A subject authorises one tenant to verify one claim with one template version."""
    return views.Consent.of(services.consents.create_consent(actor, body.request()))


@router.get("/consents", response_model=views.ConsentList)
def list_consents(actor: ActorDep, services: ServicesDep, limit: Limit = 100) -> views.ConsentList:
    """A subject's own consents; a verifier's tenant's; everything for admins and auditors."""
    found = services.consents.list_consents(actor, limit)
    return views.ConsentList.model_validate({"consents": found})


@router.delete("/consents/{consent_id}", status_code=204)
def revoke_consent(consent_id: str, actor: ActorDep, services: ServicesDep) -> None:
    """The subject withdraws a consent."""
    services.consents.revoke_consent(actor, consent_id)


# -- verifications -------------------------------------------------------------------------------


@router.post("/verifications", response_model=views.Verification)
def verify(body: VerificationBody, actor: ActorDep, services: ServicesDep) -> Response:
    """One verification: the outcome and its signed receipt, never a value."""
    try:
        answer = services.verification.verify(actor, body.request())
    except VeilError:
        _count(services, body.template, REFUSED)  # the problem's code is counted by the edge
        raise
    _count(services, answer.receipt.template_id, answer.outcome)
    return _send(views.Verification.of(answer))


REFUSED = "refused"  # the outcome label of a verification that got no outcome


def _count(services: Services, template: str, outcome: str, count: int = 1) -> None:
    """Count verifications for the metrics: a template id only if it is published (what a
    caller wrote in its place is never a label)."""
    if services.metrics is not None:
        known = template if template in services.templates.templates.latest else "unknown"
        services.metrics.verified(known, outcome, count)


_BATCH_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "requests": {
                            "type": "array",
                            "items": VerificationBody.model_json_schema(),
                            "maxItems": MAX_BATCH_LINES,
                        }
                    },
                    "required": ["requests"],
                }
            },
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "Header line: template,version,subject,claim,salt,consent,"
                    "purpose (version, claim, salt optional); one request per line.",
                }
            },
        },
    }
}


@router.post("/verifications/batch", openapi_extra=_BATCH_DOC, response_model=views.BatchResult)
async def verify_batch(request: Request, actor: ActorDep, services: ServicesDep) -> Response:
    """Up to 50,000 verifications (JSON ``{"requests": [...]}`` or CSV with a header line): one
    result per line in input order, an outcome and receipt or a per-line error."""
    actor.require_member(MemberRole.VERIFIER)  # before reading a large body
    body = await _body(request)
    content_type = request.headers.get("content-type", "application/json")

    def answer() -> Response:  # parsing and serialising a large batch is work for a thread
        # (the request lines are let go before the answer is turned into its view)
        result = services.verification.verify_batch(actor, parse_batch(body, content_type))
        _count_batch(services, result)
        return _send(views.BatchResult.of(result))

    return await run_in_threadpool(answer)


def _count_batch(services: Services, result: BatchAnswer) -> None:
    """A batch's lines for the metrics: answers by template and outcome, refused lines by
    their code (their template is not trusted: only what was answered is named)."""
    if services.metrics is None:
        return
    outcomes: Counter[tuple[str, str]] = Counter()
    refusals: Counter[str] = Counter()
    for line in result.results:
        if line.receipt is not None and line.outcome is not None:
            outcomes[(line.receipt.template_id, line.outcome)] += 1
        elif line.error is not None:
            refusals[line.error.code] += 1
    for (template, outcome), count in outcomes.items():
        _count(services, template, outcome, count)
    for code, count in refusals.items():
        services.metrics.refused(code, count)
        services.metrics.verified("unknown", REFUSED, count)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
        raise PayloadTooLarge(f"a batch body has at most {MAX_BATCH_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            raise PayloadTooLarge(f"a batch body has at most {MAX_BATCH_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# -- receipts ------------------------------------------------------------------------------------


@router.get("/receipts", response_model=views.ReceiptList)
def list_receipts(actor: ActorDep, services: ServicesDep, limit: Limit = 100) -> views.ReceiptList:
    """A subject: every receipt about it, whoever asked. A verifier: its tenant's."""
    found = services.receipts.list_receipts(actor, limit)
    return views.ReceiptList.model_validate({"receipts": found})


@router.get("/receipts/{receipt_id}", response_model=views.ReceiptView)
def get_receipt(receipt_id: str, actor: ActorDep, services: ServicesDep) -> views.ReceiptView:
    """The signed receipt and its status."""
    return views.ReceiptView.of(services.receipts.get_receipt(actor, receipt_id))


@router.get("/receipts/{receipt_id}/status", response_model=views.ReceiptStatus)
def receipt_status(receipt_id: str, services: ServicesDep) -> views.ReceiptStatus:
    """``valid`` or ``revoked`` (with the reason): public, for anyone holding the receipt."""
    return views.ReceiptStatus.of(services.receipts.receipt_status(receipt_id))


@router.post("/receipts/{receipt_id}/revoke", response_model=views.ReceiptStatus)
def revoke_receipt(
    receipt_id: str, body: RevokeBody, actor: ActorDep, services: ServicesDep
) -> views.ReceiptStatus:
    """Withdraw a receipt, e.g. after a data correction (admins and operators)."""
    reason = RevocationReason(body.reason)
    return views.ReceiptStatus.of(services.receipts.revoke_receipt(actor, receipt_id, reason))


# -- quotas --------------------------------------------------------------------------------------


@router.put("/tenants/{tenant}/verification-quotas/{template_id}", response_model=views.Quota)
def set_quota(
    tenant: str, template_id: str, body: QuotaBody, actor: ActorDep, services: ServicesDep
) -> views.Quota:
    """Override a template's per-tenant quota for one tenant (admins)."""
    found = services.verification_quotas.set_quota(actor, tenant, template_id, body.quota)
    return views.Quota.of(found)
