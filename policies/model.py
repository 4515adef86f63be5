"""The policy model: a data owner's rules for one dataset, as frozen values.

A policy says who the privacy unit is, how much one unit may contribute to a query, and what each
column may be used for. Everything the gate and the noise plan decide is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Role(StrEnum):
    UNIT = "unit"  # the privacy unit: never output, never compared with a literal
    DIMENSION = "dimension"  # groupable and filterable
    MEASURE = "measure"  # aggregatable within clamp bounds, filterable
    FILTER = "filter"  # usable only in WHERE
    HIDDEN = "hidden"  # never usable


class ColumnType(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    DATE = "date"
    BOOLEAN = "boolean"

    @property
    def numeric(self) -> bool:
        return self in (ColumnType.INTEGER, ColumnType.FLOAT)


KeyValue = str | int | float | bool | date


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    role: Role
    description: str = ""
    lower: float | None = None
    upper: float | None = None
    keys: tuple[KeyValue, ...] | None = None
    public_range: tuple[date, date] | None = None
    candidates: tuple[float, ...] | None = None

    def quantile_candidates(self, count: int = 65) -> tuple[float, ...]:
        """Declared candidates, or ``count`` evenly spaced points across the clamp bounds."""
        if self.candidates is not None:
            return self.candidates
        assert self.lower is not None and self.upper is not None
        step = (self.upper - self.lower) / (count - 1)
        return tuple(self.lower + i * step for i in range(count))


@dataclass(frozen=True)
class Table:
    name: str
    max_rows_per_unit: int
    columns: tuple[Column, ...]
    description: str = ""

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None


@dataclass(frozen=True)
class Policy:
    dataset: str
    title: str
    privacy_unit: str
    max_groups_per_unit: int
    min_group_size: int
    tables: tuple[Table, ...]
    description: str = ""
    provider: str = ""
    cluster_by: str | None = None  # [storage]: workspace tables are stored sorted by this column

    def table(self, name: str) -> Table | None:
        for table in self.tables:
            if table.name == name:
                return table
        return None

    def public_view(self) -> dict[str, object]:
        """What any member may see: schema, roles, bounds and public keys — never data."""
        return {
            "privacy_unit": self.privacy_unit,
            "max_groups_per_unit": self.max_groups_per_unit,
            "min_group_size": self.min_group_size,
            "tables": [
                {
                    "name": t.name,
                    "description": t.description,
                    "max_rows_per_unit": t.max_rows_per_unit,
                    "columns": [_public_column(c) for c in t.columns if c.role != Role.HIDDEN],
                }
                for t in self.tables
            ],
        }


def _public_column(col: Column) -> dict[str, object]:
    out: dict[str, object] = {"name": col.name, "type": col.type.value, "role": col.role.value}
    if col.description:
        out["description"] = col.description
    if col.role == Role.MEASURE:
        out["lower"] = col.lower
        out["upper"] = col.upper
    if col.keys is not None:
        out["keys"] = [k.isoformat() if isinstance(k, date) else k for k in col.keys]
    if col.public_range is not None:
        out["public_range"] = [d.isoformat() for d in col.public_range]
    return out
