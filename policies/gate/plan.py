"""Plan a checked query: the bounded SQL Veil runs, and the statistics its noise plan releases.

The generated SQL enforces the policy's contribution bounds itself, whatever the data holds:
each unit keeps at most ``max_groups_per_unit`` groups and at most ``max_rows_per_unit`` rows
(the product of the tables' caps for a join), chosen by a salted hash so the choice depends only on
that unit's own rows. Measures are clamped to their declared bounds and summed as fixed-point
integers, so float rounding cannot enlarge a sum's sensitivity.

The statistics are integer vectors (one cell per group) with exact L1 and L2 sensitivities; every
output of the query (a count, a sum, a mean, a variance, a quantile) is released from them by
post-processing. Pricing (the ε split and the scales) happens in :mod:`policies.accounting` and
the runtime's noise module.

The SQL does not prune (docs/queries.md, "Timing"): the WHERE predicate becomes a flag,
``__keep``, computed for every row of the (joined) input, and every statistic is a conditional
aggregate over all of them (a count sums the flag; a sum adds each value times the flag).
The caps clear the flag rather than drop rows. The engine then scans, joins, windows and groups
the same rows whatever the predicate selects, so how long it runs does not tell how many rows
the predicate selected; the released integers are exactly those of filtering first
(``pruning=True`` still generates that form, the reference the tests compare with).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from enum import StrEnum

from policies.errors import QueryRejected
from policies.gate.query import AggKind, CheckedQuery, GroupKey, OrderItem, Ref
from policies.model import ColumnType, KeyValue, Policy

MAX_PUBLIC_CELLS = 10_000
KEEP = "__keep"  # the flag of the rows the query's predicate and the caps keep
FIXED_POINT_LIMIT = 2.0**40  # largest clamped magnitude after scaling: far below 2^53 and 2^63


class StatKind(StrEnum):
    COUNT = "count"  # rows in the group
    COUNT_COLUMN = "count_column"  # non-null values of a column
    COUNT_UNITS = "count_units"  # distinct units
    SUM = "sum"  # fixed-point sum of the clamped column
    SUM_SQUARES = "sum_squares"  # fixed-point sum of the squared clamped column


@dataclass(frozen=True)
class Statistic:
    """One integer vector released by one additive mechanism (a cell per group)."""

    name: str
    kind: StatKind
    sql: str  # its aggregate over the bounded rows (per unit first, in two levels)
    l1: int  # L1 sensitivity over all cells, in integer units
    l2_squared: int  # squared L2 sensitivity, in integer units
    resolution: float = 1.0  # the value of one integer unit (2^-s for fixed point)
    column: str | None = None


@dataclass(frozen=True)
class QuantileStatistic:
    """A private quantile over declared candidates, from a histogram the engine computes."""

    name: str
    column: str
    q: float
    candidates: tuple[float, ...]
    histogram_sql: str  # returns (group keys..., bin, rows)
    rows_per_unit: int  # symmetric-distance sensitivity d_in
    count: str  # the statistic giving the (noisy) number of values, for the interval


@dataclass(frozen=True)
class Output:
    """One output column: a group key or a value post-processed from statistics."""

    name: str
    kind: str  # key | count | count_units | sum | mean | variance | stddev | quantile
    key: int | None = None
    stats: tuple[str, ...] = ()
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class QueryPlan:
    sql: str
    params: tuple[KeyValue, ...]
    keys: tuple[GroupKey, ...]
    public_cells: tuple[tuple[KeyValue, ...], ...] | None  # None: keys need partition selection
    statistics: tuple[Statistic, ...]
    quantiles: tuple[QuantileStatistic, ...]
    selection: str | None  # the statistic that selects partitions, when keys are private
    guard: str | None  # distinct units per group: selects partitions, enforces min_group_size
    # (None without GROUP BY: the one row is always released)
    outputs: tuple[Output, ...]
    order: tuple[OrderItem, ...]
    limit: int | None
    min_group_size: int
    row_cap: int
    group_cap: int
    canonical: str
    within_row_caps: frozenset[str] = frozenset()
    group_window: bool = False  # the group cap binds: a window ranks each unit's groups

    @property
    def mechanisms(self) -> int:
        return len(self.statistics) + len(self.quantiles)


def plan(
    checked: CheckedQuery,
    policy: Policy,
    *,
    salt: int = 0,
    within_row_caps: frozenset[str] = frozenset(),
    pruning: bool = False,
    quantile_resolution: int | None = None,
) -> QueryPlan:
    """The bounded SQL and the statistics for ``checked``; ``salt`` keys the bounding hash.

    ``within_row_caps`` names tables whose immutable workspace was measured (by
    :func:`row_cap_sql`) to hold at most ``max_rows_per_unit`` rows of any unit: when every table
    of the query is one of them, the row cap already holds and its window is left out. The group
    cap is always enforced in SQL when it binds.

    ``pruning``: generate the previous form instead, which filters rows in a WHERE clause and
    drops the rows over a cap, so that its run time depends on what the predicate selects. It
    gives exactly the same rows; it is kept as the reference of the tests and benchmarks, and
    Veil never runs it.

    ``quantile_resolution``: quantiles choose from their measure's candidates and that many
    evenly spaced points from its ``lower`` to its ``upper`` (docs/queries.md#quantiles).
    """
    planner = _Planner(checked, policy, salt, within_row_caps, pruning)
    planner.quantile_resolution = quantile_resolution
    return planner.build()


def row_cap_sql(policy: Policy) -> str:
    """One row per table: (table, the largest number of rows any unit has in it)."""
    unit = policy.privacy_unit
    parts = [
        f"SELECT '{t.name}' AS name, coalesce(max(n), 0) AS most FROM "
        f'(SELECT count(*) AS n FROM "{t.name}" GROUP BY "{unit}")'
        for t in policy.tables
    ]
    return " UNION ALL ".join(parts)


def fixed_point_bits(column_type: ColumnType, magnitude: float) -> int:
    """Binary digits after the point for a clamped value of at most ``magnitude``."""
    if column_type == ColumnType.INTEGER and magnitude == int(magnitude):
        return 0
    if magnitude == 0:
        return 20
    return max(0, min(24, math.floor(math.log2(FIXED_POINT_LIMIT / magnitude))))


class _Planner:
    def __init__(
        self,
        checked: CheckedQuery,
        policy: Policy,
        salt: int,
        within_row_caps: frozenset[str],
        pruning: bool = False,
    ) -> None:
        self.q = checked
        self.pruning = pruning

        self.policy = policy
        self.salt = salt & 0x7FFF_FFFF_FFFF_FFFF
        self.within_row_caps = within_row_caps
        self.rows_capped_by_data = all(name in within_row_caps for name, _ in checked.tables)
        caps = [policy.table(name).max_rows_per_unit for name, _ in checked.tables]  # type: ignore[union-attr]
        self.row_cap = math.prod(caps)
        self.group_cap = min(policy.max_groups_per_unit, self.row_cap) if checked.group_keys else 1
        # from the policy and the query's shape only
        self.group_window = bool(checked.group_keys) and policy.max_groups_per_unit < self.row_cap
        self.values: dict[Ref, str] = {}
        self.stats: dict[tuple[StatKind, str | None], Statistic] = {}
        self.quantile_resolution: int | None = None

    def value(self, ref: Ref) -> str:
        if ref not in self.values:
            self.values[ref] = f"v{len(self.values)}"
        return self.values[ref]

    def stat(self, kind: StatKind, ref: Ref | None) -> str:
        key = (kind, ref.sql if ref else None)
        if key in self.stats:
            return self.stats[key].name
        name = f"s{len(self.stats)}"
        r, g = self.row_cap, self.group_cap
        if kind in (StatKind.COUNT, StatKind.COUNT_COLUMN):
            if self.pruning:
                sql = "count(*)" if ref is None else f"count({self.value(ref)})"
            else:
                sql = _count_where(
                    KEEP if ref is None else f"{KEEP} AND {self.value(ref)} IS NOT NULL"
                )
            stat = Statistic(name, kind, sql, l1=r, l2_squared=r * r)
        elif kind == StatKind.COUNT_UNITS:
            kept = "" if self.pruning else f" FILTER (WHERE {KEEP})"
            stat = Statistic(name, kind, f"count(DISTINCT __unit){kept}", l1=g, l2_squared=g)
        else:
            assert ref is not None
            col = ref.column
            assert col.lower is not None and col.upper is not None
            clamped = (
                f"least(greatest(CAST({self.value(ref)} AS DOUBLE), {col.lower!r}), {col.upper!r})"
            )
            magnitude = max(abs(col.lower), abs(col.upper))
            if kind == StatKind.SUM_SQUARES:
                clamped, magnitude = f"({clamped} * {clamped})", magnitude * magnitude
            bits = fixed_point_bits(col.type, magnitude)
            unit = math.ceil(magnitude * 2**bits)
            fixed = f"CAST(round({clamped} * {2**bits}) AS BIGINT)"
            sql = f"sum({fixed})" if self.pruning else _sum_where(fixed, self.value(ref))
            stat = Statistic(
                name,
                kind,
                sql,
                l1=r * unit,
                l2_squared=(r * unit) ** 2,
                resolution=2.0**-bits,
                column=col.name,
            )
        self.stats[key] = stat
        return name

    def build(self) -> QueryPlan:
        q = self.q
        public = self.public_cells()
        # Private keys: the guard selects the cells (and min_group_size raises its threshold).
        # Public keys: the guard is there only to suppress cells below min_group_size. Without
        # GROUP BY the one row is released whatever the data: no group to suppress, no guard.
        needs_guard = public is None or (self.policy.min_group_size > 0 and bool(q.group_keys))
        outputs: list[Output] = []
        quantiles: list[QuantileStatistic] = []
        # Distinct units, not rows: one unit with many rows must not make a group look big.
        guard = self.stat(StatKind.COUNT_UNITS, None) if needs_guard else None
        keys_by_name = {k.name: i for i, k in enumerate(q.group_keys)}
        aggs_by_name = {a.name: a for a in q.aggregates}
        for name in q.outputs:
            if name in keys_by_name:
                outputs.append(Output(name, "key", key=keys_by_name[name]))
                continue
            agg = aggs_by_name[name]
            ref = agg.ref
            col = ref.column if ref else None
            bounds = (col.lower, col.upper) if col else (None, None)
            if agg.kind == AggKind.COUNT:
                outputs.append(Output(name, "count", stats=(self.stat(StatKind.COUNT, None),)))
            elif agg.kind == AggKind.COUNT_COLUMN:
                outputs.append(
                    Output(name, "count", stats=(self.stat(StatKind.COUNT_COLUMN, ref),))
                )
            elif agg.kind == AggKind.COUNT_UNITS:
                outputs.append(
                    Output(name, "count_units", stats=(self.stat(StatKind.COUNT_UNITS, None),))
                )
            elif agg.kind == AggKind.SUM:
                outputs.append(
                    Output(
                        name,
                        "sum",
                        stats=(self.stat(StatKind.SUM, ref),),
                        lower=bounds[0],
                        upper=bounds[1],
                    )
                )
            elif agg.kind == AggKind.MEAN:
                pair = (self.stat(StatKind.SUM, ref), self.stat(StatKind.COUNT_COLUMN, ref))
                outputs.append(Output(name, "mean", stats=pair, lower=bounds[0], upper=bounds[1]))
            elif agg.kind in (AggKind.VARIANCE, AggKind.STDDEV):
                stats = (
                    self.stat(StatKind.SUM, ref),
                    self.stat(StatKind.SUM_SQUARES, ref),
                    self.stat(StatKind.COUNT_COLUMN, ref),
                )
                kind = "variance" if agg.kind == AggKind.VARIANCE else "stddev"
                outputs.append(Output(name, kind, stats=stats, lower=bounds[0], upper=bounds[1]))
            else:
                assert ref is not None and agg.q is not None and col is not None
                counter = self.stat(StatKind.COUNT_COLUMN, ref)
                qname = f"q{len(quantiles)}"
                quantiles.append(
                    QuantileStatistic(
                        name=qname,
                        column=col.name,
                        q=agg.q,
                        candidates=col.quantile_candidates(resolution=self.quantile_resolution),
                        histogram_sql="",  # filled below, once the value columns are known
                        rows_per_unit=self.row_cap,
                        count=counter,
                    )
                )
                outputs.append(
                    Output(name, "quantile", stats=(qname,), lower=bounds[0], upper=bounds[1])
                )
        bounded = self.bounded_cte()
        keys = [f"k{i}" for i in range(len(q.group_keys))]
        sql = self.statistics_sql(bounded, keys)
        quantile_refs = {agg.name: agg.ref for agg in q.aggregates if agg.kind == AggKind.QUANTILE}
        final_quantiles = []
        for qs, out in zip(quantiles, [o for o in outputs if o.kind == "quantile"], strict=True):
            ref = quantile_refs[out.name]
            assert ref is not None
            hist = _histogram_sql(
                bounded, keys, self.values[ref], qs.candidates, ref, pruning=self.pruning
            )
            final_quantiles.append(
                QuantileStatistic(
                    qs.name, qs.column, qs.q, qs.candidates, hist, qs.rows_per_unit, qs.count
                )
            )
        return QueryPlan(
            sql=sql,
            params=q.params,
            keys=q.group_keys,
            public_cells=public,
            statistics=tuple(self.stats.values()),
            quantiles=tuple(final_quantiles),
            selection=guard if public is None else None,
            guard=guard,
            outputs=tuple(outputs),
            order=q.order,
            limit=q.limit,
            min_group_size=self.policy.min_group_size,
            row_cap=self.row_cap,
            group_cap=self.group_cap,
            canonical=q.canonical,
            within_row_caps=self.within_row_caps,
            group_window=self.group_window,
        )

    def statistics_sql(self, bounded: str, keys: list[str]) -> str:
        """One row per cell of ``bnd``: the keys, then every statistic in plan order.

        A join that counts distinct units aggregates in two levels: per (cell, unit) first, then
        per cell. The cell's distinct units are then its non-NULL units of the first level, and
        every other statistic is the sum of per-unit partials of the same per-row terms (clamped,
        fixed point), so the integers are exactly those of one level. In one level DuckDB buffers
        every bounded row to count the distinct units in a second aggregate: costly for the rows
        of a join, about as cheap as the two levels for one table's (docs/benchmarks.md).

        Without pruning, ``bnd`` holds every row with its ``__keep`` flag: a group (cell) with no
        kept row is left out (``HAVING bool_or(__keep)``), as filtering first leaves it out, and
        the first level keeps whether a unit has any kept row in the cell.
        """
        stats = list(self.stats.values())
        group_by = f" GROUP BY {', '.join(keys)}" if keys else ""
        having = f" HAVING bool_or({KEEP})" if keys and not self.pruning else ""
        counts_units = any(s.kind == StatKind.COUNT_UNITS for s in stats)
        if not counts_units or len(self.q.tables) == 1:
            select = ", ".join([*keys, *(f"{s.sql} AS {s.name}" for s in stats)])
            return f"{bounded} SELECT {select} FROM bnd{group_by}{having}"
        partials = [f"{s.sql} AS {s.name}" for s in stats if s.kind != StatKind.COUNT_UNITS]
        if not self.pruning:  # whether the unit has a kept row in the cell
            partials.append(f"bool_or({KEEP}) AS {KEEP}")
        totals = []
        for s in stats:
            if s.kind == StatKind.COUNT_UNITS:
                units = (
                    "count(__unit)"
                    if self.pruning
                    else _count_where(f"{KEEP} AND __unit IS NOT NULL")
                )
                totals.append(f"{units} AS {s.name}")
            elif s.kind in (StatKind.COUNT, StatKind.COUNT_COLUMN):  # 0, not NULL, for no rows
                totals.append(f"CAST(coalesce(sum({s.name}), 0) AS BIGINT) AS {s.name}")
            else:
                totals.append(f"sum({s.name}) AS {s.name}")
        per = ", ".join([*keys, "__unit", *partials])
        return (
            f"{bounded}, per AS (SELECT {per} FROM bnd GROUP BY {', '.join([*keys, '__unit'])}) "
            f"SELECT {', '.join([*keys, *totals])} FROM per{group_by}{having}"
        )

    def public_cells(self) -> tuple[tuple[KeyValue, ...], ...] | None:
        keys = self.q.group_keys
        if not keys:
            return ((),)
        lists = [k.public_keys() for k in keys]
        if any(lst is None for lst in lists):
            return None
        cells = math.prod(len(lst) for lst in lists if lst is not None)
        if cells > MAX_PUBLIC_CELLS:
            raise QueryRejected("too_many_groups", "", f"at most {MAX_PUBLIC_CELLS} public cells")
        return tuple(itertools.product(*(lst for lst in lists if lst is not None)))

    def bounded_cte(self) -> str:
        q = self.q
        (first, first_alias), *rest = q.tables
        unit = f'{first_alias}."{q.unit}"'
        source = f'"{first}" AS {first_alias}'
        for table, alias in rest:
            source += f' JOIN "{table}" AS {alias} ON {unit} = {alias}."{q.unit}"'
        columns = [f"{unit} AS __unit"]
        columns += [f"{k.sql} AS k{i}" for i, k in enumerate(q.group_keys)]
        columns += [f"{ref.sql} AS {name}" for ref, name in self.values.items()]
        where = ""
        if self.pruning:
            where = f" WHERE {q.where_sql}" if q.where_sql else ""
        elif q.where_sql:  # NULL (unknown) is not kept, as in a WHERE clause
            columns.append(f"coalesce({q.where_sql}, false) AS {KEEP}")
        else:
            columns.append(f"true AS {KEEP}")
        ctes = [f"src AS (SELECT {', '.join(columns)} FROM {source}{where})"]
        keys = [f"k{i}" for i in range(len(q.group_keys))]
        previous = "src"
        if self.group_window:
            order = f"hash({', '.join(keys)}, {self.salt}), {', '.join(keys)}"
            most = self.policy.max_groups_per_unit
            if self.pruning:
                ctes.append(
                    "grp AS (SELECT * FROM (SELECT *, dense_rank() OVER "
                    f"(PARTITION BY __unit ORDER BY {order}) AS __g FROM src) "
                    f"WHERE __g <= {most})"
                )
            else:  # the kept rows are ranked among themselves: the same ranks as filtered first
                ctes.append(
                    f"grp AS (SELECT * EXCLUDE (__g) REPLACE ({KEEP} AND __g <= {most} AS {KEEP}) "
                    f"FROM (SELECT *, dense_rank() OVER (PARTITION BY __unit, {KEEP} "
                    f"ORDER BY {order}) AS __g FROM src))"
                )
            previous = "grp"
        if self.rows_capped_by_data:
            ctes.append(f"bnd AS (SELECT * FROM {previous})")
        else:
            ctes += self.row_cap_ctes(previous, keys)
        return "WITH " + ", ".join(ctes)

    def row_cap_ctes(self, previous: str, keys: list[str]) -> list[str]:
        """``bnd``: each unit's first ``row_cap`` rows in salted-hash order.

        A unit with at most ``row_cap`` rows keeps all of them in any order, so only the units
        above the cap (``heavy``, counted first) go through the window; the rest pass unwindowed.
        The kept rows are exactly those of a window over every unit, at the cost of one count per
        unit when no unit breaks the cap. The joins match a NULL unit as the window's PARTITION
        BY does. ``NULLS FIRST`` orders nothing differently (``hash`` is never NULL) but keeps
        DuckDB 2.0 from rewriting the window into a per-unit top-N aggregate, which holds every
        kept row in memory and cannot spill: with most units above the cap, that ran out of the
        worker's memory at 10M rows (docs/benchmarks.md).

        Without pruning, ``heavy`` counts every row of a unit, kept or not, so which units go
        through the window does not depend on the predicate; the window ranks a unit's kept rows
        among themselves and clears the flag of those past the cap. A unit with at most
        ``row_cap`` rows in all has at most that many kept ones, so the kept rows are the same.
        """
        cap = self.row_cap
        order = ", ".join([*keys, *self.values.values(), str(self.salt)])
        same_unit = f"{previous}.__unit IS NOT DISTINCT FROM heavy.__unit"
        if not self.pruning:
            return [
                f"heavy AS (SELECT __unit FROM {previous} GROUP BY __unit HAVING count(*) > {cap})",
                f"bnd AS (SELECT * FROM {previous} ANTI JOIN heavy ON {same_unit} UNION ALL "
                f"SELECT * EXCLUDE (__r) REPLACE ({KEEP} AND __r <= {cap} AS {KEEP}) FROM "
                f"(SELECT *, row_number() OVER (PARTITION BY __unit, {KEEP} "
                f"ORDER BY hash({order}) NULLS FIRST) AS __r "
                f"FROM {previous} SEMI JOIN heavy ON {same_unit}))",
            ]
        return [
            f"heavy AS (SELECT __unit FROM {previous} GROUP BY __unit HAVING count(*) > {cap})",
            f"bnd AS (SELECT * FROM {previous} ANTI JOIN heavy ON {same_unit} UNION ALL "
            "SELECT * EXCLUDE (__r) FROM (SELECT *, row_number() OVER (PARTITION BY __unit "
            f"ORDER BY hash({order}) NULLS FIRST) AS __r "
            f"FROM {previous} SEMI JOIN heavy ON {same_unit}) WHERE __r <= {cap})",
        ]


def _count_where(condition: str) -> str:
    """The rows where ``condition`` (never NULL) holds, as a sum over every row: the same
    integer as ``count(*) FILTER (WHERE condition)``, but the aggregate does the same work for
    every row, and DuckDB can still aggregate it below a join (docs/benchmarks.md)."""
    return f"CAST(coalesce(sum(CAST({condition} AS BIGINT)), 0) AS BIGINT)"


def _sum_where(fixed: str, value: str) -> str:
    """The sum of ``fixed`` over the kept rows, computed for every row: each row adds its value
    times its flag (0 or 1, in exact integers), and the sum is NULL, as a filtered sum is, when
    no kept row has a value."""
    some = f"sum(CAST({KEEP} AND {value} IS NOT NULL AS BIGINT)) > 0"
    return f"CASE WHEN {some} THEN sum(coalesce({fixed}, 0) * CAST({KEEP} AS BIGINT)) END"


def _histogram_sql(
    bounded: str,
    keys: list[str],
    value: str,
    candidates: tuple[float, ...],
    ref: Ref,
    *,
    pruning: bool = False,
) -> str:
    """Rows per bin: bin 2i+1 holds values equal to candidate i, bin 2i those just below it.

    These counts are all a private quantile over ``candidates`` depends on. Without pruning, a
    NULL value clears the row's flag rather than dropping the row, and bins with no kept row are
    left out, as filtering first leaves them out.
    """
    col = ref.column
    clamped = f"least(greatest(CAST({value} AS DOUBLE), {col.lower!r}), {col.upper!r})"
    whens = " ".join(
        f"WHEN x < {c!r} THEN {2 * i} WHEN x = {c!r} THEN {2 * i + 1}"
        for i, c in enumerate(candidates)
    )
    inner = ", ".join([*keys, f"{clamped} AS x"])
    outer = ", ".join([*keys, f"CASE {whens} ELSE {2 * len(candidates)} END AS bin"])
    if not pruning:
        return (
            f"{bounded} SELECT {outer}, {_count_where(KEEP)} AS n FROM (SELECT {inner}, "
            f"({KEEP} AND {value} IS NOT NULL) AS {KEEP} FROM bnd) "
            f"GROUP BY {', '.join([*keys, 'bin'])} HAVING bool_or({KEEP})"
        )
    return (
        f"{bounded} SELECT {outer}, count(*) AS n FROM (SELECT {inner} FROM bnd "
        f"WHERE {value} IS NOT NULL) GROUP BY {', '.join([*keys, 'bin'])}"
    )
