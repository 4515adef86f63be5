"""Administration over HTTP: tenants, members, keys, grants and sub-budgets."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from sandbox import clock
from sandbox.access.keys import authenticate
from sandbox.config import Settings
from sandbox.store import db, schema
from tests.support.app import auth, running_app


def new_analyst(client: TestClient, admin: str, **grant: object) -> tuple[str, dict, dict]:
    tenant = client.post(
        "/v1/tenants",
        json={"name": "Lab", "kind": "research", "purpose_class": "public_welfare"},
        headers=auth(admin),
    ).json()
    member = client.post(
        f"/v1/tenants/{tenant['id']}/members",
        json={"name": "ana", "role": "analyst"},
        headers=auth(admin),
    ).json()
    body = {"dataset": "cps1988", "per_query_cap": 1.0, "delta": 1e-6, **grant}
    created = client.post(f"/v1/tenants/{tenant['id']}/grants", json=body, headers=auth(admin))
    assert created.status_code == 201, created.text
    return member["api_key"], tenant, created.json()


def ask(client: TestClient, key: str, sql: str, **budget: float):
    body = {"dataset": "cps1988", "sql": sql, **budget}
    return client.post("/v1/queries", json=body, headers=auth(key))


def test_admin_creates_tenant_member_and_grant_and_the_key_works(client, keys):
    key, _, grant = new_analyst(client, keys["admin"], epsilon=2.0)
    assert grant["total"] == 2.0
    response = ask(client, key, "SELECT COUNT(*) FROM cps1988", epsilon=0.5)
    assert response.status_code == 200, response.text
    assert response.json()["budget"]["remaining"] == 1.5
    budgets = client.get("/v1/budgets", headers=auth(key)).json()["budgets"]
    assert [b["dataset"] for b in budgets] == ["cps1988"]
    assert budgets[0]["summary"].startswith("1.5 ε left")
    assert budgets[0]["queries_left_at"]["0.5"] == 3


def test_revoked_key_is_refused(client, keys):
    key, tenant, _ = new_analyst(client, keys["admin"], epsilon=2.0)
    assert client.get("/v1/budgets", headers=auth(key)).status_code == 200  # now in the key cache
    members = client.get(f"/v1/tenants/{tenant['id']}/members", headers=auth(keys["admin"]))
    member_id = members.json()["members"][0]["id"]
    listing = client.get(
        f"/v1/tenants/{tenant['id']}/members/{member_id}/keys", headers=auth(keys["admin"])
    ).json()["keys"]
    revoked = client.delete(
        f"/v1/tenants/{tenant['id']}/members/{member_id}/keys/{listing[0]['id']}",
        headers=auth(keys["admin"]),
    )
    assert revoked.status_code == 204
    assert client.get("/v1/budgets", headers=auth(key)).status_code == 401


def test_member_sub_budget_caps_the_member(client, keys):
    key, tenant, grant = new_analyst(client, keys["admin"], epsilon=3.0)
    member_id = client.get(
        f"/v1/tenants/{tenant['id']}/members", headers=auth(keys["admin"])
    ).json()["members"][0]["id"]
    response = client.put(
        f"/v1/tenants/{tenant['id']}/grants/{grant['id']}/members/{member_id}",
        json={"budget": 0.6},
        headers=auth(keys["admin"]),
    )
    assert response.status_code == 200, response.text
    assert ask(client, key, "SELECT COUNT(*) FROM cps1988", epsilon=0.5).status_code == 200
    refused = ask(client, key, "SELECT AVG(wage) FROM cps1988", epsilon=0.5)
    assert refused.status_code == 403
    assert refused.json()["code"] == "budget_exhausted"
    budgets = client.get("/v1/budgets", headers=auth(key)).json()["budgets"][0]
    assert budgets["spent"] == 0.5  # the refused query spent nothing, on either budget
    assert budgets["member_budget"]["remaining"] == 0.1


def test_zcdp_grant_spends_rho_and_reports_tight_epsilon(client, keys):
    key, _, grant = new_analyst(
        client, keys["admin"], accounting="zcdp", rho=0.5, per_query_cap=0.2
    )
    assert grant["unit"] == "rho"
    assert grant["spent_as_epsilon"] is None  # a zCDP grant's member: no ε yet, so null
    response = ask(client, key, "SELECT region, AVG(wage) FROM cps1988 GROUP BY region", rho=0.1)
    assert response.status_code == 200, response.text
    assert response.json()["cost"]["rho"] <= 0.1
    view = client.get("/v1/budgets", headers=auth(key)).json()["budgets"][0]
    assert 0 < view["spent_as_epsilon"] < view["total_as_epsilon"]


def test_a_pure_grant_has_no_epsilon_conversion(client, keys):
    key, tenant, grant = new_analyst(client, keys["admin"], epsilon=2.0)
    (listed,) = client.get(
        f"/v1/tenants/{tenant['id']}/grants", headers=auth(keys["admin"])
    ).json()["grants"]
    (budget,) = client.get("/v1/budgets", headers=auth(key)).json()["budgets"]
    for body in (grant, listed, budget):
        assert "spent_as_epsilon" not in body and "total_as_epsilon" not in body
        assert body["next_refresh"] is None  # present, null: the grant does not refresh
    assert "member_budget" not in budget and "queries_left_at_this_cost" not in budget


def test_same_query_again_is_free(client, keys):
    key, _, _ = new_analyst(client, keys["admin"], epsilon=2.0)
    first = ask(client, key, "SELECT region, COUNT(*) FROM cps1988 GROUP BY region", epsilon=0.5)
    again = ask(client, key, "select region, count(*) from CPS1988 group by region", epsilon=0.5)
    assert again.json()["cached"] is True
    assert again.json()["rows"] == first.json()["rows"]
    assert again.json()["cost"]["epsilon"] == 0.0
    assert again.json()["budget"]["remaining"] == 1.5


def test_other_tenants_objects_are_not_found(client, keys):
    key, tenant, _ = new_analyst(client, keys["admin"], epsilon=1.0)
    _, other_tenant, _ = new_analyst(client, keys["admin"], epsilon=1.0)
    assert client.get(f"/v1/tenants/{other_tenant['id']}", headers=auth(key)).status_code == 404
    grants = client.get(f"/v1/tenants/{other_tenant['id']}/grants", headers=auth(key))
    assert grants.status_code == 404
    mine = client.get("/v1/tenants", headers=auth(key)).json()["tenants"]
    assert [t["id"] for t in mine] == [tenant["id"]]


def test_grant_validation(client, keys):
    tenant = client.get("/v1/tenants", headers=auth(keys["admin"])).json()["tenants"][0]["id"]
    for body, field in (
        ({"dataset": "cps1988", "per_query_cap": 1.0}, "epsilon"),
        ({"dataset": "cps1988", "epsilon": 1.0, "per_query_cap": 2.0}, "per_query_cap"),
        ({"dataset": "cps1988", "epsilon": -1.0, "per_query_cap": 1.0}, "epsilon"),
    ):
        response = client.post(
            f"/v1/tenants/{tenant}/grants", json=body, headers=auth(keys["admin"])
        )
        assert response.status_code == 400, body
        assert response.json()["field"] == field


def test_ledger_csv_for_auditors_only(client, keys):
    response = client.get("/v1/ledger?format=csv", headers=auth(keys["admin"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines()[0].startswith("time,entry,id")
    assert client.get("/v1/ledger", headers=auth(keys["analyst"])).status_code == 403


@pytest.mark.parametrize("ttl", [0.0, 2.0])
def test_key_revoked_by_another_process_stops_working_within_the_cache_time(
    settings: Settings, keys: dict[str, str], ttl: float
) -> None:
    """A revocation this process did not make reaches it when the key's cache entry expires
    (at once with ``auth_cache_s=0``)."""
    with running_app(settings, auth_cache_s=ttl) as client:
        key, _, _ = new_analyst(client, keys["admin"], epsilon=2.0)
        elsewhere = db.connect(settings.state_url)  # as another process would
        member = authenticate(elsewhere, f"Bearer {key}")
        assert member.key_id is not None
        assert client.get("/v1/budgets", headers=auth(key)).status_code == 200
        with elsewhere.begin() as con:  # what revoke_key does, in a process without our caches
            con.execute(
                update(schema.api_keys)
                .where(schema.api_keys.c.id == member.key_id)
                .values(revoked_at=clock.now())
            )
        if ttl:
            assert client.get("/v1/budgets", headers=auth(key)).status_code == 200
            time.sleep(ttl + 0.1)
        assert client.get("/v1/budgets", headers=auth(key)).status_code == 401
        elsewhere.dispose()
