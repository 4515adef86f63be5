"""The state store: SQLAlchemy Core schema and engine.

Embedded default is SQLite in the data directory, in WAL mode with ``synchronous=FULL`` and every
transaction opened with ``BEGIN IMMEDIATE`` (writers serialise up front instead of failing on
upgrade). A PostgreSQL URL uses the same code path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
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


def now() -> datetime:
    return datetime.now(UTC)


def connect(url: str) -> Engine:
    """An engine for ``url`` with its backend's durability settings, schema migrated."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_durability(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
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
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
