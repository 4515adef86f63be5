"""How a grant stands, in numbers and in plain words: for the admin who made it and the analyst
who spends it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from policies.accounting import MICRO, PICO, Accounting
from sandbox.ledger.grants import Grant, MemberBudget
from sandbox.noise import zcdp_epsilon

EXAMPLE_COSTS = (0.1, 0.5, 1.0)


@dataclass(frozen=True, kw_only=True)
class Figures:
    """A grant's budget in plain numbers (ε or ρ as ``unit`` says, δ): what a grant and a
    budget share. ``spent_as_epsilon``/``total_as_epsilon``: a zCDP grant's ρ in ε (``None``
    for a pure grant, and where there is no ε to give: nothing spent, or δ = 0)."""

    accounting: str
    unit: str
    total: float
    spent: float
    remaining: float
    delta_total: float
    delta_spent: float
    delta_remaining: float
    per_query_cap: float
    refresh: str
    next_refresh: datetime | None
    spent_as_epsilon: float | None
    total_as_epsilon: float | None


@dataclass(frozen=True, kw_only=True)
class GrantStatus(Figures):
    """A grant, for the administration."""

    id: str
    tenant: str
    dataset: str


@dataclass(frozen=True)
class MemberShare:
    """A member's sub-budget of a grant."""

    total: float
    spent: float
    remaining: float


@dataclass(frozen=True, kw_only=True)
class BudgetStatus(Figures):
    """A grant as the analyst who spends it sees it: with its own sub-budget, how many queries
    are left at a few example costs (and at a query's own cost, with its answer), in words."""

    dataset: str
    grant: str
    member_budget: MemberShare | None
    queries_left_at: dict[str, int]
    summary: str
    queries_left_at_this_cost: int | None = None


def _figures(grant: Grant) -> Figures:
    unit = "epsilon" if grant.accounting == Accounting.PURE else "rho"
    zcdp = grant.accounting == Accounting.ZCDP
    delta = grant.delta_pico / PICO
    return Figures(
        accounting=grant.accounting.value,
        unit=unit,
        total=grant.budget_micro / MICRO,
        spent=grant.spent_micro / MICRO,
        remaining=grant.left_micro / MICRO,
        delta_total=delta,
        delta_spent=grant.spent_delta_pico / PICO,
        delta_remaining=grant.left_delta_pico / PICO,
        per_query_cap=grant.per_query_cap_micro / MICRO,
        refresh=grant.refresh.value,
        next_refresh=grant.next_refresh(),
        spent_as_epsilon=zcdp_epsilon(grant.spent_micro / MICRO, delta) if zcdp else None,
        total_as_epsilon=zcdp_epsilon(grant.budget_micro / MICRO, delta) if zcdp else None,
    )


def grant_status(grant: Grant) -> GrantStatus:
    figures = _figures(grant)
    return GrantStatus(
        **vars(figures), id=grant.id, tenant=grant.tenant_id, dataset=grant.dataset_id
    )


def describe(
    grant: Grant, member_budget: MemberBudget | None = None, cost_micro: int | None = None
) -> BudgetStatus:
    """The grant as it stands for a member with ``member_budget`` (if any); with
    ``cost_micro``, also how many more queries of that cost it buys."""
    figures = _figures(grant)
    left = max(0, grant.left_micro)
    share = None
    if member_budget is not None:
        left = max(0, min(left, member_budget.left_micro))
        share = MemberShare(
            total=member_budget.budget_micro / MICRO,
            spent=member_budget.spent_micro / MICRO,
            remaining=max(0, member_budget.left_micro) / MICRO,
        )
    affordable = {
        str(cost): _affordable(left, grant.per_query_cap_micro, round(cost * MICRO))
        for cost in EXAMPLE_COSTS
    }
    return BudgetStatus(
        **vars(figures),
        dataset=grant.dataset_id,
        grant=grant.id,
        member_budget=share,
        queries_left_at=affordable,
        summary=_words(figures.unit, left, grant.per_query_cap_micro, affordable),
        queries_left_at_this_cost=(
            None if cost_micro is None else queries_left(grant, member_budget, cost_micro)
        ),
    )


def queries_left(grant: Grant, member_budget: MemberBudget | None, cost_micro: int) -> int:
    left = grant.left_micro
    if member_budget is not None:
        left = min(left, member_budget.left_micro)
    return _affordable(max(0, left), grant.per_query_cap_micro, cost_micro)


def _affordable(left_micro: int, cap_micro: int, cost_micro: int) -> int:
    if cost_micro <= 0 or cost_micro > cap_micro:
        return 0
    return left_micro // cost_micro


def _words(unit: str, left_micro: int, cap_micro: int, affordable: dict[str, int]) -> str:
    symbol = "ε" if unit == "epsilon" else "ρ"
    counts = ", ".join(f"{n} at {symbol} = {cost}" for cost, n in affordable.items())
    return (
        f"{left_micro / MICRO:g} {symbol} left: enough for {counts} "
        f"(at most {symbol} = {cap_micro / MICRO:g} per query)."
    )
