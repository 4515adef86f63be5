"""Reading the audit log back: entries in ``seq`` order, as stored (the body canonical JSON, so
re-serialising it gives back the hashed bytes).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from sandbox.store.schema import audit_entries


def read_entries(
    con: Connection,
    *,
    after: int = 0,
    limit: int = 100,
    kind: str | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    """Entries after ``after`` in ``seq`` order: ``{seq, hash, mac, entry}`` with ``entry`` the
    parsed body (canonical JSON, so re-serialising it gives back the hashed bytes)."""
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
    return [
        {"seq": int(r.seq), "hash": r.hash, "mac": r.mac, "entry": json.loads(r.body)}
        for r in con.execute(query)
    ]
