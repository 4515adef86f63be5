"""What auditors and analysts see: ledger filters and exports, sub-budgets in numbers and words."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from policies.accounting import Accounting
from sandbox.config import Settings
from sandbox.ledger import entries
from sandbox.ledger.service import Ledger
from sandbox.store import db
from tests.support.app import auth, engine_of, running_app
from tests.support.demo import demo_keys
from tests.support.ledger import local_ledger, new_analyst
from tests.support.store import LOCAL, seed_catalog

BEIJING = timezone(timedelta(hours=8))
NEW_YORK = timezone(timedelta(hours=-5))
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("ledger-view") / "data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)
    with running_app(settings) as test_client:
        yield test_client


def _ledger(client: TestClient) -> Ledger:
    ledger: Ledger = client.app.state.services.ledger  # type: ignore[attr-defined]
    return ledger


def _admin(client: TestClient) -> dict[str, str]:
    settings: Settings = client.app.state.services.settings  # type: ignore[attr-defined]
    return auth(demo_keys(settings.data_dir)["admin"])


def _query(
    client: TestClient, key: str, sql: str, epsilon: float, dataset: str = "enterprise"
) -> Any:
    body = {"dataset": dataset, "sql": sql, "epsilon": epsilon}
    return client.post("/v1/queries", json=body, headers=auth(key))


# -- time filters -------------------------------------------------------------------------------


def test_since_and_until_respect_the_utc_offset(
    backend: str, state_url: str, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = db.connect(state_url)
    try:
        seed_catalog(engine)
        analyst = new_analyst(engine, budget_micro=1_000_000, cap_micro=100_000, dataset="ds")
        ledger = local_ledger(engine)
        grant = ledger.grants.grant_by_id(LOCAL, analyst.grant_id)
        ledger.charges.reserve(analyst.actor, grant, "q" * 64, 1, 100_000, 0)
        everything = entries.entries(engine)
        assert len(everything) == 2  # the grant's credit and the charge
        first, last = everything[0].time, everything[-1].time

        # The same instants, written in UTC and in other offsets, select the same entries.
        for zone in (UTC, BEIJING, NEW_YORK):
            since = entries.entries(engine, since=(first - HOUR).astimezone(zone))
            assert len(since) == 2, zone
            assert entries.entries(engine, since=(last + HOUR).astimezone(zone)) == [], zone
            assert len(entries.entries(engine, until=(last + HOUR).astimezone(zone))) == 2, zone
            assert entries.entries(engine, until=(first - HOUR).astimezone(zone)) == [], zone
    finally:
        engine.dispose()


def test_ledger_api_time_filter_in_beijing_time(client: TestClient) -> None:
    analyst = new_analyst(engine_of(client), budget_micro=1_000_000, cap_micro=500_000)
    assert _query(client, analyst.key, "SELECT COUNT(*) FROM tax", 0.1).status_code == 200
    an_hour_ago = (datetime.now(UTC) - HOUR).astimezone(BEIJING).isoformat()
    response = client.get(
        "/v1/ledger",
        params={"tenant": analyst.tenant_id, "since": an_hour_ago},
        headers=_admin(client),
    )
    assert response.status_code == 200
    assert [e["entry"] for e in response.json()["entries"]] == ["credit:grant", "charge"]


# -- filters ------------------------------------------------------------------------------------


def test_ledger_filters_by_tenant_and_dataset(client: TestClient) -> None:
    engine = engine_of(client)
    ours = new_analyst(engine, budget_micro=2_000_000, cap_micro=1_000_000)
    _ledger(client).grants.create_grant(
        LOCAL,
        ours.tenant_id,
        "cps1988",
        Accounting.PURE,
        budget_micro=2_000_000,
        delta_pico=0,
        per_query_cap_micro=1_000_000,
    )
    theirs = new_analyst(engine, budget_micro=2_000_000, cap_micro=1_000_000)
    assert _query(client, ours.key, "SELECT COUNT(*) FROM tax", 0.2).status_code == 200
    assert (
        _query(client, ours.key, "SELECT COUNT(*) FROM cps1988", 0.3, "cps1988").status_code == 200
    )
    assert _query(client, theirs.key, "SELECT COUNT(*) FROM tax", 0.4).status_code == 200

    def charges(**params: str) -> list[tuple[str, str, float]]:
        response = client.get("/v1/ledger", params=params, headers=_admin(client))
        assert response.status_code == 200, response.text
        return [
            (e["tenant"], e["dataset"], e["amount"])
            for e in response.json()["entries"]
            if e["entry"] == "charge"
        ]

    assert charges(tenant=ours.tenant_id) == [
        (ours.tenant_id, "enterprise", 0.2),
        (ours.tenant_id, "cps1988", 0.3),
    ]
    assert charges(tenant=ours.tenant_id, dataset="cps1988") == [(ours.tenant_id, "cps1988", 0.3)]
    assert charges(tenant=theirs.tenant_id) == [(theirs.tenant_id, "enterprise", 0.4)]
    everyone = charges(dataset="enterprise")
    assert (ours.tenant_id, "enterprise", 0.2) in everyone
    assert (theirs.tenant_id, "enterprise", 0.4) in everyone


# -- sub-budgets --------------------------------------------------------------------------------


def _set_sub_budget(client: TestClient, tenant: str, grant: str, member: str, budget: float) -> Any:
    return client.put(
        f"/v1/tenants/{tenant}/grants/{grant}/members/{member}",
        json={"budget": budget},
        headers=_admin(client),
    )


def test_a_sub_budget_limits_its_member_and_spends_from_the_grant(client: TestClient) -> None:
    analyst = new_analyst(engine_of(client), budget_micro=5_000_000, cap_micro=1_000_000)
    put = _set_sub_budget(client, analyst.tenant_id, analyst.grant_id, analyst.member_id, 0.3)
    assert put.status_code == 200, put.text
    ok = _query(client, analyst.key, "SELECT COUNT(*) FROM tax", 0.2)
    assert ok.status_code == 200, ok.text
    budget = ok.json()["budget"]
    assert budget["member_budget"] == {"total": 0.3, "spent": 0.2, "remaining": pytest.approx(0.1)}
    assert budget["spent"] == 0.2 and budget["remaining"] == 4.8
    assert budget["queries_left_at_this_cost"] == 0  # 0.1 left of the sub-budget
    refused = _query(client, analyst.key, "SELECT COUNT(*) FROM utilities", 0.2)
    assert refused.status_code == 403
    assert refused.json()["code"] == "budget_exhausted"
    assert "sub-budget" in refused.json()["detail"]
    grant = _ledger(client).grants.grant_by_id(LOCAL, analyst.grant_id)
    assert grant.spent_micro == 200_000  # the refusal charged nothing, to either budget
    sub = _ledger(client).grants.member_budget(analyst.grant_id, analyst.member_id)
    assert sub is not None and sub.spent_micro == 200_000


def test_a_sub_budget_cannot_exceed_the_grant(client: TestClient) -> None:
    analyst = new_analyst(engine_of(client), budget_micro=1_000_000, cap_micro=500_000)
    put = _set_sub_budget(client, analyst.tenant_id, analyst.grant_id, analyst.member_id, 1.5)
    assert put.status_code == 400
    assert put.json()["code"] == "invalid_budget"


def test_lowering_a_sub_budget_below_spent_never_shows_negative_counts(
    client: TestClient,
) -> None:
    analyst = new_analyst(engine_of(client), budget_micro=2_000_000, cap_micro=1_000_000)
    args = (analyst.tenant_id, analyst.grant_id, analyst.member_id)
    assert _set_sub_budget(client, *args, 1.0).status_code == 200
    assert _query(client, analyst.key, "SELECT COUNT(*) FROM tax", 0.5).status_code == 200
    _set_sub_budget(client, *args, 0.2)  # refused, or accepted: either way no negative counts
    (view,) = client.get("/v1/budgets", headers=auth(analyst.key)).json()["budgets"]
    assert all(n >= 0 for n in view["queries_left_at"].values()), view["queries_left_at"]
    assert view["member_budget"]["remaining"] >= 0, view["member_budget"]
    assert "-" not in view["summary"].split("(")[0], view["summary"]
