"""The row cap: left out of the SQL only where the immutable data were measured to respect it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from policies.gate import check, parse, plan
from policies.gate.plan import row_cap_sql
from policies.loader import load_policy
from sandbox import catalog, store
from sandbox.config import Settings
from sandbox.executor import Executor, ExecutorLimits
from sandbox.queries import QueryService
from sandbox.workspace import build_workspace

POLICY_FILE = Path("tests/data/policy_small.toml")
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


def test_measured_per_version(tmp_path: Path) -> None:
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
    engine = store.connect(f"sqlite:///{tmp_path / 'state.db'}")
    catalog.create_zone(engine, catalog.Zone("z", "domain", "Z", "op", ""))
    catalog.add_version(engine, "z", POLICY_FILE.read_text(), path, {"firms": 2, "sales": 7})
    version = catalog.current(engine, "firms")
    with Executor(ExecutorLimits(workers=1, threads=1), tmp_path / "tmp") as executor:
        assert sorted(executor.run(path, row_cap_sql(POLICY))) == [("firms", 1), ("sales", 6)]
        service = QueryService(engine, executor, Settings(data_dir=tmp_path))
        assert service.within_row_caps(version, measure=False) == frozenset()
        assert service.within_row_caps(version, measure=True) == frozenset({"firms"})
