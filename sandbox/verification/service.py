"""Verification (核验): consents, the verification flow, batches, receipts and their status.

The order of a verification is the point of this module (docs/verification.md):

1. the request's shape: template version, claim (``check_claim``), salt, purpose — public
   rules, answered with their own codes;
2. the **consent**: it exists, is the caller's tenant's, for this template id and version, this
   subject and purpose, is not expired or revoked, has uses left, and ``commit(claim, salt)``
   equals its claim commitment. Every failure — and an unknown subject, which simply has no
   consent — is the same :class:`~sandbox.errors.ConsentRefused`: one code, status, detail, and
   one latency envelope (a decoy template query runs on the refusal path; optional padding);
3. the **leakage decision** from request history only (``policies.leakage.check_request``),
   read in one transaction that writes nothing: the charge (bits, quota) is fixed before the
   executor runs; claim changes are refused and raise an alert;
4. the template query in the locked-down executor → ``decide`` → a :class:`Receipt` signed
   with the zone's current key;
5. the **answer transaction**, serialised per subject, the call's only commit: if anything was
   committed since the read, the decision is taken again under the lock (a line can only turn
   into a repeat or a refusal); then the answer's event (the charge), the consent's use, any
   alert, the receipt and the audit entry are written together. Only then does the answer
   ``{outcome, receipt}`` go out, so no outcome leaves uncharged; a query that failed after its
   line was allowed is charged all the same.

A batch runs the same decisions line by line (lines see the lines before them), then one engine
query per template version for all its lines, signs the receipts (in a signer pool when large)
and writes everything in one answer transaction.

No value ever leaves: the facts stay here, claims are stored only as a zone-keyed fingerprint
(ledger) and a salted commitment (consents, receipts), and logs carry ids and codes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Insert

from policies.leakage import VerificationEvent, check_request
from policies.leakage import VerificationRequest as LedgerRequest
from policies.templates.batch import template_batch_query
from policies.templates.claims import Claim, check_claim
from policies.templates.decide import decide
from policies.templates.loader import TemplateSet
from policies.templates.model import ClaimType, Template
from policies.templates.sql import template_query
from sandbox import catalog
from sandbox.access.model import SUBJECT_ID, ZONE_WIDE, Member, MemberRole, new_id
from sandbox.access.tenants import get_tenant
from sandbox.audit import log as audit
from sandbox.canonical import b64url_encode
from sandbox.clock import now
from sandbox.engine.executor import Executor
from sandbox.errors import (
    ConsentRefused,
    ExecutionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    VeilError,
)
from sandbox.keys.signing import KeyRing, public_key_document
from sandbox.store import db
from sandbox.store.schema import (
    alerts,
    consents,
    datasets,
    receipts,
    verification_events,
    verification_quota_use,
    verification_quotas,
)
from sandbox.store.statements import Prepared
from sandbox.vault.decrypted import Vault, leased
from sandbox.verification.facts import ABSENT_SUBJECT, FactsIndex
from sandbox.verification.receipts import (
    MIN_SALT_BYTES,
    Receipt,
    claim_fingerprint,
    commit,
    format_time,
    new_receipt_id,
    subject_ref,
)
from sandbox.verification.signer import CHUNK, Signer

__all__ = [
    "MAX_BATCH_LINES",
    "Consent",
    "ConsentRequest",
    "RevocationReason",
    "VerificationService",
    "VerifyRequest",
    "parse_csv",
    "parse_request",
]

log = logging.getLogger("veil.verification")

MAX_BATCH_LINES: Final = 50_000
MAX_CONSENT_DAYS: Final = 366
MAX_CONSENT_USES: Final = 100_000
MAX_SALT_BYTES: Final = 64
PURPOSE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
OBJECT_ID: Final = re.compile(r"^[A-Za-z0-9_]{1,64}$")
DECOY_SUBJECT: Final = ABSENT_SUBJECT  # never a subject: the refusal path's decoy reads nothing
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_LOCK_NAMESPACE: Final = 7_370_001  # PostgreSQL advisory locks: (namespace, key)
_SUBJECT_BUCKETS: Final = 1024
_RFC3339: Final = "%Y-%m-%dT%H:%M:%S%z"
_IN_CHUNK: Final = 900  # bound parameters per IN (...) list (SQLite allows 32766)
# One encoder each, built once (json.dumps with options builds a new encoder on every call).
_SIGNING_JSON: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_READ_ATTEMPTS: Final = 3  # reads of a call whose dataset version was not cached yet
_CACHED_VERSIONS: Final = 256  # dataset versions kept parsed (they never change)


class RevocationReason(StrEnum):
    """Why a receipt was revoked: a fixed set, so the status endpoint never carries free text."""

    DATA_CORRECTION = "data_correction"
    ISSUED_IN_ERROR = "issued_in_error"
    KEY_COMPROMISE = "key_compromise"
    SUPERSEDED = "superseded"


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyRequest:
    """One verification request: which template (version, or the latest), about whom, with which
    claim and salt (shared by the subject through the consent), under which consent, and why."""

    template: str
    subject: str
    consent: str
    purpose: str
    version: int | None = None
    claim: object = None
    salt: str | None = None  # hex, at least 16 bytes


@dataclass(frozen=True)
class ConsentRequest:
    tenant: str
    template: str
    purpose: str
    expires_at: datetime
    version: int | None = None
    claim_commitment: str | None = None
    max_uses: int = 1


_LINE_FIELDS: Final = ("template", "version", "subject", "claim", "salt", "consent", "purpose")
# What a consent's audit entry seals, per consent (docs/audit.md).
_CONSENT_AUDIT: Final = (
    "id",
    "tenant_id",
    "subject_ref",
    "template_id",
    "template_version",
    "purpose",
)


def parse_request(doc: object) -> VerifyRequest:
    """A request line from a JSON object (a batch line or the single call's body)."""
    if not isinstance(doc, Mapping):
        raise InvalidRequest("each request is a JSON object")
    for name in doc:
        if name not in _LINE_FIELDS:
            shown = name if isinstance(name, str) and OBJECT_ID.match(name) else "?"
            raise InvalidRequest(f"unknown field {shown!r}", field=shown)
    return VerifyRequest(
        template=_text(doc, "template"),
        version=_optional_int(doc.get("version"), "version"),
        subject=_text(doc, "subject"),
        claim=doc.get("claim"),
        salt=_optional_text(doc.get("salt"), "salt"),
        consent=_text(doc, "consent"),
        purpose=_text(doc, "purpose"),
    )


def parse_csv(body: str) -> list[VerifyRequest | VeilError]:
    """Request lines from CSV text with a header line naming the columns (any order):
    ``template, version, subject, claim, salt, consent, purpose``; ``version``, ``claim`` and
    ``salt`` may be empty or left out. A bad line is an error in its place, not a failed batch."""
    reader = csv.reader(io.StringIO(body, newline=""))
    header = next(reader, None)
    if header is None:
        raise InvalidRequest("a CSV batch starts with a header line")
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in _LINE_FIELDS]
    if unknown or len(set(names)) != len(names):
        raise InvalidRequest(f"CSV columns are {', '.join(_LINE_FIELDS)}, each at most once")
    missing = {"template", "subject", "consent", "purpose"} - set(names)
    if missing:
        raise InvalidRequest(f"the CSV header lacks {', '.join(sorted(missing))}")
    out: list[VerifyRequest | VeilError] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(out) >= MAX_BATCH_LINES:
            raise InvalidRequest(f"a batch has at most {MAX_BATCH_LINES} lines")
        if len(row) != len(names):
            out.append(InvalidRequest(f"a line has {len(names)} fields"))
            continue
        doc: dict[str, object] = {}
        try:
            for name, value in zip(names, row, strict=True):
                value = value.strip()
                if name in ("version", "claim"):
                    doc[name] = _csv_int(value, name)
                elif name == "salt":
                    doc[name] = value or None
                else:
                    doc[name] = value
            out.append(parse_request(doc))
        except VeilError as exc:
            out.append(exc)
    return out


def _csv_int(value: str, name: str) -> int | None:
    if not value:
        return None
    if not re.fullmatch(r"-?[0-9]{1,16}", value):
        raise InvalidRequest(f"{name} must be an integer", field=name)
    return int(value)


def _text(doc: Mapping[str, object], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} is required (a string)", field=name)
    if len(value) > 64:
        raise InvalidRequest(f"{name} has at most 64 characters", field=name)
    return value


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2 * MAX_SALT_BYTES:
        raise InvalidRequest(f"{name} must be a string", field=name)
    return value


def _optional_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
        raise InvalidRequest(f"{name} must be a positive integer", field=name)
    return value


# ---------------------------------------------------------------------------------------------
# Consents
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consent:
    id: str
    tenant_id: str
    subject_ref: str
    template_id: str
    template_version: int
    claim_commitment: str | None
    purpose: str
    max_uses: int
    uses: int
    expires_at: datetime
    revoked_at: datetime | None
    created_at: datetime

    def state(self, at: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= at:
            return "expired"
        if self.uses >= self.max_uses:
            return "used_up"
        return "active"

    def public(self, at: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant_id,
            "subject_ref": self.subject_ref,
            "template": self.template_id,
            "version": self.template_version,
            "claim_commitment": self.claim_commitment,
            "purpose": self.purpose,
            "max_uses": self.max_uses,
            "uses": self.uses,
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "created_at": _iso(self.created_at),
            "state": self.state(at),
        }


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


def _consent(row: Any) -> Consent:
    return Consent(
        id=row.id,
        tenant_id=row.tenant_id,
        subject_ref=row.subject_ref,
        template_id=row.template_id,
        template_version=row.template_version,
        claim_commitment=row.claim_commitment,
        purpose=row.purpose,
        max_uses=row.max_uses,
        uses=row.uses,
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at) if row.revoked_at is not None else None,
        created_at=_utc(row.created_at),
    )


# ---------------------------------------------------------------------------------------------
# Statements (built once: building SQLAlchemy expressions per request costs more than running
# them)
# ---------------------------------------------------------------------------------------------

_c = consents.c
_e = verification_events.c
_CONSENTS_BY_ID = Prepared(
    select(  # the fields of _Held, in order
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
# Every stored event took one unit of quota (a tenant's own repeats are not stored, and
# ``_decide_line`` refuses to store anything else), so counting rows is counting units, and the
# count reads only the ``(tenant_id, template_id, at)`` index, never the table.
_q = verification_quota_use.c
# A quota window's complete hours, summed from the per-hour use.
_QUOTA_HOURS = Prepared(
    select(func.coalesce(func.sum(_q.units), 0)).where(
        _q.tenant_id == bindparam("tenant"),
        _q.template_id == bindparam("template"),
        _q.hour >= bindparam("first"),
    )
)
# The events of the hour the window starts in, after its start, counted up to ``cap``.
_QUOTA_EDGE = Prepared(
    select(func.count()).select_from(
        select(literal_column("1"))
        .select_from(verification_events)
        .where(
            _e.tenant_id == bindparam("tenant"),
            _e.template_id == bindparam("template"),
            _e.at > bindparam("since"),
            _e.at < bindparam("until"),
        )
        .limit(bindparam("cap"))
        .subquery()
    )
)


def _add_use(insert: Any) -> Insert:
    statement = insert(verification_quota_use)
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[_q.tenant_id, _q.template_id, _q.hour],
        set_={"units": _q.units + statement.excluded.units},
    )


_ADD_USE: Final = {
    "sqlite": Prepared(_add_use(sqlite.insert)),
    "postgresql": Prepared(_add_use(postgresql.insert)),
}


def quota_hour(at: datetime) -> int:
    """The UTC hour ``at`` falls in, in hours since the epoch (``verification_quota_use.hour``)."""
    return int(at.timestamp()) // 3600


def quota_used(con: Connection, tenant_id: str, template_id: str, since: datetime, cap: int) -> int:
    """Quota units ``tenant_id`` used on ``template_id`` after ``since``, counted up to ``cap``.

    The window's complete hours come from ``verification_quota_use``; only the hour ``since``
    falls in is counted from its events. So the cost is one hour's answers at most, however
    much of a large quota the tenant has used (counting every event in the window grew with it:
    0.12 → 0.68 ms per answer after 23,000 answers)."""
    first = quota_hour(since) + 1
    params = {"tenant": tenant_id, "template": template_id}
    hours = int(_QUOTA_HOURS.execute(con, {**params, "first": first}).scalar_one())
    if hours >= cap:
        return cap
    until = datetime.fromtimestamp(first * 3600, UTC)
    edge = {**params, "since": since, "until": until, "cap": cap - hours}
    return hours + int(_QUOTA_EDGE.execute(con, edge).scalar_one())


def add_quota_use(con: Connection, events: Sequence[Mapping[str, Any]]) -> None:
    """Count new ``verification_events`` rows (one quota unit each) into their tenant's hours,
    in the transaction that stores them."""
    counts = Counter((e["tenant_id"], e["template_id"], quota_hour(e["at"])) for e in events)
    rows = [
        {"tenant_id": tenant, "template_id": template, "hour": hour, "units": units}
        for (tenant, template, hour), units in counts.items()
    ]
    statement = _ADD_USE[con.dialect.name]
    for row in rows:  # one per tenant, template and hour: one or a few
        statement.execute(con, row)


_CURRENT_VERSIONS = Prepared(
    select(datasets.c.id, datasets.c.current_version).where(
        datasets.c.id.in_(bindparam("ids", expanding=True))
    )
)
_STORED_DOCUMENTS = Prepared(
    select(receipts.c.id, receipts.c.document).where(
        receipts.c.id.in_(bindparam("ids", expanding=True))
    )
)
_OVERRIDES = Prepared(
    select(verification_quotas.c.template_id, verification_quotas.c.quota).where(
        verification_quotas.c.tenant_id == bindparam("tenant")
    )
)
_BUMP_USES = Prepared(
    update(consents)
    .where(_c.id.in_(bindparam("ids", expanding=True)))
    .values(uses=_c.uses + bindparam("n"))
)
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:ns, :key)")


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------


@dataclass
class _Line:
    """One request on its way through the flow."""

    index: int
    request: VerifyRequest | None
    error: VeilError | None = None
    template: Template | None = None
    claim: Claim = None
    subject_ref: str = ""
    commitment: str | None = None  # commit(claim, salt): what the consent must hold
    fingerprint: str | None = None  # zone-keyed claim id for the leakage ledger
    version: catalog.DatasetVersion | None = None
    consent: _Held | None = None
    receipt_id: str | None = None
    outcome: str | None = None
    stored: bool = False  # the receipt exists already (an own sticky repeat)
    fresh_id: str | None = None  # the receipt id of a new answer (kept if decided again)
    failed: VeilError | None = None  # allowed, but the query failed: charged, no receipt
    document: dict[str, object] | None = None
    signed: str | None = None  # a new receipt's stored JSON text (the document, signed)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Held:
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


@dataclass
class _Context:
    """What a decision read, updated line by line, and what the answer transaction writes."""

    held: dict[str, _Held]  # consent id -> consent
    history: dict[str, list[VerificationEvent]]  # subject ref -> answered verifications
    outcomes: dict[str, str]  # receipt id -> outcome, for the events that have one
    used: dict[str, int]  # template id -> quota units the tenant used in the window
    overrides: dict[str, int]  # template id -> the tenant's quota override
    uses: dict[str, int] = field(default_factory=dict)  # consent id -> uses so far
    events: list[dict[str, Any]] = field(default_factory=list)
    bumped: dict[str, int] = field(default_factory=dict)  # consent id -> new use count
    alerts: list[dict[str, Any]] = field(default_factory=list)


# Receipt documents sent to be signed: (line, document, signing input) and the signatures.
_SignJob = tuple[list[tuple["_Line", dict[str, object], str]], Future[list[bytes]]]


@dataclass
class _State:
    """A call's decision between its read and its answer transaction."""

    lines: list[_Line]  # the lines that were decided (their shape and dataset were fine)
    ctx: _Context
    data_version: int | None  # SQLite's PRAGMA data_version at the read; None: decide again
    stored: dict[str, dict[str, object]]  # receipt id -> stored document, for own repeats


class VerificationService:
    """Consents, verifications (single and batch), receipts and keys over the state store and
    the locked-down executor. ``templates`` is loaded once at startup."""

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        templates: TemplateSet,
        keys: KeyRing,
        zone_secret: bytes,
        *,
        envelope_ms: float = 0.0,
        signer: Signer | None = None,
        vault: Vault | None = None,
        facts: FactsIndex | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.vault = vault  # decrypts sealed workspaces; None: version paths are plain files
        self.facts = facts  # answers from the facts index when built; None: always a query
        self.templates = templates
        self.keys = keys
        self.key_id = keys.current_id
        self.signer = signer if signer is not None else Signer(keys.current, processes=0)
        self.zone_secret = zone_secret
        self.envelope_s = envelope_ms / 1000.0
        self._postgres = engine.dialect.name == "postgresql"
        self._versions: dict[tuple[str, int], catalog.DatasetVersion] = {}

    def index_state(self) -> Literal["off", "building", "ready"]:
        """The facts index's state (:meth:`sandbox.facts.FactsIndex.state`)."""
        return "off" if self.facts is None else self.facts.state()

    # -- templates and keys --------------------------------------------------------------------

    def list_templates(self) -> list[dict[str, object]]:
        return [t.public() for t in self.templates]

    def template(self, template_id: str, version: int | None = None) -> dict[str, object]:
        found = self.templates.get(template_id, version)
        doc = found.public()
        doc["versions"] = sorted(v for (tid, v) in self.templates.templates if tid == found.id)
        return doc

    def keys_document(self) -> dict[str, object]:
        return public_key_document(self.keys)

    def subject_ref(self, subject_id: str) -> str:
        return subject_ref(subject_id, self.zone_secret)

    # -- consents ------------------------------------------------------------------------------

    def _own_ref(self, member: Member) -> str:
        member.require(MemberRole.SUBJECT)
        if member.subject_id is None:
            raise Forbidden("this subject member is not bound to a subject")
        return self.subject_ref(member.subject_id)

    def create_consent(self, member: Member, request: ConsentRequest) -> dict[str, Any]:
        """The subject authorises one tenant to verify one claim with one template version."""
        ref = self._own_ref(member)
        return self.grant_consent(ref, request, granted_by=member.id)

    def grant_consent(
        self, subject: str, request: ConsentRequest, *, granted_by: str | None = None
    ) -> dict[str, Any]:
        """Record a consent for the subject reference ``subject`` (members go through
        :meth:`create_consent`; the local administrator and set-up scripts call this)."""
        (consent,) = self.grant_consents([(subject, request)], granted_by=granted_by)
        return consent

    def grant_consents(
        self,
        items: Sequence[tuple[str, ConsentRequest]],
        *,
        granted_by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Record many consents in one transaction: ``(subject reference, request)`` pairs."""
        at = now()
        rows: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        known_tenants: set[str] = set()
        for subject, request in items:
            if request.tenant not in known_tenants:
                get_tenant(self.engine, None, request.tenant)
                known_tenants.add(request.tenant)
            consent = self._consent(subject, request, at)
            rows.append(
                {
                    "id": consent.id,
                    "tenant_id": consent.tenant_id,
                    "subject_ref": consent.subject_ref,
                    "granted_by": granted_by,
                    "template_id": consent.template_id,
                    "template_version": consent.template_version,
                    "claim_commitment": consent.claim_commitment,
                    "purpose": consent.purpose,
                    "max_uses": consent.max_uses,
                    "uses": 0,
                    "expires_at": consent.expires_at,
                    "revoked_at": None,
                    "created_at": at,
                }
            )
            out.append(consent.public(at))
        if rows:
            with self.engine.begin() as con:
                db.insert_many(con, consents, rows)
                audit.append(
                    con,
                    audit.Event(
                        "verification",
                        "consent.grant",
                        tenant=rows[0]["tenant_id"] if len(rows) == 1 else None,
                        refs={"count": len(rows), "consents": [r["id"] for r in rows[:100]]},
                        sealed={"consents": [[r[k] for k in _CONSENT_AUDIT] for r in rows]},
                    ),
                )
        for row in rows:
            log.info(
                "consent granted id=%s tenant=%s template=%s",
                row["id"],
                row["tenant_id"],
                row["template_id"],
            )
        return out

    def _consent(self, subject: str, request: ConsentRequest, at: datetime) -> Consent:
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
        return Consent(
            id=new_id("cns"),
            tenant_id=request.tenant,
            subject_ref=subject,
            template_id=template.id,
            template_version=template.version,
            claim_commitment=commitment,
            purpose=request.purpose,
            max_uses=request.max_uses,
            uses=0,
            expires_at=_utc(expires),
            revoked_at=None,
            created_at=at,
        )

    def list_consents(self, member: Member, limit: int = 100) -> list[dict[str, Any]]:
        """A subject: its consents, to every tenant. A verifier: those its tenant holds. Admins
        and auditors: all. Newest first."""
        query = select(consents).order_by(consents.c.created_at.desc(), consents.c.id).limit(limit)
        if member.role == MemberRole.SUBJECT:
            query = query.where(consents.c.subject_ref == self._own_ref(member))
        elif member.role == MemberRole.VERIFIER:
            query = query.where(consents.c.tenant_id == member.tenant_id)
        else:
            member.require(MemberRole.SUBJECT, MemberRole.VERIFIER, *ZONE_WIDE)
        at = now()
        with self.engine.connect() as con:
            return [_consent(r).public(at) for r in con.execute(query)]

    def revoke_consent(self, member: Member, consent_id: str) -> None:
        """The subject withdraws a consent; later requests under it are refused."""
        ref = self._own_ref(member)
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
            audit.append(
                con, audit.Event("verification", "consent.revoke", refs={"consent": consent_id})
            )
        log.info("consent revoked id=%s", consent_id)

    # -- quotas ----------------------------------------------------------------------------------

    def set_quota(
        self, actor: Member | None, tenant_id: str, template_id: str, quota: int
    ) -> dict[str, Any]:
        """Override a template's per-tenant quota (answers per template id per window)."""
        get_tenant(self.engine, actor, tenant_id)
        if actor is not None:
            actor.require(MemberRole.ADMIN)
        template = self.templates.get(template_id)
        if not 1 <= quota <= 10**9:
            raise InvalidRequest("quota is between 1 and 10^9", field="quota")
        with self.engine.begin() as con:
            done = con.execute(
                update(verification_quotas)
                .where(
                    verification_quotas.c.tenant_id == tenant_id,
                    verification_quotas.c.template_id == template.id,
                )
                .values(quota=quota)
            )
            if done.rowcount == 0:
                con.execute(
                    verification_quotas.insert().values(
                        tenant_id=tenant_id, template_id=template.id, quota=quota, created_at=now()
                    )
                )
            audit.append(
                con,
                audit.Event(
                    "admin",
                    "quota.set",
                    tenant=tenant_id,
                    refs={"template": template.id, "quota": quota},
                ),
            )
        return {
            "tenant": tenant_id,
            "template": template.id,
            "quota": quota,
            "window_days": template.window.days,
        }

    # -- verifying -------------------------------------------------------------------------------

    def verify(self, member: Member, request: VerifyRequest) -> dict[str, object]:
        """One verification: ``{"outcome", "receipt"}``, or a typed refusal. Answers and
        refusals alike take at least the configured envelope."""
        line = self._single(member, request)
        return {"outcome": line.outcome, "receipt": line.document}

    def verify_json(self, member: Member, request: VerifyRequest) -> str:
        """:meth:`verify`'s answer as compact JSON text (what the HTTP API sends): a new receipt
        goes in as the very text that was signed and stored."""
        line = self._single(member, request)
        receipt = line.signed or _json(line.document)
        return f'{{"outcome":{_json(line.outcome)},"receipt":{receipt}}}'

    def _single(self, member: Member, request: VerifyRequest) -> _Line:
        member.require(MemberRole.VERIFIER)
        started = time.monotonic()
        try:
            (line,) = self._run(member, [_Line(0, request)], single=True)
            if line.error is not None:
                raise line.error
            assert line.document is not None and line.outcome is not None
            return line
        finally:
            self._pad(started)

    def verify_batch(
        self, member: Member, requests: Sequence[VerifyRequest | VeilError]
    ) -> dict[str, Any]:
        """Many verifications in one call, answered line by line in input order: each result is
        ``{"index", "outcome", "receipt"}`` or ``{"index", "error": {code, status, detail}}``."""
        results: list[dict[str, Any]] = []
        lines = self._batch(member, requests)
        for line in lines:
            if line.error is not None:
                results.append({"index": line.index, "error": _short(line.error)})
            else:
                results.append(
                    {"index": line.index, "outcome": line.outcome, "receipt": line.document}
                )
        return {"results": results, "summary": _summary(lines)}

    def verify_batch_json(
        self, member: Member, requests: Sequence[VerifyRequest | VeilError]
    ) -> str:
        """:meth:`verify_batch`'s answer as compact JSON text (what the HTTP API sends). A new
        receipt goes in as the very text that was signed and stored, so the receipts of a
        large batch are not serialised a second time."""
        lines = self._batch(member, requests)
        texts = {ln.receipt_id: ln.signed for ln in lines if ln.ok and ln.signed is not None}
        parts: list[str] = []
        for line in lines:
            if line.error is not None:
                parts.append(_json({"index": line.index, "error": _short(line.error)}))
                continue
            receipt = texts.get(line.receipt_id) or _json(line.document)
            outcome = _json(line.outcome)
            parts.append(f'{{"index":{line.index},"outcome":{outcome},"receipt":{receipt}}}')
        return f'{{"results":[{",".join(parts)}],"summary":{_json(_summary(lines))}}}'

    def _batch(self, member: Member, requests: Sequence[VerifyRequest | VeilError]) -> list[_Line]:
        member.require(MemberRole.VERIFIER)
        if len(requests) > MAX_BATCH_LINES:
            raise InvalidRequest(f"a batch has at most {MAX_BATCH_LINES} lines")
        lines = [
            _Line(i, None, error=r) if isinstance(r, VeilError) else _Line(i, r)
            for i, r in enumerate(requests)
        ]
        if lines:
            self._run(member, lines, single=False)
        return lines

    def _pad(self, started: float) -> None:
        if self.envelope_s > 0:
            left = self.envelope_s - (time.monotonic() - started)
            if left > 0:
                time.sleep(left)

    def _run(self, member: Member, lines: list[_Line], *, single: bool) -> list[_Line]:
        """The flow of the module docstring: the request's shape; the decision, read in one
        transaction; the queries and signatures outside any transaction; and the answer
        transaction, the call's only commit."""
        at = now()
        for line in lines:
            if line.ok:
                self._prepare(line)
        if single and lines[0].error is not None:
            raise lines[0].error  # a malformed request: public rules, nothing else to hide
        if not any(line.ok for line in lines):
            return lines
        for _ in range(_READ_ATTEMPTS):
            with contextlib.ExitStack() as stack:
                # SQLite: the call on one connection, so that the answer transaction can tell
                # from ``PRAGMA data_version`` whether another connection committed since the read.
                session = None if self._postgres else stack.enter_context(self.engine.connect())
                state = self._read(session, member, lines, at, single=single)
                if isinstance(state, _State):
                    self._respond(session, member, lines, at, state, single=single)
                    return lines
            for dataset in state:  # not cached yet: loaded with no connection held, then again
                self._load_version(dataset)
        raise ServiceUnavailable("the dataset changed while the request was decided; try again")

    def _respond(
        self,
        session: Connection | None,
        member: Member,
        lines: list[_Line],
        at: datetime,
        state: _State,
        *,
        single: bool,
    ) -> None:
        """The queries, the receipts and the answer transaction for a decided call."""
        try:
            if single and isinstance(lines[0].error, ConsentRefused):
                self._decoy(lines[0])
                jobs: list[_SignJob] = []
            else:
                self._execute(lines, single=single)
                jobs = self._documents(member, lines, at, state.stored)
        except Exception:
            for line in state.lines:  # an uncertain outcome: what was allowed stays charged
                if line.ok and line.failed is None:
                    line.failed = ExecutionFailed("the verification did not complete")
            self._answer(session, member, lines, at, state, [])
            raise
        self._answer(session, member, lines, at, state, jobs)

    def _prepare(self, line: _Line) -> None:
        """Everything the request itself decides: template, claim, salt, commitment."""
        request = line.request
        assert request is not None
        try:
            template = self.templates.get(request.template, request.version)
            claim = check_claim(template, request.claim)
            if not SUBJECT_ID.match(request.subject):
                raise InvalidRequest("subject is a credit code (letters and digits)")
            if not PURPOSE.match(request.purpose):
                raise InvalidRequest("purpose is a lowercase code like credit_underwriting")
            commitment = None
            if claim is not None:
                commitment = commit(claim, _salt(request.salt))
        except VeilError as exc:
            line.error = exc
            return
        line.template = template
        line.claim = claim
        line.commitment = commitment
        line.subject_ref = self.subject_ref(request.subject)
        if claim is not None:
            line.fingerprint = claim_fingerprint(self.zone_secret, template.attribute, claim)

    # -- the decision: read, then answer -----------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(
        self, session: Connection | None, *, reads_only: bool = False
    ) -> Iterator[Connection]:
        """A transaction on the call's own connection (SQLite) or on a pooled one;
        ``reads_only``: one that takes no write lock (the read, see :func:`db.snapshot`)."""
        if session is None:
            with self.engine.begin() as con:
                yield con
            return
        db.snapshot(session, reads_only)
        try:
            with session.begin():
                yield session
        finally:
            db.snapshot(session, False)

    def _data_version(self, con: Connection) -> int | None:
        """SQLite's count of commits by other connections, as seen by ``con`` (None elsewhere:
        the answer transaction then always decides again)."""
        if self._postgres:
            return None
        driver = con.connection.driver_connection  # the sqlite3 connection: no SQL layer
        assert driver is not None
        (version,) = driver.execute("PRAGMA data_version").fetchone()
        return int(version)

    def _read(
        self,
        session: Connection | None,
        member: Member,
        lines: list[_Line],
        at: datetime,
        *,
        single: bool,
    ) -> _State | set[str]:
        """Pin the datasets' current versions and decide every line from what the state store
        holds, in one transaction that writes nothing. Returns the datasets whose current
        version is not cached yet instead, having decided nothing."""
        live = [line for line in lines if line.ok]
        with self._transaction(session, reads_only=True) as con:
            missing = self._pin(con, live)
            if missing:
                return missing
            if single and lines[0].error is not None:
                raise lines[0].error  # no such dataset: a public rule
            decided = [line for line in live if line.ok]
            ctx = self._context(con, member, decided, at)
            for line in decided:
                self._decide_line(member, line, at, ctx)
            own = [ln.receipt_id for ln in decided if ln.ok and ln.stored and ln.receipt_id]
            return _State(
                lines=decided,
                ctx=ctx,
                data_version=self._data_version(con),
                stored=self._stored_documents(con, own),
            )

    def _pin(self, con: Connection, lines: list[_Line]) -> set[str]:
        """Pin each line to its dataset's current version, as ``con``'s transaction sees it. A
        version never changes once loaded, so its path and policy come from a cache; returns
        the datasets whose current version is not cached yet (and pins nothing then)."""
        wanted = sorted({line.template.dataset for line in lines if line.template is not None})
        pinned = {
            row.id: self._versions.get((row.id, row.current_version))
            for row in _CURRENT_VERSIONS.execute(con, {"ids": wanted})
            if row.current_version is not None
        }
        missing = {dataset for dataset, version in pinned.items() if version is None}
        if missing:
            return missing
        for line in lines:
            assert line.template is not None
            version = pinned.get(line.template.dataset)
            if version is None:
                line.error = NotFound(f"no dataset {line.template.dataset!r}")
            else:
                line.version = version
        return set()

    def _load_version(self, dataset: str) -> None:
        """Cache the dataset's current version (the next read pins it)."""
        try:
            found = catalog.current(self.engine, dataset)
        except NotFound:
            return  # the next read finds no current version and says so
        if len(self._versions) >= _CACHED_VERSIONS:
            self._versions.clear()
        self._versions[(dataset, found.version)] = found

    def _context(
        self, con: Connection, member: Member, lines: list[_Line], at: datetime
    ) -> _Context:
        """What a decision reads: the consents named, the subjects' history, and the tenant's
        quota use and overrides."""
        held = self._consents(con, {line.request.consent for line in lines if line.request}, at)
        history, outcomes = self._history(con, lines, at)
        overrides = self._quota_overrides(con, member.tenant_id)
        return _Context(
            held=held,
            history=history,
            outcomes=outcomes,
            used=self._quota_used(con, member.tenant_id, lines, at, overrides),
            overrides=overrides,
            uses={c.id: c.uses for c in held.values()},
        )

    def _answer(
        self,
        session: Connection | None,
        member: Member,
        lines: list[_Line],
        at: datetime,
        state: _State,
        jobs: list[_SignJob],
    ) -> None:
        """The answer transaction, the call's only commit: the decision again if the state
        store changed since it was read, then the ledger events (the charges), consent uses,
        alerts, receipts and the audit entry. Nothing reaches the caller before it commits, so
        no outcome leaves uncharged; a line whose query failed after it was allowed is charged
        all the same (an uncertain outcome is never refunded). A large batch's receipts are
        still being signed (``jobs``) while the events are written."""
        with self._transaction(session) as con:
            self._lock(con, member.tenant_id, {line.subject_ref for line in state.lines})
            if state.data_version is None or self._data_version(con) != state.data_version:
                self._signatures(jobs)
                self._redecide(con, member, at, state)
                jobs = self._documents(member, lines, at, state.stored)
            ctx = state.ctx
            if ctx.events:
                db.insert_many(con, verification_events, ctx.events)
                add_quota_use(con, ctx.events)
            self._bump_uses(con, ctx)
            if ctx.alerts:
                db.insert_many(con, alerts, ctx.alerts)
            self._signatures(jobs)
            issued = at.replace(microsecond=0)
            new_receipts = [
                _receipt_row(member, line, issued)
                for line in state.lines
                if line.ok and line.failed is None and line.signed is not None
            ]
            if new_receipts:
                db.insert_many(con, receipts, new_receipts)
            for line in state.lines:
                if line.ok and line.failed is not None:
                    line.error, line.document = line.failed, None
            audit.append(con, _audit_event(lines, ctx.events))  # last: the answer's own commit
        for alert in ctx.alerts:
            log.warning(
                "ALERT verification claim_change alert=%s tenant=%s member=%s template=%s "
                "subject_ref=%s",
                alert["id"],
                alert["tenant_id"],
                alert["member_id"],
                alert["template_id"],
                alert["subject_ref"],
            )

    @staticmethod
    def _bump_uses(con: Connection, ctx: _Context) -> None:
        """Add each consent's new uses, grouped by how many (one statement per group and
        chunk of ids rather than one per consent)."""
        by_count: dict[int, list[str]] = defaultdict(list)
        for consent_id, uses in ctx.bumped.items():
            by_count[uses - ctx.held[consent_id].uses].append(consent_id)
        for count, ids in by_count.items():
            for chunk in _chunks(ids):
                _BUMP_USES.execute(con, {"ids": list(chunk), "n": count})

    def _redecide(self, con: Connection, member: Member, at: datetime, state: _State) -> None:
        """Decide again, under the lock, the lines the read allowed: meanwhile another request
        may have been answered, or a consent used or revoked. History only grows and consents
        only tighten, so a line can only turn into a repeat or a refusal; lines refused at the
        read stay refused (their alerts stand). An outcome a line already has is the answer to
        the same question on the same data, so it stays valid whatever the new decision."""
        allowed = [line for line in state.lines if line.ok]
        ctx = self._context(con, member, allowed, at)
        ctx.alerts = list(state.ctx.alerts)
        for line in allowed:
            known = line.outcome
            line.receipt_id, line.outcome, line.stored, line.consent = None, None, False, None
            self._decide_line(member, line, at, ctx)
            if line.ok and line.outcome is None:
                line.outcome = known
        state.ctx = ctx
        own = [
            line.receipt_id
            for line in allowed
            if line.ok and line.stored and line.receipt_id and line.receipt_id not in state.stored
        ]
        state.stored.update(self._stored_documents(con, own))

    def _decide_line(self, member: Member, line: _Line, at: datetime, ctx: _Context) -> None:
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

    def _lock(self, con: Connection, tenant_id: str, refs: Iterable[str]) -> None:
        """Serialise decisions per subject (and the tenant's quota). SQLite: ``BEGIN IMMEDIATE``
        already holds the write lock. PostgreSQL: transaction-level advisory locks, tenant
        first, then subject buckets in order (no deadlocks)."""
        if not self._postgres:
            return
        keys = [_bucket("tenant:" + tenant_id) + _SUBJECT_BUCKETS]
        keys += sorted({_bucket(ref) for ref in refs})
        for key in keys:
            con.execute(_ADVISORY_LOCK, {"ns": _LOCK_NAMESPACE, "key": key})

    @staticmethod
    def _consents(con: Connection, ids: set[str], at: datetime) -> dict[str, _Held]:
        found: dict[str, _Held] = {}
        for chunk in _chunks(sorted(ids)):
            for row in _CONSENTS_BY_ID.execute(con, {"ids": list(chunk), "at": at}):
                # by position, not by name: a batch reads thousands
                cid, tenant, ref, template, version, commitment, purpose, most, uses, live = row
                found[cid] = _Held(
                    cid, tenant, ref, template, version, commitment, purpose, most, uses, bool(live)
                )
        return found

    @staticmethod
    def _history(
        con: Connection, live: list[_Line], at: datetime
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
        for chunk in _chunks(refs):
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
                        at=_utc(row.at),
                        bits_charged=row.bits_charged,
                        sticky=row.sticky,
                        quota_units=row.quota_units,
                        receipt_id=row.receipt_id,
                    )
                )
                if row.outcome is not None:
                    outcomes[row.receipt_id] = row.outcome
        return history, outcomes

    @staticmethod
    def _quota_used(
        con: Connection,
        tenant_id: str,
        live: list[_Line],
        at: datetime,
        overrides: Mapping[str, int],
    ) -> dict[str, int]:
        """Quota units the tenant used per template in its window, counted up to the quota
        only (``check_request`` compares ``used + 1`` with the quota, so a capped count decides
        the same); see :func:`quota_used`."""
        templates: dict[str, Template] = {}
        for line in live:
            if line.template is not None:
                templates[line.template.id] = line.template
        used: dict[str, int] = defaultdict(int)
        for template_id, template in templates.items():
            cap = overrides.get(template_id, template.quota)
            used[template_id] = quota_used(con, tenant_id, template_id, at - template.window, cap)
        return used

    @staticmethod
    def _quota_overrides(con: Connection, tenant_id: str) -> dict[str, int]:
        rows = _OVERRIDES.execute(con, {"tenant": tenant_id})
        return {r.template_id: r.quota for r in rows}

    # -- running the template queries -----------------------------------------------------------

    def _execute(self, lines: list[_Line], *, single: bool) -> None:
        """Outcomes for the lines that need one: one engine query per template version (the
        single call uses the single-subject query)."""
        todo = [ln for ln in lines if ln.ok and ln.outcome is None]
        if not todo:
            return
        todo = [line for line in todo if not self._indexed(line)]
        if single and todo:
            (line,) = todo
            assert line.template is not None and line.version is not None
            assert line.request is not None
            sql, params = template_query(
                line.template, line.version.policy, line.request.subject, line.claim
            )
            try:
                with leased(self.vault, line.version) as workspace:
                    (row,) = self.executor.run(workspace, sql, params)
            except VeilError as exc:
                line.failed = exc  # charged all the same: the outcome is uncertain
                return
            line.outcome = decide(line.template, row, line.claim)
            return
        groups: dict[tuple[str, int, str], list[_Line]] = defaultdict(list)
        for line in todo:
            assert line.template is not None and line.version is not None
            groups[(*line.template.key, line.version.dataset)].append(line)
        # The groups' queries run side by side, as many at once as the executor has workers.
        parallel = min(len(groups), len(self.executor.worker_pids()))
        if parallel < 2:
            for group in groups.values():
                self._execute_group(group)
            return
        with ThreadPoolExecutor(parallel, thread_name_prefix="veil-batch-query") as pool:
            for done in [pool.submit(self._execute_group, g) for g in groups.values()]:
                done.result()

    def _indexed(self, line: _Line) -> bool:
        """Decide ``line`` from the facts index if its index is built (see
        :mod:`sandbox.facts`)."""
        if self.facts is None:
            return False
        assert line.template is not None and line.version is not None
        assert line.request is not None
        found = self.facts.get(line.template, line.version, line.request.subject, line.claim)
        if found is None:
            return False
        line.outcome = decide(line.template, found, line.claim)
        return True

    def _execute_group(self, group: list[_Line]) -> None:
        """The outcomes of a batch's lines on one template version: one engine query."""
        template, version = group[0].template, group[0].version
        assert template is not None and version is not None
        subjects = [ln.request.subject for ln in group if ln.request]
        try:
            sql, params = template_batch_query(
                template, version.policy, subjects, [ln.claim for ln in group]
            )
            with leased(self.vault, version) as workspace:
                rows = self.executor.run(workspace, sql, params)
            if len(rows) != len(group):
                raise ExecutionFailed("the batch query returned the wrong number of rows")
        except VeilError as exc:
            log.warning("batch query failed template=%s code=%s", template.id, exc.error_code)
            for ln in group:
                ln.failed = exc  # charged all the same: the outcome is uncertain
            return
        for ln, row in zip(group, rows, strict=True):
            ln.outcome = decide(template, row[1:], ln.claim)

    def _decoy(self, line: _Line) -> None:
        """The refusal path's stand-in for the answer path: the same template query for a
        subject that does not exist, and a signature, so a refusal takes about as long as an
        answer. Its result is thrown away."""
        template, version = line.template, line.version
        if template is None or version is None:
            return
        claim: Claim = None
        if template.claim.type == ClaimType.CHOICE:
            claim = template.claim.choices[0]
        elif template.claim.type == ClaimType.NUMBER:
            claim = template.claim.minimum
        if (
            self.facts is not None
            and self.facts.get(template, version, DECOY_SUBJECT, claim) is not None
        ):
            self.keys.current.sign(b"veil.decoy")  # the answer path was a lookup too
            return
        try:
            sql, params = template_query(template, version.policy, DECOY_SUBJECT, claim)
            with leased(self.vault, version) as workspace:
                self.executor.run(workspace, sql, params)
        except VeilError:
            pass
        self.keys.current.sign(b"veil.decoy")

    # -- receipts --------------------------------------------------------------------------------

    def _documents(
        self,
        member: Member,
        lines: list[_Line],
        at: datetime,
        stored: Mapping[str, dict[str, object]],
    ) -> list[_SignJob]:
        """Give every answered line its receipt: the stored one for the tenant's own repeat (or
        the one made for an earlier line of this call), else a new document, sent to be signed
        (in chunks, by the signer pool for large batches); :meth:`_signatures` collects the
        signatures. A line whose signed document still has its receipt id and outcome keeps
        it: the answer transaction calls this again after a changed decision, and re-signs
        only what changed."""
        issued_at = format_time(at.replace(microsecond=0))
        made: dict[str, dict[str, object]] = {}  # receipt id -> document made in this call
        chunk: list[tuple[_Line, dict[str, object], str]] = []
        jobs: list[_SignJob] = []
        first = True
        for line in lines:
            if not line.ok or line.failed is not None or line.receipt_id is None:
                line.document = line.signed = None
                continue
            earlier = stored.get(line.receipt_id) or made.get(line.receipt_id)
            if line.stored and earlier is not None:  # asked before, or earlier in this call
                line.document, line.signed = earlier, None  # (a new one is signed below)
                line.outcome = str(earlier["outcome"])
                continue
            kept = line.document
            if (
                line.signed is not None
                and kept is not None
                and kept["receipt_id"] == line.receipt_id
                and kept["outcome"] == line.outcome
            ):
                made[line.receipt_id] = kept
                continue
            document, message = self._document(line, member, issued_at, checked=first)
            first = False
            line.document = made[line.receipt_id] = document
            line.signed = None
            chunk.append((line, document, message))
            if len(chunk) >= CHUNK:
                jobs.append((chunk, self.signer.submit([m.encode() for _, _, m in chunk])))
                chunk = []
        if chunk:
            jobs.append((chunk, self.signer.submit([m.encode() for _, _, m in chunk])))
        return jobs

    def _signatures(self, jobs: list[_SignJob]) -> None:
        """Wait for the signatures of :meth:`_documents`' jobs and put them in the documents."""
        for job, future in jobs:
            try:
                signatures = future.result()
            except Exception as exc:  # a broken pool: sign here
                log.warning("signer pool failed (%s); signing in the server", type(exc).__name__)
                self.signer.failed()
                signatures = [self.keys.current.sign(m.encode()) for _, _, m in job]
            for (line, document, message), raw in zip(job, signatures, strict=True):
                signature = b64url_encode(raw)
                document["signature"] = signature
                line.signed = f'{message[:-1]},"signature":"{signature}"}}'

    @staticmethod
    def _stored_documents(con: Connection, ids: Sequence[str]) -> dict[str, dict[str, object]]:
        found: dict[str, dict[str, object]] = {}
        for chunk in _chunks(sorted(set(ids))):
            for row in _STORED_DOCUMENTS.execute(con, {"ids": list(chunk)}):
                found[row.id] = json.loads(row.document)
        return found

    def _document(
        self, line: _Line, member: Member, issued_at: str, checked: bool
    ) -> tuple[dict[str, object], str]:
        """The receipt document (without its signature) and the text to sign.

        Every member comes from a validated source (ids Veil generated, the template, the
        checked request), so the document is built directly; with ``checked`` it is first
        built through :class:`Receipt`, whose strict validation then vouches for the shape of
        the whole batch (done once per call: the dataclass costs more than the signature)."""
        template, version, consent, request = (
            line.template,
            line.version,
            line.consent,
            line.request,
        )
        assert template is not None and version is not None and consent is not None
        assert request is not None and line.receipt_id is not None and line.outcome is not None
        document: dict[str, object] = {
            "receipt_id": line.receipt_id,
            "template_id": template.id,
            "template_version": template.version,
            "subject_ref": line.subject_ref,
            "tenant_id": member.tenant_id,
            "purpose": request.purpose,
            "consent_id": consent.id,
            "claim_commitment": line.commitment,
            "outcome": line.outcome,
            "dataset": version.dataset,
            "dataset_version": str(version.version),
            "issued_at": issued_at,
            "key_id": self.key_id,
        }
        if checked:
            values = {**document, "issued_at": datetime.strptime(issued_at, _RFC3339)}
            receipt = Receipt(**values)  # type: ignore[arg-type]
            if receipt.fields() != document:
                raise ValueError("a receipt member is not in canonical form")
        # A receipt is a flat object with ASCII member names, strings, integers and nulls:
        # sorted-key compact JSON is exactly its RFC 8785 form (receipts.signing_input), at a
        # fraction of the cost. Tests check that issued receipts verify strictly.
        message = _SIGNING_JSON.encode(document)
        return document, message

    # -- reading receipts ------------------------------------------------------------------------

    def _receipt_scope(self, member: Member) -> Any:
        if member.role == MemberRole.SUBJECT:
            return receipts.c.subject_ref == self._own_ref(member)
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


def _audit_event(lines: list[_Line], events: list[dict[str, Any]]) -> audit.Event:
    """The audit entry of one answer transaction: a single verification's ids and code, or a
    batch's counts; subjects and claims only sealed (docs/audit.md)."""
    cost = {
        "bits_milli": sum(e["bits_charged"] for e in events),
        "quota": sum(e["quota_units"] for e in events),
    }
    per_line = [
        [
            ln.index,
            ln.request.subject if ln.request else None,
            ln.request.claim if ln.request else None,
            ln.request.consent if ln.request else None,
            ln.receipt_id,
            ln.error.error_code if ln.error is not None else "ok",
        ]
        for ln in lines
    ]
    if len(lines) == 1:
        (line,) = lines
        code = line.error.error_code if line.error is not None else "ok"
        template = line.template
        return audit.Event(
            "verification",
            "verification.decide",
            code=code,
            refs={
                "template": template.id if template else None,
                "template_version": template.version if template else None,
                "consent": line.request.consent if line.request else None,
                "purpose": line.request.purpose if line.request else None,
                "receipt": line.receipt_id,
                "subject_ref": line.subject_ref or None,
                "repeat": line.stored,
            },
            cost=cost,
            sealed={"subject": per_line[0][1], "claim": per_line[0][2]},
        )
    codes: dict[str, int] = defaultdict(int)
    for row in per_line:
        codes[str(row[5])] += 1
    return audit.Event(
        "verification",
        "verification.batch",
        refs={"lines": len(lines), "codes": dict(codes)},
        cost=cost,
        # [index, subject, claim, consent, receipt, code] per line
        sealed={"lines": per_line},
    )


def _covers(consent: _Held, member: Member, line: _Line, request: VerifyRequest) -> bool:
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


def _salt(text: str | None) -> bytes:
    if text is None:
        raise InvalidRequest("a claim needs the consent's salt (hex)", field="salt")
    try:
        salt = bytes.fromhex(text)
    except ValueError:
        raise InvalidRequest("salt is hex", field="salt") from None
    if not MIN_SALT_BYTES <= len(salt) <= MAX_SALT_BYTES:
        raise InvalidRequest(f"salt has {MIN_SALT_BYTES} to {MAX_SALT_BYTES} bytes", field="salt")
    return salt


def _short(error: VeilError) -> dict[str, Any]:
    return {"code": error.error_code, "status": error.status, "detail": error.detail}


def _summary(lines: list[_Line]) -> dict[str, int]:
    answered = sum(1 for line in lines if line.error is None)
    return {"lines": len(lines), "answered": answered, "refused": len(lines) - answered}


def _json(value: object) -> str:
    return _COMPACT_JSON.encode(value)


def _receipt_row(member: Member, line: _Line, issued: datetime) -> dict[str, Any]:
    """The ``receipts`` row of a line's new receipt (its document, signed, as stored)."""
    document = line.document
    assert document is not None and line.signed is not None
    return {
        "id": line.receipt_id,
        "tenant_id": member.tenant_id,
        "subject_ref": line.subject_ref,
        "template_id": document["template_id"],
        "template_version": document["template_version"],
        "consent_id": document["consent_id"],
        "outcome": line.outcome,
        "issued_at": issued,
        "document": line.signed,
        "status": "valid",
    }


def _receipt_view(row: Any) -> dict[str, Any]:
    return {**_status(row), "receipt": json.loads(row.document)}


def _status(row: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"receipt_id": row.id, "status": row.status}
    if row.status == "revoked":
        view["revoked_at"] = _iso(row.revoked_at)
        view["reason"] = row.reason
    return view


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % _SUBJECT_BUCKETS


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
