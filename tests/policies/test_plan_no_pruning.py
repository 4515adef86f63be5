"""The generated SQL does not prune: the WHERE predicate is a flag every aggregate is filtered
by, so the engine reads, joins, windows and groups the same rows whatever the predicate selects
(docs/queries.md, "Timing"), and the integers it returns are exactly those of filtering first.

Real DuckDB on synthetic demo tables; the reference is the pruning form (``pruning=True``), what
Veil ran before. The finding: a count over ``tax JOIN social_insurance WHERE revenue >= X`` ran
4x longer for the least selective X than for the most selective, because the scan dropped rows
before the join.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from policies.gate import check, parse, plan
from policies.gate.plan import KEEP, QueryPlan
from policies.model import Policy
from sandbox.demo.synthetic import generate
from tests.support.gate import ACCEPTED, POLICY

ATTACK = "SELECT COUNT(*) FROM tax JOIN social_insurance USING (credit_code) WHERE revenue >= {x}"
THRESHOLDS = (1e4, 1e5, 1e6, 5e6)

# Shapes the gate's accepted cases do not cover: joins that count units, caps that bind, quantiles
# and grouped statistics under a predicate.
EXTRA = [
    ATTACK.format(x=1e5),
    "SELECT year(t.month) AS y, count(DISTINCT t.credit_code) AS firms, sum(revenue), "
    "avg(headcount) FROM tax t JOIN social_insurance s USING (credit_code) "
    "WHERE revenue >= 1e5 AND s.arrears = false GROUP BY y",
    "SELECT date_trunc('month', t.month) AS m, count(*), var_samp(amount) FROM tax t "
    "JOIN social_insurance s USING (credit_code) WHERE revenue < 50000 OR s.arrears GROUP BY m",
    "SELECT arrears, median(revenue), quantile_cont(tax_paid, 0.9) FROM tax "
    "WHERE revenue BETWEEN 1000 AND 1e6 GROUP BY arrears",
    "SELECT median(revenue) FROM tax WHERE revenue IS NULL",  # nothing kept at all
    "SELECT industry, count(*) FROM registry WHERE industry = 'no such industry' GROUP BY industry",
    "SELECT count(*), sum(revenue) FROM tax WHERE revenue > 1e12",
    "SELECT industry, count(DISTINCT r.credit_code), stddev(electricity_kwh) FROM registry r "
    "JOIN utilities u USING (credit_code) WHERE u.month >= '2023-06-01' GROUP BY industry",
]
CASES = [p.values[0] for p in ACCEPTED] + EXTRA


def _tight(policy: Policy) -> Policy:
    """The policy with caps that bind on the synthetic data: few groups and rows per unit."""
    tables = tuple(dataclasses.replace(t, max_rows_per_unit=min(5, t.max_rows_per_unit))
                   for t in policy.tables)  # fmt: skip
    return dataclasses.replace(policy, max_groups_per_unit=2, tables=tables)


POLICIES = {"demo": POLICY, "tight": _tight(POLICY)}
ALL_TABLES = frozenset(t.name for t in POLICY.tables)


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    for name, table in generate(150, seed=13).items():
        connection.register("source", table)
        connection.execute(f'CREATE TABLE "{name}" AS SELECT * FROM source')
        connection.unregister("source")
    yield connection
    connection.close()


def _planned(sql: str, policy: Policy, caps: frozenset[str], *, pruning: bool) -> QueryPlan:
    return plan(check(parse(sql), policy), policy, salt=99, within_row_caps=caps, pruning=pruning)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return sorted(con.execute(sql, list(params)).fetchall(), key=repr)


@pytest.mark.parametrize("caps", ["measured", "windowed"])
@pytest.mark.parametrize("policy_name", sorted(POLICIES))
@pytest.mark.parametrize("sql", CASES)
def test_results_are_those_of_filtering_first(
    con: duckdb.DuckDBPyConnection, sql: str, policy_name: str, caps: str
) -> None:
    policy = POLICIES[policy_name]
    within = ALL_TABLES if caps == "measured" else frozenset()
    before = _planned(sql, policy, within, pruning=True)
    after = _planned(sql, policy, within, pruning=False)
    assert after.params == before.params
    assert _rows(con, after.sql, after.params) == _rows(con, before.sql, before.params)
    for old, new in zip(before.quantiles, after.quantiles, strict=True):
        assert _rows(con, new.histogram_sql, after.params) == _rows(
            con, old.histogram_sql, before.params
        )


def test_the_tight_policy_makes_the_caps_bind(con: duckdb.DuckDBPyConnection) -> None:
    """The comparison above means something for the caps: they change the answer there."""
    sql = "SELECT year(month) AS y, count(*) FROM tax WHERE revenue > 0 GROUP BY y"
    loose = _planned(sql, POLICY, frozenset(), pruning=False)
    tight = _planned(sql, POLICIES["tight"], frozenset(), pruning=False)
    assert "row_number()" in tight.sql and "dense_rank()" in tight.sql
    assert _rows(con, tight.sql, tight.params) != _rows(con, loose.sql, loose.params)


@pytest.mark.parametrize("sql", CASES)
def test_the_predicate_is_a_flag_not_a_filter(sql: str) -> None:
    planned = _planned(sql, POLICY, frozenset(), pruning=False)
    # the src CTE: every row of the (joined) tables, up to the next CTE
    source = re.split(r"\), (?:grp|heavy|bnd) AS \(", planned.sql, maxsplit=1)[0]
    assert source.startswith("WITH src AS (SELECT ")
    assert " WHERE " not in source
    assert f"AS {KEEP}" in source
    checked = check(parse(sql), POLICY)
    if checked.where_sql:
        assert f"coalesce({checked.where_sql}, false) AS {KEEP}" in source
    for statement in (planned.sql, *(q.histogram_sql for q in planned.quantiles)):
        assert " WHERE __g" not in statement and " WHERE __r" not in statement  # caps: flags too
    for statistic in planned.statistics:  # every aggregate counts the kept rows only
        assert KEEP in statistic.sql
        two_levels = "per AS (" in planned.sql  # a join counting units: partials, then totals
        assert statistic.sql in planned.sql or (two_levels and "DISTINCT" in statistic.sql)
    for quantile in planned.quantiles:
        assert f"sum(CAST({KEEP} AS BIGINT)), 0) AS BIGINT) AS n" in quantile.histogram_sql


def _cardinalities(con: duckdb.DuckDBPyConnection, planned: QueryPlan) -> list[tuple[str, int]]:
    """Every operator of the executed plan with the rows it produced, depth first."""
    out = con.execute(f"EXPLAIN (ANALYZE, FORMAT json) {planned.sql}", list(planned.params))
    profile = json.loads(out.fetchall()[0][1])
    found: list[tuple[str, int]] = []

    def walk(node: dict[str, Any]) -> None:
        found.append((str(node["type"]), int(node["intermediate_rows"])))
        for child in node.get("children", []):
            walk(child)

    for node in profile["operator"]:
        walk(node)
    return found


@pytest.mark.parametrize("caps", ["measured", "windowed"])
def test_every_operator_sees_the_same_rows_whatever_the_threshold(
    con: duckdb.DuckDBPyConnection, caps: str
) -> None:
    """The attack's query at four thresholds: the same rows through every operator, where the
    pruning form's scan, join and aggregates shrink with the threshold."""
    within = ALL_TABLES if caps == "measured" else frozenset()
    shapes, pruned = set(), set()
    for x in THRESHOLDS:
        sql = ATTACK.format(x=x)
        shapes.add(tuple(_cardinalities(con, _planned(sql, POLICY, within, pruning=False))))
        pruned.add(tuple(_cardinalities(con, _planned(sql, POLICY, within, pruning=True))))
    assert len(shapes) == 1
    assert len(pruned) == len(THRESHOLDS)  # the finding, in the reference form


def test_grouped_scans_and_joins_do_not_depend_on_the_predicate(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """Grouped: only the operators after the last aggregate (the cells left out because they
    kept no row) may differ."""
    sql = (
        "SELECT year(t.month) AS y, count(*), sum(amount) FROM tax t JOIN social_insurance s "
        "USING (credit_code) WHERE revenue >= {x} GROUP BY y"
    )
    heavy = ("TABLE_SCAN", "HASH_JOIN", "WINDOW", "HASH_GROUP_BY", "PERFECT_HASH_GROUP_BY")
    seen = set()
    for x in THRESHOLDS:
        ops = _cardinalities(con, _planned(sql.format(x=x), POLICY, frozenset(), pruning=False))
        seen.add(tuple((t, n) for t, n in ops if t in heavy and n > 10))
    assert len(seen) == 1
