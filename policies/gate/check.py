"""The allow-list: every rule a query must pass, each failure a :class:`QueryRejected` naming it.

Only shapes listed here get through; anything the checker does not recognise is refused. Stable
rule codes (documented in docs/errors.md), besides ``syntax_error`` and ``query_too_complex``:

``unsupported_clause`` ``unsupported_source`` ``unknown_table`` ``unknown_column``
``ambiguous_column`` ``unsupported_join`` ``raw_rows`` ``unsupported_function``
``unsupported_aggregate`` ``unsupported_expression`` ``aggregate_argument``
``column_not_aggregatable`` ``column_not_groupable`` ``column_not_allowed`` ``unit_not_allowed``
``unit_filter`` ``type_mismatch`` ``invalid_literal`` ``invalid_quantile`` ``invalid_order``
``invalid_limit`` ``invalid_band``.

The reads of single nodes (literal values, labels, function names) are in
:mod:`policies.gate.nodes`, the bands (``CASE`` and ``width_bucket`` group keys) in
:mod:`policies.gate.bands`; this module walks the query and keeps its state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlglot import exp

from policies.errors import QueryRejected
from policies.gate.bands import BAND_NODES, band_of
from policies.gate.nodes import (
    column_label,
    func_name,
    is_literal,
    key_label,
    literal_value,
    no_extra_arguments,
    quantile_level,
    unsupported,
)
from policies.gate.query import (
    AggKind,
    Aggregate,
    CheckedQuery,
    GroupKey,
    OrderItem,
    Ref,
    Transform,
)
from policies.model import ColumnType, KeyValue, Policy, Role, Table

MAX_IN_ITEMS = 1_000
TABLE_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # what a policy table name can be
MAX_OUTPUTS = 64
MAX_LIMIT = 100_000

_SELECT_ARGS = {"expressions", "from_", "joins", "where", "group", "order", "limit", "kind"}
_COMPARISONS: dict[type[exp.Expression], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_MEASURE_AGGS: dict[type[exp.Expression], AggKind] = {
    exp.Sum: AggKind.SUM,
    exp.Avg: AggKind.MEAN,
    exp.Variance: AggKind.VARIANCE,
    exp.StddevSamp: AggKind.STDDEV,
    exp.Stddev: AggKind.STDDEV,
    exp.Median: AggKind.QUANTILE,
    exp.PercentileCont: AggKind.QUANTILE,
}
_AGG_LABEL = {
    AggKind.COUNT: "count",
    AggKind.COUNT_COLUMN: "count",
    AggKind.COUNT_UNITS: "count_units",
    AggKind.SUM: "sum",
    AggKind.MEAN: "avg",
    AggKind.VARIANCE: "var_samp",
    AggKind.STDDEV: "stddev_samp",
    AggKind.QUANTILE: "quantile",
}


def check(select: exp.Select, policy: Policy) -> CheckedQuery:
    """Validate one parsed SELECT against ``policy``."""
    return _Checker(policy).run(select)


class _Checker:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.tables: list[tuple[Table, str, str]] = []  # (table, alias, name used in query)
        self.params: list[KeyValue] = []

    # --- structure -------------------------------------------------------------------------
    def run(self, select: exp.Select) -> CheckedQuery:
        for key, value in select.args.items():
            if value and key not in _SELECT_ARGS:
                raise QueryRejected("unsupported_clause", key.rstrip("_"))
        if select.args.get("distinct"):
            raise QueryRejected("unsupported_clause", "distinct")
        from_ = select.args.get("from_")
        if from_ is None:
            raise QueryRejected(
                "unsupported_source", "", "a FROM clause naming a table is required"
            )
        self.add_table(from_.this)
        joins = select.args.get("joins") or []
        if len(joins) > 1:
            raise QueryRejected("unsupported_join", "", "at most two tables")
        for join in joins:
            self.add_join(join)
        where_sql = self.predicate(select.args["where"].this) if select.args.get("where") else None
        aggregates, outputs, group_keys = self.outputs(select, self.group_by(select))
        order = self.order_by(select, outputs)
        limit = self.limit(select)
        return CheckedQuery(
            tables=tuple((t.name, alias) for t, alias, _ in self.tables),
            unit=self.policy.privacy_unit,
            where_sql=where_sql,
            where_params=tuple(self.params),
            group_keys=group_keys,
            aggregates=aggregates,
            outputs=outputs,
            order=order,
            limit=limit,
        )

    def add_table(self, node: exp.Expression) -> None:
        if not isinstance(node, exp.Table):
            if isinstance(node, exp.Subquery):
                raise QueryRejected("unsupported_clause", "subquery")
            if isinstance(node, exp.Func):
                raise QueryRejected("unsupported_function", func_name(node))
            raise QueryRejected("unsupported_source", type(node).__name__.lower())
        for key, value in node.args.items():
            if value and key not in ("this", "alias"):
                raise QueryRejected("unsupported_clause", key.rstrip("_"))
        if not isinstance(node.this, exp.Identifier):
            raise unsupported(node.this)
        name = node.name if node.this.quoted else node.name.lower()
        if not TABLE_SHAPE.fullmatch(name):  # a quoted path or URL: never echoed back
            raise QueryRejected("unknown_table", "", "not a table name")
        table = self.policy.table(name)
        if table is None:
            raise QueryRejected("unknown_table", name[:64])
        if any(t.name == table.name for t, _, _ in self.tables):
            raise QueryRejected("unsupported_join", table.name, "a table may appear once")
        alias_node = node.args.get("alias")
        if alias_node is not None and alias_node.args.get("columns"):
            raise QueryRejected("unsupported_clause", "column aliases on a table")
        used = alias_node.name.lower() if alias_node is not None else name
        self.tables.append((table, f"t{len(self.tables)}", used))

    def add_join(self, join: exp.Join) -> None:
        kind = (join.args.get("kind") or "").upper()
        if join.args.get("side") or join.args.get("method") or kind not in ("", "INNER"):
            raise QueryRejected("unsupported_join", "", "only INNER JOIN on the privacy unit")
        for key, value in join.args.items():
            if value and key not in ("this", "on", "using", "kind"):
                raise QueryRejected("unsupported_join", key)
        self.add_table(join.this)
        unit = self.policy.privacy_unit
        using = join.args.get("using")
        on = join.args.get("on")
        if using:
            if [u.name for u in using] != [unit]:
                raise QueryRejected("unsupported_join", "", f"join USING ({unit}) only")
            return
        if not isinstance(on, exp.EQ):
            raise QueryRejected("unsupported_join", "", f"join ON the privacy unit '{unit}'")
        left, right = on.this, on.expression
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
            raise QueryRejected("unsupported_join", "", f"join ON the privacy unit '{unit}'")
        refs = {self.resolve(left, join_key=True), self.resolve(right, join_key=True)}
        if {(r.alias, r.column.name) for r in refs} != {("t0", unit), ("t1", unit)}:
            raise QueryRejected("unsupported_join", "", f"join ON the privacy unit '{unit}'")

    # --- columns ---------------------------------------------------------------------------
    def resolve(self, node: exp.Column, *, join_key: bool = False) -> Ref:
        if isinstance(node.this, exp.Star):
            raise QueryRejected("raw_rows", "*")
        if node.args.get("db") or node.args.get("catalog"):
            raise QueryRejected("unknown_column", node.sql(dialect="duckdb")[:64])
        qualifier_node = node.args.get("table")
        if not isinstance(node.this, exp.Identifier) or not (
            qualifier_node is None or isinstance(qualifier_node, exp.Identifier)
        ):
            # ``t.5`` or ``t.'a'``: sqlglot makes a column of a literal. Not a name we know.
            raise QueryRejected("unsupported_expression", "column", "a column is a name")
        name = node.name if node.this.quoted else node.name.lower()
        qualifier = node.table.lower()
        matches = [
            (table, alias)
            for table, alias, used in self.tables
            if (not qualifier or qualifier in (used, table.name)) and table.column(name)
        ]
        if not matches:
            if qualifier and not any(qualifier in (u, t.name) for t, _, u in self.tables):
                raise QueryRejected("unknown_table", qualifier[:64])
            raise QueryRejected("unknown_column", name[:64])
        if len(matches) > 1 and not join_key:
            raise QueryRejected("ambiguous_column", name, "qualify it with its table")
        table, alias = matches[0]
        column = table.column(name)
        assert column is not None
        if column.role == Role.HIDDEN:
            raise QueryRejected("column_not_allowed", name, "hidden by the policy")
        return Ref(table=table.name, alias=alias, column=column)

    # --- WHERE -----------------------------------------------------------------------------
    def predicate(self, node: exp.Expression) -> str:
        if isinstance(node, exp.Paren):
            return self.predicate(node.this)
        if isinstance(node, exp.And | exp.Or):
            joiner = "AND" if isinstance(node, exp.And) else "OR"
            return f"({self.predicate(node.this)} {joiner} {self.predicate(node.expression)})"
        if isinstance(node, exp.Not):
            return f"(NOT {self.predicate(node.this)})"
        op = _COMPARISONS.get(type(node))
        if op is not None:
            left_sql, left_type = self.operand(node.this)
            right_sql, right_type = self.operand(node.expression, expect=left_type)
            if left_type is None:  # literal on the left: type it from the right
                left_sql, left_type = self.operand(node.this, expect=right_type)
            self.compatible(left_type, right_type, node)
            return f"({left_sql} {op} {right_sql})"
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise QueryRejected("unsupported_clause", "subquery")
            items = node.expressions
            if not items or len(items) > MAX_IN_ITEMS:
                raise QueryRejected("invalid_literal", "in", f"1 to {MAX_IN_ITEMS} items")
            value_sql, value_type = self.operand(node.this)
            parts = [self.literal(item, value_type) for item in items]
            return f"({value_sql} IN ({', '.join(parts)}))"
        if isinstance(node, exp.Between):
            if set(node.args) - {"this", "low", "high", "symmetric"}:
                raise QueryRejected("unsupported_expression", "between")
            value_sql, value_type = self.operand(node.this)
            low = self.literal(node.args["low"], value_type)
            high = self.literal(node.args["high"], value_type)
            if node.args.get("symmetric"):  # either order of the bounds, exactly as asked
                swapped_low = self.literal(node.args["high"], value_type)
                swapped_high = self.literal(node.args["low"], value_type)
                return (
                    f"(({value_sql} BETWEEN {low} AND {high}) OR "
                    f"({value_sql} BETWEEN {swapped_low} AND {swapped_high}))"
                )
            return f"({value_sql} BETWEEN {low} AND {high})"
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise QueryRejected("unsupported_expression", "is", "only IS [NOT] NULL")
            value_sql, _ = self.operand(node.this)
            return f"({value_sql} IS NULL)"
        if isinstance(node, exp.Column):
            sql, ctype = self.operand(node)
            if ctype != ColumnType.BOOLEAN:
                raise QueryRejected(
                    "type_mismatch", node.name, "only a boolean column is a predicate"
                )
            return sql
        if isinstance(node, BAND_NODES):
            raise QueryRejected(
                "unsupported_function", func_name(node), "a band is a group key, not a filter"
            )
        raise unsupported(node)

    def operand(
        self, node: exp.Expression, expect: ColumnType | None = None
    ) -> tuple[str, ColumnType | None]:
        """SQL for a value: a column, a date part of one, or a literal (typed by ``expect``)."""
        if isinstance(node, exp.Paren):
            return self.operand(node.this, expect)
        if isinstance(node, exp.Column):
            ref = self.filter_ref(node)
            return ref.sql, ref.column.type
        if isinstance(node, exp.Year):
            ref = self.date_ref(node.this, "year")
            return f"year({ref.sql})", ColumnType.INTEGER
        if isinstance(node, BAND_NODES):
            raise QueryRejected(
                "unsupported_function", func_name(node), "a band is a group key, not a filter"
            )
        if expect is None and is_literal(node):
            return "", None
        if is_literal(node):
            assert expect is not None
            return self.literal(node, expect), expect
        raise unsupported(node)

    def filter_ref(self, node: exp.Column) -> Ref:
        ref = self.resolve(node)
        if ref.column.role == Role.UNIT:
            raise QueryRejected(
                "unit_filter", ref.column.name, "the privacy unit is not filterable"
            )
        return ref

    def date_ref(self, node: exp.Expression, function: str) -> Ref:
        if not isinstance(node, exp.Column):
            raise QueryRejected("aggregate_argument", function, "takes a bare date column")
        ref = self.filter_ref(node)
        if ref.column.type != ColumnType.DATE:
            raise QueryRejected("type_mismatch", ref.column.name, f"{function}() needs a date")
        return ref

    def literal(self, node: exp.Expression, expect: ColumnType | None) -> str:
        if expect is None:
            raise QueryRejected("unsupported_expression", "literal", "compare a column")
        self.params.append(literal_value(node, expect))
        return "?"

    def compatible(self, left: ColumnType | None, right: ColumnType | None, node: Any) -> None:
        if left is None or right is None:
            raise QueryRejected("unsupported_expression", "literal", "compare a column")
        if left == right or (left.numeric and right.numeric):
            return
        name = node.this.name if isinstance(node.this, exp.Column) else node.expression.name
        raise QueryRejected("type_mismatch", str(name)[:64])

    # --- GROUP BY, SELECT, ORDER BY, LIMIT -------------------------------------------------
    def group_by(self, select: exp.Select) -> tuple[GroupKey, ...]:
        group = select.args.get("group")
        if group is None:
            return ()
        for key, value in group.args.items():
            if value and key != "expressions":
                raise QueryRejected("unsupported_clause", f"group by {key}")
        if not group.expressions:
            raise QueryRejected("syntax_error", "", "GROUP BY needs at least one expression")
        items = select.expressions
        aliases = {i.alias: i.this for i in items if isinstance(i, exp.Alias)}
        keys: list[GroupKey] = []
        for node in group.expressions:
            target = node
            if isinstance(node, exp.Literal) and not node.is_string:
                position = int(node.this) if node.this.isdigit() else 0
                if not 1 <= position <= len(items):
                    raise QueryRejected("unsupported_expression", "group by position")
                target = items[position - 1]
                target = target.this if isinstance(target, exp.Alias) else target
            elif (
                isinstance(node, exp.Column)
                and not node.table
                and node.name in aliases
                and not self.is_column_name(node.name)
            ):
                target = aliases[node.name]
            key = self.group_key(target, name="")
            if any(k.identity == key.identity for k in keys):
                continue
            keys.append(key)
        return tuple(keys)

    def is_column_name(self, name: str) -> bool:
        return any(t.column(name) for t, _, _ in self.tables)

    def group_key(self, node: exp.Expression, name: str) -> GroupKey:
        if isinstance(node, BAND_NODES):
            return self.band_key(node, name)
        transform = Transform.NONE
        column_node = node
        if isinstance(node, exp.Year):
            transform, column_node = Transform.YEAR, node.this
        elif isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
            unit = str(node.args["unit"].name if node.args.get("unit") else "").lower()
            transforms = {"month": Transform.MONTH, "quarter": Transform.QUARTER}
            if unit not in transforms:
                raise QueryRejected("unsupported_expression", "date_trunc", "month or quarter")
            transform, column_node = transforms[unit], node.this
        if not isinstance(column_node, exp.Column):
            raise unsupported(column_node)
        ref = self.resolve(column_node)
        col = ref.column
        if col.role == Role.UNIT:
            raise QueryRejected("unit_not_allowed", col.name, "the privacy unit is never output")
        if col.role != Role.DIMENSION:
            raise QueryRejected("column_not_groupable", col.name, f"its role is {col.role.value}")
        if transform != Transform.NONE and col.type != ColumnType.DATE:
            raise QueryRejected("type_mismatch", col.name, "date functions need a date column")
        return GroupKey(name=name or key_label(col.name, transform), ref=ref, transform=transform)

    def band_key(self, node: exp.Expression, name: str) -> GroupKey:
        """A band over a number or date column of a dimension or a measure: its keys are the
        query's labels, so grouping by a measure through a band releases no data-made group."""
        column_nodes, make = band_of(node)
        refs = [self.resolve(c) for c in column_nodes]
        ref = refs[0]
        if any(r != ref for r in refs):
            raise QueryRejected(
                "invalid_band", "condition", "every WHEN compares the same column with a cut point"
            )
        col = ref.column
        if col.role == Role.UNIT:
            raise QueryRejected("unit_not_allowed", col.name, "the privacy unit is never output")
        if col.role not in (Role.DIMENSION, Role.MEASURE):
            raise QueryRejected("column_not_groupable", col.name, f"its role is {col.role.value}")
        band = make(col.type)
        label = f"{band.kind.value}_{col.name}"
        return GroupKey(name=name or label, ref=ref, transform=Transform.NONE, band=band)

    def outputs(
        self, select: exp.Select, group_keys: tuple[GroupKey, ...]
    ) -> tuple[tuple[Aggregate, ...], tuple[str, ...], tuple[GroupKey, ...]]:
        items = select.expressions
        if len(items) > MAX_OUTPUTS:
            raise QueryRejected("query_too_complex", "select", f"at most {MAX_OUTPUTS} outputs")
        aggregates: list[Aggregate] = []
        named_keys: dict[int, GroupKey] = {}
        names: list[str] = []
        taken: set[str] = set()

        def unique(label: str) -> str:
            name, n = label, 2
            while name in taken:
                name, n = f"{label}_{n}", n + 1
            taken.add(name)
            return name

        for item in items:
            alias = item.alias if isinstance(item, exp.Alias) else ""
            node = item.this if isinstance(item, exp.Alias) else item
            if isinstance(node, exp.Star) or (
                isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
            ):
                raise QueryRejected("raw_rows", "*", "only aggregates are released")
            agg = self.aggregate(node, alias, unique)
            if agg is not None:
                aggregates.append(agg)
                names.append(agg.name)
                continue
            key = self.matching_group_key(node, group_keys)
            index = group_keys.index(key)
            if index in named_keys:
                raise QueryRejected("unsupported_expression", key.name, "a group key twice")
            named_keys[index] = replace(key, name=unique(alias or key.name))
            names.append(named_keys[index].name)
        if not aggregates:
            raise QueryRejected("raw_rows", "", "select at least one aggregate")
        final_keys = tuple(
            named_keys.get(i) or replace(k, name=unique(k.name)) for i, k in enumerate(group_keys)
        )
        return tuple(aggregates), tuple(names), final_keys

    def matching_group_key(self, node: exp.Expression, keys: tuple[GroupKey, ...]) -> GroupKey:
        key_nodes = (exp.Column, exp.Year, exp.TimestampTrunc, exp.DateTrunc, *BAND_NODES)
        if not isinstance(node, key_nodes):
            raise unsupported(node)
        if not keys:
            raise QueryRejected("raw_rows", column_label(node), "only aggregates are released")
        candidate = self.group_key(node, name="")
        for key in keys:
            if key.identity == candidate.identity:
                return key
        raise QueryRejected("raw_rows", candidate.ref.column.name, "not in GROUP BY")

    def aggregate(
        self, node: exp.Expression, alias: str, unique: Callable[[str], str]
    ) -> Aggregate | None:
        if isinstance(node, exp.Filter):
            raise QueryRejected("unsupported_clause", "filter")
        if isinstance(node, exp.Count):
            no_extra_arguments(node)
            arg = node.this
            if isinstance(arg, exp.Star):
                return Aggregate(unique(alias or "count"), AggKind.COUNT, None)
            if isinstance(arg, exp.Distinct):
                cols = arg.expressions
                if len(cols) != 1 or not isinstance(cols[0], exp.Column):
                    raise QueryRejected("unsupported_aggregate", "count(distinct ...)")
                ref = self.resolve(cols[0], join_key=True)
                if ref.column.role != Role.UNIT:
                    raise QueryRejected(
                        "unsupported_aggregate",
                        "count(distinct ...)",
                        "only COUNT(DISTINCT <privacy unit>)",
                    )
                return Aggregate(unique(alias or "count_units"), AggKind.COUNT_UNITS, None)
            if not isinstance(arg, exp.Column):
                raise QueryRejected("aggregate_argument", "count", "takes * or a bare column")
            ref = self.resolve(arg)
            if ref.column.role not in (Role.DIMENSION, Role.MEASURE):
                rule = "unit_not_allowed" if ref.column.role == Role.UNIT else "column_not_allowed"
                raise QueryRejected(rule, ref.column.name)
            name = unique(alias or f"count_{ref.column.name}")
            return Aggregate(name, AggKind.COUNT_COLUMN, ref)
        kind = _MEASURE_AGGS.get(type(node))
        if kind is None:
            if isinstance(node, exp.AggFunc):
                raise QueryRejected("unsupported_function", func_name(node))
            return None
        no_extra_arguments(node)
        arg = node.this
        if not isinstance(arg, exp.Column):
            raise QueryRejected("aggregate_argument", func_name(node), "takes a bare column")
        ref = self.resolve(arg)
        if ref.column.role != Role.MEASURE:
            raise QueryRejected("column_not_aggregatable", ref.column.name)
        q: float | None = None
        if isinstance(node, exp.Median):
            q = 0.5
        elif isinstance(node, exp.PercentileCont):
            q = quantile_level(node.expression)
        label = _AGG_LABEL[kind] if q is None or q != 0.5 else "median"
        return Aggregate(unique(alias or f"{label}_{ref.column.name}"), kind, ref, q)

    def order_by(self, select: exp.Select, outputs: tuple[str, ...]) -> tuple[OrderItem, ...]:
        order = select.args.get("order")
        if order is None:
            return ()
        items: list[OrderItem] = []
        for ordered in order.expressions:
            node = ordered.this
            if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
                position = int(node.this)
                if not 1 <= position <= len(outputs):
                    raise QueryRejected("invalid_order", "position")
                name = outputs[position - 1]
            elif isinstance(node, exp.Column) and not node.table and node.name in outputs:
                name = node.name
            else:
                raise QueryRejected("invalid_order", "", "order by output names or positions")
            items.append(OrderItem(name=name, descending=bool(ordered.args.get("desc"))))
        return tuple(items)

    def limit(self, select: exp.Select) -> int | None:
        node = select.args.get("limit")
        if node is None:
            return None
        if any(v for k, v in node.args.items() if k != "expression"):
            raise QueryRejected("invalid_limit", "", "LIMIT takes a whole number")
        value = node.expression
        if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
            raise QueryRejected("invalid_limit", "", "LIMIT takes a whole number")
        number = int(value.this)
        if number > MAX_LIMIT:
            raise QueryRejected("invalid_limit", "", f"at most {MAX_LIMIT}")
        return number
