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

ROW_NUMBER = "row_number"
"""``generated = "row_number"``: the load numbers the rows 1, 2, … and stores the number in the
column (a privacy unit for one-row-per-person data that has no id of its own)."""
GENERATORS = (ROW_NUMBER,)


DEFAULT_QUANTILE_CANDIDATES = 65  # evenly spaced, when a measure declares none
MAX_QUANTILE_RESOLUTION = 1_000  # the most evenly spaced candidates a query may ask for


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
    missing: tuple[KeyValue, ...] = ()  # values of the column's type that the load makes NULL
    generated: str | None = None  # ROW_NUMBER: made by the load, not read from the source

    def quantile_candidates(
        self, count: int = DEFAULT_QUANTILE_CANDIDATES, resolution: int | None = None
    ) -> tuple[float, ...]:
        """Declared candidates, or ``count`` evenly spaced points across the clamp bounds; with a
        ``resolution``, those and ``resolution`` evenly spaced points across the bounds too."""
        assert self.lower is not None and self.upper is not None
        base = self.candidates if self.candidates is not None else _grid(self, count)
        if resolution is None:
            return base
        return tuple(sorted({*base, *_grid(self, resolution)}))


def _grid(col: Column, count: int) -> tuple[float, ...]:
    assert col.lower is not None and col.upper is not None
    step = (col.upper - col.lower) / (count - 1)
    return (*(col.lower + i * step for i in range(count - 1)), col.upper)


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

    @property
    def source_columns(self) -> tuple[Column, ...]:
        """The columns read from the source: every column but the generated ones."""
        return tuple(c for c in self.columns if c.generated is None)

    @property
    def generated(self) -> Column | None:
        """The column the load generates (the row-number unit), if any."""
        return next((c for c in self.columns if c.generated is not None), None)

    @property
    def missing_codes(self) -> dict[str, tuple[KeyValue, ...]]:
        """Each column with declared missing-value codes, and its codes."""
        return {c.name: c.missing for c in self.columns if c.missing}


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


# --- what any member may see of a policy -----------------------------------------------------


PublicKey = str | int | float | bool  # a public key as it is published (a date as ISO text)


def _published(key: KeyValue) -> PublicKey:
    return key.isoformat() if isinstance(key, date) else key


@dataclass(frozen=True)
class PublicColumn:
    """A column any member may know of (hidden ones are left out): ``lower``/``upper`` of a
    measure, ``keys`` where the values are public, ``public_range`` of a date."""

    name: str
    type: str
    role: str
    description: str | None
    lower: float | None
    upper: float | None
    keys: tuple[PublicKey, ...] | None
    public_range: tuple[str, str] | None

    @classmethod
    def of(cls, col: Column) -> PublicColumn:
        measure = col.role == Role.MEASURE
        return cls(
            name=col.name,
            type=col.type.value,
            role=col.role.value,
            description=col.description or None,
            lower=col.lower if measure else None,
            upper=col.upper if measure else None,
            keys=None if col.keys is None else tuple(_published(k) for k in col.keys),
            public_range=(
                None
                if col.public_range is None
                else (col.public_range[0].isoformat(), col.public_range[1].isoformat())
            ),
        )


@dataclass(frozen=True)
class PublicTable:
    name: str
    description: str
    max_rows_per_unit: int
    columns: tuple[PublicColumn, ...]


@dataclass(frozen=True)
class PublicPolicy:
    """The public part of a policy: the privacy unit and contribution bounds, and the schema."""

    privacy_unit: str
    max_groups_per_unit: int
    min_group_size: int
    tables: tuple[PublicTable, ...]

    @classmethod
    def of(cls, policy: Policy) -> PublicPolicy:
        return cls(
            privacy_unit=policy.privacy_unit,
            max_groups_per_unit=policy.max_groups_per_unit,
            min_group_size=policy.min_group_size,
            tables=tuple(
                PublicTable(
                    name=t.name,
                    description=t.description,
                    max_rows_per_unit=t.max_rows_per_unit,
                    columns=tuple(PublicColumn.of(c) for c in t.columns if c.role != Role.HIDDEN),
                )
                for t in policy.tables
            ),
        )
