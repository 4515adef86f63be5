"""Reading the audit log back: entries in ``seq`` order, as stored (the body canonical JSON, so
re-serialising it gives back the hashed bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from sandbox.store.schema import audit_entries


@dataclass(frozen=True)
class StoredEntry:
    """One entry as stored: ``entry`` the parsed body (opaque here: its members are in
    ``docs/audit.md``), its hash and MAC; ``unsealed`` its sealed members, once opened."""

    seq: int
    hash: str
    mac: str
    entry: dict[str, Any]
    unsealed: dict[str, Any] | None = None


def read_entries(
    con: Connection,
    *,
    after: int = 0,
    limit: int = 100,
    kind: str | None = None,
    tenant: str | None = None,
) -> list[StoredEntry]:
    """Entries after ``after`` in ``seq`` order, with ``entry`` the parsed body (canonical
    JSON, so re-serialising it gives back the hashed bytes)."""
    query = (
        select(audit_entries.c.seq, audit_entries.c.body, audit_entries.c.hash, audit_entries.c.mac)
        .where(audit_entries.c.seq > after)
        .order_by(audit_entries.c.seq)
        .limit(limit)
    )
    if kind is not None:
        query = query.where(audit_entries.c.kind == kind)
    if tenant is not None:
        query = query.where(audit_entries.c.tenant_id == tenant)
    return [StoredEntry(int(r.seq), r.hash, r.mac, json.loads(r.body)) for r in con.execute(query)]
