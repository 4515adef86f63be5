"""The state store: SQLAlchemy Core schema and engine.

Embedded default is SQLite in the data directory, in WAL mode with ``synchronous=FULL`` and every
transaction opened with ``BEGIN IMMEDIATE`` (writers serialise up front instead of failing on
upgrade), except on a connection marked ``SNAPSHOT`` (:func:`snapshot`): a transaction that only
reads opens with a plain ``BEGIN``, takes no write lock, and sees one consistent snapshot (WAL).
A PostgreSQL URL uses the same code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
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
    Column("state", String(16), nullable=False),  # reserved | released | failed
    Column("idempotency_key", String(128), nullable=True),
    Column("request_hash", String(64), nullable=True),  # what the idempotency key was used for
    Column("answer", Text, nullable=True),  # the released response (JSON), for retries
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("member_id", "idempotency_key"),
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


def now() -> datetime:
    return datetime.now(UTC)


def connect(url: str) -> Engine:
    """An engine for ``url`` with its backend's durability settings, schema migrated."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_durability(engine)
    else:
        # Bounded, so several server processes stay within the server's max_connections.
        engine = create_engine(
            url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=60
        )
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Apply every pending migration (``sandbox/migrations``); safe to run from many processes."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # serialise processes migrating at once
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(736965)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_durability(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let BEGIN below take the lock
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        reads_only = connection.get_execution_options().get(SNAPSHOT, False)
        # On the driver itself: through SQLAlchemy this one statement costs more than SQLite.
        connection.connection.driver_connection.execute(
            "BEGIN" if reads_only else "BEGIN IMMEDIATE"
        )


def insert_many(con: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) in one driver-level ``executemany``.

    For thousands of rows SQLAlchemy's per-row parameter processing costs more than the insert
    itself; here each value goes through its column type's bind processor only where the type
    has one (``DateTime`` on SQLite), exactly as ``con.execute(table.insert(), rows)`` would
    store it. A driver whose parameter style is not positional takes that slower path."""
    if not rows:
        return
    dialect = con.dialect
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    if mark is None:
        con.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    quote = dialect.identifier_preparer
    sql = (
        f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)}) "
        f"VALUES ({', '.join(mark for _ in names)})"
    )
    steps = [
        (i, processor)
        for i, name in enumerate(names)
        if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
    ]
    if any(len(row) != len(names) for row in rows):
        raise ValueError("insert_many: every row must have the same columns")
    values = [tuple(row[name] for name in names) for row in rows]
    if steps:
        converted = []
        for value in values:
            items = list(value)
            for i, processor in steps:
                items[i] = processor(items[i])
            converted.append(tuple(items))
        values = converted
    con.exec_driver_sql(sql, values)


SNAPSHOT = "veil_snapshot"  # execution option: this connection's transactions only read


def snapshot(connection: Connection, reads_only: bool = True) -> Connection:
    """Mark ``connection``'s next transactions as read-only (SQLite: no write lock); a write
    inside one fails with SQLite's own error. ``reads_only=False`` lifts the mark."""
    return connection.execution_options(**{SNAPSHOT: reads_only})


# Modules that define tables on this metadata (imported here so that it holds the whole schema).
from sandbox import (  # noqa: E402,F401
    audit_store,
    idempotency,
    onboarding_store,
)
