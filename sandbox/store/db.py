"""Connections to the state store (SQLAlchemy Core), its migrations, and bulk inserts.

Embedded default is SQLite in the data directory, in WAL mode with ``synchronous=FULL`` and every
transaction opened with ``BEGIN IMMEDIATE`` (writers serialise up front instead of failing on
upgrade), except on a connection marked ``SNAPSHOT`` (:func:`snapshot`): a transaction that only
reads opens with a plain ``BEGIN``, takes no write lock, and sees one consistent snapshot (WAL).
A PostgreSQL URL uses the same code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event


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
