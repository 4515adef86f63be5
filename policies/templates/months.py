"""Months: where a template's look-back window ends and how many months a dataset covers.

Windows are whole calendar months ending at the *last data month*: the ``month`` column's
declared ``public_range`` upper bound, or the month of the runtime's ``as_of`` reference date.
Months are represented as the ``date`` of their first day.
"""

from __future__ import annotations

import calendar
from datetime import date

from policies.errors import PolicyError
from policies.model import Policy
from policies.templates.model import Template


def month_range(policy: Policy, table_name: str, template: Template) -> tuple[date, date]:
    """The first and last month of ``table_name``'s declared ``month`` range."""
    table = next(t for t in policy.tables if t.name == table_name)
    column = table.column("month")
    if column is None or column.public_range is None:
        raise PolicyError(
            template.source or template.id,
            "kind",
            "reference_month",
            f"{table_name}.month needs a public_range to place the window",
        )
    first, last = column.public_range
    return first.replace(day=1), last.replace(day=1)


def last_month(policy: Policy, table: str, template: Template, as_of: date | None) -> date:
    """Where ``table``'s window ends: the month of ``as_of``, or the declared last month."""
    if as_of is not None:
        return as_of.replace(day=1)
    return month_range(policy, table, template)[1]


def last_data_month(policy: Policy, template: Template) -> date:
    """The latest month any ``month`` column of the dataset declares."""
    lasts = [
        col.public_range[1].replace(day=1)
        for table in policy.tables
        if (col := table.column("month")) is not None and col.public_range is not None
    ]
    if not lasts:
        raise PolicyError(
            template.source or template.id,
            "kind",
            "reference_month",
            "no month column declares a public_range; pass as_of",
        )
    return max(lasts)


def add_months(month: date, delta: int) -> date:
    """The month ``delta`` months after ``month`` (before it when ``delta`` is negative)."""
    index = month.year * 12 + month.month - 1 + delta
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> int:
    """How many months ``last`` is after ``first``."""
    return (last.year - first.year) * 12 + last.month - first.month


def month_end(month: date) -> date:
    """The last day of ``month``."""
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])
