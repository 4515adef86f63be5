"""The cost of each plan shape equals the hand formula: exact integers, composed by summation."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import opendp.prelude as dp
import pytest

from policies.accounting import MICRO, Accounting, gaussian_scale, laplace_scale, to_micro
from policies.gate import check, parse, plan
from policies.gate.plan import QueryPlan, StatKind
from policies.loader import load_policy
from policies.model import Policy
from sandbox.noise import calibrate, release

POLICY = load_policy(Path("sandbox/demo/data/enterprise.toml"))
CPS = load_policy(Path("sandbox/demo/data/cps1988.toml"))


def planned(sql: str, policy=POLICY) -> QueryPlan:
    return plan(check(parse(sql), policy), policy, salt=3)


def hand_shares(total_micro: int, mechanisms: int) -> list[int]:
    return [total_micro // mechanisms] * mechanisms


@pytest.mark.parametrize(
    ("sql", "kinds"),
    [
        # registry: one row per unit; no GROUP BY, so no distinct-unit guard
        ("SELECT COUNT(*) FROM registry", [StatKind.COUNT]),
        # public keys: plus the distinct-unit guard (min_group_size = 10)
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


# --- min_group_size costs ε only when there is a group to suppress --------------------------

UNGROUPED = [
    ("SELECT COUNT(*) AS n FROM registry", POLICY),
    ("SELECT SUM(revenue) AS s FROM tax WHERE year(month) = 2024", POLICY),
    ("SELECT AVG(registered_capital) AS m FROM registry WHERE district = 'haidian'", POLICY),
    ("SELECT COUNT(*) AS n, SUM(wage) AS s FROM cps1988", CPS),
    ("SELECT COUNT(DISTINCT person_id) AS u FROM cps1988", CPS),
]


@pytest.mark.parametrize(("sql", "policy"), UNGROUPED)
@pytest.mark.parametrize("accounting", [Accounting.PURE, Accounting.ZCDP])
def test_ungrouped_query_pays_nothing_for_min_group_size(
    sql: str, policy: Policy, accounting: Accounting
) -> None:
    """Without GROUP BY the one row is always released: no guard, the whole budget goes to the
    statistics the query asked for, with exactly the scales of the same query under
    ``min_group_size = 0``."""
    assert policy.min_group_size == 10
    guarded = planned(sql, policy)
    free = planned(sql, dataclasses.replace(policy, min_group_size=0))
    assert guarded.guard is None and guarded.selection is None
    assert guarded.statistics == free.statistics and guarded.sql == free.sql
    budget = to_micro(0.7)
    calibration = calibrate(guarded, budget, accounting, 10**5)
    reference = calibrate(free, budget, accounting, 10**5)
    assert calibration == reference
    shares = hand_shares(budget, guarded.mechanisms)
    assert calibration.cost_micro == sum(shares) and calibration.delta_pico == 0
    assert [m.share_micro for m in calibration.mechanisms.values()] == shares


def test_one_ungrouped_statistic_gets_the_whole_epsilon_exactly() -> None:
    """ε = 0.7 on SUM(wage): one mechanism, charged exactly 700,000 µε, scale L1 / 0.7."""
    query_plan = planned("SELECT SUM(wage) AS s FROM cps1988", CPS)
    (stat,) = query_plan.statistics
    calibration = calibrate(query_plan, 700_000, Accounting.PURE, 0)
    mech = calibration.mechanisms[stat.name]
    assert calibration.cost_micro == mech.share_micro == 700_000
    assert mech.scale == laplace_scale(stat.l1, 700_000)  # OpenDP's map agrees without a nudge
    assert Fraction(stat.l1) / Fraction(mech.scale) <= Fraction(7, 10)
    assert math.isclose(mech.scale, stat.l1 / 0.7, rel_tol=1e-12)
    rho = calibrate(query_plan, 700_000, Accounting.ZCDP, 0)
    assert rho.cost_micro == 700_000
    assert rho.mechanisms[stat.name].scale == gaussian_scale(stat.l2_squared, 700_000)


def test_ungrouped_release_is_never_suppressed() -> None:
    """Exact aggregates of an empty selection: the one row is still released, as a noisy zero."""
    query_plan = planned("SELECT COUNT(*) AS n FROM registry WHERE district = 'haidian'")
    calibration = calibrate(query_plan, to_micro(1.0), Accounting.PURE, 0)
    released = release(query_plan, calibration, [(0,)], {})
    assert released.suppressed == 0 and len(released.rows) == 1


def test_public_keys_pay_for_the_guard_only_when_min_group_size_is_set() -> None:
    """Public keys: every cell exists whatever the data; the guard (and its share) is there only
    to suppress cells below ``min_group_size``."""
    sql = "SELECT region, SUM(wage) AS s FROM cps1988 GROUP BY region"
    guarded = planned(sql, CPS)
    free = planned(sql, dataclasses.replace(CPS, min_group_size=0))
    assert guarded.public_cells is not None and guarded.selection is None
    assert guarded.guard is not None and free.guard is None
    assert [s.kind for s in guarded.statistics] == [StatKind.COUNT_UNITS, StatKind.SUM]
    budget = to_micro(1.0)
    assert calibrate(guarded, budget, Accounting.PURE, 0).cost_micro == budget
    assert calibrate(free, budget, Accounting.PURE, 0).cost_micro == budget
    sum_name = next(s.name for s in guarded.statistics if s.kind == StatKind.SUM)
    guarded_scale = calibrate(guarded, budget, Accounting.PURE, 0).mechanisms[sum_name].scale
    free_sum = next(s.name for s in free.statistics if s.kind == StatKind.SUM)
    free_scale = calibrate(free, budget, Accounting.PURE, 0).mechanisms[free_sum].scale
    assert guarded_scale > 1.9 * free_scale  # the guard takes half of ε


def test_private_keys_select_with_the_guard_whatever_min_group_size() -> None:
    """Private keys: the guard is the partition selection, needed anyway; ``min_group_size`` only
    raises its threshold, and costs no extra ε."""
    sql = "SELECT month, COUNT(*) AS n FROM tax GROUP BY month"
    guarded = planned(sql)
    free = planned(sql, dataclasses.replace(POLICY, min_group_size=0))
    assert guarded.selection == guarded.guard and free.selection == free.guard
    assert guarded.statistics == free.statistics
    budget = to_micro(1.0)
    with_min = calibrate(guarded, budget, Accounting.PURE, 10**5)
    without = calibrate(free, budget, Accounting.PURE, 10**5)
    assert with_min.cost_micro == without.cost_micro == budget
    selection = with_min.mechanisms[guarded.selection or ""]
    assert selection.threshold is not None and selection.threshold >= POLICY.min_group_size
