"""Loads of data without an id and with missing-value codes, through the real onboarding path (a
load over HTTP into the demo data directory), then queried through the real app.

The real data set is ``cpssw8`` (CPS 1992–2004, one row per person and no person id;
/work/shared/data/SOURCES.md): the policy declares a generated row-number unit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from policies.accounting import Accounting
from sandbox import catalog
from sandbox.access import members, tenants
from sandbox.access.model import MemberRole
from sandbox.ledger.grants import Grants
from tests.support.app import auth, engine_of
from tests.support.onboarding import ZONE, sources, wait
from tests.support.store import LOCAL, local_audit

CPSSW8 = Path(__file__).resolve().parents[2] / "tests" / "data" / "cpssw8.parquet"

EARNINGS = """
id = "earnings"
title = "CPS earnings 1992-2004 (one row per person, no id)"
privacy_unit = "person"
max_groups_per_unit = 1
min_group_size = 10

[tables.cps]
description = "One row per person; the file has no person id."

[tables.cps.columns.person]
type = "integer"
role = "unit"
generated = "row_number"

[tables.cps.columns.earnings]
type = "float"
role = "measure"
lower = 0
upper = 100

[tables.cps.columns.gender]
type = "string"
role = "dimension"
keys = ["male", "female"]

[tables.cps.columns.age]
type = "integer"
role = "measure"
lower = 18
upper = 70

[tables.cps.columns.region]
type = "string"
role = "dimension"
keys = ["Northeast", "Midwest", "South", "West"]

[tables.cps.columns.education]
type = "integer"
role = "filter"
missing = [99]
"""

SURVEY = """
id = "survey"
title = "Survey"
privacy_unit = "person"
max_groups_per_unit = 1
min_group_size = 0

[tables.survey]

[tables.survey.columns.person]
type = "integer"
role = "unit"
generated = "row_number"

[tables.survey.columns.region]
type = "string"
role = "dimension"
keys = ["north", "south"]
missing = ["NA", "-"]

[tables.survey.columns.age]
type = "integer"
role = "measure"
lower = 0
upper = 97
missing = [98, 99]
max_null_rate = 0.6
"""


def start(client: TestClient, key: str, dataset: str, policy: str, source: str) -> dict:
    url = f"/v1/zones/{ZONE}/datasets/{dataset}/versions"
    started = client.post(url, json={"policy": policy, "source": source}, headers=auth(key))
    assert started.status_code == 202, started.text
    return wait(client, key, started.json()["url"])


def analyst_with_grant(client: TestClient, dataset: str) -> str:
    engine = engine_of(client)
    audit = local_audit(engine)
    lab = tenants.create_tenant(engine, audit, LOCAL, "Lab", "research", "public_welfare")
    _, key = members.create_member(engine, audit, LOCAL, lab, "a", MemberRole.ANALYST)
    Grants(engine, audit).create_grant(
        LOCAL, lab, dataset, Accounting.PURE, budget_micro=10_000_000, delta_pico=0,
        per_query_cap_micro=2_000_000,
    )  # fmt: skip
    return key


def query(client: TestClient, key: str, sql: str) -> dict:
    body = {"dataset": "earnings", "sql": sql, "epsilon": 1.0}
    response = client.post("/v1/queries", json=body, headers=auth(key))
    return {"status": response.status_code, **response.json()}


def test_a_real_data_set_without_an_id_loads_and_answers_dp_queries(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    shutil.copy(CPSSW8, sources(data_dir) / "cpssw8.parquet")
    loaded = start(client, keys["admin"], "earnings", EARNINGS, "cpssw8.parquet")
    assert (loaded["state"], loaded["version"]) == ("ready", 1), loaded
    assert loaded["row_counts"] == {"cps": 61_395}
    report = client.get("/v1/datasets/earnings/quality", headers=auth(keys["admin"])).json()
    (table,) = report["report"]["tables"]
    # one generated unit per row: 1 row per unit holds, so the row caps hold as measured
    assert (table["units"], table["duplicate_units"], table["units_over_bound"]) == (61_395, 0, 0)
    assert catalog.current(engine_of(client), "earnings").within_row_caps == frozenset({"cps"})

    analyst = analyst_with_grant(client, "earnings")
    grouped = query(
        client,
        analyst,
        "SELECT region, COUNT(*) AS n, AVG(earnings) AS mean FROM cps GROUP BY region",
    )
    assert grouped["status"] == 200, grouped
    counts = {row["region"]: row["n"]["value"] for row in grouped["rows"]}
    true = {"South": 18_963, "West": 14_925, "Northeast": 12_371, "Midwest": 15_136}
    assert set(counts) == set(true)
    for region, n in counts.items():
        assert abs(n - true[region]) < 100  # ε = 1 spread over two statistics
    filtered = query(client, analyst, "SELECT COUNT(*) AS n FROM cps WHERE education >= 16")
    assert filtered["status"] == 200, filtered
    # the generated unit is never returned, grouped by, or compared with a literal
    for sql, rule in [
        ("SELECT person FROM cps", "raw_rows"),
        ("SELECT person, COUNT(*) FROM cps GROUP BY person", "unit_not_allowed"),
        ("SELECT COUNT(*) FROM cps WHERE person = 5", "unit_filter"),
        ("SELECT SUM(person) FROM cps", "column_not_aggregatable"),
    ]:
        refused = query(client, analyst, sql)
        assert (refused["status"], refused["rule"]) == (400, rule), (sql, refused)


def test_missing_codes_become_null_and_are_counted_in_the_report(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    text = "region,age\nnorth,34\n-,98\nNA,51\nsouth,99\nnorth,\n"
    (sources(data_dir) / "survey.csv").write_text(text)
    loaded = start(client, admin, "survey", SURVEY, "survey.csv")
    assert loaded["state"] == "ready", loaded
    report = client.get("/v1/datasets/survey/quality", headers=auth(admin)).json()
    columns = {c["name"]: c for c in report["report"]["tables"][0]["columns"]}
    assert {n: c["missing_codes"] for n, c in columns.items()} == {
        "person": 0,
        "region": 2,
        "age": 2,
    }
    assert (columns["region"]["nulls"], columns["age"]["nulls"]) == (2, 3)
    page = client.get("/v1/datasets/survey/quality?format=html", headers=auth(admin)).text
    assert "missing codes" in page
    # a code of the wrong type is refused up front, naming the key and the rule
    bad = SURVEY.replace("missing = [98, 99]", 'missing = [98, "n/a"]')
    url = f"/v1/zones/{ZONE}/datasets/survey/versions"
    refused = client.post(url, json={"policy": bad, "source": "survey.csv"}, headers=auth(admin))
    assert refused.status_code == 422
    problem = refused.json()
    assert (problem["code"], problem["key"], problem["rule"]) == (
        "invalid_policy",
        "tables.survey.columns.age.missing",
        "missing_type",
    )
    # codes count toward the null rate: 4 of 5 ages null is above the rule's 0.6
    more = text.replace("north,34", "north,98")
    (sources(data_dir) / "survey2.csv").write_text(more)
    failed = start(client, admin, "survey", SURVEY, "survey2.csv")
    assert failed["state"] == "failed"
    assert failed["quality"]["failed_rules"][0]["rule"] == "max_null_rate"
