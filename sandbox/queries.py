"""The DP query flow: gate, price, reserve, run, release.

Order matters and is the point of this module: the query is parsed, checked and priced without
touching data; the cost is reserved durably; only then does the locked-down executor run the SQL
Veil generated; the noisy release is recorded with the charge before it is returned.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine

from policies import gate
from policies.accounting import (
    MICRO,
    PICO,
    Accounting,
    InvalidBudget,
    delta_to_pico,
    epsilon_to_rho_micro,
    to_micro,
)
from policies.gate.plan import QueryPlan
from sandbox import catalog, ledger
from sandbox.access import Member, MemberRole
from sandbox.config import Settings
from sandbox.executor import Executor
from sandbox.noise import Calibration, Cell, calibrate, expected_accuracy, release

log = logging.getLogger("veil.queries")


@dataclass(frozen=True)
class QueryRequest:
    dataset: str
    sql: str
    epsilon: float | None = None
    rho: float | None = None
    delta: float | None = None


@dataclass(frozen=True)
class _Prepared:
    version: catalog.DatasetVersion
    grant: ledger.Grant
    plan: QueryPlan
    calibration: Calibration
    query_hash: str


class QueryService:
    def __init__(self, engine: Engine, executor: Executor, settings: Settings) -> None:
        self.engine = engine
        self.executor = executor
        self.settings = settings

    def prepare(self, member: Member, request: QueryRequest) -> _Prepared:
        """Everything before the data: auth, grant, gate, plan and price. Charges nothing."""
        member.require(MemberRole.ANALYST)
        version = catalog.current(self.engine, request.dataset)
        grant = ledger.grant_for(self.engine, member.tenant_id, request.dataset)
        budget = _budget_micro(request, grant.accounting)
        delta = request.delta if request.delta is not None else self.settings.default_delta
        checked = gate.check(gate.parse(request.sql), version.policy)
        plan = gate.plan(checked, version.policy, salt=version.salt)
        calibration = calibrate(plan, budget, grant.accounting, delta_to_pico(delta))
        digest = hashlib.sha256(
            "\n".join(
                [
                    version.dataset,
                    str(version.version),
                    plan.canonical,
                    grant.accounting,
                    str(budget),
                ]
            ).encode()
        ).hexdigest()
        return _Prepared(version, grant, plan, calibration, digest)

    def preview(self, member: Member, request: QueryRequest) -> dict[str, Any]:
        prepared = self.prepare(member, request)
        return {
            "dataset": prepared.version.dataset,
            "version": prepared.version.version,
            "columns": _columns(prepared.plan),
            "cost": _cost(prepared.calibration),
            "expected_ci95_half_width": expected_accuracy(prepared.plan, prepared.calibration),
            "budget": _budget(prepared.grant, prepared.calibration.cost_micro),
            "affordable": _affordable(prepared.grant, prepared.calibration),
        }

    def run(
        self, member: Member, request: QueryRequest, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        request_hash = _request_hash(request)
        if idempotency_key is not None:
            previous = ledger.previous_answer(self.engine, member.id, idempotency_key, request_hash)
            if previous is not None:
                return previous
        p = self.prepare(member, request)
        reservation = ledger.reserve(
            self.engine,
            p.grant,
            member.id,
            p.query_hash,
            p.version.version,
            p.calibration.cost_micro,
            p.calibration.delta_pico,
            idempotency_key,
            request_hash,
        )
        log.info(
            "query reserved charge=%s dataset=%s cost_micro=%d",
            reservation.charge_id,
            p.version.dataset,
            p.calibration.cost_micro,
        )
        try:
            params = list(p.plan.params)
            rows = self.executor.run(p.version.path, p.plan.sql, params)
            histograms = {
                q.name: self.executor.run(p.version.path, q.histogram_sql, params)
                for q in p.plan.quantiles
            }
            released = release(p.plan, p.calibration, rows, histograms)
        except BaseException:
            ledger.settle(self.engine, reservation.charge_id, "failed")
            raise
        answer = {
            "query_id": reservation.charge_id,
            "dataset": p.version.dataset,
            "version": p.version.version,
            "columns": _columns(p.plan),
            "rows": [_row(r) for r in released.rows],
            "suppressed_groups": released.suppressed,
            "cost": _cost(p.calibration),
            "budget": _budget(reservation.grant, p.calibration.cost_micro),
        }
        ledger.settle(self.engine, reservation.charge_id, "released", answer)
        return answer


def _request_hash(request: QueryRequest) -> str:
    text = repr((request.dataset, request.sql, request.epsilon, request.rho, request.delta))
    return hashlib.sha256(text.encode()).hexdigest()


def _budget_micro(request: QueryRequest, accounting: Accounting) -> int:
    if accounting == Accounting.PURE:
        if request.rho is not None:
            raise InvalidBudget("this grant uses pure DP: send epsilon, not rho", field="rho")
        if request.epsilon is None:
            raise InvalidBudget("epsilon is required", field="epsilon")
        return to_micro(request.epsilon)
    if request.rho is not None and request.epsilon is not None:
        raise InvalidBudget("send epsilon or rho, not both", field="rho")
    if request.rho is not None:
        return to_micro(request.rho, "rho")
    if request.epsilon is None:
        raise InvalidBudget("rho (or epsilon) is required", field="rho")
    return epsilon_to_rho_micro(to_micro(request.epsilon))


def _affordable(grant: ledger.Grant, calibration: Calibration) -> bool:
    """Whether a run would pass the per-query cap and the budget left now."""
    return (
        calibration.cost_micro <= grant.per_query_cap_micro
        and calibration.cost_micro <= grant.left_micro
        and calibration.delta_pico <= grant.left_delta_pico
    )


def _columns(plan: QueryPlan) -> list[dict[str, str]]:
    return [{"name": o.name, "kind": o.kind} for o in plan.outputs]


def _cost(calibration: Calibration) -> dict[str, Any]:
    unit = "epsilon" if calibration.accounting == Accounting.PURE else "rho"
    return {
        "accounting": calibration.accounting.value,
        unit: calibration.cost_micro / MICRO,
        "delta": calibration.delta_pico / PICO,
        "mechanisms": [
            {
                "statistic": m.stat,
                "mechanism": m.kind,
                "scale": m.scale,
                unit: m.share_micro / MICRO,
            }
            for m in calibration.mechanisms.values()
        ],
    }


def _budget(grant: ledger.Grant, cost_micro: int) -> dict[str, Any]:
    unit = "epsilon" if grant.accounting == Accounting.PURE else "rho"
    left = grant.left_micro
    return {
        "accounting": grant.accounting.value,
        f"{unit}_total": grant.budget_micro / MICRO,
        f"{unit}_spent": grant.spent_micro / MICRO,
        f"{unit}_remaining": left / MICRO,
        "delta_remaining": grant.left_delta_pico / PICO,
        "queries_left_at_this_cost": left // cost_micro if cost_micro else None,
    }


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, Cell):
            out[name] = {"value": value.value, "ci95": [value.lower, value.upper]}
        elif isinstance(value, date):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out
