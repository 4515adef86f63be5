"""The time grid's arithmetic: the step from public facts only, and the release points."""

from __future__ import annotations

import pytest

from policies.gate import check, parse, plan
from policies.gate.grid import (
    WINDOW_WEIGHT,
    TimeGrid,
    input_rows,
    release_point,
    size_class,
    step_s,
)
from tests.support.gate import POLICY

GRID = TimeGrid(base_ms=50.0, ns_per_row=40.0)


def test_size_class_is_the_next_power_of_two() -> None:
    assert [size_class(n) for n in (0, 1, 2, 3, 4, 5, 1000, 1024, 1025)] == [
        1, 1, 2, 4, 4, 8, 1024, 1024, 2048,
    ]  # fmt: skip


def test_input_rows_of_one_table_and_of_a_join_bounded_by_the_caps() -> None:
    counts = {"tax": 360_000, "social_insurance": 320_000, "registry": 13_000}
    assert input_rows(POLICY, ["tax"], counts) == 360_000
    # tax and social_insurance declare at most 36 rows per unit each
    assert input_rows(POLICY, ["tax", "social_insurance"], counts) == (
        360_000 + 320_000 + min(360_000 * 36, 320_000 * 36)
    )
    assert input_rows(POLICY, ["registry", "tax"], counts) == 13_000 + 360_000 + 360_000


def test_step_depends_on_the_size_class_and_the_statements_only() -> None:
    # every table size of one size class gives the same step: the step reveals only the class
    assert step_s(GRID, 600_000, 1) == step_s(GRID, 1_000_000, 1) == step_s(GRID, 2**20, 1)
    assert step_s(GRID, 2**20 + 1, 1) > step_s(GRID, 2**20, 1)
    assert step_s(GRID, 2**20, 1) == pytest.approx((50 + 40 * 2**20 / 1e6) / 1000)
    assert step_s(GRID, 2**20, 3) == pytest.approx(3 * step_s(GRID, 2**20, 1))
    windowed = step_s(GRID, 2**20, 1, group_window=True)
    assert windowed == pytest.approx((50 + 40 * (1 + WINDOW_WEIGHT) * 2**20 / 1e6) / 1000)


def test_the_plan_says_when_the_group_cap_window_runs() -> None:
    """A public fact of the plan: the policy's caps and the query's shape decide it."""
    joined = (
        "SELECT year(t.month) AS y, count(*) FROM tax t "
        "JOIN social_insurance s USING (credit_code) GROUP BY y"
    )
    assert plan(check(parse(joined), POLICY), POLICY).group_window  # 36 groups < 36 x 36 rows
    single = "SELECT year(month) AS y, count(*) FROM tax GROUP BY y"
    assert not plan(check(parse(single), POLICY), POLICY).group_window  # 36 groups, 36 rows
    assert not plan(check(parse("SELECT count(*) FROM tax"), POLICY), POLICY).group_window


def test_release_points_double_after_an_overrun() -> None:
    assert release_point(0.0, 0.5) == (0.5, 0)
    assert release_point(0.2, 0.5) == (0.5, 0)
    assert release_point(0.5, 0.5) == (0.5, 0)  # done exactly on the point: released there
    assert release_point(0.51, 0.5) == (1.0, 1)
    assert release_point(1.7, 0.5) == (2.0, 2)
    assert release_point(9.0, 0.5) == (16.0, 5)


def test_no_grid() -> None:
    assert not TimeGrid(0.0, 40.0).enabled
    assert release_point(0.3, 0.0) == (0.3, 0)
