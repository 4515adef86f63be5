"""Profiling a freshly written workspace into per-table quality figures.

Profiling runs with DuckDB over the workspace file of a load before it is published (read-only),
so the numbers are those of exactly what was loaded: counts, null rates, values outside clamp
bounds, public keys or public date ranges, date ranges and freshness, duplicate privacy units and
units above the contribution bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from connectors.quality.report import ColumnQuality, TableQuality
from policies.model import Column, ColumnType, Policy, Role, Table

__all__ = ["profile_workspace"]


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
    missing_codes: Mapping[str, Mapping[str, int]] | None = None,
    now: datetime | None = None,
) -> tuple[TableQuality, ...]:
    """Profile every policy table in the workspace file at ``path`` (read-only).
    ``missing_codes``: per table and column, the values the load made NULL (missing codes)."""
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
                (missing_codes or {}).get(table.name, {}),
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
    missing: Mapping[str, int],
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
                missing_codes=int(missing.get(col.name, 0)),
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
