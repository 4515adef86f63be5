"""Table-driven tests of the SQL gate (parse → check → plan) against the demo enterprise policy.

Every rejection must be a :class:`QueryRejected` with a stable ``rule`` code; nothing else may
escape the gate. ``date_trunc(month, col)`` is read as ``date_trunc('month', col)``: sqlglot gives
both the same AST, and the generated SQL never carries the analyst's text, so this is harmless.
"""

from __future__ import annotations

import logging
from datetime import date

import pytest
from sqlglot import exp

from policies.errors import QueryRejected, SqlTooDeep, SqlTooLong
from policies.gate import check, parse, plan
from policies.gate.query import CheckedQuery
from tests.support.gate import ACCEPTED, POLICY

# sqlglot logs a warning when it falls back to parsing a statement as a Command; keep output quiet.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def gate(sql: str) -> CheckedQuery:
    return check(parse(sql), POLICY)


def where_string_literals(sql: str) -> list[str]:
    where = parse(sql).args.get("where")
    if where is None:
        return []
    return [str(lit.this) for lit in where.find_all(exp.Literal) if lit.is_string]


@pytest.mark.parametrize(("sql", "outputs", "params"), ACCEPTED)
def test_accepted(sql: str, outputs: tuple[str, ...], params: tuple[object, ...]) -> None:
    checked = gate(sql)
    assert checked.outputs == outputs
    planned = plan(checked, POLICY, salt=12345)
    assert planned.params == params
    assert [type(p) for p in planned.params] == [type(p) for p in params]
    # Literals travel as `?` parameters, never inside the SQL text Veil runs.
    assert planned.sql.count("?") == len(planned.params)
    for quantile in planned.quantiles:
        assert quantile.histogram_sql.count("?") == len(planned.params)
    rendered = {p.isoformat() if isinstance(p, date) else p for p in planned.params}
    for literal in where_string_literals(sql):
        assert literal in rendered
        assert literal not in planned.sql
        assert all(literal not in q.histogram_sql for q in planned.quantiles)
    assert [o.name for o in planned.outputs] == list(outputs)


ACCEPTED_SQL = {p.id: p.values[0] for p in ACCEPTED}


def test_accepted_count() -> None:
    assert len(ACCEPTED) >= 25


def test_plan_uses_policy_names_not_analyst_aliases() -> None:
    planned = plan(gate(ACCEPTED_SQL["join_on"]), POLICY)
    assert '"registry" AS t0 JOIN "tax" AS t1' in planned.sql
    assert " AS r " not in planned.sql and " AS t " not in planned.sql
    assert planned.row_cap == 36  # registry (1) x tax (36)


def test_where_sql_is_generated_not_copied() -> None:
    checked = gate("SELECT count(*) FROM registry WHERE (industry = 'finance') OR NOT status = 'x'")
    assert checked.where_sql == '((t0."industry" = ?) OR (NOT (t0."status" = ?)))'
    assert checked.where_params == ("finance", "x")


def test_canonical_ignores_aliases_and_case_of_keywords() -> None:
    a = gate("SELECT industry, count(*) FROM registry WHERE district = 'haidian' GROUP BY 1")
    b = gate(
        "select r.industry, COUNT(*) from registry r where r.district='haidian' group by r.industry"
    )
    assert a.canonical == b.canonical


# --- rejected ----------------------------------------------------------------------------------
# (sql, expected rule, expected subject); None means "not asserted" (for a rule: any rule, used
# for defects whose fix may pick any code)

LONG_QUERY = "SELECT count(*) FROM tax WHERE " + " OR ".join(["revenue = 1"] * 1800)
DEEP_PARENS = "SELECT count(*) FROM tax WHERE " + "(" * 200 + "arrears" + ")" * 200
DEEP_NOTS = "SELECT count(*) FROM tax WHERE " + "NOT " * 100 + "arrears"
HUGE_IN = "SELECT count(*) FROM tax WHERE revenue IN (" + ",".join(["1"] * 2000) + ")"
MANY_OUTPUTS = "SELECT " + ", ".join(["count(*)"] * 65) + " FROM tax"


def banded(band: str) -> str:
    return f"SELECT {band} AS b, count(*) FROM tax GROUP BY b"


BANDS_101 = (
    "CASE " + " ".join(f"WHEN revenue < {i} THEN 'b{i}'" for i in range(100)) + " ELSE 'last' END"
)
TOO_MANY_CELLS = (
    "SELECT industry, district, status, year(founded), count(*) FROM registry"
    " GROUP BY industry, district, status, year(founded)"
)


REJECTED = [
    # raw rows and outputs
    pytest.param("SELECT * FROM tax", "raw_rows", "*", id="star"),
    pytest.param("SELECT t.* FROM tax t", "raw_rows", "*", id="qualified_star"),
    pytest.param("FROM tax", "raw_rows", "*", id="from_first_no_select"),
    pytest.param("SELECT industry FROM registry", "raw_rows", "industry", id="bare_dimension"),
    pytest.param("SELECT industry FROM registry GROUP BY industry", "raw_rows", "", id="keys_only"),
    pytest.param(
        "SELECT industry, count(*) FROM registry", "raw_rows", "industry", id="key_not_grouped"
    ),
    # A bare measure is refused as not groupable (before the raw_rows rule is reached).
    pytest.param("SELECT revenue FROM tax", "raw_rows", "revenue", id="bare_measure"),
    # functions outside the allow-list
    pytest.param("SELECT list(revenue) FROM tax", "unsupported_function", "array_agg", id="list"),
    pytest.param("SELECT min(revenue) FROM tax", "unsupported_function", "min", id="min"),
    pytest.param("SELECT max(revenue) FROM tax", "unsupported_function", "max", id="max"),
    pytest.param(
        "SELECT arg_max(revenue, month) FROM tax", "unsupported_function", "arg_max", id="arg_max"
    ),
    pytest.param("SELECT mode(revenue) FROM tax", "unsupported_function", "mode", id="mode"),
    pytest.param(
        "SELECT string_agg(industry, ',') FROM registry",
        "unsupported_function",
        "listagg",
        id="string_agg",
    ),
    pytest.param(
        "SELECT approx_quantile(revenue, 0.5) FROM tax",
        "unsupported_function",
        "approx_quantile",
        id="approx_quantile",
    ),
    pytest.param(
        "SELECT histogram(revenue) FROM tax", "unsupported_function", "histogram", id="histogram"
    ),
    pytest.param(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY revenue) FROM tax",
        "unsupported_expression",
        "withingroup",
        id="within_group",
    ),
    pytest.param("SELECT count(*) + 1 FROM tax", "unsupported_expression", "add", id="arith"),
    # aggregate arguments and roles
    pytest.param(
        "SELECT sum(industry) FROM registry",
        "column_not_aggregatable",
        "industry",
        id="sum_dimension",
    ),
    pytest.param(
        "SELECT sum(revenue*2) FROM tax", "aggregate_argument", "sum", id="sum_expression"
    ),
    pytest.param(
        "SELECT avg(tax_paid + revenue) FROM tax", "aggregate_argument", "avg", id="avg_expression"
    ),
    pytest.param(
        "SELECT sum(DISTINCT revenue) FROM tax", "aggregate_argument", "sum", id="sum_distinct"
    ),
    pytest.param(
        "SELECT count(DISTINCT industry) FROM registry",
        "unsupported_aggregate",
        "count(distinct ...)",
        id="count_distinct_dimension",
    ),
    pytest.param(
        "SELECT count(*) FILTER (WHERE revenue > 1) FROM tax",
        "unsupported_clause",
        "filter",
        id="aggregate_filter",
    ),
    pytest.param(
        "SELECT month, count(*) FROM tax GROUP BY revenue",
        "column_not_groupable",
        "revenue",
        id="group_by_measure",
    ),
    # the privacy unit
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY credit_code",
        "unit_not_allowed",
        "credit_code",
        id="group_by_unit",
    ),
    pytest.param(
        "SELECT credit_code, count(*) FROM tax GROUP BY credit_code",
        "unit_not_allowed",
        "credit_code",
        id="select_unit",
    ),
    pytest.param(
        "SELECT count(credit_code) FROM tax", "unit_not_allowed", "credit_code", id="count_unit"
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE credit_code = '91110108MA01ABCD2X'",
        "unit_filter",
        "credit_code",
        id="unit_equals",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE credit_code IS NULL",
        "unit_filter",
        "credit_code",
        id="unit_is_null",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE year(credit_code) = 2023",
        "unit_filter",
        "credit_code",
        id="unit_in_year",
    ),
    # hidden, unknown and ambiguous names
    pytest.param(
        "SELECT count(name) FROM registry", "column_not_allowed", "name", id="hidden_count"
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE name = 'x'",
        "column_not_allowed",
        "name",
        id="hidden_where",
    ),
    pytest.param(
        "SELECT name, count(*) FROM registry GROUP BY name",
        "column_not_allowed",
        "name",
        id="hidden_group",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t JOIN registry r ON r.name = t.credit_code",
        "column_not_allowed",
        "name",
        id="hidden_join",
    ),
    pytest.param("SELECT count(*) FROM nope", "unknown_table", "nope", id="unknown_table"),
    pytest.param("SELECT count(nope) FROM tax", "unknown_column", "nope", id="unknown_column"),
    pytest.param(
        "SELECT count(*) FROM tax t WHERE x.revenue > 1", "unknown_table", "x", id="unknown_alias"
    ),
    pytest.param(
        'SELECT SUM("Revenue") FROM tax', "unknown_column", "Revenue", id="quoted_column_case"
    ),
    pytest.param(
        "SELECT count(month) FROM tax t JOIN social_insurance s ON t.credit_code = s.credit_code",
        "ambiguous_column",
        "month",
        id="ambiguous",
    ),
    # sources other than a policy table
    pytest.param(
        "SELECT count(*) FROM read_csv('/etc/passwd')",
        "unsupported_function",
        "read_csv",
        id="read_csv",
    ),
    pytest.param(
        "SELECT count(*) FROM read_parquet('x.parquet')",
        "unsupported_function",
        "read_parquet",
        id="read_parquet",
    ),
    pytest.param("SELECT count(*) FROM '/etc/passwd'", "unknown_table", "", id="from_path"),
    pytest.param(
        "SELECT count(*) FROM query('SELECT 1')", "unsupported_function", "query", id="query_fn"
    ),
    pytest.param(
        "SELECT count(*) FROM query_table('tax')",
        "unsupported_function",
        "query_table",
        id="query_table",
    ),
    pytest.param(
        "SELECT count(*) FROM duckdb_settings()",
        "unsupported_function",
        "duckdb_settings",
        id="duckdb_settings",
    ),
    pytest.param("SELECT count(*) FROM main.tax", "unsupported_clause", "db", id="schema"),
    pytest.param("SELECT 1", "unsupported_source", "", id="no_from"),
    # statements other than one SELECT
    pytest.param(
        "SELECT count(*) FROM tax; SELECT count(*) FROM registry",
        "multiple_statements",
        "",
        id="two_statements",
    ),
    pytest.param("PRAGMA database_list", "not_select", "pragma", id="pragma"),
    pytest.param("SET memory_limit = '1GB'", "not_select", "set", id="set"),
    pytest.param("COPY tax TO '/tmp/x.csv'", "not_select", "copy", id="copy"),
    pytest.param("ATTACH '/tmp/x.db' AS x", "not_select", "attach", id="attach"),
    pytest.param("DETACH x", "not_select", "detach", id="detach"),
    pytest.param("INSTALL httpfs", "not_select", "install", id="install"),
    pytest.param("LOAD httpfs", "not_select", "command", id="load"),
    pytest.param("SUMMARIZE tax", "not_select", "summarize", id="summarize"),
    pytest.param("DESCRIBE tax", "not_select", "describe", id="describe"),
    pytest.param("SHOW TABLES", "not_select", "show", id="show"),
    pytest.param("CALL pragma_version()", "not_select", "command", id="call"),
    pytest.param("EXPLAIN SELECT count(*) FROM tax", "not_select", "command", id="explain"),
    pytest.param("INSERT INTO tax VALUES (1)", "not_select", "insert", id="insert"),
    pytest.param("DROP TABLE tax", "not_select", "drop", id="drop"),
    pytest.param("CREATE TABLE x AS SELECT 1", "not_select", "create", id="create"),
    pytest.param("EXPORT DATABASE '/tmp/x'", "syntax_error", "", id="export"),
    pytest.param("VALUES (1)", "not_select", "values", id="values"),
    pytest.param(
        "SELECT count(*) FROM tax UNION SELECT count(*) FROM registry",
        "not_select",
        "union",
        id="union",
    ),
    pytest.param("(SELECT count(*) FROM tax)", "not_select", "subquery", id="parenthesised"),
    # clauses and subqueries
    pytest.param(
        "WITH x AS (SELECT * FROM tax) SELECT count(*) FROM x",
        "unsupported_clause",
        "with",
        id="cte",
    ),
    pytest.param(
        "SELECT count(*) FROM (SELECT * FROM tax)",
        "unsupported_clause",
        "subquery",
        id="subquery_from",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue > (SELECT avg(revenue) FROM tax)",
        "unsupported_clause",
        "subquery",
        id="subquery_where",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue IN (SELECT revenue FROM tax)",
        "unsupported_clause",
        "subquery",
        id="in_subquery",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE EXISTS (SELECT 1)",
        "unsupported_clause",
        "subquery",
        id="exists",
    ),
    pytest.param("SELECT count(*) OVER () FROM tax", "unsupported_clause", "window", id="window"),
    pytest.param(
        "SELECT count(*) FROM tax WINDOW w AS (PARTITION BY month)",
        "unsupported_clause",
        "windows",
        id="window_clause",
    ),
    pytest.param(
        "SELECT month, count(*) FROM tax GROUP BY month HAVING count(*) > 5",
        "unsupported_clause",
        "having",
        id="having",
    ),
    pytest.param(
        "SELECT DISTINCT count(*) FROM tax", "unsupported_clause", "distinct", id="distinct"
    ),
    pytest.param(
        "SELECT count(*) FROM tax QUALIFY 1 = 1", "unsupported_clause", "qualify", id="qualify"
    ),
    pytest.param(
        "SELECT count(*) FROM tax TABLESAMPLE 10%",
        "unsupported_clause",
        "sample",
        id="tablesample",
    ),
    pytest.param(
        "SELECT count(*) FROM tax USING SAMPLE 10%",
        "unsupported_clause",
        "sample",
        id="using_sample",
    ),
    pytest.param(
        "SELECT count(*) FROM tax PIVOT (sum(revenue) FOR month IN ('2023-01-01'))",
        "unsupported_clause",
        "pivots",
        id="pivot",
    ),
    pytest.param("SELECT count(*) INTO x FROM tax", "unsupported_clause", "into", id="select_into"),
    pytest.param(
        "SELECT count(*) FROM tax LIMIT 5 OFFSET 1",
        "unsupported_clause",
        "offset",
        id="offset",
    ),
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY ALL",
        "unsupported_clause",
        "group by all",
        id="group_by_all",
    ),
    pytest.param(
        "SELECT month, count(*) FROM tax GROUP BY ROLLUP (month)",
        "unsupported_expression",
        "rollup",
        id="rollup",
    ),
    pytest.param(
        "SELECT count(*) FROM tax AS t(a, b)",
        "unsupported_clause",
        "column aliases on a table",
        id="table_column_aliases",
    ),
    # joins
    pytest.param(
        "SELECT count(*) FROM registry r LEFT JOIN tax t ON r.credit_code = t.credit_code",
        "unsupported_join",
        "",
        id="left_join",
    ),
    pytest.param(
        "SELECT count(*) FROM registry CROSS JOIN tax", "unsupported_join", "", id="cross_join"
    ),
    pytest.param(
        "SELECT count(*) FROM registry NATURAL JOIN tax", "unsupported_join", "", id="natural"
    ),
    pytest.param(
        "SELECT count(*) FROM registry POSITIONAL JOIN tax",
        "unsupported_join",
        "",
        id="positional",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t ASOF JOIN registry r ON t.credit_code = r.credit_code",
        "unsupported_join",
        "",
        id="asof",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t SEMI JOIN registry r ON t.credit_code = r.credit_code",
        "unsupported_join",
        "",
        id="semi",
    ),
    pytest.param("SELECT count(*) FROM registry, tax", "unsupported_join", "", id="comma_join"),
    pytest.param(
        "SELECT count(*) FROM registry r JOIN tax t ON r.founded = t.month",
        "unsupported_join",
        "",
        id="join_not_on_unit",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t JOIN registry r ON t.credit_code = t.credit_code",
        "unsupported_join",
        "",
        id="join_on_one_side",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t JOIN registry r"
        " ON t.credit_code = r.credit_code AND t.revenue > 0",
        "unsupported_join",
        "",
        id="join_extra_condition",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t JOIN registry r USING (credit_code, month)",
        "unsupported_join",
        "",
        id="join_using_two",
    ),
    pytest.param(
        "SELECT count(*) FROM tax a JOIN tax b ON a.credit_code = b.credit_code",
        "unsupported_join",
        "tax",
        id="self_join",
    ),
    pytest.param(
        "SELECT count(*) FROM registry r JOIN tax t ON r.credit_code = t.credit_code"
        " JOIN utilities u ON u.credit_code = r.credit_code",
        "unsupported_join",
        "",
        id="three_tables",
    ),
    pytest.param(
        "SELECT count(*) FROM tax, LATERAL (SELECT 1)",
        "unsupported_source",
        "lateral",
        id="lateral",
    ),
    # bands (CASE and width_bucket group keys)
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 'a' END"),
        "invalid_band",
        "else",
        id="band_no_else",
    ),
    pytest.param(
        banded("CASE WHEN revenue < tax_paid THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "cut_point",
        id="band_cut_column",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 1 + 2 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "cut_point",
        id="band_cut_arithmetic",
    ),
    pytest.param(
        banded("CASE WHEN revenue < ? THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "cut_point",
        id="band_cut_placeholder",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 'a' WHEN revenue < 10 THEN 'b' ELSE 'c' END"),
        "invalid_band",
        "cut_points",
        id="band_cuts_equal",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 100 THEN 'a' WHEN revenue < 10 THEN 'b' ELSE 'c' END"),
        "invalid_band",
        "cut_points",
        id="band_cuts_decreasing",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 'a' ELSE 1 END"),
        "invalid_band",
        "labels",
        id="band_mixed_label_types",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 'a' WHEN revenue < 20 THEN 'b' ELSE 'a' END"),
        "invalid_band",
        "labels",
        id="band_duplicate_labels",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 1.5 ELSE 2.5 END"),
        "invalid_band",
        "label",
        id="band_float_label",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN NULL ELSE 'b' END"),
        "invalid_band",
        "label",
        id="band_null_label",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN true ELSE false END"),
        "invalid_band",
        "label",
        id="band_boolean_label",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN arrears ELSE 'b' END"),
        "invalid_band",
        "label",
        id="band_column_label",
    ),
    pytest.param(
        banded(
            "CASE WHEN revenue < 10 THEN 'a' ELSE CASE WHEN revenue < 20 THEN 'b' ELSE 'c' END END"
        ),
        "invalid_band",
        "case",
        id="band_nested_case_label",
    ),
    pytest.param(
        banded("CASE WHEN CASE WHEN revenue < 20 THEN 1 ELSE 2 END < 2 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "case",
        id="band_nested_case_condition",
    ),
    pytest.param(
        banded("CASE WHEN width_bucket(revenue, 0, 10, 2) < 2 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "case",
        id="band_nested_width_bucket",
    ),
    pytest.param(
        banded("CASE revenue WHEN 10 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "case",
        id="band_simple_case",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 'a' WHEN revenue <= 20 THEN 'b' ELSE 'c' END"),
        "invalid_band",
        "condition",
        id="band_mixed_operators",
    ),
    pytest.param(
        banded("CASE WHEN revenue > 10 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "condition",
        id="band_greater_than",
    ),
    pytest.param(
        banded("CASE WHEN revenue = 10 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "condition",
        id="band_equals",
    ),
    pytest.param(
        banded("CASE WHEN 10 > revenue THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "condition",
        id="band_literal_left",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 AND tax_paid < 5 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "condition",
        id="band_and",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 10 THEN 'a' WHEN tax_paid < 20 THEN 'b' ELSE 'c' END"),
        "invalid_band",
        "condition",
        id="band_two_columns",
    ),
    pytest.param(
        banded("CASE WHEN revenue * 2 < 10 THEN 'a' ELSE 'b' END"),
        "invalid_band",
        "condition",
        id="band_arithmetic_column",
    ),
    pytest.param(
        banded("CASE WHEN credit_code < 'x' THEN 'a' ELSE 'b' END"),
        "unit_not_allowed",
        "credit_code",
        id="band_unit",
    ),
    pytest.param(
        banded("CASE WHEN month < 'x' THEN 'a' ELSE 'b' END"),
        "invalid_literal",
        "date",
        id="band_bad_date_cut",
    ),
    pytest.param(
        banded("CASE WHEN revenue < 'abc' THEN 'a' ELSE 'b' END"),
        "type_mismatch",
        "literal",
        id="band_cut_type",
    ),
    pytest.param(
        banded("CASE WHEN arrears < true THEN 'a' ELSE 'b' END"),
        "type_mismatch",
        "arrears",
        id="band_boolean_column",
    ),
    pytest.param(
        banded("width_bucket(revenue, tax_paid, 10, 2)"),
        "invalid_band",
        "bounds",
        id="width_bucket_column_bound",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 1 + 9, 2)"),
        "invalid_band",
        "bounds",
        id="width_bucket_arithmetic_bound",
    ),
    pytest.param(
        banded("width_bucket(revenue, '0', 10, 2)"),
        "invalid_band",
        "bounds",
        id="width_bucket_string_bound",
    ),
    pytest.param(
        banded("width_bucket(revenue, 10, 10, 2)"),
        "invalid_band",
        "bounds",
        id="width_bucket_empty_range",
    ),
    pytest.param(
        banded("width_bucket(revenue, 10, 0, 2)"),
        "invalid_band",
        "bounds",
        id="width_bucket_reversed",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10, 0)"),
        "invalid_band",
        "buckets",
        id="width_bucket_zero",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10, 101)"),
        "invalid_band",
        "buckets",
        id="width_bucket_over_limit",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10, 2.5)"),
        "invalid_band",
        "buckets",
        id="width_bucket_fraction",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10, -2)"),
        "invalid_band",
        "buckets",
        id="width_bucket_negative",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10, tax_paid)"),
        "invalid_band",
        "buckets",
        id="width_bucket_column_count",
    ),
    pytest.param(
        banded("width_bucket(revenue * 2, 0, 10, 2)"),
        "invalid_band",
        "condition",
        id="width_bucket_expression",
    ),
    pytest.param(
        banded("width_bucket(credit_code, 0, 10, 2)"),
        "unit_not_allowed",
        "credit_code",
        id="width_bucket_unit",
    ),
    pytest.param(
        banded("width_bucket(month, 0, 10, 2)"),
        "type_mismatch",
        "month",
        id="width_bucket_date",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10)"),
        "invalid_band",
        "width_bucket",
        id="width_bucket_three_arguments",
    ),
    pytest.param(
        banded("width_bucket(revenue, 0, 10, 2, 5)"),
        "invalid_band",
        "width_bucket",
        id="width_bucket_five_arguments",
    ),
    pytest.param(
        "SELECT CASE WHEN name < 'm' THEN 'a' ELSE 'b' END AS b, count(*) FROM registry GROUP BY b",
        "column_not_allowed",
        "name",
        id="band_hidden",
    ),
    pytest.param(
        "SELECT CASE WHEN industry < 'm' THEN 'a' ELSE 'b' END AS b, count(*) FROM registry"
        " GROUP BY b",
        "type_mismatch",
        "industry",
        id="band_string_column",
    ),
    pytest.param(
        banded("" + BANDS_101 + ""),
        "invalid_band",
        "bands",
        id="band_too_many",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE CASE WHEN revenue < 10 THEN 'a' ELSE 'b' END = 'a'",
        "unsupported_function",
        "case",
        id="band_in_where",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE width_bucket(revenue, 0, 10, 2) = 1",
        "unsupported_function",
        "width_bucket",
        id="width_bucket_in_where",
    ),
    pytest.param(
        "SELECT CASE WHEN revenue < 10 THEN 'a' ELSE 'b' END AS b, count(*) FROM tax",
        "raw_rows",
        "revenue",
        id="band_not_grouped",
    ),
    pytest.param(
        "SELECT CASE WHEN revenue < 10 THEN 'a' ELSE 'b' END AS b, count(*) FROM tax"
        " GROUP BY CASE WHEN revenue < 20 THEN 'a' ELSE 'b' END",
        "raw_rows",
        "revenue",
        id="band_other_than_grouped",
    ),
    pytest.param(
        "SELECT avg(CASE WHEN revenue < 10 THEN 1 ELSE 2 END) FROM tax",
        "aggregate_argument",
        "avg",
        id="band_in_aggregate",
    ),
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY revenue",
        "column_not_groupable",
        "revenue",
        id="raw_measure_still_not_groupable",
    ),
    pytest.param(
        "SELECT width_bucket(revenue, 0, 10, 100) AS a, width_bucket(tax_paid, 0, 10, 100) AS b,"
        " count(*) FROM tax GROUP BY a, b",
        "too_many_groups",
        "",
        id="width_bucket_too_many_cells",
    ),
    # error, timing and environment oracles; casts
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = 1//0",
        "unsupported_expression",
        "intdiv",
        id="integer_division_by_zero",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE CASE WHEN revenue > 100 THEN 1//0 ELSE true END",
        "unsupported_function",
        None,  # subject leaks query text, see test_rejection_does_not_echo_literals
        id="case_error_oracle",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = repeat('a', 100000000)",
        "unsupported_function",
        "repeat",
        id="repeat",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = lpad('a', 100000000, 'b')",
        "unsupported_function",
        "lpad",
        id="lpad",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE error('x')", "unsupported_function", "error", id="error"
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue::VARCHAR = '1'",
        "unsupported_function",
        "cast",
        id="cast_operator",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE CAST(revenue AS INTEGER) = 1",
        "unsupported_function",
        "cast",
        id="cast_function",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = current_setting('memory_limit')",
        "unsupported_function",
        "current_setting",
        id="current_setting",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = getenv('HOME')",
        "unsupported_function",
        "getenv",
        id="getenv",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = random()",
        "unsupported_function",
        "random",
        id="random",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry LIKE 'fin%'",
        "unsupported_expression",
        "like",
        id="like",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = 'a' || 'b'",
        "unsupported_expression",
        "dpipe",
        id="concat",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = ?",
        "unsupported_expression",
        "placeholder",
        id="placeholder",
    ),
    # predicates, literals and types
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = 'abc'",
        "type_mismatch",
        "literal",
        id="string_vs_number",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE month = year(month)",
        "type_mismatch",
        "month",
        id="date_vs_integer",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue", "type_mismatch", "revenue", id="non_bool_pred"
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE year(revenue) = 2023",
        "type_mismatch",
        "revenue",
        id="year_of_number",
    ),
    pytest.param(
        "SELECT year(industry) AS y, count(*) FROM registry GROUP BY y",
        "type_mismatch",
        "industry",
        id="group_year_of_string",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE month = TIMESTAMP '2023-01-01'",
        "type_mismatch",
        "literal",
        id="timestamp_literal",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE month = '2023-02-30'",
        "invalid_literal",
        "date",
        id="bad_date",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = 1e400",
        "invalid_literal",
        "number",
        id="infinite_number",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = 99999999999999999999999",
        "invalid_literal",
        "number",
        id="huge_integer",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = '" + "a" * 1001 + "'",
        "invalid_literal",
        "string",
        id="long_string",
    ),
    pytest.param(HUGE_IN, "invalid_literal", "in", id="in_2000_items"),
    pytest.param(
        "SELECT count(*) FROM tax WHERE 1 = 1",
        "unsupported_expression",
        "literal",
        id="literal_vs_literal",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = NULL",
        "unsupported_expression",
        "null",
        id="equals_null",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE arrears IS TRUE",
        "unsupported_expression",
        "is",
        id="is_true",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = -(-5)",
        "unsupported_expression",
        "neg",
        id="double_negation",
    ),
    pytest.param(
        "SELECT quantile_cont(revenue, 1.5) FROM tax", "invalid_quantile", "", id="quantile_1_5"
    ),
    pytest.param(
        "SELECT quantile_cont(revenue, 0) FROM tax", "invalid_quantile", "", id="quantile_0"
    ),
    pytest.param(
        "SELECT quantile_cont(revenue, 'x') FROM tax", "invalid_quantile", "", id="quantile_str"
    ),
    pytest.param(
        "SELECT quantile_cont(revenue, [0.1, 0.9]) FROM tax",
        "invalid_quantile",
        "",
        id="quantile_list",
    ),
    # GROUP BY, ORDER BY and LIMIT shapes
    pytest.param(
        "SELECT date_trunc('week', month) AS w, count(*) FROM tax GROUP BY w",
        "unsupported_expression",
        "date_trunc",
        id="trunc_week",
    ),
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY 2",
        "unsupported_expression",
        "group by position",
        id="group_position_out_of_range",
    ),
    pytest.param(
        "SELECT count(*) AS n FROM tax GROUP BY n",
        "unsupported_function",
        "count",
        id="group_by_aggregate",
    ),
    pytest.param(
        "SELECT month, count(*) FROM tax GROUP BY month ORDER BY count(*)",
        "invalid_order",
        "",
        id="order_by_expression",
    ),
    pytest.param(
        "SELECT month, count(*) AS n FROM tax GROUP BY month ORDER BY n + 1",
        "invalid_order",
        "",
        id="order_by_arithmetic",
    ),
    pytest.param(
        "SELECT count(*) FROM tax ORDER BY 5", "invalid_order", "position", id="order_position"
    ),
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY month ORDER BY month",
        "invalid_order",
        "",
        id="order_by_unselected_key",
    ),
    pytest.param("SELECT count(*) FROM tax LIMIT -1", "invalid_limit", "", id="limit_negative"),
    pytest.param("SELECT count(*) FROM tax LIMIT 'x'", "invalid_limit", "", id="limit_string"),
    pytest.param("SELECT count(*) FROM tax LIMIT 1 + 1", "invalid_limit", "", id="limit_expr"),
    pytest.param("SELECT count(*) FROM tax LIMIT 100001", "invalid_limit", "", id="limit_huge"),
    pytest.param(
        "SELECT count(*) FROM tax FETCH FIRST 5 ROWS ONLY", "invalid_limit", "", id="fetch"
    ),
    # size and shape of the text
    pytest.param("", "syntax_error", "", id="empty"),
    pytest.param("  \n\t ", "syntax_error", "", id="whitespace"),
    pytest.param(";", "syntax_error", "", id="semicolon"),
    pytest.param("-- just a comment", "syntax_error", "", id="comment"),
    pytest.param("SELECT count(*) FROM tax\x00", "syntax_error", "", id="nul"),
    pytest.param("SELEC count(*) FROM tax", "syntax_error", "", id="typo"),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = 'abc", "syntax_error", "", id="open_quote"
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = 0x10", "syntax_error", "", id="hex_literal"
    ),
    pytest.param(LONG_QUERY, "sql_too_long", "", id="sql_too_long"),
    pytest.param("SELECT count(*) FROM tax" + " " * 20_000, "sql_too_long", "", id="padding"),
    pytest.param(DEEP_PARENS, "sql_too_deep", "", id="deep_parentheses"),
    pytest.param(DEEP_NOTS, "sql_too_deep", "", id="deep_not"),
    pytest.param(MANY_OUTPUTS, "query_too_complex", "select", id="too_many_outputs"),
    pytest.param(TOO_MANY_CELLS, "too_many_groups", "", id="too_many_public_cells"),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry = '\udcff'",
        "syntax_error",
        "",
        id="lone_surrogate",
    ),
    # columns whose name sqlglot parses as a literal (these used to crash the checker)
    pytest.param(
        "SELECT count(*) FROM tax t WHERE t.5 = 1",
        "unsupported_expression",
        "column",
        id="literal_column_where",
    ),
    pytest.param(
        "SELECT count(x.1) FROM tax", "unsupported_expression", "column", id="literal_column_count"
    ),
    pytest.param(
        "SELECT count(*) FROM tax t GROUP BY t.5",
        "unsupported_expression",
        "column",
        id="literal_column_group",
    ),
    pytest.param(
        "SELECT count(*) FROM tax t JOIN registry r USING (credit_code) WHERE t.'credit_code' = 1",
        "unsupported_expression",
        "column",
        id="literal_column_unit",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = SETS .7976931348623157e309",
        "unsupported_expression",
        "column",
        id="literal_column_fuzzed",
    ),
    # --- defects: hostile inputs that make the gate raise something other than QueryRejected --
    pytest.param(
        "SELECT count(*) FROM tax WHERE month = datetime(month)",
        None,
        None,
        id="bug_datetime_where",
    ),
    pytest.param(
        "SELECT datetime(month) AS d, count(*) FROM tax GROUP BY d",
        None,
        None,
        id="bug_datetime_group",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE match_against('a', 'b')",
        None,
        None,
        id="bug_match_against",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = var_map(1)",
        None,
        None,
        id="bug_var_map_parse",
    ),
    pytest.param(
        "SELECT count(*) FROM tax ORDER BY {:}",
        None,
        None,
        id="bug_empty_struct_key_parse",
    ),
]


@pytest.mark.parametrize(("sql", "rule", "subject"), REJECTED)
def test_rejected(sql: str, rule: str | None, subject: str | None) -> None:
    with pytest.raises(QueryRejected) as info:
        plan(gate(sql), POLICY)
    err = info.value
    # the gate's own refusals, the size limits' subclasses included, and nothing else
    assert type(err) in (QueryRejected, SqlTooLong, SqlTooDeep)
    if rule is not None:
        assert err.rule == rule
    assert err.error_code == err.rule
    assert err.status == 400
    if subject is not None:
        assert err.subject == subject
    assert len(err.subject) <= 64
    problem = err.problem()
    assert problem["code"] == err.rule and problem["rule"] == err.rule


def test_rejected_count() -> None:
    assert len([p for p in REJECTED if not p.marks]) >= 35


# --- accepted today, but should be refused --------------------------------------------------

SHOULD_REJECT = [
    pytest.param(
        "SELECT count(revenue, 0.5) FROM tax",
        id="count_extra_argument",
    ),
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY +",
        id="dangling_group_by",
    ),
    pytest.param(
        "SELECT count(*) FROM tax LIMIT 10%",
        id="limit_percent",
    ),
]


@pytest.mark.parametrize("sql", SHOULD_REJECT)
def test_should_be_rejected(sql: str) -> None:
    with pytest.raises(QueryRejected):
        plan(gate(sql), POLICY)


# --- rejections never echo the analyst's literals -------------------------------------------

SECRET = "secret_value_42"

ECHO = [
    pytest.param(f"SELECT count(*) FROM registry WHERE name = '{SECRET}'", id="hidden"),
    pytest.param(f"SELECT count(*) FROM tax WHERE credit_code = '{SECRET}'", id="unit"),
    pytest.param(f"SELECT count(*) FROM tax WHERE revenue = '{SECRET}'", id="type_mismatch"),
    pytest.param(f"SELECT count(*) FROM tax WHERE month = '{SECRET}'", id="bad_date"),
    pytest.param(f"SELECT count(*) FROM registry WHERE industry LIKE '{SECRET}'", id="like"),
    pytest.param(
        f"SELECT count(*) FROM registry WHERE industry = coalesce(industry, '{SECRET}')",
        id="function_argument",
    ),
    pytest.param(f"SELECT count(*) FROM tax WHERE error('{SECRET}')", id="error"),
    pytest.param(f"SELECT quantile_cont(revenue, '{SECRET}') FROM tax", id="quantile"),
    pytest.param(f"SELECT count(*) FROM tax LIMIT '{SECRET}'", id="limit"),
    pytest.param(
        f"SELECT count(*) FROM registry WHERE CASE WHEN industry = '{SECRET}' THEN true END",
        id="case",
    ),
    pytest.param(
        f"SELECT count(*) FROM registry WHERE industry = ['{SECRET}']",
        id="array",
    ),
    pytest.param(
        f"SELECT count(*) FROM registry WHERE industry = {{'k': '{SECRET}'}}",
        id="struct",
    ),
    pytest.param(
        f"SELECT count(*) FROM registry WHERE industry = '{SECRET}' COLLATE nocase",
        id="collate",
    ),
]


ECHO += [
    pytest.param(
        f"SELECT CASE WHEN revenue < 1 THEN '{SECRET}' WHEN revenue < 2 THEN 'b'"
        f" ELSE '{SECRET}' END AS b, count(*) FROM tax GROUP BY b",
        id="band_duplicate_label",
    ),
    pytest.param(
        f"SELECT CASE WHEN revenue < '{SECRET}' THEN 'a' ELSE 'b' END AS b, count(*) FROM tax"
        " GROUP BY b",
        id="band_cut_type",
    ),
    pytest.param(
        f"SELECT CASE WHEN month < '{SECRET}' THEN 'a' ELSE 'b' END AS b, count(*) FROM tax"
        " GROUP BY b",
        id="band_bad_date",
    ),
    pytest.param(
        f"SELECT CASE WHEN revenue < 1 THEN '{SECRET}' END AS b, count(*) FROM tax GROUP BY b",
        id="band_no_else",
    ),
    pytest.param(
        f"SELECT width_bucket(revenue, '{SECRET}', 1, 2) AS w, count(*) FROM tax GROUP BY w",
        id="width_bucket_bound",
    ),
]


@pytest.mark.parametrize("sql", ECHO)
def test_rejection_does_not_echo_literals(sql: str) -> None:
    with pytest.raises(QueryRejected) as info:
        plan(gate(sql), POLICY)
    assert SECRET not in info.value.subject
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.problem())


def test_between_symmetric_means_either_order_of_the_bounds() -> None:
    """``BETWEEN SYMMETRIC`` selects the same rows whichever bound comes first (DuckDB itself
    does not parse it: the gate writes it out)."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE tax AS SELECT r * 1000.0 AS revenue FROM range(100) t(r)")
    counts = []
    for sql in (
        "SELECT count(*) FROM tax WHERE revenue BETWEEN SYMMETRIC 50000 AND 10000",
        "SELECT count(*) FROM tax WHERE revenue BETWEEN SYMMETRIC 10000 AND 50000",
        "SELECT count(*) FROM tax WHERE revenue BETWEEN 10000 AND 50000",
    ):
        checked = gate(sql)
        where = checked.where_sql.replace('t0."revenue"', "revenue")
        counts.append(
            con.execute(
                f"SELECT count(*) FROM tax WHERE {where}", list(checked.where_params)
            ).fetchone()
        )
    assert counts == [(41,), (41,), (41,)]


# --- bands -------------------------------------------------------------------------------------

BAND_SQL = {p.id: p.values[0] for p in ACCEPTED if str(p.id).startswith("band_")}


@pytest.mark.parametrize("case", sorted(BAND_SQL))
def test_band_labels_and_cut_points_are_parameters(case: str) -> None:
    """The SQL Veil runs is generated from the checked band: neither its labels nor its cut
    points are in the text, and the released keys are the declared labels."""
    sql = BAND_SQL[case]
    planned = plan(gate(sql), POLICY, salt=1)
    for node in parse(sql).find_all(exp.Case):
        for literal in node.find_all(exp.Literal):
            if literal.is_string:
                assert f"'{literal.this}'" not in planned.sql
    assert "1e5" not in planned.sql and "2010-01-01" not in planned.sql
    band = next(k.band for k in planned.keys if k.band is not None)
    assert planned.public_cells is not None
    index = next(i for i, k in enumerate(planned.keys) if k.band is not None)
    assert {cell[index] for cell in planned.public_cells} == set(band.labels)


def test_band_public_keys_are_the_labels_in_order_and_the_bucket_numbers() -> None:
    case = plan(gate(ACCEPTED_SQL["band_case_measure"]), POLICY)
    assert case.public_cells == (("small",), ("medium",), ("large",))
    bucket = plan(gate(ACCEPTED_SQL["band_width_bucket"]), POLICY)
    assert bucket.public_cells == tuple((i,) for i in range(12))


def test_band_of_a_filter_column_is_not_groupable() -> None:
    import dataclasses

    from policies.model import Role

    tax = POLICY.table("tax")
    assert tax is not None
    columns = tuple(
        dataclasses.replace(c, role=Role.FILTER) if c.name == "revenue" else c for c in tax.columns
    )
    tables = tuple(
        dataclasses.replace(t, columns=columns) if t.name == "tax" else t for t in POLICY.tables
    )
    policy = dataclasses.replace(POLICY, tables=tables)
    sql = "SELECT CASE WHEN revenue < 10 THEN 'a' ELSE 'b' END AS b, count(*) FROM tax GROUP BY b"
    with pytest.raises(QueryRejected) as info:
        check(parse(sql), policy)
    assert (info.value.rule, info.value.subject) == ("column_not_groupable", "revenue")


def test_bands_with_other_cut_points_or_labels_are_other_queries() -> None:
    """The answer cache keys on the canonical query: a band's cut points and labels are in it."""
    base = "SELECT CASE WHEN revenue < {c} THEN {a} ELSE 'z' END AS b, count(*) FROM tax GROUP BY b"
    canon = {
        gate(base.format(c=c, a=a)).canonical
        for c, a in (("10", "'a'"), ("11", "'a'"), ("10", "'b'"), ("10.5", "'a'"))
    }
    assert len(canon) == 4
    bucket = "SELECT width_bucket(revenue, 0, {hi}, {n}) AS w, count(*) FROM tax GROUP BY w"
    assert gate(bucket.format(hi=10, n=2)).canonical != gate(bucket.format(hi=20, n=2)).canonical
    assert gate(bucket.format(hi=10, n=2)).canonical != gate(bucket.format(hi=10, n=3)).canonical


def test_bands_bin_as_written() -> None:
    """On real DuckDB: ``<`` and ``<=`` cut points, NULL in the ELSE band; width_bucket as in
    PostgreSQL (0 below lo, n + 1 from hi on, NULL for NULL), bounds and edges included."""
    import duckdb

    con = duckdb.connect()
    values = [-5.0, 0.0, 0.5, 2.5, 5.0, 9.999999999999, 10.0, 12.0, None]
    con.execute("CREATE TABLE tax (credit_code VARCHAR, revenue DOUBLE)")
    con.executemany("INSERT INTO tax VALUES (?, ?)", [[str(i), v] for i, v in enumerate(values)])

    def keys(band_sql: str) -> list[object]:
        checked = gate(f"SELECT {band_sql} AS b, count(*) FROM tax GROUP BY b")
        key = checked.group_keys[0]
        sql = f"SELECT {key.sql.replace('t0.', '')} FROM tax ORDER BY credit_code::INT"
        return [r[0] for r in con.execute(sql, list(key.params)).fetchall()]

    strict = "CASE WHEN revenue < 0 THEN 'a' WHEN revenue < 5 THEN 'b' ELSE 'c' END"
    assert keys(strict) == ["a", "b", "b", "b", "c", "c", "c", "c", "c"]
    inclusive = "CASE WHEN revenue <= 0 THEN 1 WHEN revenue <= 5 THEN 2 ELSE 3 END"
    assert keys(inclusive) == [1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert keys("width_bucket(revenue, 0, 10, 4)") == [0, 1, 1, 2, 3, 4, 5, 5, None]
    assert keys("width_bucket(revenue, -5, 10, 3)") == [1, 2, 2, 2, 3, 3, 4, 4, None]
