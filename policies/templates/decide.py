"""Facts -> outcome: the pure, exact decision a template's facts and the claim lead to.

Missing records fold into ``cannot_verify``; amounts are compared in decimal arithmetic, never in
floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from policies.templates.claims import Claim, check_claim
from policies.templates.kinds import CONTINUITY_TABLE, fact_columns
from policies.templates.model import (
    CANNOT_VERIFY,
    MATCH,
    NO,
    NO_MATCH,
    YES,
    Kind,
    Outcome,
    Template,
)


def decide(
    template: Template, facts: Sequence[object] | Mapping[str, object], claim: Claim
) -> Outcome:
    """Map the facts row of :func:`~policies.templates.sql.template_sql` (a tuple or a mapping)
    and the claim to the outcome. Pure and exact (decimal arithmetic). Missing records fold into
    ``cannot_verify``."""
    names = fact_columns(template)
    if isinstance(facts, Mapping):
        values = {name: facts[name] for name in names}
    else:
        if len(facts) != len(names):
            raise ValueError(f"expected {len(names)} facts, got {len(facts)}")
        values = dict(zip(names, facts, strict=True))
    claim = check_claim(template, claim)
    kind = template.kind

    if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
        assert template.months is not None
        if _count(values["n_months"]) < template.months:
            return CANNOT_VERIFY
        revenue = _decimal(values["revenue_sum"])
        if kind == Kind.REVENUE_BAND:
            for band in template.bands:
                if band.contains(revenue):
                    return band.id
            return CANNOT_VERIFY
        assert template.tolerance is not None and claim is not None
        within = abs(Decimal(claim) - revenue) <= template.tolerance * revenue
        return MATCH if within else NO_MATCH

    n_records = _count(values["n_records"])
    if n_records == 0:
        return CANNOT_VERIFY
    if kind == Kind.STATUS:
        return YES if _count(values["n_accepted"]) == n_records else NO
    if kind == Kind.AGE:
        return YES if _count(values["n_old_enough"]) == n_records else NO
    assert claim is not None
    if kind in CONTINUITY_TABLE:
        return YES if _count(values["n_months"]) >= claim else NO
    assert kind == Kind.UTILITY_ACTIVITY
    return YES if _count(values["n_active"]) >= claim else NO


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a count fact must be a non-negative integer")
    return value


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    raise ValueError("a sum fact must be a finite number")
