"""Grants and the charge ledger: reserve before any data is touched, never double-spend.

A reservation is one conditional ``UPDATE … WHERE spent + cost <= budget RETURNING`` plus the
charge row, in one transaction: concurrent requests can never overspend a grant. A charge whose
outcome is uncertain (timeout, crash) stays spent; only a rejection that never reached the data
is released back (by never reserving in the first place).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from policies.accounting import Accounting
from sandbox.access import new_id
from sandbox.errors import BudgetExhausted, Conflict, IdempotencyKeyReused, NoGrant
from sandbox.store import charges, grants, now


@dataclass(frozen=True)
class Grant:
    id: str
    tenant_id: str
    dataset_id: str
    accounting: Accounting
    budget_micro: int
    delta_pico: int
    per_query_cap_micro: int
    spent_micro: int
    spent_delta_pico: int

    @property
    def left_micro(self) -> int:
        return self.budget_micro - self.spent_micro

    @property
    def left_delta_pico(self) -> int:
        return self.delta_pico - self.spent_delta_pico


@dataclass(frozen=True)
class Reservation:
    charge_id: str
    grant: Grant  # as it stands after the reservation


def create_grant(
    engine: Engine,
    tenant_id: str,
    dataset_id: str,
    accounting: Accounting,
    budget_micro: int,
    delta_pico: int,
    per_query_cap_micro: int,
) -> str:
    grant_id = new_id("grt")
    with engine.begin() as con:
        con.execute(
            grants.insert().values(
                id=grant_id,
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                accounting=accounting.value,
                budget_micro=budget_micro,
                delta_pico=delta_pico,
                per_query_cap_micro=per_query_cap_micro,
                spent_micro=0,
                spent_delta_pico=0,
                created_at=now(),
            )
        )
    return grant_id


def _grant(row: Any) -> Grant:
    return Grant(
        id=row.id,
        tenant_id=row.tenant_id,
        dataset_id=row.dataset_id,
        accounting=Accounting(row.accounting),
        budget_micro=row.budget_micro,
        delta_pico=row.delta_pico,
        per_query_cap_micro=row.per_query_cap_micro,
        spent_micro=row.spent_micro,
        spent_delta_pico=row.spent_delta_pico,
    )


def grant_for(engine: Engine, tenant_id: str, dataset_id: str) -> Grant:
    """The tenant's grant on the dataset; without one, the dataset cannot be queried."""
    with engine.connect() as con:
        row = con.execute(
            select(grants).where(grants.c.tenant_id == tenant_id, grants.c.dataset_id == dataset_id)
        ).first()
    if row is None:
        raise NoGrant(f"your tenant has no grant on dataset {dataset_id!r}", dataset=dataset_id)
    return _grant(row)


def grants_of(engine: Engine, tenant_id: str) -> list[Grant]:
    with engine.connect() as con:
        rows = con.execute(
            select(grants).where(grants.c.tenant_id == tenant_id).order_by(grants.c.dataset_id)
        ).all()
    return [_grant(r) for r in rows]


def previous_answer(
    engine: Engine, member_id: str, idempotency_key: str, request_hash: str
) -> dict[str, Any] | None:
    """The answer already released for this idempotency key and request, if any."""
    with engine.connect() as con:
        row = con.execute(
            select(charges.c.state, charges.c.answer, charges.c.request_hash).where(
                charges.c.member_id == member_id, charges.c.idempotency_key == idempotency_key
            )
        ).first()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    if row.state == "released" and row.answer is not None:
        answer: dict[str, Any] = json.loads(row.answer)
        return answer
    raise Conflict(
        "a request with this Idempotency-Key is in progress or failed; use a new key",
        state=row.state,
    )


def reserve(
    engine: Engine,
    grant: Grant,
    member_id: str,
    query_hash: str,
    dataset_version: int,
    cost_micro: int,
    delta_pico: int,
    idempotency_key: str | None,
    request_hash: str | None = None,
) -> Reservation:
    """Charge ``cost`` to ``grant`` atomically, or refuse with ``budget_exhausted``."""
    if cost_micro > grant.per_query_cap_micro:
        raise BudgetExhausted(
            "the query's cost exceeds the grant's per-query cap",
            cost=cost_micro / 1e6,
            per_query_cap=grant.per_query_cap_micro / 1e6,
        )
    charge_id = new_id("chg")
    stamp = now()
    try:
        with engine.begin() as con:
            row = con.execute(
                update(grants)
                .where(
                    grants.c.id == grant.id,
                    grants.c.spent_micro + cost_micro <= grants.c.budget_micro,
                    grants.c.spent_delta_pico + delta_pico <= grants.c.delta_pico,
                )
                .values(
                    spent_micro=grants.c.spent_micro + cost_micro,
                    spent_delta_pico=grants.c.spent_delta_pico + delta_pico,
                )
                .returning(*grants.c)
            ).first()
            if row is None:
                left = con.execute(select(grants).where(grants.c.id == grant.id)).first()
                assert left is not None
                raise BudgetExhausted(
                    "the query's cost exceeds the budget left on this grant",
                    cost=cost_micro / 1e6,
                    remaining=(left.budget_micro - left.spent_micro) / 1e6,
                    remaining_delta=(left.delta_pico - left.spent_delta_pico) / 1e12,
                )
            con.execute(
                charges.insert().values(
                    id=charge_id,
                    grant_id=grant.id,
                    member_id=member_id,
                    query_hash=query_hash,
                    dataset_version=dataset_version,
                    cost_micro=cost_micro,
                    delta_pico=delta_pico,
                    state="reserved",
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
    except IntegrityError:
        raise Conflict("a request with this Idempotency-Key was already made") from None
    return Reservation(charge_id=charge_id, grant=_grant(row))


def settle(
    engine: Engine, charge_id: str, state: str, answer: dict[str, Any] | None = None
) -> None:
    """Mark a reserved charge ``released`` (with its answer) or ``failed``. The cost stays spent."""
    with engine.begin() as con:
        con.execute(
            update(charges)
            .where(charges.c.id == charge_id, charges.c.state == "reserved")
            .values(
                state=state,
                answer=json.dumps(answer) if answer is not None else None,
                updated_at=now(),
            )
        )


def count_charges(engine: Engine, grant_id: str) -> int:
    with engine.connect() as con:
        return len(con.execute(select(charges.c.id).where(charges.c.grant_id == grant_id)).all())
