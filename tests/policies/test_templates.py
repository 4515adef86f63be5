"""Verification templates: the demo files load, bad files name their key and rule, and each
kind's SQL gives the outcome an independent Python computation gives, on real synthetic data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from policies.errors import InvalidClaim, NotFound, PolicyError
from policies.loader import load_policy
from policies.model import Policy
from policies.templates.claims import check_claim
from policies.templates.decide import decide
from policies.templates.kinds import check_template, fact_columns
from policies.templates.loader import TemplateSet, load_templates, parse_template
from policies.templates.model import (
    CANNOT_VERIFY,
    MATCH,
    NO,
    NO_MATCH,
    YES,
    ClaimType,
    Kind,
    OutcomeKind,
    Template,
)
from policies.templates.sql import Slot, bind, template_query, template_sql
from sandbox.demo.synthetic import generate
from tests.support.templates import ENTERPRISES, UNKNOWN, database

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "sandbox" / "demo" / "data" / "templates"
POLICY = ROOT / "sandbox" / "demo" / "data" / "enterprise.toml"
AS_OF = date(2024, 12, 31)
LAST_MONTH = date(2024, 12, 1)

DEMO_IDS = {
    "ENT_STATUS",
    "ENT_AGE",
    "REV_TOLERANCE",
    "REV_BAND",
    "TAX_CONTINUITY",
    "SI_CONTINUITY",
    "UTILITY_ACTIVITY",
}


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return load_templates(TEMPLATES)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY)


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return generate(ENTERPRISES)


@pytest.fixture(scope="module")
def con(tables: dict[str, pa.Table]) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = database(tables)
    yield connection
    connection.close()


# ---------------------------------------------------------------------------------------------
# The demo files
# ---------------------------------------------------------------------------------------------


def test_demo_templates_load(templates: TemplateSet, policy: Policy) -> None:
    assert {t.id for t in templates} == DEMO_IDS
    assert all(t.version == 1 for t in templates)
    for t in templates:
        check_template(t, policy)
        assert t.subject == policy.privacy_unit == "credit_code"
        assert t.window == timedelta(days=30)
        assert t.outcomes[-1] == CANNOT_VERIFY
        assert t.public()["id"] == t.id

    rev = templates.get("REV_TOLERANCE")
    assert rev.tolerance == Decimal("0.10")
    assert rev.months == 12
    assert rev.claim.type == ClaimType.NUMBER
    assert rev.outcomes == (MATCH, NO_MATCH, CANNOT_VERIFY)
    assert rev.bits == 1000 and rev.max_bits == 4000 and rev.max_claims == 1

    band = templates.get("REV_BAND", 1)
    assert band.outcome == OutcomeKind.BAND
    assert [b.id for b in band.bands] == ["lt_1m", "1m_5m", "5m_20m", "20m_100m", "ge_100m"]
    assert band.bits == 2322  # ceil(log2(5) * 1000)
    assert band.attribute == rev.attribute == "revenue_12m"

    assert templates.get("ENT_AGE").claim.choices == (1, 2, 3, 5)
    assert templates.get("TAX_CONTINUITY").claim.choices == (6, 12, 24)
    assert templates.get("SI_CONTINUITY").claim.choices == (6, 12, 24)
    assert templates.get("UTILITY_ACTIVITY").claim.choices == (6, 9, 12)
    assert templates.get("ENT_STATUS").claim.type == ClaimType.NONE

    with pytest.raises(NotFound):
        templates.get("REV_TOLERANCE", 2)
    with pytest.raises(NotFound):
        templates.get("NOPE")


def test_latest_version_and_duplicates(templates: TemplateSet) -> None:
    v1 = templates.get("REV_TOLERANCE")
    v2 = replace(v1, version=2, tolerance=Decimal("0.05"), source="v2.toml")
    both = TemplateSet.of([v1, v2])
    assert both.get("REV_TOLERANCE").version == 2
    assert both.get("REV_TOLERANCE", 1) is v1
    with pytest.raises(PolicyError) as err:
        TemplateSet.of([v1, v1])
    assert err.value.rule == "duplicate_version"
    # Templates on one attribute share a ledger, so they must agree on its cap and window.
    looser = replace(templates.get("REV_BAND"), max_bits=8000, source="band.toml")
    with pytest.raises(PolicyError) as err:
        TemplateSet.of([v1, looser])
    assert (err.value.rule, err.value.key, err.value.file) == (
        "attribute_conflict",
        "attribute",
        "band.toml",
    )


# ---------------------------------------------------------------------------------------------
# The loader refuses bad files with file, key and rule
# ---------------------------------------------------------------------------------------------

BASE = (TEMPLATES / "REV_TOLERANCE.toml").read_text(encoding="utf-8")
BAND_BASE = (TEMPLATES / "REV_BAND.toml").read_text(encoding="utf-8")
AGE_BASE = (TEMPLATES / "ENT_AGE.toml").read_text(encoding="utf-8")


def variant(base: str, old: str, new: str) -> str:
    assert base.count(old) == 1, old
    return base.replace(old, new)


BAD: list[tuple[str, str, str, str]] = [
    # (text, key, rule, label)
    (variant(BASE, 'id = "REV_TOLERANCE"', 'id = "rev"'), "id", "identifier", "lowercase id"),
    (variant(BASE, "version = 1", "version = 0"), "version", "range", "version 0"),
    (variant(BASE, "version = 1", 'version = "1"'), "version", "type", "version string"),
    (variant(BASE, 'kind = "revenue_tolerance"', 'kind = "sql"'), "kind", "enum", "free kind"),
    ("extra = 1\n" + BASE, "extra", "unknown_key", "unknown top key"),
    (BASE + "\nextra = 1\n", "limits.extra", "unknown_key", "unknown limits key"),
    (variant(BASE, 'tolerance = "0.10"', "tolerance = 1.5"), "parameters.tolerance", "range", ""),
    (variant(BASE, 'tolerance = "0.10"', 'tolerance = "ten"'), "parameters.tolerance", "type", ""),
    (
        variant(BASE, 'tolerance = "0.10"   # exact decimal\n', ""),
        "parameters.tolerance",
        "required",
        "",
    ),
    (
        variant(BASE, "months = 12", "months = 12\nstatuses = ['x']"),
        "parameters.statuses",
        "parameter_kind",
        "foreign parameter",
    ),
    (variant(BASE, 'type = "number"', 'type = "none"'), "claim.type", "claim_kind", ""),
    (variant(BASE, 'type = "number"', 'type = "free"'), "claim.type", "enum", ""),
    (
        variant(BASE, "maximum = 10_000_000_000_000", "maximum = 10_000_000_000_000_000"),
        "claim.maximum",
        "range",
        "claim beyond 2**53",
    ),
    (variant(BASE, 'kind = "match"', 'kind = "yes_no"'), "outcome.kind", "outcome_kind", ""),
    (variant(BASE, "max_bits = 4", "max_bits = 0.5"), "limits.max_bits", "limits", "cap < cost"),
    (variant(BASE, "max_bits = 4", "max_bits = 0"), "limits.max_bits", "range", ""),
    (variant(BASE, "quota = 1000", "quota = 0"), "limits.quota", "range", ""),
    (variant(BASE, "quota = 1000\n", ""), "limits.quota", "required", ""),
    (variant(BASE, "window_days = 30", "window_days = 400"), "limits.window_days", "range", ""),
    (variant(BASE, "max_claims = 1", "max_claims = 0"), "limits.max_claims", "range", ""),
    (variant(BASE, 'dataset = "enterprise"', 'dataset = "Bad Name"'), "dataset", "identifier", ""),
    (variant(BASE, "[limits]", "[limits"), "(document)", "toml_syntax", ""),
    (
        variant(AGE_BASE, "choices = [1, 2, 3, 5]", "choices = [1, 3, 2]"),
        "claim.choices",
        "sorted",
        "",
    ),
    (variant(AGE_BASE, "choices = [1, 2, 3, 5]", "choices = [0, 1]"), "claim.choices", "range", ""),
    (variant(AGE_BASE, "choices = [1, 2, 3, 5]", "choices = []"), "claim.choices", "type", ""),
    (variant(AGE_BASE, "choices = [1, 2, 3, 5]", "maximum = 3"), "claim.maximum", "claim_kind", ""),
    (
        variant(BAND_BASE, "lower = 5_000_000\n", "lower = 6_000_000\n"),
        "outcome.bands[2].lower",
        "contiguous",
        "gap between bands",
    ),
    (
        variant(BAND_BASE, 'id = "5m_20m"', 'id = "match"'),
        "outcome.bands[2].id",
        "reserved",
        "band named like an outcome",
    ),
    (
        variant(BAND_BASE, 'id = "5m_20m"', 'id = "1m_5m"'),
        "outcome.bands[2].id",
        "duplicate",
        "",
    ),
    (
        variant(BAND_BASE, "upper = 1_000_000\n", ""),
        "outcome.bands[0].upper",
        "required",
        "open band not last",
    ),
]


@pytest.mark.parametrize(("text", "key", "rule", "label"), BAD, ids=[f"{b[2]}:{b[1]}" for b in BAD])
def test_bad_templates_name_key_and_rule(text: str, key: str, rule: str, label: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_template(text, source="bad.toml")
    assert (err.value.file, err.value.key, err.value.rule) == ("bad.toml", key, rule), label
    assert err.value.code == "invalid_policy" and err.value.status == 422


def test_template_must_fit_the_policy(templates: TemplateSet, policy: Policy) -> None:
    rev = templates.get("REV_TOLERANCE")
    for change, key, rule in [
        ({"dataset": "cps1988"}, "dataset", "template_dataset"),
        ({"subject": "name"}, "subject", "privacy_unit"),
    ]:
        with pytest.raises(PolicyError) as err:
            check_template(replace(rev, **change), policy)
        assert (err.value.key, err.value.rule) == (key, rule)
    no_tax = replace(policy, tables=tuple(t for t in policy.tables if t.name != "tax"))
    with pytest.raises(PolicyError) as err:
        template_sql(rev, no_tax)
    assert err.value.rule == "template_table"
    # A continuity N longer than the data's month range can never be met.
    tax = templates.get("TAX_CONTINUITY")
    with pytest.raises(PolicyError) as err:
        check_template(replace(tax, claim=replace(tax.claim, choices=(6, 48))), policy)
    assert (err.value.key, err.value.rule) == ("claim.choices", "range")


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


def test_claims_are_checked(templates: TemplateSet) -> None:
    rev, age, status = (templates.get(i) for i in ("REV_TOLERANCE", "ENT_AGE", "ENT_STATUS"))
    assert check_claim(rev, 5_000_000) == 5_000_000
    assert check_claim(age, 3) == 3
    assert check_claim(status, None) is None
    for template, claim, rule in [
        (rev, -1, "claim_range"),
        (rev, 10**14, "claim_range"),
        (rev, 1.5, "claim_type"),
        (rev, "5000000", "claim_type"),
        (rev, True, "claim_type"),
        (rev, None, "claim_type"),
        (age, 4, "claim_choice"),
        (status, 1, "claim_none"),
    ]:
        with pytest.raises(InvalidClaim) as err:
            check_claim(template, claim)
        assert err.value.extra["rule"] == rule
        assert err.value.code == "invalid_claim" and err.value.status == 400
        assert str(claim) not in err.value.detail or claim in (True, None, 1)


# ---------------------------------------------------------------------------------------------
# decide() on hand-made facts: boundaries are exact
# ---------------------------------------------------------------------------------------------


def test_decide_tolerance_boundaries(templates: TemplateSet) -> None:
    rev = templates.get("REV_TOLERANCE")
    s = Decimal("1000000.00")
    assert decide(rev, (12, s), 1_100_000) == MATCH  # exactly +10%
    assert decide(rev, (12, s), 900_000) == MATCH  # exactly -10%
    assert decide(rev, (12, s), 1_100_001) == NO_MATCH
    assert decide(rev, (12, s), 899_999) == NO_MATCH
    assert decide(rev, (11, s), 1_000_000) == CANNOT_VERIFY  # 11 filed months
    assert decide(rev, (0, Decimal(0)), 0) == CANNOT_VERIFY  # no record
    assert decide(rev, (12, Decimal(0)), 0) == MATCH  # 12 zero declarations
    assert decide(rev, (12, Decimal(0)), 1) == NO_MATCH
    assert decide(rev, {"n_months": 12, "revenue_sum": s}, 1_000_000) == MATCH
    assert fact_columns(rev) == ("n_months", "revenue_sum")
    with pytest.raises(ValueError):
        decide(rev, (12,), 1)
    with pytest.raises(ValueError):
        decide(rev, (-1, s), 1)


def test_decide_band_boundaries(templates: TemplateSet) -> None:
    band = templates.get("REV_BAND")
    for value, expected in [
        ("0", "lt_1m"),
        ("999999.99", "lt_1m"),
        ("1000000", "1m_5m"),
        ("19999999.99", "5m_20m"),
        ("20000000", "20m_100m"),
        ("100000000", "ge_100m"),
        ("9000000000", "ge_100m"),
    ]:
        assert decide(band, (12, Decimal(value)), None) == expected, value
    assert decide(band, (7, Decimal(5)), None) == CANNOT_VERIFY


def test_decide_yes_no(templates: TemplateSet) -> None:
    status, age, tax, util = (
        templates.get(i) for i in ("ENT_STATUS", "ENT_AGE", "TAX_CONTINUITY", "UTILITY_ACTIVITY")
    )
    assert decide(status, (1, 1), None) == YES
    assert decide(status, (1, 0), None) == NO
    assert decide(status, (0, 0), None) == CANNOT_VERIFY
    assert decide(age, (1, 1), 5) == YES
    assert decide(age, (1, 0), 5) == NO
    assert decide(age, (0, 0), 1) == CANNOT_VERIFY
    assert decide(tax, (1, 12), 12) == YES
    assert decide(tax, (1, 11), 12) == NO
    assert decide(tax, (0, 0), 6) == CANNOT_VERIFY
    assert decide(util, (1, 9), 9) == YES
    assert decide(util, (1, 8), 9) == NO
    with pytest.raises(InvalidClaim):
        decide(tax, (1, 12), 7)


# ---------------------------------------------------------------------------------------------
# The SQL against real synthetic data, checked by an independent Python computation
# ---------------------------------------------------------------------------------------------


def months_back(last: date, n: int) -> list[date]:
    out = []
    y, m = last.year, last.month
    for _ in range(n):
        out.append(date(y, m, 1))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


class Oracle:
    """The templates' questions answered straight from the Arrow tables, in plain Python."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.registry = {r["credit_code"]: r for r in tables["registry"].to_pylist()}
        self.monthly: dict[str, dict[str, dict[date, dict[str, Any]]]] = {}
        for name in ("tax", "social_insurance", "utilities"):
            rows: dict[str, dict[date, dict[str, Any]]] = defaultdict(dict)
            for r in tables[name].to_pylist():
                rows[r["credit_code"]][r["month"]] = r
            self.monthly[name] = rows

    def outcome(self, template: Template, code: str, claim: int | None) -> str:
        known = code in self.registry
        kind = template.kind
        if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
            tax = self.monthly["tax"].get(code, {})
            filed = [tax[m] for m in months_back(LAST_MONTH, 12) if m in tax]
            if len(filed) < 12:
                return CANNOT_VERIFY
            total = sum(
                (Decimal(repr(r["revenue"])).quantize(Decimal("0.01")) for r in filed),
                Decimal(0),
            )
            if kind == Kind.REVENUE_BAND:
                return next(b.id for b in template.bands if b.contains(total))
            return MATCH if abs(Decimal(claim or 0) - total) <= total / 10 else NO_MATCH
        if not known:
            return CANNOT_VERIFY
        reg = self.registry[code]
        if kind == Kind.STATUS:
            return YES if reg["status"] == "in_business" else NO
        assert claim is not None
        if kind == Kind.AGE:
            return YES if reg["founded"] <= years_before(AS_OF, claim) else NO
        if kind in (Kind.TAX_CONTINUITY, Kind.SI_CONTINUITY):
            table = "tax" if kind == Kind.TAX_CONTINUITY else "social_insurance"
            rows = self.monthly[table].get(code, {})
            ok = all(m in rows and not rows[m]["arrears"] for m in months_back(LAST_MONTH, claim))
            return YES if ok else NO
        rows = self.monthly["utilities"].get(code, {})
        active = sum(
            1
            for m in months_back(LAST_MONTH, 12)
            if m in rows and (rows[m]["electricity_kwh"] > 0 or rows[m]["water_m3"] > 0)
        )
        return YES if active >= claim else NO

    def revenue(self, code: str) -> Decimal:
        tax = self.monthly["tax"].get(code, {})
        return sum(
            (Decimal(repr(tax[m]["revenue"])) for m in months_back(LAST_MONTH, 12) if m in tax),
            Decimal(0),
        )


def claims_for(template: Template, oracle: Oracle, code: str) -> list[int | None]:
    if template.claim.type == ClaimType.NONE:
        return [None]
    if template.claim.type == ClaimType.CHOICE:
        return list(template.claim.choices)
    s = oracle.revenue(code)
    # the truth, both edges of the tolerance, just outside it, and far off
    return sorted({int(s), int(s * Decimal("1.1")), int(s * Decimal("0.9")) + 1, int(s * 2) + 7})


def test_sql_matches_python_on_synthetic_data(
    templates: TemplateSet, policy: Policy, tables: dict[str, pa.Table], con: Any
) -> None:
    """Every (template, claim, outcome) class that occurs in 500 enterprises is checked on up to
    four enterprises, plus an unknown code; each demo template sees all of its outcomes."""
    oracle = Oracle(tables)
    codes = [*oracle.registry, UNKNOWN]
    checked = 0
    for template in templates:
        seen: dict[tuple[int | None, str], int] = defaultdict(int)
        for code in codes:
            for claim in claims_for(template, oracle, code):
                expected = oracle.outcome(template, code, claim)
                if (
                    seen[(claim if template.claim.type == ClaimType.CHOICE else None, expected)]
                    >= 4
                ):
                    continue
                seen[(claim if template.claim.type == ClaimType.CHOICE else None, expected)] += 1
                sql, params = template_query(template, policy, code, claim)
                rows = con.execute(sql, params).fetchall()
                assert len(rows) == 1 and len(rows[0]) == len(fact_columns(template))
                assert decide(template, rows[0], claim) == expected, (template.id, code, claim)
                checked += 1
        outcomes = {o for _, o in seen}
        assert outcomes == set(template.outcomes), (template.id, outcomes)
    assert checked > 100


def test_facts_depend_on_the_subjects_rows_only(
    templates: TemplateSet, policy: Policy, tables: dict[str, pa.Table], con: Any
) -> None:
    """The same facts come out of a database holding only the subject's own rows."""
    codes = tables["registry"].column("credit_code").to_pylist()[:: ENTERPRISES // 6][:6]
    oracle = Oracle(tables)
    for code in codes:
        alone = database(
            {
                name: table.filter(pc.equal(table.column("credit_code"), code))
                for name, table in tables.items()
            }
        )
        try:
            for template in templates:
                for claim in claims_for(template, oracle, code)[:2]:
                    sql, params = template_query(template, policy, code, claim)
                    full = con.execute(sql, params).fetchall()
                    assert alone.execute(sql, params).fetchall() == full
        finally:
            alone.close()


def test_sql_is_parameterised(templates: TemplateSet, policy: Policy) -> None:
    """No subject id, claim or threshold is ever spliced into the SQL text."""
    for template in templates:
        sql, params = template_sql(template, policy)
        assert sql.count("?") == len(params)
        assert Slot.SUBJECT in params
        assert (Slot.CLAIM in params) == (template.kind in (Kind.AGE, *CLAIMED_IN_SQL))
        assert sql.lstrip().upper().startswith("SELECT") and ";" not in sql
        bound = bind(params, "X" * 18, 6 if template.claim.type == ClaimType.CHOICE else None)
        assert "X" * 18 not in sql and "X" * 18 in bound
        assert "in_business" not in sql


CLAIMED_IN_SQL = (Kind.TAX_CONTINUITY, Kind.SI_CONTINUITY)


def test_as_of_moves_the_window(templates: TemplateSet, policy: Policy, con: Any) -> None:
    rev = templates.get("REV_TOLERANCE")
    _, params = template_sql(rev, policy, as_of=date(2023, 6, 17))
    assert params[1:] == [date(2022, 7, 1), date(2023, 6, 1)]
    age = templates.get("ENT_AGE")
    _, params = template_sql(age, policy)
    assert params[0] == AS_OF


def test_runs_in_the_locked_down_executor(
    templates: TemplateSet, policy: Policy, tables: dict[str, pa.Table], tmp_path: Path, con: Any
) -> None:
    """The generated statements run through the real executor (one SELECT, parameters, Decimal
    and date values across the process boundary) and agree with plain DuckDB."""
    from connectors.sink import build_workspace
    from sandbox.engine.executor import Executor
    from sandbox.engine.limits import ExecutorLimits

    workspace = tmp_path / "enterprise.duckdb"
    build_workspace(workspace, tables)
    limits = ExecutorLimits(
        workers=1,
        threads=1,
        memory_limit="256MB",
        address_space_bytes=2 * 2**30,
        timeout_s=10.0,
    )
    codes = [*tables["registry"].column("credit_code").to_pylist()[:3], UNKNOWN]
    with Executor(limits, tmp_path / "tmp") as executor:
        for template in templates:
            claim = template.claim.choices[-1] if template.claim.choices else None
            if template.claim.type == ClaimType.NUMBER:
                claim = 1_000_000
            for code in codes:
                sql, params = template_query(template, policy, code, claim)
                rows = executor.run(workspace, sql, params)
                assert rows == con.execute(sql, params).fetchall()
