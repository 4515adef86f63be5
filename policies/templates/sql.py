"""A template bound to a dataset: the parameterised DuckDB query that reads one subject's facts.

:func:`template_sql` generates the query of a template's :class:`~policies.templates.model.Kind`
over the dataset's tables. It reads only rows of one subject and returns exactly one row of
*facts* (counts, one sum); :func:`bind` fills in the subject and the claim. The facts never leave
the runtime: :func:`~policies.templates.decide.decide` turns them into the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from enum import Enum

from policies.errors import InvalidRequest
from policies.model import Policy
from policies.templates.claims import Claim, check_claim
from policies.templates.kinds import CONTINUITY_TABLE, check_template
from policies.templates.model import Kind, Template
from policies.templates.months import add_months, last_data_month, last_month, month_end


class Slot(Enum):
    """Placeholders in the parameter list of :func:`template_sql` (filled by :func:`bind`) and
    of :func:`~policies.templates.batch.template_batch_sql` (filled by
    :func:`~policies.templates.batch.bind_batch`)."""

    SUBJECT = "subject"
    CLAIM = "claim"
    LINES = "lines"  # batch: the request line numbers 0..n-1
    SUBJECTS = "subjects"  # batch: one subject id per line
    CLAIMS = "claims"  # batch: one claim per line (only kinds whose SQL reads the claim)


def template_sql(
    template: Template, policy: Policy, *, as_of: date | None = None
) -> tuple[str, list[object]]:
    """The parameterised DuckDB query of ``template`` over ``policy``'s dataset.

    Returns ``(sql, params)``: ``params`` holds the fixed values (dates, statuses) and the
    :class:`Slot` placeholders for the subject id and the claim; fill them with :func:`bind`.
    The query filters every table on ``subject = ?``, so it reads one subject's rows only, and
    returns exactly one row whose columns are :func:`~policies.templates.kinds.fact_columns`.

    The windows end at the last data month: the ``month`` column's declared ``public_range``
    upper bound, or the month of ``as_of`` when the runtime passes the dataset version's
    reference date. Age is measured at the last day of that month (or at ``as_of``).
    """
    check_template(template, policy)
    unit = policy.privacy_unit
    kind = template.kind
    if kind == Kind.STATUS:
        marks = ", ".join("?" for _ in template.statuses)
        sql = (
            f"SELECT count(*) AS n_records, "
            f"count(*) FILTER (WHERE status IN ({marks})) AS n_accepted "
            f"FROM registry WHERE {unit} = ?"
        )
        return sql, [*template.statuses, Slot.SUBJECT]
    if kind == Kind.AGE:
        reference = as_of if as_of is not None else month_end(last_data_month(policy, template))
        sql = (
            "SELECT count(*) AS n_records, "
            "count(*) FILTER (WHERE founded <= CAST(CAST(? AS DATE) "
            "- to_years(CAST(? AS INTEGER)) AS DATE)) AS n_old_enough "
            f"FROM registry WHERE {unit} = ?"
        )
        return sql, [reference, Slot.CLAIM, Slot.SUBJECT]
    if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
        assert template.months is not None
        last = last_month(policy, "tax", template, as_of)
        first = add_months(last, 1 - template.months)
        sql = (
            "SELECT count(DISTINCT month) AS n_months, "
            "coalesce(sum(CAST(revenue AS DECIMAL(18, 2))), 0) AS revenue_sum "
            f"FROM tax WHERE {unit} = ? AND month BETWEEN ? AND ?"
        )
        return sql, [Slot.SUBJECT, first, last]
    if kind in CONTINUITY_TABLE:
        table = CONTINUITY_TABLE[kind]
        last = last_month(policy, table, template, as_of)
        sql = (
            f"SELECT (SELECT count(*) FROM registry WHERE {unit} = ?) AS n_records, "
            f"(SELECT count(DISTINCT month) FROM {table} WHERE {unit} = ? AND NOT arrears "
            "AND month > CAST(? AS DATE) - to_months(CAST(? AS INTEGER)) "
            "AND month <= CAST(? AS DATE)) AS n_months"
        )
        return sql, [Slot.SUBJECT, Slot.SUBJECT, last, Slot.CLAIM, last]
    assert kind == Kind.UTILITY_ACTIVITY and template.months is not None
    last = last_month(policy, "utilities", template, as_of)
    first = add_months(last, 1 - template.months)
    sql = (
        f"SELECT (SELECT count(*) FROM registry WHERE {unit} = ?) AS n_records, "
        f"(SELECT count(DISTINCT month) FROM utilities WHERE {unit} = ? "
        "AND month BETWEEN ? AND ? AND (electricity_kwh > 0 OR water_m3 > 0)) AS n_active"
    )
    return sql, [Slot.SUBJECT, Slot.SUBJECT, first, last]


def bind(params: Sequence[object], subject: str, claim: Claim) -> list[object]:
    """Fill the :class:`Slot` placeholders of ``params`` with the subject id and the claim."""
    if not isinstance(subject, str) or not subject:
        raise InvalidRequest("the subject id must be a non-empty string")
    bound: list[object] = []
    for p in params:
        if p is Slot.SUBJECT:
            bound.append(subject)
        elif p is Slot.CLAIM:
            if claim is None:
                raise InvalidRequest("this template query needs a claim")
            bound.append(claim)
        else:
            bound.append(p)
    return bound


def template_query(
    template: Template,
    policy: Policy,
    subject: str,
    claim: Claim,
    *,
    as_of: date | None = None,
) -> tuple[str, list[object]]:
    """:func:`template_sql` with the claim checked and the placeholders bound."""
    sql, params = template_sql(template, policy, as_of=as_of)
    return sql, bind(params, subject, check_claim(template, claim))
