"""Many subjects at once: one query per template for a batch of request lines.

:func:`template_batch_sql` returns the same facts as the single-subject query of
:mod:`policies.templates.sql`, one row per request line; :func:`bind_batch` fills in the lines'
subjects and claims. :func:`subjects_sql` pages through the subjects that have any record, so the
runtime can index the facts of a whole dataset version.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from policies.errors import InvalidRequest
from policies.model import Policy
from policies.templates.claims import Claim, check_claim
from policies.templates.kinds import CONTINUITY_TABLE, check_template
from policies.templates.model import Kind, Template
from policies.templates.months import add_months, last_data_month, last_month, month_end
from policies.templates.sql import Slot

_BATCH_LINES = "SELECT unnest(CAST(? AS BIGINT[])) AS line, unnest(CAST(? AS VARCHAR[])) AS subject"


def template_batch_sql(
    template: Template, policy: Policy, *, as_of: date | None = None
) -> tuple[str, list[object]]:
    """The query of ``template`` for many request lines at once: the same facts as
    :func:`~policies.templates.sql.template_sql`, one row per line, ``(line, *facts)``, ordered
    by line.

    The lines are passed as lists (``Slot.LINES``, ``Slot.SUBJECTS`` and, for the kinds whose
    SQL reads the claim, ``Slot.CLAIMS``; fill them with :func:`bind_batch`). Every table is read
    only for the subjects listed (a semi-join on the privacy unit) and grouped by line, so a line
    sees its own subject's rows only, exactly like the single query. Lines may repeat a subject.
    """
    check_template(template, policy)
    unit = policy.privacy_unit
    kind = template.kind
    lines = [Slot.LINES, Slot.SUBJECTS]
    wanted = f"{unit} IN (SELECT subject FROM req)"
    if kind == Kind.STATUS:
        marks = ", ".join("?" for _ in template.statuses)
        sql = (
            f"WITH req AS ({_BATCH_LINES}), "
            f"f AS (SELECT {unit} AS subject, count(*) AS n_records, "
            f"count(*) FILTER (WHERE status IN ({marks})) AS n_accepted "
            f"FROM registry WHERE {wanted} GROUP BY {unit}) "
            "SELECT req.line, coalesce(f.n_records, 0) AS n_records, "
            "coalesce(f.n_accepted, 0) AS n_accepted "
            "FROM req LEFT JOIN f ON f.subject = req.subject ORDER BY req.line"
        )
        return sql, [*lines, *template.statuses]
    if kind == Kind.AGE:
        reference = as_of if as_of is not None else month_end(last_data_month(policy, template))
        sql = (
            f"WITH req AS ({_BATCH_LINES}, unnest(CAST(? AS BIGINT[])) AS claim) "
            "SELECT req.line, count(r.subject) AS n_records, "
            "count(*) FILTER (WHERE r.founded <= CAST(CAST(? AS DATE) "
            "- to_years(CAST(req.claim AS INTEGER)) AS DATE)) AS n_old_enough "
            f"FROM req LEFT JOIN (SELECT {unit} AS subject, founded FROM registry "
            f"WHERE {wanted}) r ON r.subject = req.subject "
            "GROUP BY req.line ORDER BY req.line"
        )
        return sql, [*lines, Slot.CLAIMS, reference]
    if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
        assert template.months is not None
        last = last_month(policy, "tax", template, as_of)
        first = add_months(last, 1 - template.months)
        sql = (
            f"WITH req AS ({_BATCH_LINES}), "
            f"f AS (SELECT {unit} AS subject, count(DISTINCT month) AS n_months, "
            "sum(CAST(revenue AS DECIMAL(18, 2))) AS revenue_sum "
            f"FROM tax WHERE {wanted} AND month BETWEEN ? AND ? GROUP BY {unit}) "
            "SELECT req.line, coalesce(f.n_months, 0) AS n_months, "
            "coalesce(f.revenue_sum, 0) AS revenue_sum "
            "FROM req LEFT JOIN f ON f.subject = req.subject ORDER BY req.line"
        )
        return sql, [*lines, first, last]
    registry = (
        f"reg AS (SELECT {unit} AS subject, count(*) AS n_records FROM registry "
        f"WHERE {wanted} GROUP BY {unit})"
    )
    if kind in CONTINUITY_TABLE:
        table = CONTINUITY_TABLE[kind]
        last = last_month(policy, table, template, as_of)
        sql = (
            f"WITH req AS ({_BATCH_LINES}, unnest(CAST(? AS BIGINT[])) AS claim), {registry}, "
            f"m AS (SELECT DISTINCT {unit} AS subject, month FROM {table} "
            f"WHERE {wanted} AND NOT arrears AND month <= CAST(? AS DATE)) "
            "SELECT req.line, coalesce(any_value(reg.n_records), 0) AS n_records, "
            "count(DISTINCT m.month) FILTER (WHERE m.month > CAST(? AS DATE) "
            "- to_months(CAST(req.claim AS INTEGER))) AS n_months "
            "FROM req LEFT JOIN reg ON reg.subject = req.subject "
            "LEFT JOIN m ON m.subject = req.subject "
            "GROUP BY req.line ORDER BY req.line"
        )
        return sql, [*lines, Slot.CLAIMS, last, last]
    assert kind == Kind.UTILITY_ACTIVITY and template.months is not None
    last = last_month(policy, "utilities", template, as_of)
    first = add_months(last, 1 - template.months)
    sql = (
        f"WITH req AS ({_BATCH_LINES}), {registry}, "
        f"u AS (SELECT {unit} AS subject, count(DISTINCT month) AS n_active FROM utilities "
        f"WHERE {wanted} AND month BETWEEN ? AND ? AND (electricity_kwh > 0 OR water_m3 > 0) "
        f"GROUP BY {unit}) "
        "SELECT req.line, coalesce(reg.n_records, 0) AS n_records, "
        "coalesce(u.n_active, 0) AS n_active "
        "FROM req LEFT JOIN reg ON reg.subject = req.subject "
        "LEFT JOIN u ON u.subject = req.subject ORDER BY req.line"
    )
    return sql, [*lines, first, last]


def bind_batch(
    params: Sequence[object], subjects: Sequence[str], claims: Sequence[Claim]
) -> list[object]:
    """Fill the batch placeholders of ``params``: line ``i`` asks about ``subjects[i]`` with
    ``claims[i]`` (claims already checked with :func:`~policies.templates.claims.check_claim`)."""
    if len(subjects) != len(claims) or not subjects:
        raise InvalidRequest("a batch needs one claim per subject, and at least one line")
    if not all(isinstance(s, str) and s for s in subjects):
        raise InvalidRequest("the subject id must be a non-empty string")
    bound: list[object] = []
    for p in params:
        if p is Slot.LINES:
            bound.append(list(range(len(subjects))))
        elif p is Slot.SUBJECTS:
            bound.append(list(subjects))
        elif p is Slot.CLAIMS:
            if any(c is None for c in claims):
                raise InvalidRequest("this template query needs a claim")
            bound.append(list(claims))
        elif isinstance(p, Slot):
            raise ValueError(f"{p} is not a batch placeholder")
        else:
            bound.append(p)
    return bound


def subjects_sql(policy: Policy) -> str:
    """One page of the subjects that have a record in any table of ``policy``'s dataset, in
    order: parameters ``(after, limit)``, the subjects greater than ``after``. Every other
    subject's facts, on any template, are those of a subject with no record at all."""
    unit = policy.privacy_unit
    tables = [t.name for t in policy.tables if t.column(unit) is not None]
    if not tables:
        raise ValueError(f"no table of {policy.dataset} has the privacy unit column")
    union = " UNION ".join(f"SELECT {unit} AS subject FROM {table}" for table in tables)
    return (
        f"SELECT DISTINCT subject FROM ({union}) WHERE subject IS NOT NULL AND subject > ? "
        "ORDER BY subject LIMIT ?"
    )


def template_batch_query(
    template: Template,
    policy: Policy,
    subjects: Sequence[str],
    claims: Sequence[Claim],
    *,
    as_of: date | None = None,
) -> tuple[str, list[object]]:
    """:func:`template_batch_sql` with every claim checked and the placeholders bound."""
    sql, params = template_batch_sql(template, policy, as_of=as_of)
    checked = [check_claim(template, c) for c in claims]
    return sql, bind_batch(params, subjects, checked)
