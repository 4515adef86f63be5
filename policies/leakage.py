"""The per-subject leakage ledger's decision logic: may this verification be answered?

Every answer narrows a hidden value a little: about one bit for a yes/no question, log2(#bands)
for a band. Repeated questions about one subject — from one lender or from several that collude —
add up to the value itself (a binary search). So Veil keeps, per subject and per *attribute* (the
hidden value a template narrows, e.g. ``revenue_12m``), the bits charged by every answer to every
tenant, and refuses an answer that would take the sum over the template's cap inside its window.

Decisions here are taken from **request history only**: the subject's earlier answered
verifications and the tenant's quota use. They never see a true value, a fact or an outcome, so
a refusal reveals nothing about the data beyond what the requests themselves reveal ("simulatable"
refusals), and the cost of an answer is fixed before the query runs.

Checks, in order (the first that fails is the reason):

1. sticky repeat — the same subject, template id and version, claim commitment and dataset
   version was answered before: allowed with 0 bits; the earlier answer is reused. Free for the
   tenant that asked it; another tenant still spends one unit of its quota.
2. ``claim_change`` — the request's claim differs from the claims already answered on this
   subject and attribute in the window, and the template allows no more distinct claims: the
   binary-search signature. Refused, and flagged as an alert.
3. ``leakage_cap`` — the bits already charged on this subject and attribute in the window (across
   ALL tenants), plus this answer's bits, would exceed the template's cap.
4. ``tenant_quota`` — the tenant has used its quota of answers for this template in the window.

Bits are integer millibits (:data:`policies.templates.model.MILLIBITS_PER_BIT`), rounded up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from policies.errors import (
    ClaimChangeRefused,
    LeakageCapReached,
    Refusal,
    TenantQuotaExceeded,
    VerificationRefused,
)
from policies.templates.model import Template

__all__ = [
    "LeakageDecision",
    "VerificationEvent",
    "VerificationRequest",
    "check_request",
    "count_quota",
    "record",
    "window_start",
]


@dataclass(frozen=True)
class VerificationEvent:
    """One answered verification, as the leakage ledger stores it (never the outcome's facts).

    ``claim_commitment`` identifies the claim *value* deterministically within the zone, so that
    two requests with the same claim compare equal even when their consents used different salts:
    the runtime passes a zone-keyed fingerprint
    (``sandbox.verification.receipts.claim_fingerprint``), not the per-consent salted commitment
    printed on receipts. ``None`` for templates without a claim.
    ``bits_charged`` is in millibits; ``sticky`` marks a repeat answered at no bit cost;
    ``quota_units`` is what the answer took from the tenant's quota (0 for its own repeats).
    """

    subject_ref: str
    tenant_id: str
    template_id: str
    template_version: int
    attribute: str
    claim_commitment: str | None
    dataset_version: str
    at: datetime
    bits_charged: int
    sticky: bool = False
    quota_units: int = 1
    receipt_id: str | None = None

    def __post_init__(self) -> None:
        _aware(self.at)
        if self.bits_charged < 0 or self.quota_units not in (0, 1):
            raise ValueError("bits_charged must not be negative; quota_units is 0 or 1")


@dataclass(frozen=True)
class VerificationRequest:
    """What is known before anything runs: who asks what about whom, with which claim."""

    subject_ref: str
    tenant_id: str
    claim_commitment: str | None
    dataset_version: str
    at: datetime

    def __post_init__(self) -> None:
        _aware(self.at)


@dataclass(frozen=True)
class LeakageDecision:
    allowed: bool
    reason: Refusal | None  # None when allowed
    bits: int  # millibits to charge to the subject's attribute (0 when refused or sticky)
    quota: int  # quota units to charge to the tenant (0 or 1; 0 when refused)
    sticky: bool  # a repeat: reuse ``reuse``'s outcome
    reuse: VerificationEvent | None  # the earlier answer (same tenant: reuse its receipt too)
    alert: bool  # raise a security alert (claim change: the binary-search signature)
    spent_bits: int  # millibits already charged on the attribute in the window
    cap_bits: int  # the template's cap in millibits
    distinct_claims: int  # distinct claims already answered on the attribute in the window
    window_start: datetime

    def error(self) -> VerificationRefused:
        """The typed error to raise for a refusal (one per reason code)."""
        if self.reason is None:
            raise ValueError("the request was allowed")
        return _ERRORS[self.reason]()


_ERRORS: dict[Refusal, type[VerificationRefused]] = {
    Refusal.LEAKAGE_CAP: LeakageCapReached,
    Refusal.TENANT_QUOTA: TenantQuotaExceeded,
    Refusal.CLAIM_CHANGE: ClaimChangeRefused,
}


def _aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("times must be timezone-aware")


def window_start(template: Template, at: datetime) -> datetime:
    """Events strictly after this instant are inside the template's window ending at ``at``."""
    _aware(at)
    return at - template.window


def count_quota(
    events: Iterable[VerificationEvent], tenant_id: str, template_id: str, since: datetime
) -> int:
    """Quota units a tenant used on a template (all versions) after ``since``: what a store
    computes with one ``SUM(quota_units)`` over its events."""
    return sum(
        e.quota_units
        for e in events
        if e.tenant_id == tenant_id and e.template_id == template_id and e.at > since
    )


def check_request(
    template: Template,
    request: VerificationRequest,
    history: Sequence[VerificationEvent],
    tenant_used: int,
    *,
    quota: int | None = None,
) -> LeakageDecision:
    """Decide a request from history alone.

    ``history``: the subject's answered verifications (at least those after
    :func:`window_start`; events of other subjects are ignored). ``tenant_used``: the quota units
    the tenant used on this template id in the window (:func:`count_quota`). ``quota`` overrides
    the template's per-tenant quota (e.g. from the tenant's grant).
    """
    start = window_start(template, request.at)
    mine = [e for e in history if e.subject_ref == request.subject_ref]
    in_window = [e for e in mine if e.at > start and e.attribute == template.attribute]
    spent = sum(e.bits_charged for e in in_window)
    claims = {e.claim_commitment for e in in_window if e.claim_commitment is not None}
    limit = template.quota if quota is None else quota

    def decision(
        reason: Refusal | None,
        *,
        bits: int = 0,
        units: int = 0,
        reuse: VerificationEvent | None = None,
    ) -> LeakageDecision:
        return LeakageDecision(
            allowed=reason is None,
            reason=reason,
            bits=bits if reason is None else 0,
            quota=units if reason is None else 0,
            sticky=reuse is not None and reason is None,
            reuse=reuse if reason is None else None,
            alert=reason == Refusal.CLAIM_CHANGE,
            spent_bits=spent,
            cap_bits=template.max_bits,
            distinct_claims=len(claims),
            window_start=start,
        )

    # 1. Sticky repeat: the same question on the same data was answered; nothing new leaks.
    repeats = sorted(
        (
            e
            for e in mine
            if e.template_id == template.id
            and e.template_version == template.version
            and e.claim_commitment == request.claim_commitment
            and e.dataset_version == request.dataset_version
        ),
        key=lambda e: e.at,
    )
    if repeats:
        own = [e for e in repeats if e.tenant_id == request.tenant_id]
        if own:
            return decision(None, reuse=own[0])
        if tenant_used + 1 > limit:
            return decision(Refusal.TENANT_QUOTA)
        return decision(None, units=1, reuse=repeats[0])

    # 2. Claim change: a new claim beyond the number of distinct claims the template allows.
    if (
        request.claim_commitment is not None
        and request.claim_commitment not in claims
        and len(claims) >= template.max_claims
    ):
        return decision(Refusal.CLAIM_CHANGE)

    # 3. The per-subject, per-attribute cap across all tenants.
    if spent + template.bits > template.max_bits:
        return decision(Refusal.LEAKAGE_CAP)

    # 4. The tenant's quota on this template.
    if tenant_used + 1 > limit:
        return decision(Refusal.TENANT_QUOTA)
    return decision(None, bits=template.bits, units=1)


def record(
    template: Template,
    request: VerificationRequest,
    decision: LeakageDecision,
    receipt_id: str | None = None,
) -> VerificationEvent:
    """The event to append to the ledger for an allowed request (in the charge transaction)."""
    if not decision.allowed:
        raise ValueError("only allowed requests are recorded as answers")
    return VerificationEvent(
        subject_ref=request.subject_ref,
        tenant_id=request.tenant_id,
        template_id=template.id,
        template_version=template.version,
        attribute=template.attribute,
        claim_commitment=request.claim_commitment,
        dataset_version=request.dataset_version,
        at=request.at,
        bits_charged=decision.bits,
        sticky=decision.sticky,
        quota_units=decision.quota,
        receipt_id=receipt_id,
    )
