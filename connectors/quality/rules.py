"""The quality rules a policy may set, read from the raw policy TOML, and their evaluation.

Quality rules are optional policy keys:

``[tables.T] unique_unit = true``                   no privacy unit may appear in two rows of T
``[tables.T.columns.C] required = true``            C may not be null (the unit column always is)
``[tables.T.columns.C] max_null_rate = 0.05``       at most 5% of C may be null

A failed rule fails the load; its :class:`~connectors.quality.report.RuleResult` says which rule,
where, the limit and the actual value. The rules are checked against the profile of exactly what
was loaded (:mod:`connectors.quality.profile`).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from connectors.quality.report import RuleResult, TableQuality
from policies.errors import PolicyError
from policies.model import Policy, Role

__all__ = [
    "ColumnRules",
    "QualityRules",
    "TableRules",
    "evaluate_rules",
    "load_rules",
    "read_rules",
]

COLUMN_RULE_KEYS: Final = ("max_null_rate", "required")
TABLE_RULE_KEYS: Final = ("unique_unit",)


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
