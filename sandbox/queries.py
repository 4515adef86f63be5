"""The DP query flow: gate, price, reserve, run, release.

Order matters and is the point of this module: the query is parsed, checked and priced without
touching data; the cost is reserved durably; only then does the locked-down executor run the SQL
Veil generated; the noisy release is recorded with the charge before it is returned. A run that
fails before a worker received any SQL gives its reservation back (:func:`_before_data`); any
later failure keeps the charge.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Protocol

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
from policies.gate.grid import TimeGrid, input_rows, release_point, step_s
from policies.gate.limits import check_size
from policies.gate.plan import QueryPlan, row_cap_sql
from sandbox import catalog
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.audit.log import AuditLog, require_log
from sandbox.config import Settings
from sandbox.engine.executor import NOT_DISPATCHED, Executor
from sandbox.errors import VeilError
from sandbox.ledger.budgets import BudgetStatus, describe
from sandbox.ledger.charges import ChargeState
from sandbox.ledger.grants import Grant
from sandbox.ledger.service import Ledger
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
    quantile_resolution: int | None = None  # evenly spaced quantile candidates to add


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputColumn:
    name: str
    kind: str


@dataclass(frozen=True)
class Mechanism:
    """One mechanism of a release and its share of the cost (``epsilon`` or ``rho``, as the
    grant accounts; the other is ``None``)."""

    statistic: str
    mechanism: str
    scale: float
    epsilon: float | None
    rho: float | None


@dataclass(frozen=True)
class Cost:
    """What a query costs: ``epsilon`` (pure) or ``rho`` (zCDP), δ, and per mechanism."""

    accounting: str
    epsilon: float | None
    rho: float | None
    delta: float
    mechanisms: tuple[Mechanism, ...]


@dataclass(frozen=True)
class ReleasedCell:
    """A released number and its 95% interval (``None`` where it was suppressed)."""

    value: float | int | None
    ci95: tuple[float | int | None, float | int | None]


# One released group: group keys as plain values (dates as ISO dates), every statistic a cell.
Row = dict[str, ReleasedCell | str | int | float | bool | None]


@dataclass(frozen=True)
class Answer:
    """A DP answer: noisy values with intervals, what it cost, the budget left. A repeat of a
    query the tenant paid for is the same answer, ``cached``, at no cost."""

    query_id: str
    dataset: str
    version: int
    columns: tuple[OutputColumn, ...]
    rows: tuple[Row, ...]
    suppressed_groups: int
    cost: Cost
    budget: BudgetStatus
    cached: bool


@dataclass(frozen=True)
class Preview:
    """What a query would cost and how accurate it would be; charges nothing."""

    dataset: str
    version: int
    columns: tuple[OutputColumn, ...]
    cost: Cost
    expected_ci95_half_width: dict[str, float | dict[str, float] | None]
    budget: BudgetStatus
    affordable: bool


class AnswerCodec(Protocol):
    """How a released answer is kept for the answer cache: as JSON, in its wire form (the edge,
    which owns the wire form, provides it)."""

    def dump(self, answer: Answer) -> str: ...

    def load(self, text: str) -> Answer: ...


@dataclass(frozen=True)
class _Prepared:
    member: Member  # the analyst who asks
    version: catalog.DatasetVersion
    grant: Grant
    checked: gate.CheckedQuery
    plan: QueryPlan
    calibration: Calibration
    query_hash: str
    step_s: float  # the time grid step its answer is released on (0: none)


class QueryService:
    """DP queries for analysts: charged through ``ledger`` (which records every charge in the
    audit log), answered again from its cache through ``answers``.

    ``vault`` decrypts sealed workspaces (the app always has one); without it, version paths
    are plain workspace files (tools and tests that build their own)."""

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        settings: Settings,
        ledger: Ledger,
        audit: AuditLog,
        answers: AnswerCodec,
        vault: Vault | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.settings = settings
        self.ledger = ledger
        self.audit = require_log(audit, "the query service")
        self.answers = answers
        self.vault = vault

    def measure_row_caps(self, version: catalog.DatasetVersion, workspace: Path) -> None:
        """Record which tables of a version built before this was measured at build time keep
        their row caps: run once, on its first query, after that query's charge (nothing reads
        data before), so every later query is planned with it."""
        rows = self.executor.run(workspace, row_cap_sql(version.policy))
        caps = {t.name: t.max_rows_per_unit for t in version.policy.tables}
        tables = [str(name) for name, most in rows if int(str(most)) <= caps[str(name)]]
        catalog.record_within_row_caps(self.engine, version.dataset, version.version, tables)

    def prepare(self, actor: Actor, request: QueryRequest) -> _Prepared:
        """Everything before the data: auth, grant, gate, plan and price. Charges nothing."""
        check_size(request.sql, self.settings.sql_limits)  # before the text is kept anywhere
        # The request's audit entry keeps the SQL text (sealed), also when the gate refuses it.
        actor.annotate(dataset=request.dataset, sealed={"sql": request.sql})
        member = actor.require_member(MemberRole.ANALYST)
        version = catalog.current(self.engine, request.dataset)
        catalog.require_authorised(self.engine, version.zone, version.dataset, "query")
        grant = self.ledger.grants.grant_for(actor, member.tenant_id, request.dataset)
        budget = _budget_micro(request, grant.accounting)
        delta = request.delta if request.delta is not None else self.settings.default_delta
        delta_pico = request_delta_to_pico(delta)  # a cap: rounded down, sub-pico refused
        checked = gate.check(gate.parse(request.sql, self.settings.sql_limits), version.policy)
        plan = gate.plan(
            checked,
            version.policy,
            salt=version.salt,
            # the row caps' window is left out of tables measured to keep them (never a guess)
            within_row_caps=version.within_row_caps or frozenset(),
            quantile_resolution=request.quantile_resolution,
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
                    # two candidate grids are two queries (none: the key it always had)
                    *([] if not plan.quantiles else [f"q{request.quantile_resolution}"]),
                ]
            ).encode()
        ).hexdigest()
        grid = TimeGrid(self.settings.query_grid_ms, self.settings.query_grid_ns_per_row)
        step = 0.0
        if grid.enabled:  # from public facts only: the plan's shape and its tables' sizes
            rows = input_rows(version.policy, [t for t, _ in checked.tables], version.row_counts)
            statements = 1 + len(plan.quantiles)
            step = step_s(grid, rows, statements, group_window=plan.group_window)
        return _Prepared(member, version, grant, checked, plan, calibration, digest, step)

    def preview(self, actor: Actor, request: QueryRequest) -> Preview:
        p = self.prepare(actor, request)
        return Preview(
            dataset=p.version.dataset,
            version=p.version.version,
            columns=_columns(p.plan),
            cost=_cost(p.calibration),
            expected_ci95_half_width=expected_accuracy(p.plan, p.calibration),
            budget=describe(
                p.grant,
                self.ledger.grants.member_budget(p.grant.id, p.member.id),
                p.calibration.cost_micro,
            ),
            affordable=_affordable(p.grant, p.calibration),
        )

    def run(self, actor: Actor, request: QueryRequest) -> Answer:
        """Gate, price, reserve, run, release. Once the charge is reserved (data is about to be
        touched), the answer — or the failure — is held until the next point of the query's time
        grid, so that how long it took does not depend on the data (docs/queries.md#timing)."""
        started = time.monotonic()
        p = self.prepare(actor, request)
        charges = self.ledger.charges
        cached = charges.cached_answer(p.member.tenant_id, p.query_hash)
        if cached is not None:
            return _from_cache(self.answers.load(cached), p.grant)
        reservation = charges.reserve(
            actor,
            p.grant,
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
        run = _Run()
        try:
            plan = p.plan
            params = list(plan.params)
            with leased(self.vault, p.version) as workspace:
                run.leased = True
                if p.version.within_row_caps is None:
                    self.measure_row_caps(p.version, workspace)
                    run.engine_ran = True
                rows = self.executor.run(workspace, plan.sql, params)
                run.engine_ran = True
                histograms = {
                    q.name: self.executor.run(workspace, q.histogram_sql, params)
                    for q in plan.quantiles
                }
            released = release(plan, p.calibration, rows, histograms)
        except BaseException as exc:
            code = exc.error_code if isinstance(exc, VeilError) else "internal_error"
            if _before_data(run, exc):
                charges.cancel(actor, reservation, code)
                log.warning(
                    "query cancelled before any data was read charge=%s code=%s",
                    reservation.charge_id,
                    code,
                )
            else:
                charges.settle(actor, reservation.charge_id, ChargeState.FAILED, error_code=code)
            if isinstance(exc, Exception):
                self.hold(started, p.step_s, reservation.charge_id)
            raise
        answer = Answer(
            query_id=reservation.charge_id,
            dataset=p.version.dataset,
            version=p.version.version,
            columns=_columns(p.plan),
            rows=tuple(_row(r) for r in released.rows),
            suppressed_groups=released.suppressed,
            cost=_cost(p.calibration),
            budget=describe(reservation.grant, reservation.member_budget, p.calibration.cost_micro),
            cached=False,
        )
        charges.settle(
            actor, reservation.charge_id, ChargeState.RELEASED, self.answers.dump(answer)
        )
        self.hold(started, p.step_s, reservation.charge_id)
        return answer

    @staticmethod
    def hold(started: float, step: float, charge_id: str) -> None:
        """Wait until the first grid point (``step``, ``2·step``, ``4·step``, … after
        ``started``, on the monotonic clock) that the work so far has not passed."""
        if step <= 0:
            return
        point, doublings = release_point(time.monotonic() - started, step)
        if doublings:  # the operator's cue to raise the grid: an overrun shows in the timing
            log.warning(
                "query overran its time grid step charge=%s step_ms=%.0f released_at_ms=%.0f",
                charge_id,
                step * 1000,
                point * 1000,
            )
        while (left := started + point - time.monotonic()) > 0:
            time.sleep(left)

    def budgets(self, actor: Actor) -> list[BudgetStatus]:
        """The acting member's tenant's grants: total, spent, left, what that buys."""
        return self.ledger.budgets(actor)


@dataclass
class _Run:
    """How far a run got: the workspace was leased (decrypted), an engine call completed."""

    leased: bool = False
    engine_ran: bool = False


def _before_data(run: _Run, exc: BaseException) -> bool:
    """Whether a run failed before any data was read, so that its reservation is given back:
    the workspace could not be leased (missing, does not open, its master key is not in the
    ring even read again, no room to decrypt), or the first engine call failed before a worker
    received it (``NOT_DISPATCHED``: the executor raises those only then). Anything after the
    engine ran is an uncertain outcome: the charge stays."""
    if not run.leased:
        return True
    return not run.engine_ran and isinstance(exc, NOT_DISPATCHED)


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


def _affordable(grant: Grant, calibration: Calibration) -> bool:
    """Whether a run would pass the per-query cap and the budget left now."""
    return (
        calibration.cost_micro <= grant.per_query_cap_micro
        and calibration.cost_micro <= grant.left_micro
        and calibration.delta_pico <= grant.left_delta_pico
    )


def _columns(plan: QueryPlan) -> tuple[OutputColumn, ...]:
    return tuple(OutputColumn(o.name, o.kind) for o in plan.outputs)


def _cost(calibration: Calibration) -> Cost:
    pure = calibration.accounting == Accounting.PURE

    def split(micro: int) -> tuple[float | None, float | None]:
        """(ε, ρ): the amount under the grant's unit, ``None`` under the other."""
        return (micro / MICRO, None) if pure else (None, micro / MICRO)

    return Cost(
        calibration.accounting.value,
        *split(calibration.cost_micro),
        delta=calibration.delta_pico / PICO,
        mechanisms=tuple(
            Mechanism(m.stat, m.kind, m.scale, *split(m.share_micro))
            for m in calibration.mechanisms.values()
        ),
    )


def _from_cache(answer: Answer, grant: Grant) -> Answer:
    """The stored noisy answer again, at no cost: the same release, so no new privacy loss."""
    pure = grant.accounting == Accounting.PURE
    paid = answer.cost.epsilon if pure else answer.cost.rho
    free = replace(
        answer.cost,
        epsilon=0.0 if pure else None,
        rho=None if pure else 0.0,
        delta=0.0,
        mechanisms=(),
    )
    return replace(
        answer,
        cost=free,
        budget=describe(grant, None, round((paid or 0.0) * MICRO)),
        cached=True,
    )


def _row(row: dict[str, Any]) -> Row:
    out: Row = {}
    for name, value in row.items():
        if isinstance(value, Cell):
            out[name] = ReleasedCell(value.value, (value.lower, value.upper))
        elif isinstance(value, date):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out
