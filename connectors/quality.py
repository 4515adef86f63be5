"""Quality reports of loads, and the quality rules a policy may set.

Every load produces a :class:`QualityReport`: per table the row count and its change against the
previous version, duplicate privacy units, units above the contribution bound; per column the null
rate, values that failed type conversion, the share of measure values outside the clamp bounds,
dimension values outside the declared public keys, and the date range and freshness of date
columns. It holds aggregate counts and rates only, plus the min/max of date columns — never a row
or another value — and is for the provider and the operator, not for tenants.

Quality rules (optional policy keys, read here from the raw policy TOML):

``[tables.T] unique_unit = true``                   no privacy unit may appear in two rows of T
``[tables.T.columns.C] required = true``            C may not be null (the unit column always is)
``[tables.T.columns.C] max_null_rate = 0.05``       at most 5% of C may be null

A failed rule fails the load; the report's ``rules`` say which rule, where, limit and actual value.
Profiling runs with DuckDB over the freshly written workspace (before it is published), so the
numbers are those of exactly what was loaded.
"""

from __future__ import annotations

import html
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import duckdb

from policies.errors import PolicyError
from policies.model import Column, ColumnType, Policy, Role, Table

__all__ = [
    "ColumnQuality",
    "ColumnRules",
    "QualityReport",
    "QualityRules",
    "RuleResult",
    "TableQuality",
    "TableRules",
    "evaluate_rules",
    "load_rules",
    "profile_workspace",
    "read_rules",
    "render_html",
]

COLUMN_RULE_KEYS: Final = ("max_null_rate", "required")
TABLE_RULE_KEYS: Final = ("unique_unit",)


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnRules:
    max_null_rate: float | None = None
    required: bool | None = None  # None: not set (the unit column defaults to required)


@dataclass(frozen=True)
class TableRules:
    unique_unit: bool = False
    columns: Mapping[str, ColumnRules] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityRules:
    tables: Mapping[str, TableRules] = field(default_factory=dict)

    def table(self, name: str) -> TableRules:
        return self.tables.get(name, TableRules())


def read_rules(doc: Mapping[str, Any], source: str = "<policy>") -> QualityRules:
    """The quality rules of a parsed policy TOML document (other keys are the loader's business).

    Errors are :class:`PolicyError` naming the file, the dotted key and the rule, like the loader's.
    """
    tables_node = doc.get("tables")
    if not isinstance(tables_node, Mapping):
        return QualityRules()
    tables: dict[str, TableRules] = {}
    for name, node in tables_node.items():
        if not isinstance(node, Mapping):
            continue
        prefix = f"tables.{name}"
        unique = node.get("unique_unit", False)
        if not isinstance(unique, bool):
            raise PolicyError(source, f"{prefix}.unique_unit", "type", "must be true or false")
        columns: dict[str, ColumnRules] = {}
        columns_node = node.get("columns")
        if isinstance(columns_node, Mapping):
            for col, spec in columns_node.items():
                if not isinstance(spec, Mapping):
                    continue
                where = f"{prefix}.columns.{col}"
                rate = spec.get("max_null_rate")
                if rate is not None:
                    if (
                        isinstance(rate, bool)
                        or not isinstance(rate, int | float)
                        or not math.isfinite(rate)
                    ):
                        raise PolicyError(
                            source, f"{where}.max_null_rate", "type", "must be a number"
                        )
                    if not 0 <= rate <= 1:
                        raise PolicyError(
                            source, f"{where}.max_null_rate", "range", "must be between 0 and 1"
                        )
                required = spec.get("required")
                if required is not None and not isinstance(required, bool):
                    raise PolicyError(source, f"{where}.required", "type", "must be true or false")
                if rate is not None or required is not None:
                    columns[col] = ColumnRules(
                        max_null_rate=None if rate is None else float(rate), required=required
                    )
        if unique or columns:
            tables[name] = TableRules(unique_unit=unique, columns=columns)
    return QualityRules(tables)


def load_rules(path: Path) -> QualityRules:
    """The quality rules of a policy file."""
    text = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(str(path), "(document)", "toml_syntax", str(exc)) from None
    return read_rules(doc, str(path))


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnQuality:
    name: str
    type: str
    role: str
    nulls: int
    null_rate: float
    conversion_failures: int = 0
    out_of_bounds: int | None = None  # measures: values outside [lower, upper]
    out_of_bounds_share: float | None = None  # … as a share of the non-null values
    keys_outside: int | None = None  # dimensions with public keys: values not among them
    distinct_keys_outside: int | None = None
    date_min: date | None = None
    date_max: date | None = None
    freshness_days: int | None = None  # days from date_max to the load
    outside_public_range: int | None = None  # date dimensions with a public_range

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, date) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnQuality:
        values = dict(data)
        for key in ("date_min", "date_max"):
            if isinstance(values.get(key), str):
                values[key] = date.fromisoformat(values[key])
        return cls(**values)


@dataclass(frozen=True)
class TableQuality:
    name: str
    rows: int
    columns: tuple[ColumnQuality, ...]
    previous_rows: int | None = None
    row_change: int | None = None
    row_change_rate: float | None = None
    units: int | None = None  # distinct non-null privacy units
    duplicate_units: int | None = None  # units in more than one row
    duplicate_unit_rows: int | None = None  # rows beyond the first of each such unit
    units_over_bound: int | None = None  # units with more rows than max_rows_per_unit

    def column(self, name: str) -> ColumnQuality | None:
        return next((c for c in self.columns if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "columns"}
        out["columns"] = [c.to_dict() for c in self.columns]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableQuality:
        values = dict(data)
        values["columns"] = tuple(ColumnQuality.from_dict(c) for c in values.get("columns", ()))
        return cls(**values)


@dataclass(frozen=True)
class RuleResult:
    rule: str  # "required" | "max_null_rate" | "unique_unit"
    table: str
    column: str | None
    passed: bool
    limit: float
    actual: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleResult:
        return cls(**dict(data))


@dataclass(frozen=True)
class QualityReport:
    """The quality of one load. ``error`` is the problem body when the load itself failed."""

    dataset: str
    source: str
    created_at: datetime
    tables: tuple[TableQuality, ...]
    rules: tuple[RuleResult, ...] = ()
    error: Mapping[str, Any] | None = None

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rules if not r.passed)

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failed_rules

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def table(self, name: str) -> TableQuality | None:
        return next((t for t in self.tables if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "status": self.status,
            "tables": [t.to_dict() for t in self.tables],
            "rules": [r.to_dict() for r in self.rules],
            "error": dict(self.error) if self.error is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityReport:
        return cls(
            dataset=data["dataset"],
            source=data["source"],
            created_at=datetime.fromisoformat(data["created_at"]),
            tables=tuple(TableQuality.from_dict(t) for t in data.get("tables", ())),
            rules=tuple(RuleResult.from_dict(r) for r in data.get("rules", ())),
            error=data.get("error"),
        )


# ---------------------------------------------------------------------------------------------
# Profiling
# ---------------------------------------------------------------------------------------------


def _q(name: str) -> str:
    """Quote a policy identifier (validated by the loader: lowercase letters, digits, '_')."""
    return '"' + name.replace('"', '""') + '"'


def _key_params(col: Column) -> list[Any]:
    assert col.keys is not None
    if col.type == ColumnType.FLOAT:
        return [float(k) for k in col.keys]  # type: ignore[arg-type]
    return list(col.keys)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def profile_workspace(
    path: Path,
    policy: Policy,
    *,
    previous_rows: Mapping[str, int] | None = None,
    conversion_failures: Mapping[str, Mapping[str, int]] | None = None,
    now: datetime | None = None,
) -> tuple[TableQuality, ...]:
    """Profile every policy table in the workspace file at ``path`` (read-only)."""
    now = now or datetime.now(UTC)
    con = duckdb.connect(
        str(path),
        read_only=True,
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        return tuple(
            _profile_table(
                con,
                policy,
                table,
                (previous_rows or {}).get(table.name),
                (conversion_failures or {}).get(table.name, {}),
                now,
            )
            for table in policy.tables
        )
    finally:
        con.close()


def _profile_table(
    con: duckdb.DuckDBPyConnection,
    policy: Policy,
    table: Table,
    previous: int | None,
    failures: Mapping[str, int],
    now: datetime,
) -> TableQuality:
    select: list[str] = ["count(*)"]
    params: list[Any] = []
    slots: dict[tuple[str, str], int] = {}

    def add(col: str, what: str, sql: str, *values: Any) -> None:
        slots[(col, what)] = len(select)
        select.append(sql)
        params.extend(values)

    for col in table.columns:
        c = _q(col.name)
        add(col.name, "non_null", f"count({c})")
        if col.role == Role.MEASURE and col.lower is not None and col.upper is not None:
            add(
                col.name, "oob", f"count(*) FILTER (WHERE {c} < ? OR {c} > ?)", col.lower, col.upper
            )
        if col.keys is not None:
            keys = _key_params(col)
            add(
                col.name,
                "keys_outside",
                f"count(*) FILTER (WHERE {c} IS NOT NULL AND NOT list_contains(?, {c}))",
                keys,
            )
            add(
                col.name,
                "distinct_outside",
                f"count(DISTINCT {c}) FILTER (WHERE NOT list_contains(?, {c}))",
                keys,
            )
        if col.type == ColumnType.DATE:
            add(col.name, "min", f"min({c})")
            add(col.name, "max", f"max({c})")
            if col.public_range is not None:
                first, last = col.public_range
                add(
                    col.name,
                    "outside_range",
                    f"count(*) FILTER (WHERE {c} < ? OR {c} > ?)",
                    first,
                    last,
                )
    (row,) = con.execute(f"SELECT {', '.join(select)} FROM {_q(table.name)}", params).fetchall()
    rows = int(row[0])

    def get(col: str, what: str) -> Any:
        index = slots.get((col, what))
        return None if index is None else row[index]

    columns = []
    for col in table.columns:
        non_null = int(get(col.name, "non_null"))
        nulls = rows - non_null
        oob = get(col.name, "oob")
        date_max = get(col.name, "max")
        columns.append(
            ColumnQuality(
                name=col.name,
                type=col.type.value,
                role=col.role.value,
                nulls=nulls,
                null_rate=_rate(nulls, rows),
                conversion_failures=int(failures.get(col.name, 0)),
                out_of_bounds=None if oob is None else int(oob),
                out_of_bounds_share=None if oob is None else _rate(int(oob), non_null),
                keys_outside=_int_or_none(get(col.name, "keys_outside")),
                distinct_keys_outside=_int_or_none(get(col.name, "distinct_outside")),
                date_min=get(col.name, "min"),
                date_max=date_max,
                freshness_days=(now.date() - date_max).days if date_max is not None else None,
                outside_public_range=_int_or_none(get(col.name, "outside_range")),
            )
        )
    units = duplicate_units = duplicate_rows = over = None
    unit = table.column(policy.privacy_unit)
    if unit is not None:
        u = _q(unit.name)
        ((units, duplicate_units, duplicate_rows, over),) = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE n > 1), "
            "coalesce(sum(n - 1) FILTER (WHERE n > 1), 0), count(*) FILTER (WHERE n > ?) "
            f"FROM (SELECT count(*) AS n FROM {_q(table.name)} WHERE {u} IS NOT NULL GROUP BY {u})",
            [table.max_rows_per_unit],
        ).fetchall()
    change = None if previous is None else rows - previous
    return TableQuality(
        name=table.name,
        rows=rows,
        columns=tuple(columns),
        previous_rows=previous,
        row_change=change,
        row_change_rate=(change / previous) if change is not None and previous else None,
        units=_int_or_none(units),
        duplicate_units=_int_or_none(duplicate_units),
        duplicate_unit_rows=_int_or_none(duplicate_rows),
        units_over_bound=_int_or_none(over),
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def evaluate_rules(
    policy: Policy, tables: Iterable[TableQuality], rules: QualityRules
) -> tuple[RuleResult, ...]:
    """Check the rules against the profiled tables. The unit column is required unless a rule
    says ``required = false`` for it."""
    results: list[RuleResult] = []
    for quality in tables:
        table = policy.table(quality.name)
        if table is None:
            continue
        table_rules = rules.table(table.name)
        for col in table.columns:
            cq = quality.column(col.name)
            if cq is None:
                continue
            col_rules = table_rules.columns.get(col.name, ColumnRules())
            required = col_rules.required
            if required is None:
                required = col.role == Role.UNIT
            if required:
                results.append(
                    RuleResult(
                        rule="required",
                        table=table.name,
                        column=col.name,
                        passed=cq.nulls == 0,
                        limit=0,
                        actual=cq.nulls,
                        message=(
                            "no nulls"
                            if cq.nulls == 0
                            else f"{cq.nulls} null value(s) in a required column"
                        ),
                    )
                )
            if col_rules.max_null_rate is not None:
                ok = cq.null_rate <= col_rules.max_null_rate
                results.append(
                    RuleResult(
                        rule="max_null_rate",
                        table=table.name,
                        column=col.name,
                        passed=ok,
                        limit=col_rules.max_null_rate,
                        actual=cq.null_rate,
                        message=(
                            f"null rate {cq.null_rate:.4g} "
                            f"{'within' if ok else 'above'} the limit {col_rules.max_null_rate:.4g}"
                        ),
                    )
                )
        if table_rules.unique_unit:
            dups = quality.duplicate_units or 0
            results.append(
                RuleResult(
                    rule="unique_unit",
                    table=table.name,
                    column=policy.privacy_unit,
                    passed=dups == 0,
                    limit=0,
                    actual=dups,
                    message=(
                        "every privacy unit appears once"
                        if dups == 0
                        else f"{dups} privacy unit(s) appear in more than one row"
                    ),
                )
            )
    return tuple(results)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330;max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #ccd;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
.passed{color:#176b2c}.failed{color:#a4161a;font-weight:600}
.muted{color:#667}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.2f}%"


def render_html(report: QualityReport) -> str:
    """A self-contained HTML page of the report; every text is escaped."""
    status = report.status
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Quality report: {_e(report.dataset)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Quality report: {_e(report.dataset)}</h1>",
        "<p>",
        f"Status: <span class='{_e(status)}'>{_e(status)}</span><br>",
        f"Source: {_e(report.source)}<br>",
        f"Loaded: {_e(report.created_at.isoformat(timespec='seconds'))}",
        "</p>",
    ]
    if report.error is not None:
        error = report.error
        parts.append("<h2>Load failed</h2><table>")
        for key in ("code", "detail", "file", "line", "row", "column", "rule"):
            if error.get(key) is not None:
                parts.append(f"<tr><th>{_e(key)}</th><td>{_e(error[key])}</td></tr>")
        parts.append("</table>")
    if report.rules:
        parts.append("<h2>Quality rules</h2><table>")
        parts.append(
            "<tr><th>rule</th><th>table</th><th>column</th><th>limit</th><th>actual</th>"
            "<th>result</th><th>detail</th></tr>"
        )
        for r in report.rules:
            result = "passed" if r.passed else "failed"
            parts.append(
                f"<tr><td>{_e(r.rule)}</td><td>{_e(r.table)}</td><td>{_e(r.column)}</td>"
                f"<td>{_e(r.limit)}</td><td>{_e(_fmt(r.actual))}</td>"
                f"<td class='{result}'>{result}</td><td>{_e(r.message)}</td></tr>"
            )
        parts.append("</table>")
    for t in report.tables:
        parts.append(f"<h2>Table {_e(t.name)}</h2><p>")
        parts.append(f"Rows: {_e(t.rows)}")
        if t.previous_rows is not None:
            rate = "" if t.row_change_rate is None else f", {_signed_pct(t.row_change_rate)}"
            parts.append(
                f" (previous version: {_e(t.previous_rows)}, "
                f"change {_e(_signed(t.row_change))}{_e(rate)})"
            )
        if t.units is not None:
            parts.append(
                f"<br>Privacy units: {_e(t.units)}; in more than one row: "
                f"{_e(t.duplicate_units)} ({_e(t.duplicate_unit_rows)} extra rows); above the "
                f"contribution bound: {_e(t.units_over_bound)}"
            )
        parts.append("</p><table>")
        parts.append(
            "<tr><th>column</th><th>type</th><th>role</th><th>nulls</th><th>null rate</th>"
            "<th>conversion failures</th><th>outside clamp bounds</th><th>outside public keys</th>"
            "<th>date range</th><th>freshness (days)</th></tr>"
        )
        for c in t.columns:
            date_range = (
                f"{c.date_min.isoformat()} – {c.date_max.isoformat()}"
                if c.date_min is not None and c.date_max is not None
                else ""
            )
            oob = (
                f"{c.out_of_bounds} ({_pct(c.out_of_bounds_share)})"
                if c.out_of_bounds is not None
                else ""
            )
            keys = (
                f"{c.keys_outside} ({c.distinct_keys_outside} distinct)"
                if c.keys_outside is not None
                else ""
            )
            parts.append(
                f"<tr><td>{_e(c.name)}</td><td>{_e(c.type)}</td><td>{_e(c.role)}</td>"
                f"<td>{_e(c.nulls)}</td><td>{_e(_pct(c.null_rate))}</td>"
                f"<td>{_e(c.conversion_failures)}</td><td>{_e(oob)}</td><td>{_e(keys)}</td>"
                f"<td>{_e(date_range)}</td><td>{_e(c.freshness_days)}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<p class='muted'>Aggregate counts and rates only; shown to the provider and the "
        "operator.</p></body></html>"
    )
    return "\n".join(parts)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _signed_pct(value: float) -> str:
    return f"{value * 100:+.2f}%"


def _signed(value: int | None) -> str:
    return "" if value is None else f"{value:+d}"
