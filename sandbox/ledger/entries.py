"""The ledger as records: every charge and credit in time order (ids, amounts, states; no data)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from sandbox.clock import utc
from sandbox.store.schema import charges, credits, grants


@dataclass(frozen=True)
class LedgerEntry:
    """A charge (``entry`` ``charge``, with its member, state and query) or a credit
    (``credit:grant``, ``credit:refresh``). ``amount``: ε or ρ as the grant's ``accounting``
    says; ``delta``: δ."""

    time: datetime
    entry: str
    id: str
    tenant: str
    dataset: str
    grant: str
    member: str | None
    state: str | None
    amount: float
    delta: float
    accounting: str
    query_hash: str | None
    dataset_version: int | None


def entries(
    engine: Engine,
    *,
    tenant_id: str | None = None,
    dataset_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> list[LedgerEntry]:
    """Charges and credits in time order, each a flat record (ids, amounts, states: no data)."""
    where = []
    if tenant_id is not None:
        where.append(grants.c.tenant_id == tenant_id)
    if dataset_id is not None:
        where.append(grants.c.dataset_id == dataset_id)
    charge_query = (
        select(charges, grants.c.tenant_id, grants.c.dataset_id, grants.c.accounting)
        .join(grants, grants.c.id == charges.c.grant_id)
        .where(*where)
    )
    credit_query = (
        select(credits, grants.c.tenant_id, grants.c.dataset_id, grants.c.accounting)
        .join(grants, grants.c.id == credits.c.grant_id)
        .where(*where)
    )
    # In UTC: SQLite compares stored times as text, ignoring offsets.
    since = None if since is None else utc(since)
    until = None if until is None else utc(until)
    if since is not None:
        charge_query = charge_query.where(charges.c.created_at >= since)
        credit_query = credit_query.where(credits.c.created_at >= since)
    if until is not None:
        charge_query = charge_query.where(charges.c.created_at < until)
        credit_query = credit_query.where(credits.c.created_at < until)
    with engine.connect() as con:
        charged = con.execute(charge_query.order_by(charges.c.created_at).limit(limit)).all()
        credited = con.execute(credit_query.order_by(credits.c.created_at).limit(limit)).all()
    records = [
        LedgerEntry(
            time=utc(r.created_at),
            entry="charge",
            id=r.id,
            tenant=r.tenant_id,
            dataset=r.dataset_id,
            grant=r.grant_id,
            member=r.member_id,
            state=r.state,
            amount=r.cost_micro / 1e6,
            delta=r.delta_pico / 1e12,
            accounting=r.accounting,
            query_hash=r.query_hash,
            dataset_version=r.dataset_version,
        )
        for r in charged
    ] + [
        LedgerEntry(
            time=utc(r.created_at),
            entry=f"credit:{r.reason}",
            id=r.id,
            tenant=r.tenant_id,
            dataset=r.dataset_id,
            grant=r.grant_id,
            member=None,
            state=None,
            amount=r.amount_micro / 1e6,
            delta=r.delta_pico / 1e12,
            accounting=r.accounting,
            query_hash=None,
            dataset_version=None,
        )
        for r in credited
    ]
    records.sort(key=lambda r: (r.time, r.entry != "credit:grant", r.id))
    return records[:limit]
