"""The SQL gate's accepted cases (sql, output names, plan params) and the policy they are checked
against: the gate's table-driven tests and the no-pruning plan tests share them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from policies.loader import load_policy
from policies.model import Policy

ROOT = Path(__file__).resolve().parents[2]
POLICY: Policy = load_policy(ROOT / "sandbox" / "demo" / "data" / "enterprise.toml")

D = date.fromisoformat

# --- accepted ----------------------------------------------------------------------------------
# (sql, expected output names, expected plan params)

ACCEPTED = [
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue BETWEEN SYMMETRIC 1e6 AND 10",
        ("count",),
        (1e6, 10, 10, 1e6),
        id="between_symmetric",
    ),
    pytest.param("SELECT COUNT(*) FROM tax", ("count",), (), id="count_star"),
    pytest.param("SELECT count(revenue) FROM tax", ("count_revenue",), (), id="count_col"),
    pytest.param(
        "SELECT count(industry) AS n FROM registry", ("n",), (), id="count_dimension_alias"
    ),
    pytest.param(
        "SELECT count(DISTINCT credit_code) FROM tax", ("count_units",), (), id="count_units"
    ),
    pytest.param(
        "SELECT sum(revenue) AS total, avg(tax_paid) FROM tax",
        ("total", "avg_tax_paid"),
        (),
        id="sum_avg",
    ),
    pytest.param(
        "SELECT var_samp(revenue), variance(tax_paid) FROM tax",
        ("var_samp_revenue", "var_samp_tax_paid"),
        (),
        id="variance",
    ),
    pytest.param(
        "SELECT stddev_samp(revenue), stddev(tax_paid) FROM tax",
        ("stddev_samp_revenue", "stddev_samp_tax_paid"),
        (),
        id="stddev",
    ),
    pytest.param(
        "SELECT median(headcount) FROM social_insurance", ("median_headcount",), (), id="median"
    ),
    pytest.param(
        "SELECT quantile_cont(revenue, 0.9) AS p90, quantile_cont(revenue, 0.5) FROM tax",
        ("p90", "median_revenue"),
        (),
        id="quantile_cont",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE revenue = 5 AND tax_paid <> 3 AND revenue < 100"
        " AND revenue <= 99.5 AND tax_paid > 1 AND tax_paid >= 0",
        ("count",),
        (5, 3, 100, 99.5, 1, 0),
        id="all_comparisons",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE NOT arrears OR (revenue > 10 AND arrears)",
        ("count",),
        (10,),
        id="and_or_not_boolean",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry IN ('finance', 'agriculture')",
        ("count",),
        ("finance", "agriculture"),
        id="in_strings",
    ),
    pytest.param(
        "SELECT count(*) FROM registry WHERE industry NOT IN ('real_estate')",
        ("count",),
        ("real_estate",),
        id="not_in",
    ),
    pytest.param(
        "SELECT sum(revenue) FROM tax WHERE revenue BETWEEN 10 AND 1e6",
        ("sum_revenue",),
        (10, 1_000_000.0),
        id="between_numbers",
    ),
    pytest.param("SELECT count(*) FROM tax WHERE revenue IS NULL", ("count",), (), id="is_null"),
    pytest.param(
        "SELECT count(*) FROM tax WHERE tax_paid IS NOT NULL", ("count",), (), id="is_not_null"
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE month >= DATE '2023-01-01'",
        ("count",),
        (D("2023-01-01"),),
        id="date_literal",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE month < '2023-07-01'",
        ("count",),
        (D("2023-07-01"),),
        id="date_string",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE month BETWEEN DATE '2023-01-01' AND '2023-12-31'",
        ("count",),
        (D("2023-01-01"), D("2023-12-31")),
        id="between_dates",
    ),
    pytest.param(
        "SELECT count(*) FROM social_insurance WHERE arrears", ("count",), (), id="bool_column"
    ),
    pytest.param(
        "SELECT count(*) FROM social_insurance WHERE arrears = false AND amount > 0",
        ("count",),
        (False, 0),
        id="bool_equals_literal",
    ),
    pytest.param(
        "SELECT avg(revenue) FROM tax WHERE year(month) = 2023",
        ("avg_revenue",),
        (2023,),
        id="year_in_where",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE 10 < revenue AND -5 < tax_paid",
        ("count",),
        (10, -5),
        id="literal_on_left_negative",
    ),
    pytest.param(
        "SELECT industry, count(*) FROM registry GROUP BY industry",
        ("industry", "count"),
        (),
        id="group_dimension",
    ),
    pytest.param(
        "SELECT district, status, count(*) FROM registry WHERE status <> 'revoked'"
        " GROUP BY district, status",
        ("district", "status", "count"),
        ("revoked",),
        id="group_two_dimensions",
    ),
    pytest.param(
        "SELECT industry AS sector, count(*) AS n FROM registry GROUP BY sector",
        ("sector", "n"),
        (),
        id="group_by_alias",
    ),
    pytest.param(
        "SELECT year(month) AS y, sum(revenue) AS total FROM tax GROUP BY y",
        ("y", "total"),
        (),
        id="group_year_alias",
    ),
    pytest.param(
        "SELECT year(founded), count(*) FROM registry GROUP BY year(founded)",
        ("year_founded", "count"),
        (),
        id="group_year_expression",
    ),
    pytest.param(
        "SELECT date_trunc('month', month), sum(revenue) FROM tax GROUP BY 1",
        ("month_month", "sum_revenue"),
        (),
        id="group_trunc_month_position",
    ),
    pytest.param(
        "SELECT date_trunc('quarter', month) AS q, sum(amount) FROM social_insurance"
        " GROUP BY date_trunc('quarter', month)",
        ("q", "sum_amount"),
        (),
        id="group_trunc_quarter",
    ),
    pytest.param(
        "SELECT r.industry, sum(t.revenue) FROM registry AS r"
        " JOIN tax AS t ON r.credit_code = t.credit_code GROUP BY r.industry",
        ("industry", "sum_revenue"),
        (),
        id="join_on",
    ),
    pytest.param(
        "SELECT industry, avg(electricity_kwh) FROM registry r INNER JOIN utilities u"
        " USING (credit_code) GROUP BY industry",
        ("industry", "avg_electricity_kwh"),
        (),
        id="inner_join_using",
    ),
    pytest.param(
        "SELECT year(u.month) AS y, avg(u.water_m3) FROM utilities u JOIN registry r"
        " ON u.credit_code = r.credit_code WHERE r.district = 'haidian'"
        " AND u.month >= '2023-01-01' GROUP BY y",
        ("y", "avg_water_m3"),
        ("haidian", D("2023-01-01")),
        id="join_where_both_tables",
    ),
    pytest.param(
        "SELECT count(DISTINCT r.credit_code) AS firms FROM registry r"
        " JOIN social_insurance s ON r.credit_code = s.credit_code WHERE s.arrears",
        ("firms",),
        (),
        id="join_count_units",
    ),
    pytest.param(
        "SELECT industry, count(*) AS n FROM registry GROUP BY industry ORDER BY n DESC LIMIT 5",
        ("industry", "n"),
        (),
        id="order_by_name_limit",
    ),
    pytest.param(
        "SELECT status, count(*) FROM registry GROUP BY status ORDER BY 2 DESC, 1 LIMIT 3",
        ("status", "count"),
        (),
        id="order_by_position",
    ),
    pytest.param(
        "SELECT status, count(*) FROM registry WHERE founded >= '2010-01-01'"
        " AND NOT (industry = 'finance') GROUP BY status",
        ("status", "count"),
        (D("2010-01-01"), "finance"),
        id="date_and_not_string",
    ),
    pytest.param(
        "SELECT count(*) FROM tax WHERE tax.revenue > 10", ("count",), (10,), id="qualified"
    ),
    pytest.param('SELECT count(*) FROM "tax"', ("count",), (), id="quoted_table"),
    pytest.param("SELECT count(*) AS c, count(*) FROM tax", ("c", "count"), (), id="two_counts"),
    # bands: the cut points and labels are parameters, the key's before the WHERE's
    pytest.param(
        "SELECT CASE WHEN revenue < 1e5 THEN 'small' WHEN revenue < 1e6 THEN 'medium'"
        " ELSE 'large' END AS size, count(*), avg(tax_paid) FROM tax GROUP BY size",
        ("size", "count", "avg_tax_paid"),
        (100_000.0, "small", 1_000_000.0, "medium", "large"),
        id="band_case_measure",
    ),
    pytest.param(
        "SELECT CASE WHEN revenue <= 0 THEN 0 WHEN revenue <= 5e5 THEN 1 ELSE 2 END AS b,"
        " sum(tax_paid) FROM tax WHERE arrears = false GROUP BY 1",
        ("b", "sum_tax_paid"),
        (0, 0, 500_000.0, 1, 2, False),
        id="band_case_inclusive_numbers_where",
    ),
    pytest.param(
        "SELECT industry, CASE WHEN founded < '2010-01-01' THEN 'old' ELSE 'new' END AS age,"
        " count(*) FROM registry GROUP BY industry, age",
        ("industry", "age", "count"),
        (D("2010-01-01"), "old", "new"),
        id="band_case_date_with_dimension",
    ),
    pytest.param(
        "SELECT CASE WHEN headcount < 10 THEN 'micro' ELSE 'other' END,"
        " count(DISTINCT credit_code) FROM social_insurance"
        " GROUP BY CASE WHEN headcount < 10 THEN 'micro' ELSE 'other' END",
        ("band_headcount", "count_units"),
        (10, "micro", "other"),
        id="band_case_group_by_expression",
    ),
    pytest.param(
        "SELECT width_bucket(revenue, 0, 1e6, 10) AS w, median(revenue) FROM tax GROUP BY w",
        ("w", "median_revenue"),
        (0, 1_000_000.0, 11, 0, 10, 1_000_000.0, 0, 9),
        id="band_width_bucket",
    ),
    pytest.param(
        "SELECT CASE WHEN t.revenue < 1e6 THEN 'a' ELSE 'b' END AS b, avg(s.headcount)"
        " FROM tax t JOIN social_insurance s USING (credit_code)"
        " WHERE s.month >= '2023-01-01' GROUP BY b",
        ("b", "avg_headcount"),
        (1_000_000.0, "a", "b", D("2023-01-01")),
        id="band_join",
    ),
    pytest.param(
        "SELECT count(*) FROM tax GROUP BY width_bucket(tax_paid, -10, 1000, 2)",
        ("count",),
        (-10, 1000, 3, -10, 2, 1000, -10, 1),
        id="band_not_in_select",
    ),
]
