"""How a grant stands, in numbers and in plain words, for the analyst who spends it."""

from __future__ import annotations

from typing import Any

from policies.accounting import MICRO, PICO, Accounting
from sandbox.ledger.grants import Grant, MemberBudget
from sandbox.noise import zcdp_epsilon

EXAMPLE_COSTS = (0.1, 0.5, 1.0)


def describe(grant: Grant, member_budget: MemberBudget | None = None) -> dict[str, Any]:
    unit = "epsilon" if grant.accounting == Accounting.PURE else "rho"
    left = max(0, grant.left_micro)
    if member_budget is not None:
        left = max(0, min(left, member_budget.left_micro))
    out: dict[str, Any] = {
        "dataset": grant.dataset_id,
        "grant": grant.id,
        "accounting": grant.accounting.value,
        "unit": unit,
        "total": grant.budget_micro / MICRO,
        "spent": grant.spent_micro / MICRO,
        "remaining": grant.left_micro / MICRO,
        "delta_total": grant.delta_pico / PICO,
        "delta_spent": grant.spent_delta_pico / PICO,
        "delta_remaining": grant.left_delta_pico / PICO,
        "per_query_cap": grant.per_query_cap_micro / MICRO,
        "refresh": grant.refresh.value,
        "next_refresh": _iso(grant),
    }
    if member_budget is not None:
        out["member_budget"] = {
            "total": member_budget.budget_micro / MICRO,
            "spent": member_budget.spent_micro / MICRO,
            "remaining": max(0, member_budget.left_micro) / MICRO,
        }
    if grant.accounting == Accounting.ZCDP:
        out["spent_as_epsilon"] = zcdp_epsilon(grant.spent_micro / MICRO, grant.delta_pico / PICO)
        out["total_as_epsilon"] = zcdp_epsilon(grant.budget_micro / MICRO, grant.delta_pico / PICO)
    affordable = {
        str(cost): _affordable(left, grant.per_query_cap_micro, round(cost * MICRO))
        for cost in EXAMPLE_COSTS
    }
    out["queries_left_at"] = affordable
    out["summary"] = _words(unit, left, grant.per_query_cap_micro, affordable)
    return out


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


def _iso(grant: Grant) -> str | None:
    moment = grant.next_refresh()
    return None if moment is None else moment.isoformat()
