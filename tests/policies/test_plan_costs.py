"""The cost of each plan shape equals the hand formula: exact integers, composed by summation."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import opendp.prelude as dp
import pytest

from policies.accounting import MICRO, Accounting, to_micro
from policies.gate import check, parse, plan
from policies.gate.plan import QueryPlan, StatKind
from policies.loader import load_policy
from sandbox.noise import calibrate

POLICY = load_policy(Path("sandbox/demo/data/enterprise.toml"))
CPS = load_policy(Path("sandbox/demo/data/cps1988.toml"))


def planned(sql: str, policy=POLICY) -> QueryPlan:
    return plan(check(parse(sql), policy), policy, salt=3)


def hand_shares(total_micro: int, mechanisms: int) -> list[int]:
    return [total_micro // mechanisms] * mechanisms


@pytest.mark.parametrize(
    ("sql", "kinds"),
    [
        # registry: one row per unit, public keys, plus the distinct-unit guard
        ("SELECT COUNT(*) FROM registry", [StatKind.COUNT, StatKind.COUNT_UNITS]),
        (
            "SELECT district, AVG(registered_capital) FROM registry GROUP BY district",
            [StatKind.COUNT_UNITS, StatKind.SUM, StatKind.COUNT_COLUMN],
        ),
        (
            "SELECT year(month), SUM(revenue), STDDEV(revenue) FROM tax GROUP BY 1",
            [StatKind.COUNT_UNITS, StatKind.SUM, StatKind.SUM_SQUARES, StatKind.COUNT_COLUMN],
        ),
    ],
)
def test_pure_cost_is_the_sum_of_equal_shares(sql: str, kinds: list[StatKind]) -> None:
    query_plan = planned(sql)
    assert sorted(s.kind for s in query_plan.statistics) == sorted(kinds)
    budget = to_micro(0.7)
    calibration = calibrate(query_plan, budget, Accounting.PURE, 0)
    shares = hand_shares(budget, len(kinds))
    assert calibration.cost_micro == sum(shares) <= budget
    assert calibration.delta_pico == 0
    for stat in query_plan.statistics:
        mech = calibration.mechanisms[stat.name]
        assert mech.share_micro == shares[0]
        # hand formula: ε = L1 / scale, at most the share, exactly
        assert Fraction(stat.l1) / Fraction(mech.scale) <= Fraction(mech.share_micro, MICRO)
        # and OpenDP's own privacy map agrees
        meas = dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), mech.scale
        )
        assert meas.map(stat.l1) <= mech.share_micro / MICRO * (1 + 1e-12)


def test_sensitivities_follow_the_contribution_bounds() -> None:
    """tax: 36 rows per unit; joined with registry (1 row): still 36; group cap 36."""
    query_plan = planned(
        "SELECT industry, COUNT(*), COUNT(DISTINCT credit_code), SUM(revenue) "
        "FROM tax JOIN registry USING (credit_code) GROUP BY industry"
    )
    stats = {s.kind: s for s in query_plan.statistics}
    assert query_plan.row_cap == 36 * 1
    assert query_plan.group_cap == 36
    assert stats[StatKind.COUNT].l1 == 36
    assert stats[StatKind.COUNT_UNITS].l1 == 36
    assert stats[StatKind.COUNT_UNITS].l2_squared == 36
    bits = round(-math.log2(stats[StatKind.SUM].resolution))
    assert stats[StatKind.SUM].l1 == 36 * math.ceil(5_000_000 * 2**bits)


def test_zcdp_cost_in_rho() -> None:
    query_plan = planned("SELECT region, COUNT(*) FROM cps1988 GROUP BY region", CPS)
    budget = to_micro(0.02)
    calibration = calibrate(query_plan, budget, Accounting.ZCDP, 0)
    assert calibration.cost_micro == sum(hand_shares(budget, 2))
    for stat in query_plan.statistics:
        mech = calibration.mechanisms[stat.name]
        l2 = math.isqrt(stat.l2_squared)  # perfect squares here (1 row per person)
        assert Fraction(l2 * l2) / (2 * Fraction(mech.scale) ** 2) <= Fraction(
            mech.share_micro, MICRO
        )


def test_partition_selection_charges_delta_from_opendp() -> None:
    query_plan = planned("SELECT month, COUNT(*) FROM tax GROUP BY month")
    assert query_plan.public_cells is None
    assert query_plan.selection == query_plan.guard
    delta_target = 10**5  # 1e-7
    calibration = calibrate(query_plan, to_micro(1.0), Accounting.PURE, delta_target)
    mech = calibration.mechanisms[query_plan.selection]
    assert mech.kind == "threshold"
    assert 0 < calibration.delta_pico <= delta_target
    meas = dp.m.make_laplace_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
        dp.l01inf_distance(dp.absolute_distance(T="i64")),
        mech.scale,
        mech.threshold,
    )
    epsilon, delta = meas.map((36, 36, 1))  # ≤ 36 groups per unit, one unit per group each
    assert epsilon <= mech.share_micro / MICRO * (1 + 1e-12)
    assert calibration.delta_pico == math.ceil(delta * 10**12)


def test_quantile_costs_its_share_at_every_level() -> None:
    query_plan = planned("SELECT quantile_cont(wage, 0.9) FROM cps1988", CPS)
    calibration = calibrate(query_plan, to_micro(0.9), Accounting.PURE, 0)
    (q,) = query_plan.quantiles
    mech = calibration.mechanisms[q.name]
    for level, scale in zip((0.9, 0.001, 0.999), mech.quantile_scales, strict=True):
        meas = dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            dp.max_divergence(),
            list(q.candidates),
            level,
            scale,
        )
        assert meas.map(1) <= mech.share_micro / MICRO
    assert calibration.cost_micro <= to_micro(0.9)


def test_budget_too_small_to_split_is_refused() -> None:
    from policies.errors import InvalidBudget

    query_plan = planned("SELECT COUNT(*), AVG(revenue) FROM tax")
    with pytest.raises(InvalidBudget):
        calibrate(query_plan, 2, Accounting.PURE, 0)
