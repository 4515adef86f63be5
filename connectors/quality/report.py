"""The quality report of a load: the model, and its JSON form.

Every load produces a :class:`QualityReport`: per table the row count and its change against the
previous version, duplicate privacy units, units above the contribution bound; per column the null
rate (values loaded as NULL because they were a declared missing code included, and counted
apart), values that failed type conversion, the share of measure values outside the clamp bounds,
dimension values outside the declared public keys, and the date range and freshness of date
columns; and the results of the quality rules. It holds aggregate counts and rates only, plus the
min/max of date columns — never a row or another value — and is for the provider and the
operator, not for tenants. A failed load's report carries the problem body in ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

__all__ = ["ColumnQuality", "QualityReport", "RuleResult", "TableQuality"]


@dataclass(frozen=True)
class ColumnQuality:
    name: str
    type: str
    role: str
    nulls: int
    null_rate: float
    conversion_failures: int = 0
    missing_codes: int = 0  # values equal to a declared missing code, loaded as NULL
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
