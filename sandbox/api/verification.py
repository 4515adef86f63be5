"""Verification over HTTP: templates, consents, verifications (single and batch), receipts and
the public keys. Logic in :mod:`sandbox.verification`; see docs/verification.md."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sandbox.access.model import MemberRole
from sandbox.api.deps import MemberDep, ServicesDep
from sandbox.api.responses import verification as views
from sandbox.api.responses.base import ViewRoute
from sandbox.errors import InvalidRequest, PayloadTooLarge, VeilError
from sandbox.verification.consents import MAX_CONSENT_USES
from sandbox.verification.issued import RevocationReason
from sandbox.verification.requests import (
    MAX_BATCH_LINES,
    ConsentRequest,
    VerifyRequest,
    parse_csv,
    parse_request,
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


# -- templates and keys --------------------------------------------------------------------------


@router.get("/templates", response_model=views.TemplateList)
def list_templates(member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    """Every published template version: question, claim, outcomes, limits."""
    return {"templates": services.templates.list_templates()}


@router.get("/templates/{template_id}", response_model=views.TemplateDetail)
def get_template(
    template_id: str,
    member: MemberDep,
    services: ServicesDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """One template version (default the latest), with the list of its versions."""
    return services.templates.template(template_id, version)


@router.get("/keys", response_model=views.KeyDocument)
def public_keys(services: ServicesDep) -> dict[str, Any]:
    """The receipt signing keys, current and retired: public, no key needed."""
    return services.receipts.keys_document()


# -- consents ------------------------------------------------------------------------------------


@router.post("/consents", status_code=201, response_model=views.Consent)
def create_consent(body: ConsentBody, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    """A subject authorises one tenant to verify one claim with one template version."""
    return services.consents.create_consent(member, body.request())


@router.get("/consents", response_model=views.ConsentList)
def list_consents(member: MemberDep, services: ServicesDep, limit: Limit = 100) -> dict[str, Any]:
    """A subject's own consents; a verifier's tenant's; everything for admins and auditors."""
    return {"consents": services.consents.list_consents(member, limit)}


@router.delete("/consents/{consent_id}", status_code=204)
def revoke_consent(consent_id: str, member: MemberDep, services: ServicesDep) -> None:
    """The subject withdraws a consent."""
    services.consents.revoke_consent(member, consent_id)


# -- verifications -------------------------------------------------------------------------------


@router.post("/verifications", response_model=views.Verification)
def verify(body: VerificationBody, member: MemberDep, services: ServicesDep) -> Response:
    """One verification: the outcome and its signed receipt, never a value."""
    text = services.verification.verify_json(member, body.request())
    return Response(text, media_type="application/json")


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


@router.post(
    "/verifications/batch",
    openapi_extra=_BATCH_DOC,
    responses={200: {"model": views.BatchResult}},
)
async def verify_batch(request: Request, member: MemberDep, services: ServicesDep) -> Response:
    """Up to 50,000 verifications (JSON ``{"requests": [...]}`` or CSV with a header line): one
    result per line in input order, an outcome and receipt or a per-line error."""
    member.require(MemberRole.VERIFIER)  # before reading a large body
    body = await _body(request)
    content_type = request.headers.get("content-type", "application/json")

    def answer() -> str:  # parsing a large body too is work for a thread, not the event loop
        lines = _batch_lines(body, content_type)
        return services.verification.verify_batch_json(member, lines)

    return Response(await run_in_threadpool(answer), media_type="application/json")


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


def _batch_lines(body: bytes, content_type: str) -> list[VerifyRequest | VeilError]:
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("a batch body is UTF-8") from None
    if media == "text/csv":
        return parse_csv(text)
    if media not in ("application/json", ""):
        raise InvalidRequest("send application/json or text/csv")
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"requests"}
        or not isinstance(doc["requests"], list)
    ):
        raise InvalidRequest('a JSON batch is {"requests": [...]}', field="requests")
    if len(doc["requests"]) > MAX_BATCH_LINES:
        raise InvalidRequest(f"a batch has at most {MAX_BATCH_LINES} lines", field="requests")
    lines: list[VerifyRequest | VeilError] = []
    for item in doc["requests"]:
        try:
            lines.append(parse_request(item))
        except VeilError as exc:
            lines.append(exc)
    return lines


# -- receipts ------------------------------------------------------------------------------------


@router.get("/receipts", response_model=views.ReceiptList)
def list_receipts(member: MemberDep, services: ServicesDep, limit: Limit = 100) -> dict[str, Any]:
    """A subject: every receipt about it, whoever asked. A verifier: its tenant's."""
    return {"receipts": services.receipts.list_receipts(member, limit)}


@router.get("/receipts/{receipt_id}", response_model=views.ReceiptView)
def get_receipt(receipt_id: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    """The signed receipt and its status."""
    return services.receipts.get_receipt(member, receipt_id)


@router.get("/receipts/{receipt_id}/status", response_model=views.ReceiptStatus)
def receipt_status(receipt_id: str, services: ServicesDep) -> dict[str, Any]:
    """``valid`` or ``revoked`` (with the reason): public, for anyone holding the receipt."""
    return services.receipts.receipt_status(receipt_id)


@router.post("/receipts/{receipt_id}/revoke", response_model=views.ReceiptStatus)
def revoke_receipt(
    receipt_id: str, body: RevokeBody, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    """Withdraw a receipt, e.g. after a data correction (admins and operators)."""
    return services.receipts.revoke_receipt(member, receipt_id, RevocationReason(body.reason))


# -- quotas --------------------------------------------------------------------------------------


@router.put("/tenants/{tenant}/verification-quotas/{template_id}", response_model=views.Quota)
def set_quota(
    tenant: str, template_id: str, body: QuotaBody, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    """Override a template's per-tenant quota for one tenant (admins)."""
    return services.verification_quotas.set_quota(member, tenant, template_id, body.quota)
