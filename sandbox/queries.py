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
    epsilon_to_rho_micro,
    request_delta_to_pico,
    to_micro,
)
from policies.errors import InvalidBudget
from policies.gate.limits import check_size
from policies.gate.plan import QueryPlan, row_cap_sql
from sandbox import catalog
from sandbox.access.model import Member, MemberRole
from sandbox.audit import log as audit
from sandbox.config import Settings
from sandbox.engine.executor import Executor
from sandbox.errors import VeilError
from sandbox.ledger import budgets, charges, grants
from sandbox.ledger.charges import ChargeState
from sandbox.noise import Calibration, Cell, calibrate, expected_accuracy, release
from sandbox.vault.decrypted import Vault, leased

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
    grant: grants.Grant
    checked: gate.CheckedQuery
    plan: QueryPlan
    calibration: Calibration
    query_hash: str


class QueryService:
    """``vault`` decrypts sealed workspaces (the app always has one); without it, version paths
    are plain workspace files (tools and tests that build their own)."""

    def __init__(
        self, engine: Engine, executor: Executor, settings: Settings, vault: Vault | None = None
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.settings = settings
        self.vault = vault
        self._row_caps: dict[tuple[str, int], frozenset[str]] = {}

    def within_row_caps(self, version: catalog.DatasetVersion, *, measure: bool) -> frozenset[str]:
        """Tables of this immutable version whose units all respect ``max_rows_per_unit``.

        Measured once per version and process, and only once a charge is reserved (``measure``):
        before that nothing reads data. Until measured, and for a table that breaks its cap,
        the row cap stays in the SQL (a row count per unit, and a window over the units above it).
        """
        key = (version.dataset, version.version)
        if key not in self._row_caps:
            if not measure:
                return frozenset()
            with leased(self.vault, version) as workspace:
                rows = self.executor.run(workspace, row_cap_sql(version.policy))
            caps = {t.name: t.max_rows_per_unit for t in version.policy.tables}
            self._row_caps[key] = frozenset(
                str(name) for name, most in rows if int(str(most)) <= caps[str(name)]
            )
        return self._row_caps[key]

    def prepare(self, member: Member, request: QueryRequest) -> _Prepared:
        """Everything before the data: auth, grant, gate, plan and price. Charges nothing."""
        check_size(request.sql, self.settings.sql_limits)  # before the text is kept anywhere
        # The request's audit entry keeps the SQL text (sealed), also when the gate refuses it.
        audit.annotate(dataset=request.dataset, sealed={"sql": request.sql})
        member.require(MemberRole.ANALYST)
        version = catalog.current(self.engine, request.dataset)
        grant = grants.grant_for(self.engine, member.tenant_id, request.dataset)
        budget = _budget_micro(request, grant.accounting)
        delta = request.delta if request.delta is not None else self.settings.default_delta
        delta_pico = request_delta_to_pico(delta)  # a cap: rounded down, sub-pico refused
        checked = gate.check(gate.parse(request.sql, self.settings.sql_limits), version.policy)
        plan = gate.plan(
            checked,
            version.policy,
            salt=version.salt,
            within_row_caps=self.within_row_caps(version, measure=False),
        )
        calibration = calibrate(plan, budget, grant.accounting, delta_pico)
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
        return _Prepared(version, grant, checked, plan, calibration, digest)

    def preview(self, member: Member, request: QueryRequest) -> dict[str, Any]:
        prepared = self.prepare(member, request)
        return {
            "dataset": prepared.version.dataset,
            "version": prepared.version.version,
            "columns": _columns(prepared.plan),
            "cost": _cost(prepared.calibration),
            "expected_ci95_half_width": expected_accuracy(prepared.plan, prepared.calibration),
            "budget": _budget(
                prepared.grant,
                grants.member_budget(self.engine, prepared.grant.id, member.id),
                prepared.calibration.cost_micro,
            ),
            "affordable": _affordable(prepared.grant, prepared.calibration),
        }

    def run(self, member: Member, request: QueryRequest) -> dict[str, Any]:
        p = self.prepare(member, request)
        cached = charges.cached_answer(self.engine, member.tenant_id, p.query_hash)
        if cached is not None:
            return _from_cache(cached, p.grant)
        reservation = charges.reserve(
            self.engine,
            p.grant,
            member.id,
            p.query_hash,
            p.version.version,
            p.calibration.cost_micro,
            p.calibration.delta_pico,
        )
        log.info(
            "query reserved charge=%s dataset=%s cost_micro=%d",
            reservation.charge_id,
            p.version.dataset,
            p.calibration.cost_micro,
        )
        try:
            plan = p.plan
            caps = self.within_row_caps(p.version, measure=True)
            if caps != plan.within_row_caps:  # same statistics and cost; only the SQL is lighter
                plan = gate.plan(
                    p.checked, p.version.policy, salt=p.version.salt, within_row_caps=caps
                )
            params = list(plan.params)
            with leased(self.vault, p.version) as workspace:
                rows = self.executor.run(workspace, plan.sql, params)
                histograms = {
                    q.name: self.executor.run(workspace, q.histogram_sql, params)
                    for q in plan.quantiles
                }
            released = release(plan, p.calibration, rows, histograms)
        except BaseException as exc:
            code = exc.error_code if isinstance(exc, VeilError) else "internal_error"
            charges.settle(self.engine, reservation.charge_id, ChargeState.FAILED, error_code=code)
            raise
        answer = {
            "query_id": reservation.charge_id,
            "dataset": p.version.dataset,
            "version": p.version.version,
            "columns": _columns(p.plan),
            "rows": [_row(r) for r in released.rows],
            "suppressed_groups": released.suppressed,
            "cost": _cost(p.calibration),
            "budget": _budget(
                reservation.grant, reservation.member_budget, p.calibration.cost_micro
            ),
            "cached": False,
        }
        charges.settle(self.engine, reservation.charge_id, ChargeState.RELEASED, answer)
        return answer


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


def _affordable(grant: grants.Grant, calibration: Calibration) -> bool:
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


def _budget(
    grant: grants.Grant, member_budget: grants.MemberBudget | None, cost_micro: int
) -> dict[str, Any]:
    view = budgets.describe(grant, member_budget)
    view["queries_left_at_this_cost"] = budgets.queries_left(grant, member_budget, cost_micro)
    return view


def _from_cache(answer: dict[str, Any], grant: grants.Grant) -> dict[str, Any]:
    """The stored noisy answer again, at no cost: the same release, so no new privacy loss."""
    cost = dict(answer["cost"])
    unit = "epsilon" if grant.accounting == Accounting.PURE else "rho"
    cost.update({unit: 0.0, "delta": 0.0, "mechanisms": []})
    return {
        **answer,
        "cost": cost,
        "budget": _budget(grant, None, round(answer["cost"][unit] * MICRO)),
        "cached": True,
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
