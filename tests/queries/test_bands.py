"""Bands end to end: ``CASE`` and ``width_bucket`` group keys on the demo's cps1988, through the
real app (real DuckDB workers, real state store), and the release of every declared label.

The finding: "mean wage by education band" was impossible (``GROUP BY education`` is
``column_not_groupable``, ``CASE`` was ``unsupported_function``), so each band was a separately
charged query.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
from fastapi.testclient import TestClient

from policies.accounting import MICRO, Accounting
from policies.gate import check, parse, plan
from policies.loader import load_policy
from sandbox.noise import Cell, calibrate, release
from tests.support.app import auth

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "sandbox" / "demo" / "data"
LABELS = ["less than high school", "high school", "some college", "college"]
EDUCATION_BAND = (
    "SELECT CASE WHEN education < 12 THEN 'less than high school' "
    "WHEN education < 13 THEN 'high school' WHEN education < 16 THEN 'some college' "
    "ELSE 'college' END AS band, AVG(wage) AS mean_wage, COUNT(*) AS n "
    "FROM cps1988 GROUP BY band"
)


def query(client: TestClient, key: str, sql: str, epsilon: float = 0.5):
    body = {"dataset": "cps1988", "sql": sql, "epsilon": epsilon}
    return client.post("/v1/queries", json=body, headers=auth(key))


def test_mean_wage_by_education_band_is_one_query_with_a_row_per_label(client, keys):
    response = query(client, keys["analyst"], EDUCATION_BAND)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["name"] for c in body["columns"]] == ["band", "mean_wage", "n"]
    assert [c["kind"] for c in body["columns"]] == ["key", "mean", "count"]
    # every band holds thousands of people: none is suppressed, each label once, in its order
    assert body["suppressed_groups"] == 0
    assert [row["band"] for row in body["rows"]] == LABELS
    for row in body["rows"]:
        lo, hi = row["mean_wage"]["ci95"]
        assert 0.0 <= lo <= row["mean_wage"]["value"] <= hi <= 4000.0
        n_lo, n_hi = row["n"]["ci95"]
        assert n_lo <= row["n"]["value"] <= n_hi
        assert row["n"]["value"] > 1000


def test_width_bucket_releases_bucket_numbers_as_public_keys(client, keys):
    sql = (
        "SELECT width_bucket(wage, 0, 2000, 4) AS bucket, COUNT(*) AS n "
        "FROM cps1988 GROUP BY bucket ORDER BY bucket"
    )
    response = query(client, keys["analyst"], sql)
    assert response.status_code == 200, response.text
    body = response.json()
    buckets = [row["bucket"] for row in body["rows"]]
    # 0 (below 0) to 5 (2000 and over); bucket 0 is empty, so min_group_size may suppress it
    assert buckets == sorted(buckets)
    assert set(buckets) <= set(range(6)) and {1, 2, 3, 4, 5} <= set(buckets)
    assert len(buckets) + body["suppressed_groups"] == 6


def test_different_cut_points_are_a_different_query_not_the_cached_answer(client, keys):
    first = query(client, keys["analyst"], EDUCATION_BAND)
    assert first.status_code == 200, first.text
    moved = query(client, keys["analyst"], EDUCATION_BAND.replace("< 16", "< 15"))
    assert moved.status_code == 200, moved.text
    assert moved.json()["cached"] is False
    again = query(client, keys["analyst"], EDUCATION_BAND)
    assert again.json()["cached"] is True


def test_raw_measure_and_bad_bands_are_refused_free(client, keys):
    budget = client.get("/v1/budgets", headers=auth(keys["analyst"])).json()["budgets"]
    before = next(b["remaining"] for b in budget if b["dataset"] == "cps1988")
    raw = query(client, keys["analyst"], "SELECT education, AVG(wage) FROM cps1988 GROUP BY 1")
    assert raw.status_code == 400 and raw.json()["code"] == "column_not_groupable"
    no_else = query(
        client,
        keys["analyst"],
        "SELECT CASE WHEN education < 12 THEN 'secret' END AS b, AVG(wage) FROM cps1988 GROUP BY b",
    )
    assert no_else.status_code == 400
    problem = no_else.json()
    assert (problem["code"], problem["subject"]) == ("invalid_band", "else")
    assert "secret" not in no_else.text
    budget = client.get("/v1/budgets", headers=auth(keys["analyst"])).json()["budgets"]
    assert next(b["remaining"] for b in budget if b["dataset"] == "cps1988") == before


def test_an_empty_band_is_released_as_a_noisy_zero():
    """The released groups are exactly the declared labels, an empty band included (here with
    no ``min_group_size``, which would otherwise suppress it, as it does any public key)."""
    policy = dataclasses.replace(load_policy(DATA / "cps1988.toml"), min_group_size=0)
    sql = (
        "SELECT CASE WHEN wage < 0 THEN 'negative' WHEN wage < 500 THEN 'low' "
        "ELSE 'high' END AS b, COUNT(*) AS n FROM cps1988 GROUP BY b"
    )
    planned = plan(check(parse(sql), policy), policy, salt=7)
    assert planned.public_cells == (("negative",), ("low",), ("high",))
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE cps1988 AS SELECT row_number() OVER () AS person_id, * "
        f"FROM read_parquet('{DATA / 'cps1988.parquet'}')"
    )
    rows = con.execute(planned.sql, list(planned.params)).fetchall()
    assert {r[0] for r in rows} == {"low", "high"}  # the engine has no row for the empty band
    calibration = calibrate(planned, MICRO, Accounting.PURE, 0)
    released = release(planned, calibration, rows, {})
    assert [r["b"] for r in released.rows] == ["negative", "low", "high"]
    empty = released.rows[0]["n"]
    assert isinstance(empty, Cell) and empty.lower is not None and empty.lower <= 0
