"""The typed result of a successful check: everything the planner needs, nothing from the text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from policies.model import Column, KeyValue, Role


class AggKind(StrEnum):
    COUNT = "count"  # COUNT(*)
    COUNT_COLUMN = "count_column"  # COUNT(col): non-null values
    COUNT_UNITS = "count_units"  # COUNT(DISTINCT unit)
    SUM = "sum"
    MEAN = "mean"
    VARIANCE = "variance"
    STDDEV = "stddev"
    QUANTILE = "quantile"


class Transform(StrEnum):
    NONE = "none"
    YEAR = "year"
    QUARTER = "quarter"
    MONTH = "month"


@dataclass(frozen=True)
class Ref:
    """A column of one table of the dataset; ``alias`` is the generated table alias (t0, t1)."""

    table: str
    alias: str
    column: Column

    @property
    def sql(self) -> str:
        return f'{self.alias}."{self.column.name}"'


class BandKind(StrEnum):
    CASE = "band"  # CASE WHEN x < c1 THEN l1 ... ELSE ln END
    WIDTH_BUCKET = "width_bucket"  # width_bucket(x, lo, hi, n): 0, 1..n, n + 1


@dataclass(frozen=True)
class Band:
    """Bins of a number or date column whose keys (``labels``) come from the query, not the data.

    ``CASE``: ``cuts`` strictly increase, a row's band is the first with ``x < cut`` (``x <= cut``
    when ``inclusive``), the last label (the ELSE) takes the rest, NULL included. ``width_bucket``:
    ``cuts`` is ``(lo, hi)`` and the labels are the bucket numbers 0 to n + 1, as in PostgreSQL
    (0 below ``lo``, n + 1 from ``hi`` on, NULL for NULL, which is in no released group).
    """

    kind: BandKind
    cuts: tuple[KeyValue, ...]
    labels: tuple[KeyValue, ...]
    inclusive: bool = False

    @property
    def buckets(self) -> int:
        return len(self.labels) - 2

    def sql(self, value: str) -> str:
        """The key's SQL over ``value``: every cut point and label a ``?`` for :attr:`params`."""
        if self.kind == BandKind.CASE:
            op = "<=" if self.inclusive else "<"
            whens = " ".join(f"WHEN {value} {op} ? THEN ?" for _ in self.cuts)
            return f"CASE {whens} ELSE ? END"
        x = f"CAST({value} AS DOUBLE)"
        lo, hi = "CAST(? AS DOUBLE)", "CAST(? AS DOUBLE)"
        # floor() of a rounded ratio can reach n just below hi: least() keeps it in 1..n
        inside = f"least(CAST(floor(({x} - {lo}) * ? / ({hi} - {lo})) AS BIGINT), ?) + 1"
        return (
            f"CASE WHEN {value} IS NULL THEN NULL WHEN {x} < {lo} THEN CAST(0 AS BIGINT) "
            f"WHEN {x} >= {hi} THEN CAST(? AS BIGINT) ELSE {inside} END"
        )

    @property
    def params(self) -> tuple[KeyValue, ...]:
        """The parameters of :meth:`sql`, in order."""
        if self.kind == BandKind.CASE:
            pairs = zip(self.cuts, self.labels, strict=False)
            return (*(v for pair in pairs for v in pair), self.labels[-1])
        lo, hi = self.cuts
        n = self.buckets
        return (lo, hi, n + 1, lo, n, hi, lo, n - 1)


@dataclass(frozen=True)
class GroupKey:
    name: str
    ref: Ref
    transform: Transform
    band: Band | None = None

    @property
    def identity(self) -> tuple[Ref, Transform, Band | None]:
        """What makes two keys the same key, whatever their names."""
        return self.ref, self.transform, self.band

    @property
    def params(self) -> tuple[KeyValue, ...]:
        """The parameters of :attr:`sql`, in order."""
        return self.band.params if self.band is not None else ()

    @property
    def sql(self) -> str:
        if self.band is not None:
            return self.band.sql(self.ref.sql)
        if self.transform == Transform.NONE:
            return self.ref.sql
        if self.transform == Transform.YEAR:
            return f"CAST(year({self.ref.sql}) AS BIGINT)"
        return f"CAST(date_trunc('{self.transform.value}', {self.ref.sql}) AS DATE)"

    def public_keys(self) -> tuple[KeyValue, ...] | None:
        """The keys every release lists (absent ones as noisy zero), or None if keys are private."""
        col = self.ref.column
        if self.band is not None:
            return self.band.labels
        if self.transform == Transform.NONE:
            return col.keys if col.role == Role.DIMENSION else None
        if col.public_range is None:
            return None
        first, last = col.public_range
        if self.transform == Transform.YEAR:
            return tuple(range(first.year, last.year + 1))
        step = 3 if self.transform == Transform.QUARTER else 1
        month = first.month - (first.month - 1) % step
        keys: list[KeyValue] = []
        year = first.year
        while (year, month) <= (last.year, last.month):
            keys.append(date(year, month, 1))
            month += step
            if month > 12:
                year, month = year + 1, month - 12
        return tuple(keys)


@dataclass(frozen=True)
class Aggregate:
    name: str
    kind: AggKind
    ref: Ref | None  # None for COUNT(*) and COUNT(DISTINCT unit)
    q: float | None = None  # quantile level for QUANTILE


@dataclass(frozen=True)
class OrderItem:
    name: str
    descending: bool


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed every rule; ``where_sql`` has ``?`` placeholders for ``where_params``."""

    tables: tuple[tuple[str, str], ...]  # (table, alias), one or two
    unit: str
    where_sql: str | None
    where_params: tuple[KeyValue, ...]
    group_keys: tuple[GroupKey, ...]
    aggregates: tuple[Aggregate, ...]
    outputs: tuple[str, ...]  # output names in SELECT order
    order: tuple[OrderItem, ...]
    limit: int | None

    @property
    def params(self) -> tuple[KeyValue, ...]:
        """Every ``?`` of the generated SQL in order: the group keys' (in the SELECT list of the
        source rows) before the WHERE predicate's."""
        return (*(p for k in self.group_keys for p in k.params), *self.where_params)

    @property
    def canonical(self) -> str:
        """A stable text of the checked query, used to recognise the same query again."""
        parts = [
            "tables=" + ",".join(t for t, _ in self.tables),
            "where=" + (self.where_sql or ""),
            "params=" + repr(self.where_params),
            "group="
            + ",".join(
                f"{g.name}:{g.ref.sql}:{g.transform}:{g.band!r}:{g.params!r}"
                for g in self.group_keys
            ),
            "aggs="
            + ",".join(
                f"{a.name}:{a.kind}:{a.ref.sql if a.ref else ''}:{a.q}" for a in self.aggregates
            ),
            "out=" + ",".join(self.outputs),
            "order=" + ",".join(f"{o.name}:{o.descending}" for o in self.order),
            f"limit={self.limit}",
        ]
        return "|".join(parts)
