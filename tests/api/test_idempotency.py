"""Idempotency-Key on every mutating route (docs/ledger.md#idempotency-keys): one mechanism,
applied by the HTTP layer, so a route that forgets it cannot exist."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.app import auth

TENANT = {"name": "Key Lab", "kind": "research", "purpose_class": "public_welfare"}


def test_admin_calls_replay_their_first_answer(client: TestClient, keys: dict[str, str]) -> None:
    headers = {**auth(keys["admin"]), "Idempotency-Key": "tenant-1"}
    first = client.post("/v1/tenants", json=TENANT, headers=headers)
    again = client.post("/v1/tenants", json=TENANT, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    listed = client.get("/v1/tenants", headers=auth(keys["admin"])).json()["tenants"]
    assert [t["name"] for t in listed].count("Key Lab") == 1
    other = client.post("/v1/tenants", json={**TENANT, "name": "Other"}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def test_a_refusal_releases_the_key(client: TestClient, keys: dict[str, str]) -> None:
    headers = {**auth(keys["analyst"]), "Idempotency-Key": "try"}
    refused = client.post("/v1/tenants", json=TENANT, headers=headers)  # analysts may not
    assert refused.status_code == 403
    query = {"dataset": "enterprise", "sql": "SELECT COUNT(*) FROM tax", "epsilon": 0.1}
    answered = client.post("/v1/queries", json=query, headers=headers)  # the key is free again
    assert answered.status_code == 200, answered.text


def test_a_delete_replays_too(client: TestClient, keys: dict[str, str]) -> None:
    admin = auth(keys["admin"])
    tenant = client.post("/v1/tenants", json=TENANT, headers=admin).json()["id"]
    made = client.post(
        f"/v1/tenants/{tenant}/members", json={"name": "a", "role": "analyst"}, headers=admin
    ).json()
    issued = client.post(f"/v1/tenants/{tenant}/members/{made['id']}/keys", headers=admin).json()
    url = f"/v1/tenants/{tenant}/members/{made['id']}/keys/{issued['id']}"
    headers = {**admin, "Idempotency-Key": "revoke"}
    assert client.delete(url, headers=headers).status_code == 204
    again = client.delete(url, headers=headers)  # without the key: 404, the key is revoked
    assert again.status_code == 204 and again.headers["idempotent-replayed"] == "true"
    assert client.delete(url, headers=admin).status_code == 404


def test_every_mutating_operation_documents_the_header(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    keyed = [
        (method, path)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in ("post", "put", "patch", "delete") and operation.get("security")
    ]
    assert len(keyed) > 20
    for method, path in keyed:
        names = [p["name"] for p in paths[path][method].get("parameters", [])]
        assert names.count("Idempotency-Key") == 1, (method, path)


def test_a_too_long_key_is_refused_before_anything_runs(
    client: TestClient, keys: dict[str, str]
) -> None:
    headers = {**auth(keys["admin"]), "Idempotency-Key": "k" * 129}
    refused = client.post("/v1/tenants", json=TENANT, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_request")
    listed = client.get("/v1/tenants", headers=auth(keys["admin"])).json()["tenants"]
    assert "Key Lab" not in [t["name"] for t in listed]
