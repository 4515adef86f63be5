"""The decision: whether a line is answered, what it is charged, and under which receipt id.

Decided from request history only, never from the true value (docs/verification.md, "How a
request is decided"): :func:`read_context` reads what a decision needs — the consents a call
names, the subjects' answered verifications that can matter, the tenant's quota use and
overrides — and :func:`decide_line` decides one line at a time on it, recording in the
:class:`Context` what the answer transaction will write (the events that are the charges, the
consents' new use counts, claim-change alerts), so that later lines of the call see earlier ones.

Every consent failure is the same :class:`~sandbox.errors.ConsentRefused`, decided before the
leakage ledger is consulted; the leakage and quota rules are ``policies.leakage.check_request``.
The service runs the decision at the read and, when the state store changed since, again in the
answer transaction; this module never writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select

from policies.leakage import VerificationEvent, check_request
from policies.leakage import VerificationRequest as LedgerRequest
from policies.templates.model import Template
from sandbox.access.model import Member, new_id
from sandbox.clock import utc
from sandbox.errors import ConsentRefused
from sandbox.store.schema import receipts, verification_events
from sandbox.store.statements import Prepared
from sandbox.verification.consents import Held, held_consents
from sandbox.verification.lines import Line
from sandbox.verification.quota import quota_overrides, used_in_windows
from sandbox.verification.receipts import new_receipt_id
from sandbox.verification.requests import VerifyRequest
from sandbox.verification.rows import chunks

__all__ = ["Context", "decide_line", "read_context"]


@dataclass
class Context:
    """What a decision read, updated line by line, and what the answer transaction writes.
    Mutable on purpose: each decided line adds to it what the next line must see."""

    held: dict[str, Held]  # consent id -> consent
    history: dict[str, list[VerificationEvent]]  # subject ref -> answered verifications
    outcomes: dict[str, str]  # receipt id -> outcome, for the events that have one
    used: dict[str, int]  # template id -> quota units the tenant used in the window
    overrides: dict[str, int]  # template id -> the tenant's quota override
    uses: dict[str, int] = field(default_factory=dict)  # consent id -> uses so far
    events: list[dict[str, Any]] = field(default_factory=list)
    bumped: dict[str, int] = field(default_factory=dict)  # consent id -> new use count
    alerts: list[dict[str, Any]] = field(default_factory=list)


# Built once: building SQLAlchemy expressions per request costs more than running them.
_e = verification_events.c
_HISTORY = Prepared(
    select(verification_events, receipts.c.outcome)
    .select_from(verification_events.outerjoin(receipts, receipts.c.id == _e.receipt_id))
    .where(
        _e.subject_ref.in_(bindparam("refs", expanding=True)),
        or_(
            _e.at > bindparam("oldest"),
            _e.dataset.concat(":")
            .concat(_e.dataset_version)
            .in_(bindparam("current", expanding=True)),
        ),
    )
)


def read_context(con: Connection, member: Member, lines: list[Line], at: datetime) -> Context:
    """What a decision reads: the consents named, the subjects' history, and the tenant's
    quota use and overrides."""
    held = held_consents(con, {line.request.consent for line in lines if line.request}, at)
    history, outcomes = _history(con, lines, at)
    overrides = quota_overrides(con, member.tenant_id)
    templates: dict[str, Template] = {}
    for line in lines:
        if line.template is not None:
            templates[line.template.id] = line.template
    return Context(
        held=held,
        history=history,
        outcomes=outcomes,
        used=used_in_windows(con, member.tenant_id, templates, at, overrides),
        overrides=overrides,
        uses={c.id: c.uses for c in held.values()},
    )


def _history(
    con: Connection, live: list[Line], at: datetime
) -> tuple[dict[str, list[VerificationEvent]], dict[str, str]]:
    """The subjects' answered verifications that can matter: inside the longest window, or
    on the dataset versions asked about now (sticky repeats)."""
    if not live:
        return defaultdict(list), {}
    oldest = at - max(line.template.window for line in live if line.template)
    current = sorted(
        {f"{line.version.dataset}:{line.version.version}" for line in live if line.version}
    )
    history: dict[str, list[VerificationEvent]] = defaultdict(list)
    outcomes: dict[str, str] = {}
    refs = sorted({line.subject_ref for line in live})
    for chunk in chunks(refs):
        params = {"refs": list(chunk), "oldest": oldest, "current": current}
        for row in _HISTORY.execute(con, params):
            history[row.subject_ref].append(
                VerificationEvent(
                    subject_ref=row.subject_ref,
                    tenant_id=row.tenant_id,
                    template_id=row.template_id,
                    template_version=row.template_version,
                    attribute=row.attribute,
                    claim_commitment=row.claim_fingerprint,
                    dataset_version=row.dataset_version,
                    at=utc(row.at),
                    bits_charged=row.bits_charged,
                    sticky=row.sticky,
                    quota_units=row.quota_units,
                    receipt_id=row.receipt_id,
                )
            )
            if row.outcome is not None:
                outcomes[row.receipt_id] = row.outcome
    return history, outcomes


def decide_line(member: Member, line: Line, at: datetime, ctx: Context) -> None:
    """Decide ``line`` on ``ctx``: an error on the line (a refusal), its stored receipt (the
    tenant's own repeat, charged nothing), or a new receipt id with its charge in ``ctx``."""
    request, template, version = line.request, line.template, line.version
    assert request is not None and template is not None and version is not None
    consent = ctx.held.get(request.consent)
    if consent is None or not _covers(consent, member, line, request):
        line.error = ConsentRefused()
        return
    dataset_version = str(version.version)
    decision = check_request(
        template,
        LedgerRequest(
            subject_ref=line.subject_ref,
            tenant_id=member.tenant_id,
            claim_commitment=line.fingerprint,
            dataset_version=dataset_version,
            at=at,
        ),
        ctx.history[line.subject_ref],
        ctx.used[template.id],
        quota=ctx.overrides.get(template.id),
    )
    line.consent = consent
    if not decision.allowed:
        line.error = decision.error()
        if decision.alert:
            ctx.alerts.append(
                {
                    "id": new_id("alr"),
                    "kind": "claim_change",
                    "tenant_id": member.tenant_id,
                    "member_id": member.id,
                    "subject_ref": line.subject_ref,
                    "template_id": template.id,
                    "template_version": template.version,
                    "attribute": template.attribute,
                    "created_at": at,
                }
            )
        return
    reuse = decision.reuse
    if decision.sticky and decision.quota == 0 and reuse is not None:
        # The tenant asked exactly this before: its receipt again, nothing charged, no use
        # of the consent (a retry after a lost response is safe).
        line.receipt_id = reuse.receipt_id
        line.outcome = ctx.outcomes.get(reuse.receipt_id or "")
        line.stored = True
        return
    if ctx.uses[consent.id] >= consent.max_uses:
        line.error = ConsentRefused()
        return
    if decision.quota != 1:  # quota use counts stored events as one unit each
        raise RuntimeError("a stored answer takes exactly one unit of quota")
    ctx.uses[consent.id] += 1
    ctx.bumped[consent.id] = ctx.uses[consent.id]
    if line.fresh_id is None:
        line.fresh_id = new_receipt_id()
    line.receipt_id = line.fresh_id
    if reuse is not None:  # another tenant's sticky answer: same outcome, own receipt
        line.outcome = ctx.outcomes.get(reuse.receipt_id or "")
    ctx.history[line.subject_ref].append(
        VerificationEvent(
            subject_ref=line.subject_ref,
            tenant_id=member.tenant_id,
            template_id=template.id,
            template_version=template.version,
            attribute=template.attribute,
            claim_commitment=line.fingerprint,
            dataset_version=dataset_version,
            at=at,
            bits_charged=decision.bits,
            sticky=decision.sticky,
            quota_units=decision.quota,
            receipt_id=line.receipt_id,
        )
    )
    ctx.used[template.id] += decision.quota
    if line.outcome is not None:
        ctx.outcomes[line.receipt_id] = line.outcome
    ctx.events.append(
        {
            "receipt_id": line.receipt_id,
            "subject_ref": line.subject_ref,
            "tenant_id": member.tenant_id,
            "member_id": member.id,
            "consent_id": consent.id,
            "template_id": template.id,
            "template_version": template.version,
            "attribute": template.attribute,
            "claim_fingerprint": line.fingerprint,
            "dataset": version.dataset,
            "dataset_version": dataset_version,
            "at": at,
            "bits_charged": decision.bits,
            "quota_units": decision.quota,
            "sticky": decision.sticky,
        }
    )


def _covers(consent: Held, member: Member, line: Line, request: VerifyRequest) -> bool:
    """Every condition of a consent except its use count (checked once the answer is new)."""
    template = line.template
    assert template is not None
    return (
        consent.tenant_id == member.tenant_id
        and consent.subject_ref == line.subject_ref
        and consent.template_id == template.id
        and consent.template_version == template.version
        and consent.purpose == request.purpose
        and consent.live
        and consent.claim_commitment == line.commitment
    )
