"""State of data onboarding: providers, load attempts (versions in every state), quality issues.

The tables are defined on :data:`sandbox.store.metadata` (``sandbox.store`` imports this module at
its end, so one metadata holds the whole schema); migration ``0003_onboarding`` creates them.

- ``providers``: the departments that supply datasets; ``provider_members`` links a member of role
  ``provider`` to the provider it speaks for (one provider per member); ``dataset_providers`` names
  the provider of each dataset (set by a load).
- ``version_loads``: one row per load attempt, keyed like ``dataset_versions``. ``state`` is
  ``loading``, ``ready`` or ``failed``; progress while loading; the quality report (JSON) and the
  error (a problem document, JSON) when done. A ``ready`` load also has its ``dataset_versions``
  row (what queries and verifications read); a failed one never does.
- ``dataset_issues``: the feedback loop (数据异议处理). The subject, if any, is kept only as its
  ``subject_ref`` (zone-keyed HMAC of the credit code, like receipts), never shown back.
  ``issue_revocations`` records the receipts a ``corrected`` resolution revoked.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from sandbox.store import metadata

__all__ = [
    "dataset_issues",
    "dataset_providers",
    "issue_revocations",
    "provider_members",
    "providers",
    "version_loads",
]

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
    Column("dataset_id", String(64), ForeignKey("datasets.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
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
