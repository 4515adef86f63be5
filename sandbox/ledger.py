"""Grants and the ledger: reserve before any data is touched, never double-spend.

A reservation is, in one transaction: the grant's due refresh credits, one conditional
``UPDATE … WHERE spent + cost <= budget RETURNING`` on the grant (and on the member's sub-budget,
if it has one), and the charge row. Concurrent requests can never overspend. A charge whose
outcome is uncertain (timeout, crash) stays spent; a rejection that never reached the data is
never reserved in the first place. Budgets are derived from the ledger: a grant's budget is the
sum of its credits, its spending the sum of its charges.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from policies.accounting import Accounting
from sandbox import audit
from sandbox.access import new_id
from sandbox.errors import (
    BudgetExhausted,
    Conflict,
    IdempotencyKeyReused,
    InvalidRequest,
    NoGrant,
    NotFound,
)
from sandbox.store import charges, credits, grants, member_budgets, now


class Refresh(StrEnum):
    NONE = "none"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class ChargeState(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"
    FAILED = "failed"


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


@dataclass(frozen=True)
class Reservation:
    charge_id: str
    grant: Grant  # as it stands after the reservation
    member_budget: MemberBudget | None


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _as_utc(moment: datetime) -> datetime:
    """A bound in UTC: SQLite compares stored times as text, ignoring offsets."""
    return utc(moment).astimezone(UTC)


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


def create_grant(
    engine: Engine,
    tenant_id: str,
    dataset_id: str,
    accounting: Accounting,
    budget_micro: int,
    delta_pico: int,
    per_query_cap_micro: int,
    refresh: Refresh = Refresh.NONE,
) -> str:
    """A tenant's budget on a dataset; ``budget_micro``/``delta_pico`` are credited per period."""
    if budget_micro <= 0 or per_query_cap_micro <= 0 or delta_pico < 0:
        raise InvalidRequest("budgets and caps must be positive", field="budget")
    grant_id = new_id("grt")
    stamp = now()
    try:
        with engine.begin() as con:
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
            audit.append(
                con,
                audit.Event(
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
            )
    except IntegrityError:
        raise Conflict(f"the tenant already has a grant on dataset {dataset_id!r}") from None
    return grant_id


def set_member_budget(engine: Engine, grant_id: str, member_id: str, budget_micro: int) -> None:
    """Give a member a sub-budget of a grant (it spends from both)."""
    if budget_micro <= 0:
        raise InvalidRequest("a sub-budget must be positive", field="budget")
    with engine.begin() as con:
        # The grant row first, as a reservation takes it: then the sub-budget row, then the
        # audit chain (appended last) — one lock order, so no deadlock with a reservation.
        tenant = con.execute(
            select(grants.c.tenant_id).where(grants.c.id == grant_id).with_for_update()
        ).scalar()
        existing = con.execute(
            select(member_budgets).where(
                member_budgets.c.grant_id == grant_id, member_budgets.c.member_id == member_id
            )
        ).first()
        if existing is None:
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
            con.execute(
                update(member_budgets)
                .where(
                    member_budgets.c.grant_id == grant_id, member_budgets.c.member_id == member_id
                )
                .values(budget_micro=budget_micro)
            )
        audit.append(
            con,
            audit.Event(
                "admin",
                "grant.sub_budget",
                tenant=tenant,
                refs={"grant": grant_id, "member": member_id},
                cost={"budget_micro": budget_micro},
            ),
        )


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


def _current(engine: Engine, row: Any) -> Grant:
    """The grant as of now: a write transaction only when a refresh period has begun."""
    grant = _grant(row)
    if period_index(grant.created_at, grant.refresh, now()) + 1 <= grant.periods_credited:
        return grant
    with engine.begin() as con:
        return _refreshed(con, grant.id)


def grant_for(engine: Engine, tenant_id: str, dataset_id: str) -> Grant:
    """The tenant's grant on the dataset; without one, the dataset cannot be queried."""
    with engine.connect() as con:
        row = con.execute(
            select(grants).where(grants.c.tenant_id == tenant_id, grants.c.dataset_id == dataset_id)
        ).first()
    if row is None:
        raise NoGrant(f"your tenant has no grant on dataset {dataset_id!r}", dataset=dataset_id)
    return _current(engine, row)


def grant_by_id(engine: Engine, grant_id: str, tenant_id: str | None = None) -> Grant:
    """A grant by id; with ``tenant_id``, another tenant's grant is simply not found."""
    query = select(grants).where(grants.c.id == grant_id)
    if tenant_id is not None:
        query = query.where(grants.c.tenant_id == tenant_id)
    with engine.connect() as con:
        row = con.execute(query).first()
    if row is None:
        raise NotFound(f"no grant {grant_id!r}")
    return _current(engine, row)


def grants_of(engine: Engine, tenant_id: str) -> list[Grant]:
    with engine.connect() as con:
        rows = con.execute(
            select(grants).where(grants.c.tenant_id == tenant_id).order_by(grants.c.dataset_id)
        ).all()
    return [_current(engine, r) for r in rows]


def member_budget(engine: Engine, grant_id: str, member_id: str) -> MemberBudget | None:
    with engine.connect() as con:
        row = con.execute(
            select(member_budgets).where(
                member_budgets.c.grant_id == grant_id, member_budgets.c.member_id == member_id
            )
        ).first()
    return None if row is None else _member_budget(row)


def _refreshed(con: Connection, grant_id: str) -> Grant:
    """Credit every period that has begun since the last credit, as visible ledger entries."""
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
    audit.append(
        con,
        audit.Event(
            "admin",
            "grant.refresh",
            tenant=grant.tenant_id,
            refs={"grant": grant_id, "periods": added},
            cost={"budget_micro": added * grant.period_budget_micro},
            primary=False,  # a side effect of whatever request found the period begun
        ),
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
    if row.state == ChargeState.RELEASED and row.answer is not None:
        answer: dict[str, Any] = json.loads(row.answer)
        return answer
    raise Conflict(
        "a request with this Idempotency-Key is in progress or failed; use a new key",
        state=row.state,
    )


def cached_answer(engine: Engine, tenant_id: str, query_hash: str) -> dict[str, Any] | None:
    """A noisy answer this tenant already paid for: same canonical query, version and budget."""
    with engine.connect() as con:
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
    if row is None or row.answer is None:
        return None
    answer: dict[str, Any] = json.loads(row.answer)
    return answer


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
    """Charge ``cost`` to ``grant`` (and the member's sub-budget) atomically, or refuse."""
    if cost_micro > grant.per_query_cap_micro:
        raise BudgetExhausted(
            "the query's cost exceeds the grant's per-query cap",
            cost=cost_micro / 1e6,
            per_query_cap=grant.per_query_cap_micro / 1e6,
        )
    charge_id = new_id("chg")
    try:
        with engine.begin() as con:
            _refreshed(con, grant.id)
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
            sub_budget = _spend_member_budget(con, grant.id, member_id, cost_micro)
            stamp = now()
            con.execute(
                charges.insert().values(
                    id=charge_id,
                    grant_id=grant.id,
                    member_id=member_id,
                    query_hash=query_hash,
                    dataset_version=dataset_version,
                    cost_micro=cost_micro,
                    delta_pico=delta_pico,
                    state=ChargeState.RESERVED.value,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
            audit.append(  # last: the charge and its entry commit together
                con,
                audit.Event(
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
            )
    except IntegrityError:
        raise Conflict("a request with this Idempotency-Key was already made") from None
    return Reservation(charge_id=charge_id, grant=_grant(row), member_budget=sub_budget)


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


def settle(
    engine: Engine,
    charge_id: str,
    state: ChargeState,
    answer: dict[str, Any] | None = None,
    *,
    error_code: str | None = None,
) -> None:
    """Mark a reserved charge ``released`` (with its answer) or ``failed`` (``error_code``:
    why, for the audit log). The cost stays spent."""
    with engine.begin() as con:
        done = con.execute(
            update(charges)
            .where(charges.c.id == charge_id, charges.c.state == ChargeState.RESERVED.value)
            .values(
                state=state.value,
                answer=json.dumps(answer) if answer is not None else None,
                updated_at=now(),
            )
        )
        if done.rowcount:
            audit.append(
                con,
                audit.Event(
                    "query",
                    "query.settle",
                    code="ok" if state == ChargeState.RELEASED else (error_code or state.value),
                    refs={"charge": charge_id, "state": state.value},
                    primary=False,
                ),
            )


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
    """The grant's counters against the ledger they are derived from."""
    with engine.connect() as con:
        grant = _grant(con.execute(select(grants).where(grants.c.id == grant_id)).one())
        credited = con.execute(
            select(func.coalesce(func.sum(credits.c.amount_micro), 0)).where(
                credits.c.grant_id == grant_id
            )
        ).scalar_one()
        charged = con.execute(
            select(func.coalesce(func.sum(charges.c.cost_micro), 0)).where(
                charges.c.grant_id == grant_id
            )
        ).scalar_one()
    return Consistency(grant_id, int(credited), int(charged), grant.budget_micro, grant.spent_micro)


LEDGER_FIELDS = (
    "time",
    "entry",
    "id",
    "tenant",
    "dataset",
    "grant",
    "member",
    "state",
    "amount",
    "delta",
    "accounting",
    "query_hash",
    "dataset_version",
)


def entries(
    engine: Engine,
    *,
    tenant_id: str | None = None,
    dataset_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
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
    since = None if since is None else _as_utc(since)
    until = None if until is None else _as_utc(until)
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
        {
            "time": utc(r.created_at).isoformat(),
            "entry": "charge",
            "id": r.id,
            "tenant": r.tenant_id,
            "dataset": r.dataset_id,
            "grant": r.grant_id,
            "member": r.member_id,
            "state": r.state,
            "amount": r.cost_micro / 1e6,
            "delta": r.delta_pico / 1e12,
            "accounting": r.accounting,
            "query_hash": r.query_hash,
            "dataset_version": r.dataset_version,
        }
        for r in charged
    ] + [
        {
            "time": utc(r.created_at).isoformat(),
            "entry": f"credit:{r.reason}",
            "id": r.id,
            "tenant": r.tenant_id,
            "dataset": r.dataset_id,
            "grant": r.grant_id,
            "member": None,
            "state": None,
            "amount": r.amount_micro / 1e6,
            "delta": r.delta_pico / 1e12,
            "accounting": r.accounting,
            "query_hash": None,
            "dataset_version": None,
        }
        for r in credited
    ]
    records.sort(key=lambda r: (r["time"], r["entry"] != "credit:grant", r["id"]))
    return records[:limit]


def to_csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEDGER_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
