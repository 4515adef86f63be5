"""Grants: a tenant's privacy budget on a dataset, credited per period, and members' sub-budgets.

A grant's budget is the sum of its credits (one when it is made, one per refresh period that has
begun, written as visible ledger entries by :meth:`Grants.refreshed`); its spending the sum of its
charges (:mod:`sandbox.ledger.charges`). Budgets are integers: micro-ε (or micro-ρ) and pico-δ.

Every change is recorded in the audit log, made by the actor named: a grant, a sub-budget, and
the refresh credits that reading a grant writes when a period has begun (made by whoever read
it, as a side effect of that request).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from policies.accounting import Accounting
from sandbox.access.model import Actor, MemberRole, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now, utc
from sandbox.errors import (
    Conflict,
    InvalidRequest,
    NoGrant,
    NotFound,
)
from sandbox.store.schema import credits, grants, member_budgets


class Refresh(StrEnum):
    NONE = "none"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True)
class Grant:
    id: str
    tenant_id: str
    dataset_id: str
    accounting: Accounting
    budget_micro: int  # credited so far
    delta_pico: int
    period_budget_micro: int
    period_delta_pico: int
    refresh: Refresh
    periods_credited: int
    per_query_cap_micro: int
    spent_micro: int
    spent_delta_pico: int
    created_at: datetime

    @property
    def left_micro(self) -> int:
        return self.budget_micro - self.spent_micro

    @property
    def left_delta_pico(self) -> int:
        return self.delta_pico - self.spent_delta_pico

    def next_refresh(self) -> datetime | None:
        if self.refresh == Refresh.NONE:
            return None
        return period_start(self.created_at, self.refresh, self.periods_credited)


@dataclass(frozen=True)
class MemberBudget:
    grant_id: str
    member_id: str
    budget_micro: int
    spent_micro: int

    @property
    def left_micro(self) -> int:
        return self.budget_micro - self.spent_micro


def period_start(origin: datetime, refresh: Refresh, index: int) -> datetime:
    """Start of period ``index`` (0 = the grant's creation) of a refreshing grant."""
    origin = utc(origin)
    if refresh == Refresh.DAILY:
        return origin + timedelta(days=index)
    if refresh == Refresh.WEEKLY:
        return origin + timedelta(weeks=index)
    if refresh == Refresh.MONTHLY:
        month = origin.month - 1 + index
        year, month = origin.year + month // 12, month % 12 + 1
        day = min(origin.day, 28)
        return origin.replace(year=year, month=month, day=day)
    return origin


def period_index(origin: datetime, refresh: Refresh, moment: datetime) -> int:
    """The period ``moment`` falls in."""
    if refresh == Refresh.NONE:
        return 0
    index = 0
    moment = utc(moment)
    if refresh in (Refresh.DAILY, Refresh.WEEKLY):
        step = timedelta(days=1 if refresh == Refresh.DAILY else 7)
        index = max(0, (moment - utc(origin)) // step)
    while period_start(origin, refresh, index + 1) <= moment:
        index += 1
    return index


def _grant(row: Any) -> Grant:
    return Grant(
        id=row.id,
        tenant_id=row.tenant_id,
        dataset_id=row.dataset_id,
        accounting=Accounting(row.accounting),
        budget_micro=row.budget_micro,
        delta_pico=row.delta_pico,
        period_budget_micro=row.period_budget_micro,
        period_delta_pico=row.period_delta_pico,
        refresh=Refresh(row.refresh),
        periods_credited=row.periods_credited,
        per_query_cap_micro=row.per_query_cap_micro,
        spent_micro=row.spent_micro,
        spent_delta_pico=row.spent_delta_pico,
        created_at=utc(row.created_at),
    )


def _member_budget(row: Any) -> MemberBudget:
    return MemberBudget(row.grant_id, row.member_id, row.budget_micro, row.spent_micro)


class Grants:
    """Grants and sub-budgets of one state store, recorded in its audit log.

    Making a grant or a sub-budget is an admin's (or the local administrator's). Reading a grant
    authorises nothing — the caller has decided who may see it — but names the ``actor`` all the
    same: a refresh period that has begun is credited then, and the credit is that actor's."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the grants")

    def create_grant(
        self,
        actor: Actor,
        tenant_id: str,
        dataset_id: str,
        accounting: Accounting,
        *,
        budget_micro: int,
        delta_pico: int,
        per_query_cap_micro: int,
        refresh: Refresh = Refresh.NONE,
    ) -> str:
        """A tenant's budget on a dataset; ``budget_micro``/``delta_pico`` are credited per
        period."""
        actor.require(MemberRole.ADMIN)
        if budget_micro <= 0 or per_query_cap_micro <= 0 or delta_pico < 0:
            raise InvalidRequest("budgets and caps must be positive", field="budget")
        grant_id = new_id("grt")
        stamp = now()
        try:
            with self.engine.begin() as con:
                con.execute(
                    grants.insert().values(
                        id=grant_id,
                        tenant_id=tenant_id,
                        dataset_id=dataset_id,
                        accounting=accounting.value,
                        budget_micro=budget_micro,
                        delta_pico=delta_pico,
                        period_budget_micro=budget_micro,
                        period_delta_pico=delta_pico,
                        refresh=refresh.value,
                        periods_credited=1,
                        per_query_cap_micro=per_query_cap_micro,
                        spent_micro=0,
                        spent_delta_pico=0,
                        created_at=stamp,
                    )
                )
                con.execute(
                    credits.insert().values(
                        id=new_id("crd"),
                        grant_id=grant_id,
                        reason="grant",
                        period=0,
                        amount_micro=budget_micro,
                        delta_pico=delta_pico,
                        created_at=stamp,
                    )
                )
                self.audit.append(
                    con,
                    Event(
                        "admin",
                        "grant.create",
                        tenant=tenant_id,
                        refs={"grant": grant_id, "dataset": dataset_id, "refresh": refresh.value},
                        cost={
                            "accounting": accounting.value,
                            "budget_micro": budget_micro,
                            "delta_pico": delta_pico,
                            "per_query_cap_micro": per_query_cap_micro,
                        },
                    ),
                    actor,
                )
        except IntegrityError:
            raise Conflict(f"the tenant already has a grant on dataset {dataset_id!r}") from None
        return grant_id

    def set_member_budget(
        self, actor: Actor, grant_id: str, member_id: str, budget_micro: int
    ) -> None:
        """Give a member a sub-budget of a grant (it spends from both)."""
        actor.require(MemberRole.ADMIN)
        if budget_micro <= 0:
            raise InvalidRequest("a sub-budget must be positive", field="budget")
        with self.engine.begin() as con:
            # The grant row first, as a reservation takes it: then the sub-budget row, then the
            # audit chain (appended last) — one lock order, so no deadlock with a reservation.
            tenant = con.execute(
                select(grants.c.tenant_id).where(grants.c.id == grant_id).with_for_update()
            ).scalar()
            key = (member_budgets.c.grant_id == grant_id, member_budgets.c.member_id == member_id)
            if con.execute(select(member_budgets.c.grant_id).where(*key)).first() is None:
                con.execute(
                    member_budgets.insert().values(
                        grant_id=grant_id,
                        member_id=member_id,
                        budget_micro=budget_micro,
                        spent_micro=0,
                        created_at=now(),
                    )
                )
            else:
                con.execute(update(member_budgets).where(*key).values(budget_micro=budget_micro))
            self.audit.append(
                con,
                Event(
                    "admin",
                    "grant.sub_budget",
                    tenant=tenant,
                    refs={"grant": grant_id, "member": member_id},
                    cost={"budget_micro": budget_micro},
                ),
                actor,
            )

    def grant_for(self, actor: Actor, tenant_id: str, dataset_id: str) -> Grant:
        """The tenant's grant on the dataset; without one, the dataset cannot be queried."""
        with self.engine.connect() as con:
            row = con.execute(
                select(grants).where(
                    grants.c.tenant_id == tenant_id, grants.c.dataset_id == dataset_id
                )
            ).first()
        if row is None:
            raise NoGrant(f"your tenant has no grant on dataset {dataset_id!r}", dataset=dataset_id)
        return self._current(actor, row)

    def grant_by_id(self, actor: Actor, grant_id: str, tenant_id: str | None = None) -> Grant:
        """A grant by id; with ``tenant_id``, another tenant's grant is simply not found."""
        query = select(grants).where(grants.c.id == grant_id)
        if tenant_id is not None:
            query = query.where(grants.c.tenant_id == tenant_id)
        with self.engine.connect() as con:
            row = con.execute(query).first()
        if row is None:
            raise NotFound(f"no grant {grant_id!r}")
        return self._current(actor, row)

    def grants_of(self, actor: Actor, tenant_id: str) -> list[Grant]:
        with self.engine.connect() as con:
            rows = con.execute(
                select(grants).where(grants.c.tenant_id == tenant_id).order_by(grants.c.dataset_id)
            ).all()
        return [self._current(actor, r) for r in rows]

    def member_budget(self, grant_id: str, member_id: str) -> MemberBudget | None:
        """A member's sub-budget of a grant, if it has one."""
        with self.engine.connect() as con:
            row = con.execute(
                select(member_budgets).where(
                    member_budgets.c.grant_id == grant_id, member_budgets.c.member_id == member_id
                )
            ).first()
        return None if row is None else _member_budget(row)

    def _current(self, actor: Actor, row: Any) -> Grant:
        """The grant as of now: a write transaction only when a refresh period has begun."""
        grant = _grant(row)
        if period_index(grant.created_at, grant.refresh, now()) + 1 <= grant.periods_credited:
            return grant
        with self.engine.begin() as con:
            return self.refreshed(con, actor, grant.id)

    def refreshed(self, con: Connection, actor: Actor, grant_id: str) -> Grant:
        """In ``con``'s transaction: credit every period that has begun since the last credit,
        as visible ledger entries (and an audit entry, the ``actor``'s, if there were any)."""
        row = con.execute(select(grants).where(grants.c.id == grant_id).with_for_update()).one()
        grant = _grant(row)
        due = period_index(grant.created_at, grant.refresh, now()) + 1
        if due <= grant.periods_credited:
            return grant
        stamp = now()
        for period in range(grant.periods_credited, due):
            con.execute(
                credits.insert().values(
                    id=new_id("crd"),
                    grant_id=grant_id,
                    reason="refresh",
                    period=period,
                    amount_micro=grant.period_budget_micro,
                    delta_pico=grant.period_delta_pico,
                    created_at=stamp,
                )
            )
        added = due - grant.periods_credited
        self.audit.append(
            con,
            Event(
                "admin",
                "grant.refresh",
                tenant=grant.tenant_id,
                refs={"grant": grant_id, "periods": added},
                cost={"budget_micro": added * grant.period_budget_micro},
                primary=False,  # a side effect of whatever request found the period begun
            ),
            actor,
        )
        row = con.execute(
            update(grants)
            .where(grants.c.id == grant_id)
            .values(
                budget_micro=grants.c.budget_micro + added * grant.period_budget_micro,
                delta_pico=grants.c.delta_pico + added * grant.period_delta_pico,
                periods_credited=due,
            )
            .returning(*grants.c)
        ).one()
        return _grant(row)
