"""Charges: reserve before any data is touched, settle once, never double-spend.

A reservation is, in one transaction: the grant's due refresh credits, one conditional
``UPDATE … WHERE spent + cost <= budget RETURNING`` on the grant (and on the member's sub-budget,
if it has one), and the charge row. Concurrent requests can never overspend. A charge whose
outcome is uncertain (timeout, crash, any failure once the engine ran) stays spent; a rejection
that never reached the data is never reserved in the first place; a run that failed before a
worker received its SQL (the workspace could not be provided, no worker could take it) is
cancelled, which gives the reservation back.

A released charge keeps its answer, as the JSON the query service hands it (the answer's wire
form), for the answer cache. The reservation and the settlement are recorded in the audit log
in their own transactions, made by the analyst who spends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Engine, func, select, update

from sandbox.access.model import Actor, MemberRole, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now
from sandbox.errors import BudgetExhausted
from sandbox.ledger.grants import Grant, Grants, MemberBudget, _grant, _member_budget
from sandbox.store.schema import charges, credits, grants, member_budgets


class ChargeState(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"
    FAILED = "failed"
    CANCELLED = "cancelled"  # failed before any data was read: the cost was given back


@dataclass(frozen=True)
class Reservation:
    charge_id: str
    grant: Grant  # as it stands after the reservation
    member_budget: MemberBudget | None


class Charges:
    """The charges of one state store, recorded in its audit log: reserved by the member who
    spends, settled once. ``grants`` credits a grant's begun periods before a reservation."""

    def __init__(self, engine: Engine, audit: AuditLog, grants: Grants) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the charges")
        self.grants = grants

    def cached_answer(self, tenant_id: str, query_hash: str) -> str | None:
        """A noisy answer this tenant already paid for (same canonical query, version and
        budget), as the JSON it was settled with."""
        with self.engine.connect() as con:
            row = con.execute(
                select(charges.c.answer)
                .join(grants, grants.c.id == charges.c.grant_id)
                .where(
                    grants.c.tenant_id == tenant_id,
                    charges.c.query_hash == query_hash,
                    charges.c.state == ChargeState.RELEASED,
                )
                .order_by(charges.c.created_at)
                .limit(1)
            ).first()
        return None if row is None else row.answer

    def reserve(
        self,
        actor: Actor,
        grant: Grant,
        query_hash: str,
        dataset_version: int,
        cost_micro: int,
        delta_pico: int,
    ) -> Reservation:
        """Charge ``cost`` to ``grant`` (and the sub-budget of the analyst acting, if it has
        one) atomically, or refuse."""
        member = actor.require_member(MemberRole.ANALYST)
        if cost_micro > grant.per_query_cap_micro:
            raise BudgetExhausted(
                "the query's cost exceeds the grant's per-query cap",
                cost=cost_micro / 1e6,
                per_query_cap=grant.per_query_cap_micro / 1e6,
            )
        charge_id = new_id("chg")
        with self.engine.begin() as con:
            self.grants.refreshed(con, actor, grant.id)
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
                left = _grant(con.execute(select(grants).where(grants.c.id == grant.id)).one())
                raise BudgetExhausted(
                    "the query's cost exceeds the budget left on this grant",
                    cost=cost_micro / 1e6,
                    remaining=left.left_micro / 1e6,
                    remaining_delta=left.left_delta_pico / 1e12,
                )
            sub_budget = _spend_member_budget(con, grant.id, member.id, cost_micro)
            stamp = now()
            con.execute(
                charges.insert().values(
                    id=charge_id,
                    grant_id=grant.id,
                    member_id=member.id,
                    query_hash=query_hash,
                    dataset_version=dataset_version,
                    cost_micro=cost_micro,
                    delta_pico=delta_pico,
                    state=ChargeState.RESERVED.value,
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
            self.audit.append(  # last: the charge and its entry commit together
                con,
                Event(
                    "query",
                    "query.charge",
                    tenant=grant.tenant_id,
                    refs={
                        "charge": charge_id,
                        "grant": grant.id,
                        "dataset": grant.dataset_id,
                        "dataset_version": dataset_version,
                        "query_hash": query_hash,
                    },
                    cost={
                        "accounting": grant.accounting.value,
                        "micro": cost_micro,
                        "delta_pico": delta_pico,
                    },
                ),
                actor,
            )
        return Reservation(charge_id=charge_id, grant=_grant(row), member_budget=sub_budget)

    def settle(
        self,
        actor: Actor,
        charge_id: str,
        state: ChargeState,
        answer: str | None = None,
        *,
        error_code: str | None = None,
    ) -> None:
        """Mark a reserved charge ``released`` (with its answer, as JSON for the answer cache)
        or ``failed`` (``error_code``: why, for the audit log). The cost stays spent."""
        with self.engine.begin() as con:
            done = con.execute(
                update(charges)
                .where(charges.c.id == charge_id, charges.c.state == ChargeState.RESERVED.value)
                .values(state=state.value, answer=answer, updated_at=now())
            )
            if done.rowcount:
                self.audit.append(
                    con,
                    Event(
                        "query",
                        "query.settle",
                        code="ok" if state == ChargeState.RELEASED else (error_code or state.value),
                        refs={"charge": charge_id, "state": state.value},
                        primary=False,
                    ),
                    actor,
                )

    def cancel(self, actor: Actor, reservation: Reservation, error_code: str) -> bool:
        """Give a reservation back: its run failed before any data was read (``error_code``:
        why, for the audit log). In one transaction, a ``reserved`` charge becomes
        ``cancelled`` and its cost and δ leave the grant's spent totals (and the member's
        sub-budget, if the reservation spent from one). Only a ``reserved`` charge changes;
        returns whether it did."""
        grant = reservation.grant
        with self.engine.begin() as con:
            row = con.execute(
                update(charges)
                .where(
                    charges.c.id == reservation.charge_id,
                    charges.c.state == ChargeState.RESERVED.value,
                )
                .values(state=ChargeState.CANCELLED.value, updated_at=now())
                .returning(charges.c.cost_micro, charges.c.delta_pico, charges.c.member_id)
            ).first()
            if row is None:
                return False
            con.execute(
                update(grants)
                .where(grants.c.id == grant.id)
                .values(
                    spent_micro=grants.c.spent_micro - row.cost_micro,
                    spent_delta_pico=grants.c.spent_delta_pico - row.delta_pico,
                )
            )
            if reservation.member_budget is not None:
                con.execute(
                    update(member_budgets)
                    .where(
                        member_budgets.c.grant_id == grant.id,
                        member_budgets.c.member_id == row.member_id,
                    )
                    .values(spent_micro=member_budgets.c.spent_micro - row.cost_micro)
                )
            self.audit.append(
                con,
                Event(
                    "query",
                    "query.settle",
                    code=error_code,
                    refs={"charge": reservation.charge_id, "state": ChargeState.CANCELLED.value},
                    cost={
                        "accounting": grant.accounting.value,
                        "micro": -int(row.cost_micro),
                        "delta_pico": -int(row.delta_pico),
                    },
                    primary=False,
                ),
                actor,
            )
        return True


def _spend_member_budget(
    con: Connection, grant_id: str, member_id: str, cost_micro: int
) -> MemberBudget | None:
    key = (member_budgets.c.grant_id == grant_id, member_budgets.c.member_id == member_id)
    if con.execute(select(member_budgets.c.grant_id).where(*key)).first() is None:
        return None
    row = con.execute(
        update(member_budgets)
        .where(*key, member_budgets.c.spent_micro + cost_micro <= member_budgets.c.budget_micro)
        .values(spent_micro=member_budgets.c.spent_micro + cost_micro)
        .returning(*member_budgets.c)
    ).first()
    if row is None:  # raising rolls back the grant's update above, in the same transaction
        left = _member_budget(con.execute(select(member_budgets).where(*key)).one())
        raise BudgetExhausted(
            "the query's cost exceeds your sub-budget on this grant",
            cost=cost_micro / 1e6,
            remaining=left.left_micro / 1e6,
        )
    return _member_budget(row)


@dataclass(frozen=True)
class Consistency:
    grant_id: str
    credited_micro: int
    charged_micro: int
    budget_micro: int
    spent_micro: int

    @property
    def ok(self) -> bool:
        return (
            self.credited_micro == self.budget_micro
            and self.charged_micro == self.spent_micro
            and 0 <= self.spent_micro <= self.budget_micro
        )


def consistency(engine: Engine, grant_id: str) -> Consistency:
    """The grant's counters against the ledger they are derived from (every charge counts but
    a cancelled one, whose cost was given back)."""
    with engine.connect() as con:
        grant = _grant(con.execute(select(grants).where(grants.c.id == grant_id)).one())
        credited = con.execute(
            select(func.coalesce(func.sum(credits.c.amount_micro), 0)).where(
                credits.c.grant_id == grant_id
            )
        ).scalar_one()
        charged = con.execute(
            select(func.coalesce(func.sum(charges.c.cost_micro), 0)).where(
                charges.c.grant_id == grant_id,
                charges.c.state != ChargeState.CANCELLED.value,
            )
        ).scalar_one()
    return Consistency(grant_id, int(credited), int(charged), grant.budget_micro, grant.spent_micro)
