"""State stores of the tests: the local administrator, the audit log of a test's own store,
PostgreSQL URLs, and a migrated store with a minimal catalogue."""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

from sqlalchemy import Engine

from sandbox.access.model import Actor
from sandbox.audit.log import AuditLog
from sandbox.clock import now
from sandbox.store import db
from sandbox.store.schema import datasets, zones

LOCAL = Actor.local()  # the local administrator: who a test acts as when it sets up its store
_AUDIT_LOGS: weakref.WeakKeyDictionary[Engine, AuditLog] = weakref.WeakKeyDictionary()


def local_audit(engine: Engine, key_dir: Path | None = None) -> AuditLog:
    """The audit log of a test's own state store: one per engine, with keys in ``key_dir``,
    else beside a SQLite store (or in a fresh directory for PostgreSQL). A server started on
    the store later checks the entries' MACs with its own keys: give its key directory."""
    found = _AUDIT_LOGS.get(engine)
    if found is None:
        database = engine.url.database
        if key_dir is not None:
            pass
        elif engine.dialect.name == "sqlite" and database:
            key_dir = Path(database).parent / "keys"
        else:
            key_dir = Path(tempfile.mkdtemp(prefix="veil-test-keys-"))
        found = _AUDIT_LOGS[engine] = AuditLog.open(engine, key_dir)
    return found


# -- PostgreSQL ---------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def sqlalchemy_postgres_url(url: str) -> str:
    """``scripts/postgres.sh`` prints ``postgresql://``; SQLAlchemy needs psycopg 3's scheme."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


# -- stores -------------------------------------------------------------------------------------


def connect_store(state_url: str) -> Engine:
    """The state store at ``state_url`` (a SQLite file's directory made first), migrated."""
    if state_url.startswith("sqlite:///"):
        Path(state_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return db.connect(state_url)


def seed_catalog(engine: Engine, dataset: str = "ds") -> None:
    """A zone and a dataset row (no workspace): enough for grants and the ledger."""
    with engine.begin() as con:
        con.execute(
            zones.insert().values(
                id="z", kind="domain", title="z", operator="o", description="", created_at=now()
            )
        )
        con.execute(datasets.insert().values(id=dataset, zone_id="z", title="d", created_at=now()))
