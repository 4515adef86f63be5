"""End to end through the real app on the demo zone: real DuckDB workers, real state store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.app import auth

GROUPED = (
    "SELECT industry, COUNT(*) AS n, AVG(revenue) AS mean_revenue "
    "FROM tax JOIN registry USING (credit_code) WHERE year(month) = 2023 GROUP BY industry"
)


def query(client: TestClient, key: str, sql: str, epsilon: float = 0.5, **extra: object):
    body = {"dataset": "enterprise", "sql": sql, "epsilon": epsilon, **extra}
    return client.post("/v1/queries", json=body, headers=auth(key))


def budget_left(client: TestClient, key: str, dataset: str = "enterprise") -> float:
    budgets = client.get("/v1/budgets", headers=auth(key)).json()["budgets"]
    return next(b["remaining"] for b in budgets if b["dataset"] == dataset)


def test_grouped_query_releases_noisy_values_with_intervals(client, keys):
    response = query(client, keys["analyst"], GROUPED)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["name"] for c in body["columns"]] == ["industry", "n", "mean_revenue"]
    assert body["cost"]["epsilon"] <= 0.5
    assert body["cost"]["epsilon"] > 0.49
    assert body["budget"]["remaining"] == 10.0 - body["cost"]["epsilon"]
    industries = {row["industry"] for row in body["rows"]}
    assert len(industries) + body["suppressed_groups"] == 12  # every public key, released or not
    for row in body["rows"]:
        lo, hi = row["n"]["ci95"]
        assert lo <= row["n"]["value"] <= hi
        m_lo, m_hi = row["mean_revenue"]["ci95"]
        assert 0.0 <= m_lo <= m_hi <= 5_000_000.0


def test_preview_charges_nothing_and_states_cost(client, keys):
    before = budget_left(client, keys["analyst"])
    body = {"dataset": "enterprise", "sql": GROUPED, "epsilon": 1.0}
    response = client.post("/v1/queries/preview", json=body, headers=auth(keys["analyst"]))
    assert response.status_code == 200, response.text
    preview = response.json()
    assert "rows" not in preview
    assert preview["cost"]["epsilon"] <= 1.0
    assert preview["expected_ci95_half_width"]["n"] > 0
    assert budget_left(client, keys["analyst"]) == before


def test_raw_row_query_is_refused_and_charges_nothing(client, keys):
    before = budget_left(client, keys["analyst"])
    response = query(client, keys["analyst"], "SELECT * FROM tax")
    assert response.status_code == 400
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "raw_rows"
    assert budget_left(client, keys["analyst"]) == before


def test_over_budget_query_is_refused_and_nothing_is_charged_twice(client, keys):
    key = keys["analyst"]
    spent = 0.0
    for year in range(2001, 2006):  # the demo grant: 10 ε, at most 2 ε per query
        sql = f"SELECT COUNT(*) FROM registry WHERE founded >= '{year}-01-01'"
        response = query(client, key, sql, epsilon=2.0)
        assert response.status_code == 200, response.text
        spent += response.json()["cost"]["epsilon"]
    assert budget_left(client, key) == round(10.0 - spent, 6)
    refused = query(client, key, "SELECT COUNT(*) FROM registry", epsilon=2.0)
    assert refused.status_code == 403
    assert refused.json()["code"] == "budget_exhausted"
    assert refused.json()["remaining"] == round(10.0 - spent, 6)
    assert budget_left(client, key) == round(10.0 - spent, 6)


def test_per_query_cap(client, keys):
    response = query(client, keys["analyst"], "SELECT COUNT(*) FROM registry", epsilon=3.0)
    assert response.status_code == 403
    assert response.json()["code"] == "budget_exhausted"


def test_idempotency_key_charges_once(client, keys):
    key = keys["analyst"]
    headers = {**auth(key), "Idempotency-Key": "retry-1"}
    body = {"dataset": "enterprise", "sql": "SELECT COUNT(*) FROM registry", "epsilon": 0.1}
    answers = [client.post("/v1/queries", json=body, headers=headers).json() for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    assert budget_left(client, key) == round(10.0 - answers[0]["cost"]["epsilon"], 6)


def test_datasets_show_schema_and_public_policy_never_data(client, keys):
    listing = client.get("/v1/datasets", headers=auth(keys["analyst"])).json()
    assert {d["id"] for d in listing["datasets"]} == {"enterprise", "cps1988"}
    detail = client.get("/v1/datasets/enterprise", headers=auth(keys["analyst"])).json()
    tables = {t["name"]: t for t in detail["policy"]["tables"]}
    assert set(tables) == {"registry", "tax", "social_insurance", "utilities"}
    columns = {c["name"]: c for c in tables["tax"]["columns"]}
    assert columns["revenue"]["role"] == "measure"
    assert "name" not in {c["name"] for c in tables["registry"]["columns"]}  # hidden column
    text = str(detail)
    assert "min" not in columns["revenue"] and "max" not in columns["revenue"]
    assert "rows" not in text.lower() or "max_rows_per_unit" in text


def test_unknown_dataset_is_404(client, keys):
    response = client.get("/v1/datasets/nope", headers=auth(keys["analyst"]))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_missing_or_bad_key_is_401(client):
    assert client.get("/v1/datasets").status_code == 401
    response = client.get("/v1/datasets", headers=auth("veil_wrong"))
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_verifier_cannot_run_dp_queries(client, keys):
    response = query(client, keys["verifier"], "SELECT COUNT(*) FROM registry")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_bad_epsilon_is_refused_with_the_field(client, keys):
    for bad in (0, -1, 1e9):
        response = query(client, keys["analyst"], "SELECT COUNT(*) FROM registry", epsilon=bad)
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid_budget"
        assert response.json()["field"] == "epsilon"


def test_unknown_request_fields_are_refused(client, keys):
    response = query(client, keys["analyst"], "SELECT COUNT(*) FROM registry", secret=1)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


def test_private_keys_use_partition_selection_and_charge_delta(client, keys):
    sql = "SELECT month, COUNT(*) AS n FROM tax GROUP BY month"
    response = query(client, keys["analyst"], sql, epsilon=2.0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cost"]["delta"] > 0
    assert 0 < len(body["rows"]) <= 36


def test_quantile_and_stddev(client, keys):
    sql = "SELECT MEDIAN(revenue) AS med, STDDEV(revenue) AS sd FROM tax WHERE year(month) = 2024"
    response = query(client, keys["analyst"], sql, epsilon=1.0)
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    lo, hi = row["med"]["ci95"]
    assert lo <= row["med"]["value"] <= hi
    assert row["sd"]["value"] >= 0


def test_real_dataset_cps1988(client, keys):
    body = {
        "dataset": "cps1988",
        "sql": "SELECT region, AVG(wage) AS w FROM cps1988 GROUP BY region",
        "epsilon": 1.0,
    }
    response = client.post("/v1/queries", json=body, headers=auth(keys["analyst"]))
    assert response.status_code == 200, response.text
    assert {r["region"] for r in response.json()["rows"]} == {
        "midwest",
        "northeast",
        "south",
        "west",
    }


def test_healthz(client):
    assert client.get("/healthz").json()["status"] == "ok"


def test_idempotency_key_reused_for_another_request_is_refused(client, keys):
    headers = {**auth(keys["analyst"]), "Idempotency-Key": "k-1"}
    first = {"dataset": "enterprise", "sql": "SELECT COUNT(*) FROM registry", "epsilon": 0.1}
    assert client.post("/v1/queries", json=first, headers=headers).status_code == 200
    other = {**first, "sql": "SELECT COUNT(*) FROM tax"}
    response = client.post("/v1/queries", json=other, headers=headers)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"


def test_readme_example(client, keys):
    sql = (
        "SELECT district, COUNT(*) AS firms, AVG(registered_capital) AS mean_capital "
        "FROM registry GROUP BY district ORDER BY firms DESC"
    )
    response = query(client, keys["analyst"], sql, epsilon=0.5)
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    firms = [r["firms"]["value"] for r in rows]
    assert firms == sorted(firms, reverse=True)
    assert len(rows) + response.json()["suppressed_groups"] == 16  # Beijing's districts


def test_preview_says_whether_a_run_is_affordable(client, keys):
    body = {"dataset": "enterprise", "sql": "SELECT COUNT(*) FROM registry", "epsilon": 3.0}
    preview = client.post("/v1/queries/preview", json=body, headers=auth(keys["analyst"])).json()
    assert preview["affordable"] is False  # above the per-query cap of 2
    body["epsilon"] = 1.0
    preview = client.post("/v1/queries/preview", json=body, headers=auth(keys["analyst"])).json()
    assert preview["affordable"] is True


def test_boolean_epsilon_is_refused(client, keys):
    response = query(client, keys["analyst"], "SELECT COUNT(*) FROM registry", epsilon=True)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "epsilon"


def test_minimum_group_size_counts_units_not_rows(client, keys):
    """Every cell's guard is its noisy number of distinct enterprises."""
    sql = "SELECT year(month) AS y, COUNT(*) AS n FROM tax GROUP BY y"
    preview = client.post(
        "/v1/queries/preview",
        json={"dataset": "enterprise", "sql": sql, "epsilon": 1.0},
        headers=auth(keys["analyst"]),
    ).json()
    assert len(preview["cost"]["mechanisms"]) == 2  # the row count and the distinct-unit guard


def test_ungrouped_total_pays_nothing_for_min_group_size(client, keys):
    """The demo policy has ``min_group_size = 10``, but a query without GROUP BY has one row,
    released whatever the data: preview and run state the same cost (the whole ε, one mechanism)
    and the same interval, and even an empty selection is answered, not suppressed."""
    sql = "SELECT SUM(registered_capital) AS s FROM registry WHERE founded < '1900-01-01'"
    body = {"dataset": "enterprise", "sql": sql, "epsilon": 0.5}
    preview = client.post("/v1/queries/preview", json=body, headers=auth(keys["analyst"])).json()
    assert preview["cost"]["epsilon"] == 0.5 and preview["cost"]["delta"] == 0
    (mechanism,) = preview["cost"]["mechanisms"]
    assert mechanism["epsilon"] == 0.5
    response = query(client, keys["analyst"], sql, epsilon=0.5)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["cost"] == preview["cost"]
    assert answer["suppressed_groups"] == 0
    (row,) = answer["rows"]
    lo, hi = row["s"]["ci95"]
    if lo > 0:  # the interval of a non-negative sum is clipped at 0
        assert (hi - lo) / 2 == pytest.approx(preview["expected_ci95_half_width"]["s"])
    else:
        assert hi - row["s"]["value"] <= preview["expected_ci95_half_width"]["s"] * (1 + 1e-9)
    assert budget_left(client, keys["analyst"]) == 10.0 - 0.5
