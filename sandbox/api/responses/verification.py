"""Templates, keys, consents, verification outcomes and signed receipts."""

from __future__ import annotations

from pydantic import Field

from sandbox.api.responses.base import View


class ClaimSpec(View):
    type: str
    choices: list[int] | None = None
    minimum: int | None = None
    maximum: int | None = None
    unit: str | None = None


class TemplateParameters(View):
    tolerance: str | None = None
    months: int | None = None
    statuses: list[str] | None = None


class TemplateLimits(View):
    bits: str
    max_bits: str
    max_claims: int
    quota: int
    window_days: int


class Band(View):
    id: str
    lower: int | None
    upper: int | None


class Template(View):
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
    versions: list[int]


class TemplateList(View):
    templates: list[Template]


class PublicKey(View):
    key_id: str
    algorithm: str
    public_key: str
    status: str


class KeyDocument(View):
    keys: list[PublicKey]


class Consent(View):
    id: str
    tenant: str
    subject_ref: str
    template: str
    version: int
    claim_commitment: str | None
    purpose: str
    max_uses: int
    uses: int
    expires_at: str
    revoked_at: str | None
    created_at: str
    state: str


class ConsentList(View):
    consents: list[Consent]


class Receipt(View):
    """The signed receipt document, member for member (``sandbox.receipts.RECEIPT_FIELDS`` and
    ``signature``): dropping or reformatting one would break its signature."""

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
    outcome: str
    receipt: Receipt


class LineError(View):
    code: str
    status: int
    detail: str


class BatchLine(View):
    index: int
    outcome: str | None = None
    receipt: Receipt | None = None
    error: LineError | None = None


class BatchSummary(View):
    lines: int
    answered: int
    refused: int


class BatchResult(View):
    results: list[BatchLine] = Field(description="One result per input line, in input order.")
    summary: BatchSummary


class ReceiptStatus(View):
    receipt_id: str
    status: str
    revoked_at: str | None = None
    reason: str | None = None


class ReceiptView(ReceiptStatus):
    receipt: Receipt


class ReceiptList(View):
    receipts: list[ReceiptView]


class Quota(View):
    tenant: str
    template: str
    quota: int
    window_days: int
