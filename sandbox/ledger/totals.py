"""What the ledger's settled charges add up to, per dataset and accounting unit (for metrics).

A settled charge is one that stays spent: ``released`` (answered) or ``failed`` (the engine ran).
Reserved charges are still in flight and cancelled ones were given back; neither counts. The
totals only grow (a settled charge never changes again), so they are counters. No tenant, member
or query appears in them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from sandbox.ledger.charges import ChargeState
from sandbox.store.schema import charges, grants

SETTLED = (ChargeState.RELEASED.value, ChargeState.FAILED.value)


@dataclass(frozen=True)
class SettledTotal:
    dataset: str
    accounting: str  # policies.accounting.Accounting: pure (micro-ε) or zcdp (micro-ρ)
    cost_micro: int
    delta_pico: int
    charges: int


def settled_totals(engine: Engine) -> list[SettledTotal]:
    """The settled charges' sums, one row per (dataset, accounting), in that order."""
    statement = (
        select(
            grants.c.dataset_id,
            grants.c.accounting,
            func.coalesce(func.sum(charges.c.cost_micro), 0),
            func.coalesce(func.sum(charges.c.delta_pico), 0),
            func.count(),
        )
        .select_from(charges.join(grants, charges.c.grant_id == grants.c.id))
        .where(charges.c.state.in_(SETTLED))
        .group_by(grants.c.dataset_id, grants.c.accounting)
        .order_by(grants.c.dataset_id, grants.c.accounting)
    )
    with engine.connect() as con:
        rows = con.execute(statement).all()
    return [SettledTotal(str(d), str(a), int(c), int(p), int(n)) for d, a, c, p, n in rows]
