"""Load and validate policy files (TOML).

Validation is strict: unknown keys, wrong types and inconsistent bounds are errors, each a
:class:`~policies.errors.PolicyError` that names the file, the dotted key and the rule that
failed, so a data owner can fix a policy without reading code.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from policies.errors import PolicyError
from policies.model import (
    GENERATORS,
    Column,
    ColumnType,
    KeyValue,
    Policy,
    Role,
    Table,
)
from policies.toml import TomlReader, read_toml

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DATASET_ID = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MAX_KEYS = 10_000
MAX_CANDIDATES = 1_000
MAX_MISSING = 100

_TOP_KEYS = {
    "id",
    "title",
    "description",
    "provider",
    "privacy_unit",
    "max_groups_per_unit",
    "min_group_size",
    "tables",
    "storage",
}
_STORAGE_KEYS = {"cluster_by"}
# unique_unit, required and max_null_rate are quality rules, applied at load time
# (connectors.quality.rules.read_rules); the loader checks their types so a bad value names its key.
_TABLE_KEYS = {"description", "max_rows_per_unit", "columns", "unique_unit"}
_COLUMN_KEYS = {
    "required",
    "max_null_rate",
    "type",
    "role",
    "description",
    "lower",
    "upper",
    "keys",
    "public_range",
    "candidates",
    "missing",
    "generated",
}


def load_policy(path: Path) -> Policy:
    """Read and validate one policy file."""
    return parse_policy(path.read_text(encoding="utf-8"), source=str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy TOML text; ``source`` names the file in errors."""
    return _Reader(source).policy(read_toml(text, source))


class _Reader(TomlReader):
    """The policy document's checks, on top of the ones every TOML file shares."""

    def flag(self, node: Mapping[str, Any], key: str, prefix: str) -> None:
        if key in node and not isinstance(node[key], bool):
            raise self.fail(f"{prefix}.{key}", "type", "must be true or false")

    def number(self, node: Mapping[str, Any], key: str, prefix: str) -> float | None:
        if key not in node:
            return None
        value = node[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(f"{prefix}.{key}", "type", "must be a finite number")
        return float(value)

    def policy(self, doc: Mapping[str, Any]) -> Policy:
        self.no_unknown(doc, _TOP_KEYS, "")
        dataset = self.string(doc, "id", "", required=True)
        if not DATASET_ID.match(dataset):
            raise self.fail("id", "identifier", "lowercase letters, digits, '_' and '-'")
        unit = self.string(doc, "privacy_unit", "", required=True)
        tables_node = doc.get("tables")
        if not isinstance(tables_node, dict) or not tables_node:
            raise self.fail("tables", "required", "at least one [tables.NAME] section is required")
        tables = tuple(self.table(name, node, unit) for name, node in tables_node.items())
        generated = next((t for t in tables if t.generated is not None), None)
        if generated is not None and len(tables) > 1:
            raise self.fail(
                f"tables.{generated.name}.columns.{unit}.generated",
                "generated_unit",
                "a generated unit numbers the rows of one table: the policy must have exactly "
                "one table (row numbers of two tables name different units)",
            )
        cluster_by = self.storage(doc.get("storage"), tables)
        return Policy(
            dataset=dataset,
            title=self.string(doc, "title", "", required=True),
            description=self.string(doc, "description", "", required=False),
            provider=self.string(doc, "provider", "", required=False),
            privacy_unit=unit,
            max_groups_per_unit=self.integer(doc, "max_groups_per_unit", "", minimum=1),
            min_group_size=self.integer(doc, "min_group_size", "", minimum=0),
            tables=tables,
            cluster_by=cluster_by,
        )

    def storage(self, node: Any, tables: tuple[Table, ...]) -> str | None:
        """``[storage] cluster_by``: a column of at least one table (each table that has it is
        stored sorted by it, so reads of one unit or range skip most of the table)."""
        if node is None:
            return None
        if not isinstance(node, dict):
            raise self.fail("storage", "type", "must be a table")
        self.no_unknown(node, _STORAGE_KEYS, "storage")
        if "cluster_by" not in node:
            return None
        column = self.string(node, "cluster_by", "storage", required=True)
        if not any(t.column(column) is not None for t in tables):
            raise self.fail(
                "storage.cluster_by", "unknown_column", "must name a column of one of the tables"
            )
        return column

    def table(self, name: str, node: Any, unit: str) -> Table:
        prefix = f"tables.{name}"
        if not IDENTIFIER.match(name):
            raise self.fail(prefix, "identifier", "table names are lowercase identifiers")
        if not isinstance(node, dict):
            raise self.fail(prefix, "type", "must be a table")
        self.no_unknown(node, _TABLE_KEYS, prefix)
        self.flag(node, "unique_unit", prefix)
        columns_node = node.get("columns")
        if not isinstance(columns_node, dict) or not columns_node:
            raise self.fail(f"{prefix}.columns", "required", "declare every column of the table")
        columns = tuple(
            self.column(col, spec, f"{prefix}.columns.{col}") for col, spec in columns_node.items()
        )
        unit_cols = [c for c in columns if c.role == Role.UNIT]
        if [c.name for c in unit_cols] != [unit]:
            raise self.fail(
                f"{prefix}.columns",
                "privacy_unit",
                f"exactly one column with role 'unit', named '{unit}' (the privacy_unit)",
            )
        generated = unit_cols[0].generated is not None
        max_rows = self.integer(
            node, "max_rows_per_unit", prefix, minimum=1, default=1 if generated else None
        )
        if generated and max_rows != 1:
            raise self.fail(
                f"{prefix}.max_rows_per_unit",
                "generated_unit",
                "a generated unit is one row: max_rows_per_unit must be 1 (or left out)",
            )
        return Table(
            name=name,
            description=self.string(node, "description", prefix, required=False),
            max_rows_per_unit=max_rows,
            columns=columns,
        )

    def column(self, name: str, spec: Any, prefix: str) -> Column:
        if not IDENTIFIER.match(name):
            raise self.fail(prefix, "identifier", "column names are lowercase identifiers")
        if not isinstance(spec, dict):
            raise self.fail(prefix, "type", "must be a table")
        self.no_unknown(spec, _COLUMN_KEYS, prefix)
        self.flag(spec, "required", prefix)
        rate = self.number(spec, "max_null_rate", prefix)
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise self.fail(f"{prefix}.max_null_rate", "range", "a share between 0 and 1")
        type_text = self.string(spec, "type", prefix, required=True)
        role_text = self.string(spec, "role", prefix, required=True)
        try:
            ctype = ColumnType(type_text)
        except ValueError:
            allowed = ", ".join(t.value for t in ColumnType)
            raise self.fail(f"{prefix}.type", "enum", f"one of: {allowed}") from None
        try:
            role = Role(role_text)
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise self.fail(f"{prefix}.role", "enum", f"one of: {allowed}") from None
        lower = self.number(spec, "lower", prefix)
        upper = self.number(spec, "upper", prefix)
        if role == Role.MEASURE:
            if not ctype.numeric:
                raise self.fail(f"{prefix}.type", "measure_type", "measures are integer or float")
            if lower is None or upper is None:
                raise self.fail(prefix, "clamp_bounds", "measures need 'lower' and 'upper'")
            if not lower < upper:
                raise self.fail(f"{prefix}.upper", "clamp_bounds", "'upper' must exceed 'lower'")
        elif lower is not None or upper is not None:
            raise self.fail(prefix, "clamp_bounds", "only measures have 'lower' and 'upper'")
        keys = self.keys(spec, prefix, ctype, role)
        public_range = self.public_range(spec, prefix, ctype, role)
        candidates = self.candidates(spec, prefix, role, lower, upper)
        generated = self.generated(spec, prefix, ctype, role)
        missing = self.missing(spec, prefix, ctype, generated)
        return Column(
            name=name,
            type=ctype,
            role=role,
            description=self.string(spec, "description", prefix, required=False),
            lower=lower,
            upper=upper,
            keys=keys,
            public_range=public_range,
            candidates=candidates,
            missing=missing,
            generated=generated,
        )

    def generated(
        self, spec: Mapping[str, Any], prefix: str, ctype: ColumnType, role: Role
    ) -> str | None:
        """``generated = "row_number"``: only on the unit column, an integer."""
        if "generated" not in spec:
            return None
        where = f"{prefix}.generated"
        value = self.string(spec, "generated", prefix, required=True)
        if value not in GENERATORS:
            raise self.fail(where, "enum", f"one of: {', '.join(GENERATORS)}")
        if role != Role.UNIT:
            raise self.fail(where, "generated_unit", "only the unit column may be generated")
        if ctype != ColumnType.INTEGER:
            raise self.fail(f"{prefix}.type", "generated_unit", "a row number is an integer")
        return value

    def missing(
        self, spec: Mapping[str, Any], prefix: str, ctype: ColumnType, generated: str | None
    ) -> tuple[KeyValue, ...]:
        """``missing = [98, 99]``: distinct values of the column's type, made NULL at load."""
        if "missing" not in spec:
            return ()
        where = f"{prefix}.missing"
        if generated is not None:
            raise self.fail(where, "missing_generated", "a generated column has no missing codes")
        raw = spec["missing"]
        if not isinstance(raw, list) or not raw or len(raw) > MAX_MISSING:
            raise self.fail(where, "type", f"a list of 1 to {MAX_MISSING} values")
        try:
            if any(isinstance(v, datetime) for v in raw):
                raise self.fail(where, "date", "a date, not a date-time")
            codes = tuple(self.key_value(v, ctype, where) for v in raw)
        except PolicyError:
            raise self.fail(
                where, "missing_type", f"every missing code must be a {ctype.value}"
            ) from None
        if ctype == ColumnType.FLOAT:
            codes = tuple(float(c) for c in codes)  # type: ignore[arg-type]
        if len(set(codes)) != len(codes):
            raise self.fail(where, "duplicate_code", "missing codes must be distinct")
        return codes

    def keys(
        self, spec: Mapping[str, Any], prefix: str, ctype: ColumnType, role: Role
    ) -> tuple[KeyValue, ...] | None:
        if "keys" not in spec:
            return None
        where = f"{prefix}.keys"
        if role != Role.DIMENSION:
            raise self.fail(where, "keys_role", "only dimensions have public keys")
        raw = spec["keys"]
        if not isinstance(raw, list) or not raw:
            raise self.fail(where, "type", "must be a non-empty list")
        if len(raw) > MAX_KEYS:
            raise self.fail(where, "too_many_keys", f"at most {MAX_KEYS}")
        keys = tuple(self.key_value(v, ctype, where) for v in raw)
        if len(set(keys)) != len(keys):
            raise self.fail(where, "duplicate_key", "keys must be distinct")
        return keys

    def key_value(self, value: Any, ctype: ColumnType, where: str) -> KeyValue:
        ok = {
            ColumnType.STRING: isinstance(value, str),
            ColumnType.BOOLEAN: isinstance(value, bool),
            ColumnType.INTEGER: isinstance(value, int) and not isinstance(value, bool),
            ColumnType.FLOAT: isinstance(value, int | float) and not isinstance(value, bool),
            ColumnType.DATE: isinstance(value, (date, str)),
        }[ctype]
        if not ok:
            raise self.fail(where, "key_type", f"every key must be a {ctype.value}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(where, "key_type", "keys must be finite")
        if ctype == ColumnType.DATE and isinstance(value, str):
            return self.iso_date(value, where)
        return value  # type: ignore[no-any-return]

    def iso_date(self, value: Any, where: str) -> date:
        if isinstance(value, datetime):
            raise self.fail(where, "date", "a date, not a date-time (e.g. 2024-01-31)")
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise self.fail(where, "date", "dates are ISO 8601, e.g. 2024-01-31") from None

    def public_range(
        self, spec: Mapping[str, Any], prefix: str, ctype: ColumnType, role: Role
    ) -> tuple[date, date] | None:
        if "public_range" not in spec:
            return None
        where = f"{prefix}.public_range"
        if ctype != ColumnType.DATE or role != Role.DIMENSION:
            raise self.fail(where, "public_range_type", "only date dimensions have a public_range")
        raw = spec["public_range"]
        if not isinstance(raw, list) or len(raw) != 2:
            raise self.fail(where, "type", "must be [first, last]")
        first, last = (self.iso_date(v, where) for v in raw)
        if first > last:
            raise self.fail(where, "range", "first must not be after last")
        return first, last

    def candidates(
        self,
        spec: Mapping[str, Any],
        prefix: str,
        role: Role,
        lower: float | None,
        upper: float | None,
    ) -> tuple[float, ...] | None:
        if "candidates" not in spec:
            return None
        where = f"{prefix}.candidates"
        if role != Role.MEASURE:
            raise self.fail(where, "candidates_role", "only measures have quantile candidates")
        raw = spec["candidates"]
        if not isinstance(raw, list) or len(raw) < 2 or len(raw) > MAX_CANDIDATES:
            raise self.fail(where, "type", f"a list of 2 to {MAX_CANDIDATES} numbers")
        if any(
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            for v in raw
        ):
            raise self.fail(where, "type", "every candidate must be a finite number")
        values = tuple(float(v) for v in raw)
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise self.fail(where, "sorted", "candidates must be strictly increasing")
        assert lower is not None and upper is not None
        if values[0] < lower or values[-1] > upper:
            raise self.fail(where, "clamp_bounds", "candidates must lie within lower..upper")
        return values
