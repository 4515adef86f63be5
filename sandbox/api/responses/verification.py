"""Templates, keys, consents, verification outcomes and signed receipts: the wire forms of the
results of :mod:`sandbox.verification`.

A member that a result holds as ``None`` is either sent as ``null`` or, for the fields in a
view's ``omit_none``, left out of the body, wherever the view is nested (:class:`View`). Times
are aware UTC datetimes, which go out as RFC 3339 with ``Z``; the signed receipt keeps its own
members and format exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from sandbox.api.responses.base import View
from sandbox.verification import answers, consents, issued, published, quota
from sandbox.verification.receipts import SignedReceipt


class ClaimSpec(View):
    mirrors = published.PublishedClaim
    omit_none = frozenset({"choices", "minimum", "maximum", "unit"})

    type: str
    choices: list[int] | None = None
    minimum: int | None = None
    maximum: int | None = None
    unit: str | None = None


class TemplateParameters(View):
    mirrors = published.PublishedParameters
    omit_none = frozenset({"tolerance", "months", "statuses"})

    tolerance: str | None = None
    months: int | None = None
    statuses: list[str] | None = None


class TemplateLimits(View):
    mirrors = published.PublishedLimits

    bits: str
    max_bits: str
    max_claims: int
    quota: int
    window_days: int


class Band(View):
    mirrors = published.PublishedBand

    id: str
    lower: int | None
    upper: int | None


class Template(View):
    mirrors: ClassVar[type | None] = published.PublishedTemplate
    omit_none = frozenset({"bands"})

    id: str
    version: int
    title: str
    description: str
    dataset: str
    subject: str
    kind: str
    attribute: str
    parameters: TemplateParameters
    claim: ClaimSpec
    outcome: str
    outcomes: list[str]
    limits: TemplateLimits
    bands: list[Band] | None = None


class TemplateDetail(Template):
    mirrors = published.TemplateDetail

    versions: list[int]


class TemplateList(View):
    templates: list[Template]


class PublicKey(View):
    mirrors = issued.PublishedKey

    key_id: str
    algorithm: str
    public_key: str
    status: str


class KeyDocument(View):
    keys: list[PublicKey]


class Consent(View):
    mirrors = consents.Consent

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


class ConsentList(View):
    consents: list[Consent]


class Receipt(View):
    """The signed receipt document, member for member
    (``sandbox.verification.receipts.RECEIPT_FIELDS`` and ``signature``): dropping or reformatting
    one would break its signature."""

    mirrors = SignedReceipt

    receipt_id: str
    template_id: str
    template_version: int
    subject_ref: str
    tenant_id: str
    purpose: str
    consent_id: str
    claim_commitment: str | None
    outcome: str
    dataset: str
    dataset_version: str
    issued_at: str
    key_id: str
    signature: str


class Verification(View):
    mirrors = answers.Answer

    outcome: str
    receipt: Receipt


class LineError(View):
    mirrors = answers.LineError

    code: str
    status: int
    detail: str


class BatchLine(View):
    mirrors = answers.BatchLine
    omit_none = frozenset({"outcome", "receipt", "error"})

    index: int
    outcome: str | None = None
    receipt: Receipt | None = None
    error: LineError | None = None


class BatchSummary(View):
    mirrors = answers.BatchSummary

    lines: int
    answered: int
    refused: int


class BatchResult(View):
    mirrors = answers.BatchAnswer

    results: list[BatchLine] = Field(description="One result per input line, in input order.")
    summary: BatchSummary


class ReceiptStatus(View):
    mirrors: ClassVar[type | None] = issued.ReceiptStatus
    omit_none = frozenset({"revoked_at", "reason"})

    receipt_id: str
    status: str
    revoked_at: datetime | None = None
    reason: str | None = None


class ReceiptView(ReceiptStatus):
    mirrors = issued.IssuedReceipt

    receipt: Receipt


class ReceiptList(View):
    receipts: list[ReceiptView]


class Quota(View):
    mirrors = quota.QuotaOverride

    tenant: str
    template: str
    quota: int
    window_days: int
