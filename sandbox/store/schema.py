"""The state store's schema: every table, on one :data:`metadata` (what migrations build).

Sections: zones and datasets; tenants, members and keys; grants and the ledger; verification;
onboarding (providers, loads, issues); the audit log; idempotent requests. Migrations in
``sandbox/store/migrations`` create them; ``tests/store/test_migrations.py`` checks that the
migrated schema and this one agree. One module on purpose: the whole schema reads in one place.

Onboarding:

- ``providers``: the departments that supply datasets; ``provider_members`` links a member of role
  ``provider`` to the provider it speaks for (one provider per member); ``dataset_providers`` names
  the provider of each dataset (set by a load).
- ``version_loads``: one row per load attempt, keyed by its own ``id``. ``state`` is
  ``loading``, ``ready`` or ``failed``; progress while loading; the quality report (JSON) and the
  error (a problem document, JSON) when done. A loading or ready load holds its version number
  (unique per dataset); a failed one releases it (``version`` NULL), so failed loads use up no
  number. A ``ready`` load also has its ``dataset_versions`` row (what queries and verifications
  read); a failed one never does.
- ``dataset_issues``: the feedback loop (数据异议处理). The subject, if any, is kept only as its
  ``subject_ref`` (zone-keyed HMAC of the credit code, like receipts), never shown back.
  ``issue_revocations`` records the receipts a ``corrected`` resolution revoked. Its texts
  (``title``, ``description``, ``answer``, ``resolution_note``) are stored sealed, each bound to
  the issue's ``id`` (:mod:`sandbox.vault.text`).

The audit log (format and checks in ``docs/audit.md``):

- ``audit_entries``: one row per entry, ``seq`` contiguous from 1. ``body`` is the canonical JSON
  the chain covers; the other columns repeat some of its members so that entries can be
  filtered (verification checks that they agree with the body). No foreign keys: an entry
  outlives whatever it names.
- ``audit_head``: one row (``id`` 1), the last ``seq`` and its hash. Appends lock it (``SELECT …
  FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so
  concurrent transactions chain one after another.
- ``audit_data_keys``: the AES-256-GCM keys that seal entries' sensitive members, each stored
  wrapped by a master key (:mod:`sandbox.keys.master`) whose id it names.
- ``audit_checkpoints``: signed tree heads over the first ``tree_size`` entries, chained:
  ``number`` runs 1, 2, 3, … and each document signs the previous one's ``hash`` (both NULL for
  checkpoints written before the chain, migration 0012).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

zones = Table(
    "zones",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("operator", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The operator's authorisation of a zone (docs/administration.md#operator-authorisation): one
# row per zone; scope JSON {"datasets": [...] | null, "products": [...] | null} (null: all).
zone_authorisations = Table(
    "zone_authorisations",
    metadata,
    Column("zone_id", String(64), ForeignKey("zones.id"), primary_key=True),
    Column("state", String(16), nullable=False),  # active | suspended | exited
    Column("scope", Text, nullable=False),
    Column("term_start", DateTime(timezone=True), nullable=False),
    Column("term_end", DateTime(timezone=True), nullable=True),  # NULL: open-ended
    Column("certificate", Text, nullable=True),  # the signed exit certificate (JSON)
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("zone_id", String(64), ForeignKey("zones.id"), nullable=False),
    Column("title", Text, nullable=False),
    Column("current_version", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "dataset_versions",
    metadata,
    Column("dataset_id", String(64), ForeignKey("datasets.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("policy", Text, nullable=False),
    Column("row_counts", Text, nullable=False),  # JSON {table: rows}
    # JSON [table, …]: the tables none of whose units has more rows than its cap (measured when
    # the version is built; NULL for versions from before, measured once at their first query)
    Column("within_row_caps", Text, nullable=True),
    Column("salt", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("purpose_class", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The credit code a ``subject`` member speaks for (NULL for every other role).
    Column("subject_id", String(64), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("member_id", String(64), ForeignKey("members.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("dataset_id", String(64), ForeignKey("datasets.id"), nullable=False),
    Column("accounting", String(8), nullable=False),
    # Credited so far (the first period's budget, plus one per refresh), ε or ρ in micro-units.
    Column("budget_micro", BigInteger, nullable=False),
    Column("delta_pico", BigInteger, nullable=False),
    Column("period_budget_micro", BigInteger, nullable=False),  # credited per period
    Column("period_delta_pico", BigInteger, nullable=False),
    Column("refresh", String(8), nullable=False),  # none | daily | weekly | monthly
    Column("periods_credited", Integer, nullable=False),
    Column("per_query_cap_micro", BigInteger, nullable=False),
    Column("spent_micro", BigInteger, nullable=False),
    Column("spent_delta_pico", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant_id", "dataset_id"),
)

member_budgets = Table(
    "member_budgets",
    metadata,
    Column("grant_id", String(64), ForeignKey("grants.id"), primary_key=True),
    Column("member_id", String(64), ForeignKey("members.id"), primary_key=True),
    Column("budget_micro", BigInteger, nullable=False),
    Column("spent_micro", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

credits = Table(
    "credits",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("grant_id", String(64), ForeignKey("grants.id"), nullable=False),
    Column("reason", String(16), nullable=False),  # grant | refresh
    Column("period", Integer, nullable=False),
    Column("amount_micro", BigInteger, nullable=False),
    Column("delta_pico", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("grant_id", "period"),
)

charges = Table(
    "charges",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("grant_id", String(64), ForeignKey("grants.id"), nullable=False, index=True),
    Column("member_id", String(64), ForeignKey("members.id"), nullable=False),
    Column("query_hash", String(64), nullable=False, index=True),
    Column("dataset_version", Integer, nullable=False),
    Column("cost_micro", BigInteger, nullable=False),
    Column("delta_pico", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # reserved | released | failed | cancelled
    Column("answer", Text, nullable=True),  # the released response (JSON), for retries
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# --- verification (docs/verification.md) --------------------------------------------------------

consents = Table(
    "consents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),  # who may verify
    Column("subject_ref", String(64), nullable=False),  # receipts.subject_ref of the subject
    Column("granted_by", String(64), ForeignKey("members.id"), nullable=True),
    Column("template_id", String(64), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("claim_commitment", String(64), nullable=True),  # NULL for templates without a claim
    Column("purpose", String(64), nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_consents_subject", "subject_ref", "created_at"),
    Index("ix_consents_tenant", "tenant_id", "created_at"),
)

# The per-subject leakage ledger: one row per answered verification, fixed before the query runs
# and written in the answer's transaction, with its receipt (nothing is answered before that
# commit). Never a value: the claim is a zone-keyed fingerprint; the outcome is on the receipt
# (none if the query failed after the charge). Every row takes one unit of the tenant's quota.
verification_events = Table(
    "verification_events",
    metadata,
    Column("receipt_id", String(64), primary_key=True),  # the receipt this answer gets
    Column("subject_ref", String(64), nullable=False),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("member_id", String(64), ForeignKey("members.id"), nullable=False),
    Column("consent_id", String(64), ForeignKey("consents.id"), nullable=False),
    Column("template_id", String(64), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("attribute", String(64), nullable=False),
    Column("claim_fingerprint", String(64), nullable=True),
    Column("dataset", String(64), nullable=False),
    Column("dataset_version", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("bits_charged", Integer, nullable=False),  # millibits
    Column("quota_units", Integer, nullable=False),  # 0 or 1
    Column("sticky", Boolean, nullable=False),
    # bits and distinct claims per subject and attribute in the window
    Index("ix_verification_events_subject", "subject_ref", "attribute", "at"),
    # a tenant's quota use per template in the window
    Index("ix_verification_events_quota", "tenant_id", "template_id", "at"),
    # sticky repeats: the same question on the same data
    Index(
        "ix_verification_events_sticky",
        "subject_ref",
        "template_id",
        "template_version",
        "dataset_version",
    ),
)

receipts = Table(
    "receipts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("subject_ref", String(64), nullable=False),
    Column("template_id", String(64), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("consent_id", String(64), ForeignKey("consents.id"), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("document", Text, nullable=False),  # the signed receipt, JSON
    Column("status", String(16), nullable=False),  # valid | revoked
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("reason", String(32), nullable=True),  # why it was revoked (a fixed code)
    Index("ix_receipts_tenant", "tenant_id", "issued_at"),
    Index("ix_receipts_subject", "subject_ref", "issued_at"),
)

# Security alerts (ids and codes only, never a claim or a value).
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),  # claim_change
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("member_id", String(64), ForeignKey("members.id"), nullable=False),
    Column("subject_ref", String(64), nullable=False),
    Column("template_id", String(64), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("attribute", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_alerts_created", "created_at"),
)

# Quota units a tenant used per template and UTC hour, written with each answer: a quota window's
# complete hours are summed from here, so counting a tenant's use does not grow with it.
verification_quota_use = Table(
    "verification_quota_use",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("template_id", String(64), primary_key=True),
    Column("hour", BigInteger, primary_key=True),  # hours since 1970-01-01T00:00Z
    Column("units", Integer, nullable=False),
)

# Per-tenant overrides of a template's quota (answers per template id per window).
verification_quotas = Table(
    "verification_quotas",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("template_id", String(64), primary_key=True),
    Column("quota", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# --- onboarding (docs/onboarding.md) ---------------------------------------------------------

providers = Table(
    "providers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("zone_id", String(64), ForeignKey("zones.id"), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

provider_members = Table(
    "provider_members",
    metadata,
    Column("member_id", String(64), ForeignKey("members.id"), primary_key=True),
    Column("provider_id", String(64), ForeignKey("providers.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

dataset_providers = Table(
    "dataset_providers",
    metadata,
    Column("dataset_id", String(64), ForeignKey("datasets.id"), primary_key=True),
    Column("provider_id", String(64), ForeignKey("providers.id"), nullable=False, index=True),
)

version_loads = Table(
    "version_loads",
    metadata,
    Column("id", String(64), primary_key=True),  # the load's own id, "load_…"
    Column("dataset_id", String(64), ForeignKey("datasets.id"), nullable=False),
    # the version number the load holds (loading, ready); NULL once failed: the number is
    # released for the next load. Unique per dataset: two loads never hold one number.
    Column("version", Integer, nullable=True),
    Column("zone_id", String(64), ForeignKey("zones.id"), nullable=False),
    Column("state", String(16), nullable=False),  # loading | ready | failed
    Column("source", Text, nullable=False),  # source names, credentials removed
    Column("policy", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("rows_loaded", BigInteger, nullable=False),
    Column("bytes_read", BigInteger, nullable=True),
    Column("bytes_total", BigInteger, nullable=True),
    Column("current_table", String(64), nullable=True),
    Column("report", Text, nullable=True),  # QualityReport.to_dict(), JSON
    Column("error", Text, nullable=True),  # problem document of a failed load, JSON
    Column("started_by", String(64), nullable=True),  # member id; NULL: the local administrator
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("dataset_id", "version", name="uq_version_loads_dataset_id_version"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),  # "upl_…"
    Column("zone_id", String(64), ForeignKey("zones.id"), nullable=False),
    Column("dataset_id", String(64), nullable=False, index=True),  # may precede its dataset
    Column("provider_id", String(64), ForeignKey("providers.id"), nullable=True),
    Column("name", String(255), nullable=True),  # the client's file name, shown only
    Column("path", Text, nullable=False),
    Column("state", String(16), nullable=False),  # receiving | complete
    Column("length", BigInteger, nullable=True),  # declared (Upload-Length), if any
    Column("received", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=True),  # of the whole file, once complete
    Column("expected_sha256", String(64), nullable=True),  # Upload-Sha256, if given
    Column("created_by", String(64), nullable=True),  # member id; NULL: the local administrator
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # while receiving
    Column("writing_until", DateTime(timezone=True), nullable=True),
)

dataset_issues = Table(
    "dataset_issues",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("dataset_id", String(64), ForeignKey("datasets.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=True),
    Column("raised_by", String(64), nullable=True),  # member id; NULL: the local administrator
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("subject_ref", String(64), nullable=True),
    Column("dataset_version", Integer, nullable=True),  # current when raised
    Column("state", String(16), nullable=False),  # open | answered | resolved
    Column("answer", Text, nullable=True),
    Column("answered_by", String(64), nullable=True),
    Column("answered_at", DateTime(timezone=True), nullable=True),
    Column("resolution", String(16), nullable=True),  # no_change | corrected
    Column("resolution_version", Integer, nullable=True),
    Column("resolution_note", Text, nullable=True),
    Column("resolved_by", String(64), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset_id", "number"),
    Index("ix_dataset_issues_tenant", "tenant_id", "created_at"),
)

issue_revocations = Table(
    "issue_revocations",
    metadata,
    Column("issue_id", String(64), ForeignKey("dataset_issues.id"), primary_key=True),
    Column("receipt_id", String(64), ForeignKey("receipts.id"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# --- the audit log (docs/audit.md) --------------------------------------------------------------

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("action", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=True),  # the tenant the entry concerns
    Column("member_id", String(64), nullable=True),  # who acted (NULL: local or system)
    Column("status", Integer, nullable=True),  # the HTTP status, when the entry knows it
    Column("code", String(64), nullable=False),  # ok, or an error code
    Column("body", Text, nullable=False),  # canonical JSON, what the hash covers
    Column("hash", String(64), nullable=False),  # hex SHA-256 of body
    Column("mac", String(64), nullable=False),  # hex HMAC-SHA256 of the hash
    Index("ix_audit_entries_tenant", "tenant_id", "seq"),
    Index("ix_audit_entries_kind", "kind", "seq"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("seq", BigInteger, nullable=False),  # 0: no entry yet
    Column("hash", String(64), nullable=False),  # 64 zeros: no entry yet
)

audit_data_keys = Table(
    "audit_data_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("master_key_id", String(64), nullable=False),
    Column("wrapped", Text, nullable=False),  # base64url(nonce || AES-GCM ciphertext)
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),  # hex
    Column("at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("document", Text, nullable=False),  # the signed checkpoint, JSON
    Column("number", BigInteger, nullable=True),  # place in the chain; NULL: before it
    Column("hash", String(64), nullable=True),  # SHA-256 of the document's canonical JSON
    Index("ix_audit_checkpoints_at", "at"),
    Index("ix_audit_checkpoints_number", "number", unique=True),
)


# --- idempotent requests (sandbox/idempotency.py) -----------------------------------------------

MAX_IDEMPOTENCY_KEY_CHARS = 128

idempotent_requests = Table(
    "idempotent_requests",
    metadata,
    Column("member_id", String(64), ForeignKey("members.id"), primary_key=True),
    Column("key", String(MAX_IDEMPOTENCY_KEY_CHARS), primary_key=True),
    Column("request_hash", String(64), nullable=False),  # method, path and body it was used for
    Column("state", String(16), nullable=False),  # pending | done
    Column("status", Integer, nullable=True),  # the response, once done
    Column("response", Text, nullable=True),  # the body, sealed (sandbox/vault/text.py)
    Column("headers", Text, nullable=True),  # JSON {name: value}: content type, location …
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)
