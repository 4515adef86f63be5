"""The row cap: left out of the SQL only where the immutable data were measured to respect it,
and otherwise keeping exactly the rows of one window over every unit, in one or two levels."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from connectors.sink import build_workspace, within_row_caps
from policies.gate import check, parse, plan
from policies.gate.plan import StatKind, row_cap_sql
from policies.loader import load_policy
from sandbox import catalog
from sandbox.api.responses.queries import ANSWER_JSON
from sandbox.config import Settings
from sandbox.engine.executor import Executor
from sandbox.engine.limits import ExecutorLimits
from sandbox.ledger.service import Ledger
from sandbox.queries import QueryService
from sandbox.store import db
from tests.support.data import data_path
from tests.support.store import LOCAL, local_audit

POLICY_FILE = data_path("policy_small.toml")
POLICY = load_policy(POLICY_FILE)
SQL = "SELECT late, COUNT(*), SUM(amount) FROM sales GROUP BY late"


def test_window_only_when_a_table_is_not_known_to_respect_its_cap() -> None:
    checked = check(parse(SQL), POLICY)
    windowed = plan(checked, POLICY, salt=1)
    light = plan(checked, POLICY, salt=1, within_row_caps=frozenset({"sales"}))
    assert "row_number()" in windowed.sql
    assert "row_number()" not in light.sql
    assert light.statistics == windowed.statistics  # the same sensitivities, so the same cost
    joined = check(
        parse(SQL.replace("FROM sales", "FROM sales JOIN firms USING (firm_id)")), POLICY
    )
    assert "row_number()" in plan(joined, POLICY, within_row_caps=frozenset({"sales"})).sql


def test_a_join_counts_units_in_two_levels() -> None:
    joined = check(
        parse(SQL.replace("FROM sales", "FROM sales JOIN firms USING (firm_id)")), POLICY
    )
    guarded = plan(joined, POLICY, salt=1)  # min_group_size 5: the distinct-unit guard
    assert guarded.guard is not None
    assert "per AS" in guarded.sql and "count(DISTINCT" not in guarded.sql
    unguarded = plan(joined, dataclasses.replace(POLICY, min_group_size=0), salt=1)
    assert unguarded.guard is None and "per AS" not in unguarded.sql
    assert [s.sql for s in unguarded.statistics] == [
        s.sql for s in guarded.statistics if s.kind != StatKind.COUNT_UNITS
    ]
    one_table = plan(check(parse(SQL), POLICY), POLICY, salt=1)
    assert "per AS" not in one_table.sql and "count(DISTINCT __unit)" in one_table.sql


def _workspace(tmp_path: Path) -> Path:
    firms = pa.table(
        {
            "firm_id": ["a", "b"],
            "district": ["a", "b"],
            "sector": ["x", "y"],
            "founded": pa.array([None, None], pa.date32()),
            "capital": [1.0, 2.0],
            "rating": [1, 2],
            "name": ["n1", "n2"],
        }
    )
    sales = pa.table(  # firm "a" has 6 rows: above its declared cap of 4
        {
            "firm_id": ["a"] * 6 + ["b"],
            "month": pa.array([None] * 7, pa.date32()),
            "amount": [1] * 7,
            "late": [True] * 7,
        }
    )
    path = tmp_path / "ws.duckdb"
    build_workspace(path, {"firms": firms, "sales": sales})
    return path


def test_measured_when_built_and_kept_with_the_version(tmp_path: Path) -> None:
    """The tables that keep their row caps are measured on the built workspace and registered
    with its version, so every query on it is planned once, before its charge."""
    path = _workspace(tmp_path)
    capped = within_row_caps(path, POLICY)
    assert capped == frozenset({"firms"})
    engine = db.connect(f"sqlite:///{tmp_path / 'state.db'}")
    audit = local_audit(engine)
    catalog.create_zone(engine, audit, LOCAL, catalog.Zone("z", "domain", "Z", "op", ""))
    catalog.add_version(
        engine,
        audit,
        LOCAL,
        "z",
        POLICY_FILE.read_text(),
        path,
        {"firms": 2, "sales": 7},
        within_row_caps=capped,
    )
    assert catalog.current(engine, "firms").within_row_caps == capped


def test_a_version_from_before_is_measured_once_at_its_first_query(tmp_path: Path) -> None:
    path = _workspace(tmp_path)
    engine = db.connect(f"sqlite:///{tmp_path / 'state.db'}")
    audit = local_audit(engine)
    catalog.create_zone(engine, audit, LOCAL, catalog.Zone("z", "domain", "Z", "op", ""))
    catalog.add_version(
        engine, audit, LOCAL, "z", POLICY_FILE.read_text(), path, {"firms": 2, "sales": 7}
    )
    version = catalog.current(engine, "firms")
    assert version.within_row_caps is None  # not measured: every table keeps its window
    with Executor(ExecutorLimits(workers=1, threads=1), tmp_path / "tmp") as executor:
        assert sorted(executor.run(path, row_cap_sql(POLICY))) == [("firms", 1), ("sales", 6)]
        service = QueryService(
            engine, executor, Settings(data_dir=tmp_path), Ledger(engine, audit), audit, ANSWER_JSON
        )
        service.measure_row_caps(version, path)
    assert catalog.current(engine, "firms").within_row_caps == frozenset({"firms"})


# --- a table that breaks its cap: the heavy-units plan keeps exactly the old window's rows ----

SALT = 7
# The row cap as it was first written: one window over every unit (the reference semantics). The
# planned SQL must keep the same rows: each unit's first 4 rows in hash(keys, values, salt) order,
# after the group cap (a unit's first 3 groups in hash(keys, salt), keys order).
CASES = [
    (
        "SELECT COUNT(*), COUNT(DISTINCT firm_id), SUM(amount) FROM sales",
        "WITH src AS (SELECT firm_id AS u, amount AS v FROM sales), "
        "bnd AS (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY u "
        "ORDER BY hash(v, 7)) AS r FROM src) WHERE r <= 4) "
        "SELECT count(*) AS count, count(DISTINCT u) AS count_units, "
        "sum(least(greatest(v, 0), 100)) AS sum FROM bnd",
        ("count", "count_units", "sum"),
    ),
    (
        "SELECT month, COUNT(*), SUM(amount) FROM sales GROUP BY month",
        "WITH src AS (SELECT firm_id AS u, month AS k, amount AS v FROM sales), "
        "grp AS (SELECT * FROM (SELECT *, dense_rank() OVER (PARTITION BY u "
        "ORDER BY hash(k, 7), k) AS g FROM src) WHERE g <= 3), "
        "bnd AS (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY u "
        "ORDER BY hash(k, v, 7)) AS r FROM grp) WHERE r <= 4) "
        "SELECT k, count(*) AS count, count(DISTINCT u) AS count_units, "
        "sum(least(greatest(v, 0), 100)) AS sum FROM bnd GROUP BY k",
        ("count", "count_units", "sum"),
    ),
    (
        "SELECT district, COUNT(*), AVG(amount) FROM sales JOIN firms USING (firm_id) "
        "GROUP BY district",
        "WITH src AS (SELECT s.firm_id AS u, f.district AS k, s.amount AS v "
        "FROM sales AS s JOIN firms AS f ON s.firm_id = f.firm_id), "
        "grp AS (SELECT * FROM (SELECT *, dense_rank() OVER (PARTITION BY u "
        "ORDER BY hash(k, 7), k) AS g FROM src) WHERE g <= 3), "
        "bnd AS (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY u "
        "ORDER BY hash(k, v, 7)) AS r FROM grp) WHERE r <= 4) "
        "SELECT k, count(*) AS count, count(DISTINCT u) AS count_units, "
        "sum(least(greatest(v, 0), 100)) AS sum, count(v) AS count_column FROM bnd GROUP BY k",
        ("count", "count_units", "sum", "count_column"),
    ),
    (  # no rows at all: in two levels too, the counts are 0 and the sum NULL
        "SELECT COUNT(*), SUM(amount) FROM sales JOIN firms USING (firm_id) WHERE amount > 1000",
        "SELECT count(*) AS count, count(DISTINCT s.firm_id) AS count_units, "
        "sum(least(greatest(s.amount, 0), 100)) AS sum "
        "FROM sales AS s JOIN firms AS f ON s.firm_id = f.firm_id WHERE s.amount > 1000",
        ("count", "count_units", "sum"),
    ),
]
REFERENCE_COLUMNS = {
    StatKind.COUNT: "count",
    StatKind.COUNT_UNITS: "count_units",
    StatKind.SUM: "sum",
    StatKind.COUNT_COLUMN: "count_column",
}


def cap_breaking_tables() -> dict[str, pa.Table]:
    """30 firms with 1-9 sales rows each (cap 4), identical rows, amounts above the clamp, and
    rows without a firm (one NULL unit, which the window treats as one partition)."""
    ids = [f"f{i:02d}" for i in range(30)]
    firm_id: list[str | None] = []
    month, amount, late = [], [], []
    for i, fid in enumerate(ids):
        for j in range(i % 9 + 1):
            firm_id.append(fid)
            month.append(date(2021, 1 + (i + j % 4) % 12, 1))  # up to 4 groups: cap 3
            amount.append((i * 37 + j * 11) % 150)
            late.append((i + j) % 2 == 0)
    for _ in range(3):  # three identical rows: ties in the hash order
        firm_id.append("f03")
        month.append(date(2021, 6, 1))
        amount.append(42)
        late.append(True)
    for j in range(6):
        firm_id.append(None)
        month.append(date(2021, 1 + j, 1))
        amount.append(10 * j)
        late.append(False)
    sales = pa.table(
        {
            "firm_id": pa.array(firm_id, pa.string()),
            "month": pa.array(month, pa.date32()),
            "amount": pa.array(amount, pa.int64()),
            "late": late,
        }
    )
    firms = pa.table(
        {
            "firm_id": ids,
            "district": ["abc"[i % 3] for i in range(30)],
            "sector": ["x"] * 30,
            "founded": pa.array([None] * 30, pa.date32()),
            "capital": [1.0] * 30,
            "rating": [1] * 30,
            "name": ids,
        }
    )
    return {"firms": firms, "sales": sales}


def by_cell(
    rows: list[tuple[object, ...]], keys: int, names: list[str]
) -> dict[tuple[object, ...], dict[str, object]]:
    return {row[:keys]: dict(zip(names, row[keys:], strict=True)) for row in rows}


def test_a_table_above_its_cap_gets_the_rows_of_the_full_window(tmp_path: Path) -> None:
    path = tmp_path / "ws.duckdb"
    build_workspace(path, cap_breaking_tables())
    with Executor(ExecutorLimits(workers=1, threads=1), tmp_path / "tmp") as executor:
        most = dict(executor.run(path, row_cap_sql(POLICY)))
        assert most["sales"] > 4  # the table breaks its cap; the cap is what is tested
        for sql, reference, names in CASES:
            planned = plan(check(parse(sql), POLICY), POLICY, salt=SALT)
            assert "heavy AS" in planned.sql and not planned.within_row_caps
            keys = len(planned.keys)
            got = by_cell(
                executor.run(path, planned.sql, list(planned.params)),
                keys,
                [s.name for s in planned.statistics],
            )
            want_rows = executor.run(path, reference)
            want = by_cell(want_rows, keys, list(names))
            assert got.keys() == want.keys(), sql
            for cell, values in got.items():
                for stat in planned.statistics:
                    expected = want[cell][REFERENCE_COLUMNS[stat.kind]]
                    assert values[stat.name] == expected, (sql, cell, stat.kind)
            if "WHERE r <= 4" in reference:  # and the cap changed the answer
                unbounded = reference.replace("WHERE r <= 4", "WHERE r <= 1000")
                assert executor.run(path, unbounded) != want_rows, sql


def test_the_heavy_units_window_stays_a_window() -> None:
    """DuckDB 2.0 rewrites ``row_number() OVER (… ORDER BY x) <= n`` into a per-unit top-N
    aggregate that cannot spill; the planned window must not match that rewrite."""
    checked = check(parse(CASES[1][0]), POLICY)
    sql = plan(checked, POLICY, salt=SALT).sql
    # the pruning form filters on the window's rank, the shape DuckDB rewrites
    pruning = plan(checked, POLICY, salt=SALT, pruning=True).sql
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE sales (firm_id VARCHAR, month DATE, amount BIGINT, late BOOLEAN)")
        explained = "".join(str(row[1]) for row in con.execute("EXPLAIN " + sql).fetchall())
        old = "".join(
            str(row[1])
            for row in con.execute("EXPLAIN " + pruning.replace(" NULLS FIRST", "")).fetchall()
        )
    finally:
        con.close()
    assert "arg_min" in old  # the rewrite still exists, so this test can see it
    assert "Window" in explained and "arg_min" not in explained
