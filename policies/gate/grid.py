"""The time grid a query's answer is released on: its step from public facts, and its points.

A query that touched data is answered at a point of a grid that starts when the request did:
``step``, ``2 * step``, ``4 * step``, … — the first one its work is done by. The step depends
only on facts that do not change with what the query selects: the configured grid
(:class:`TimeGrid`), the plan's shape (which tables, how many statements, whether the group
cap's window runs) and the size class of
those tables (their row counts rounded up to a power of two, with the join bounded by the
declared row caps). Every answer whose work fits in one step therefore takes the same time,
whatever the data; one that overruns is released at a later point, and the doubling makes the
point it lands on tell at most the order of magnitude of the overrun.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.model import Policy

# How much more a row costs when the plan ranks each unit's groups in a window (the group cap
# binds) and groups every joined row, measured on the demo tables (bench/timing_channel.py
# --engine): about 11x a row of a count that DuckDB aggregates below the join.
WINDOW_WEIGHT = 10


@dataclass(frozen=True)
class TimeGrid:
    """The configured grid: ``base_ms`` per statement plus ``ns_per_row`` per row of its input
    size class. ``base_ms == 0`` turns the grid off (answers go out when ready)."""

    base_ms: float
    ns_per_row: float

    @property
    def enabled(self) -> bool:
        return self.base_ms > 0


def input_rows(policy: Policy, tables: Sequence[str], row_counts: Mapping[str, int]) -> int:
    """A bound on the rows a statement over ``tables`` reads and joins, from public facts only.

    One table: its rows. Two tables joined on the privacy unit: both tables' rows plus the
    join's, which is at most each row of one table times the other table's declared cap.
    """
    sizes = [max(0, int(row_counts.get(t, 0))) for t in tables]
    if len(tables) < 2:
        return sum(sizes)
    caps = []
    for name in tables:
        table = policy.table(name)
        caps.append(table.max_rows_per_unit if table is not None else 1)
    (a, b), (cap_a, cap_b) = sizes[:2], caps[:2]
    return a + b + min(a * cap_b, b * cap_a)


def size_class(rows: int) -> int:
    """``rows`` rounded up to a power of two (at least 1): all the step reveals of the size."""
    return 1 << max(0, math.ceil(math.log2(max(1, rows))))


def step_s(grid: TimeGrid, rows: int, statements: int, *, group_window: bool = False) -> float:
    """The grid step, in seconds, of a query that runs ``statements`` statements over ``rows``
    (:func:`input_rows`) rows; a plan whose group cap binds (a window over every input row)
    counts each row :data:`WINDOW_WEIGHT` times more."""
    weight = 1 + (WINDOW_WEIGHT if group_window else 0)
    per_statement_ms = grid.base_ms + grid.ns_per_row * weight * size_class(rows) / 1e6
    return max(1, statements) * per_statement_ms / 1000.0


def release_point(elapsed_s: float, step: float) -> tuple[float, int]:
    """The first grid point (seconds after the start) at or after ``elapsed_s``, and how many
    times the step was doubled to reach it (0: the work fitted in one step)."""
    if step <= 0:
        return max(0.0, elapsed_s), 0
    point, doublings = step, 0
    while point < elapsed_s:
        point, doublings = point * 2, doublings + 1
    return point, doublings
