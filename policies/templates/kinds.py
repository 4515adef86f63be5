"""What each kind needs: the claim and outcome it takes, the parameters, tables and columns it
reads, and the facts its query returns — and whether a dataset's policy provides them.

The predicate of a template is not free SQL: each template names a :class:`Kind` from a fixed
set, and the rules here say what that kind requires. :func:`check_template` holds a template
against the policy of the dataset it is bound to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from policies.errors import PolicyError
from policies.model import ColumnType, Policy
from policies.templates.model import ClaimType, Kind, OutcomeKind, Template
from policies.templates.months import month_range, months_between

_NUMERIC = (ColumnType.INTEGER, ColumnType.FLOAT)


@dataclass(frozen=True)
class KindRule:
    """What one kind takes, reads and returns."""

    claim: ClaimType
    outcome: OutcomeKind
    parameters: frozenset[str]  # required [parameters] keys (no others allowed)
    columns: Mapping[str, Mapping[str, tuple[ColumnType, ...]]]  # table -> column -> types
    facts: tuple[str, ...]
    max_choice: int | None = None  # upper bound of N for choice claims (None: months)


_MONTHLY_TAX = {"month": (ColumnType.DATE,), "revenue": _NUMERIC}
_REGISTRY_ONLY: Mapping[str, tuple[ColumnType, ...]] = {}

KINDS: Final[Mapping[Kind, KindRule]] = {
    Kind.STATUS: KindRule(
        ClaimType.NONE,
        OutcomeKind.YES_NO,
        frozenset({"statuses"}),
        {"registry": {"status": (ColumnType.STRING,)}},
        ("n_records", "n_accepted"),
    ),
    Kind.AGE: KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset(),
        {"registry": {"founded": (ColumnType.DATE,)}},
        ("n_records", "n_old_enough"),
        max_choice=200,
    ),
    Kind.REVENUE_TOLERANCE: KindRule(
        ClaimType.NUMBER,
        OutcomeKind.MATCH,
        frozenset({"tolerance", "months"}),
        {"tax": _MONTHLY_TAX},
        ("n_months", "revenue_sum"),
    ),
    Kind.REVENUE_BAND: KindRule(
        ClaimType.NONE,
        OutcomeKind.BAND,
        frozenset({"months"}),
        {"tax": _MONTHLY_TAX},
        ("n_months", "revenue_sum"),
    ),
    Kind.TAX_CONTINUITY: KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset(),
        {
            "registry": _REGISTRY_ONLY,
            "tax": {"month": (ColumnType.DATE,), "arrears": (ColumnType.BOOLEAN,)},
        },
        ("n_records", "n_months"),
        max_choice=240,
    ),
    Kind.SI_CONTINUITY: KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset(),
        {
            "registry": _REGISTRY_ONLY,
            "social_insurance": {"month": (ColumnType.DATE,), "arrears": (ColumnType.BOOLEAN,)},
        },
        ("n_records", "n_months"),
        max_choice=240,
    ),
    Kind.UTILITY_ACTIVITY: KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset({"months"}),
        {
            "registry": _REGISTRY_ONLY,
            "utilities": {
                "month": (ColumnType.DATE,),
                "electricity_kwh": _NUMERIC,
                "water_m3": _NUMERIC,
            },
        },
        ("n_records", "n_active"),
    ),
}

CONTINUITY_TABLE: Final = {Kind.TAX_CONTINUITY: "tax", Kind.SI_CONTINUITY: "social_insurance"}
"""The monthly table each continuity kind counts months in."""


def fact_columns(template: Template) -> tuple[str, ...]:
    """Names of the facts :func:`~policies.templates.sql.template_sql` returns, in column order."""
    return KINDS[template.kind].facts


def check_template(template: Template, policy: Policy) -> None:
    """Check that ``template`` fits ``policy``: same dataset, subject = privacy unit, and every
    table and column its kind reads exists with a usable type."""
    fail = _failer(template)
    if template.dataset != policy.dataset:
        raise fail("dataset", "template_dataset", f"the policy is for '{policy.dataset}'")
    if template.subject != policy.privacy_unit:
        raise fail("subject", "privacy_unit", f"must be the privacy unit '{policy.privacy_unit}'")
    tables = {t.name: t for t in policy.tables}
    for table_name, columns in KINDS[template.kind].columns.items():
        table = tables.get(table_name)
        if table is None:
            raise fail("kind", "template_table", f"kind '{template.kind}' reads '{table_name}'")
        for column_name, types in columns.items():
            column = table.column(column_name)
            if column is None or column.type not in types:
                wanted = " or ".join(t.value for t in types)
                raise fail(
                    "kind",
                    "template_column",
                    f"kind '{template.kind}' reads {table_name}.{column_name} ({wanted})",
                )
    if template.claim.type == ClaimType.CHOICE and template.kind != Kind.AGE:
        table_name = next(t for t in KINDS[template.kind].columns if t != "registry")
        first, last = month_range(policy, table_name, template)
        span = months_between(first, last) + 1
        if max(template.claim.choices) > span:
            raise fail("claim.choices", "range", f"the data cover only {span} months")


def _failer(template: Template) -> Callable[[str, str, str], PolicyError]:
    def fail(key: str, rule: str, message: str) -> PolicyError:
        return PolicyError(template.source or template.id, key, rule, message)

    return fail
