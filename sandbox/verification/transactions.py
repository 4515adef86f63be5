"""How a verification's two transactions are held, on SQLite and on PostgreSQL.

A call reads its decision in one transaction that writes nothing, then commits its answer in
one more (docs/verification.md, "How a request is decided"). This module owns what that takes
on each dialect: on SQLite both run on the call's own connection, so that the answer transaction
can tell from ``PRAGMA data_version`` whether another connection committed since the read, and
``BEGIN IMMEDIATE`` serialises the answer against every other writer; on PostgreSQL each runs on
a pooled connection, the answer always decides again, and it is serialised per tenant and per
subject by transaction-level advisory locks.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

from sqlalchemy import Connection, Engine, text

from sandbox.store import db

__all__ = ["Transactions"]

_LOCK_NAMESPACE: Final = 7_370_001  # PostgreSQL advisory locks: (namespace, key)
_SUBJECT_BUCKETS: Final = 1024
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:ns, :key)")


class Transactions:
    """The read and answer transactions of a call, over ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def transaction(
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

    def data_version(self, con: Connection) -> int | None:
        """SQLite's count of commits by other connections, as seen by ``con`` (None elsewhere:
        the answer transaction then always decides again)."""
        if self.postgres:
            return None
        driver = con.connection.driver_connection  # the sqlite3 connection: no SQL layer
        assert driver is not None
        (version,) = driver.execute("PRAGMA data_version").fetchone()
        return int(version)

    def lock(self, con: Connection, tenant_id: str, refs: Iterable[str]) -> None:
        """Serialise decisions per subject (and the tenant's quota). SQLite: ``BEGIN IMMEDIATE``
        already holds the write lock. PostgreSQL: transaction-level advisory locks, tenant
        first, then subject buckets in order (no deadlocks)."""
        if not self.postgres:
            return
        keys = [_bucket("tenant:" + tenant_id) + _SUBJECT_BUCKETS]
        keys += sorted({_bucket(ref) for ref in refs})
        for key in keys:
            con.execute(_ADVISORY_LOCK, {"ns": _LOCK_NAMESPACE, "key": key})


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % _SUBJECT_BUCKETS
