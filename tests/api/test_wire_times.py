"""Every timestamp the GET endpoints of tenants, budgets, the ledger, the catalogue, health and the
audit log send is RFC 3339 in UTC with ``Z`` (signed documents included: they fix that format).

The demo app is given one of everything that carries a time: a query (a charge), a refreshing
grant (``next_refresh``), a revoked key (``revoked_at``), an auditor who opens sealed members, a
checkpoint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from sandbox.audit.checkpoint import Checkpointer
from tests.support.app import auth

# A date and a time of day: a timestamp, whatever follows (a plain date is not one).
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON value, with where it is."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from strings(item, f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{where}[{i}]")


def test_get_endpoints_send_utc_timestamps_with_z(client: TestClient, keys: dict[str, str]) -> None:
    admin = auth(keys["admin"])

    def post(path: str, body: dict[str, Any], headers: dict[str, str] = admin) -> Any:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code in (200, 201), response.text
        return response.json()

    query = {"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.1}
    post("/v1/queries", query, auth(keys["analyst"]))
    tenant = post(
        "/v1/tenants", {"name": "Lab", "kind": "research", "purpose_class": "public_welfare"}
    )["id"]
    member = post(f"/v1/tenants/{tenant}/members", {"name": "ana", "role": "analyst"})
    auditor = post(f"/v1/tenants/{tenant}/members", {"name": "aud", "role": "auditor"})
    post(
        f"/v1/tenants/{tenant}/grants",
        {"dataset": "cps1988", "epsilon": 1.0, "per_query_cap": 0.5, "refresh": "daily"},
    )
    extra = post(f"/v1/tenants/{tenant}/members/{member['id']}/keys", {})
    revoked = client.delete(
        f"/v1/tenants/{tenant}/members/{member['id']}/keys/{extra['id']}", headers=admin
    )
    assert revoked.status_code == 204
    services = client.app.state.services  # type: ignore[attr-defined]
    Checkpointer(services.engine, services.audit.keys.signing, 60).write(force=True)

    readers = {
        "admin": admin,
        "analyst": auth(member["api_key"]),
        "auditor": auth(auditor["api_key"]),
    }
    gets = [
        ("admin", "/v1/tenants"),
        ("admin", f"/v1/tenants/{tenant}"),
        ("admin", f"/v1/tenants/{tenant}/members"),
        ("admin", f"/v1/tenants/{tenant}/members/{member['id']}/keys"),
        ("admin", f"/v1/tenants/{tenant}/grants"),
        ("analyst", "/v1/budgets"),
        ("admin", "/v1/ledger"),
        ("admin", "/v1/zones"),
        ("admin", "/v1/datasets"),
        ("admin", "/v1/zones/beijing-finance/datasets"),
        ("admin", "/v1/datasets/enterprise"),
        ("admin", "/healthz"),
        ("auditor", "/v1/audit?limit=1000&decrypt=true"),
        ("admin", "/v1/audit/entries/1"),
        ("admin", "/v1/audit/entries/1/proof"),
        ("admin", "/v1/audit/checkpoints"),
        ("admin", "/v1/audit/consistency?first=1"),
        ("admin", "/v1/audit/keys"),
        ("admin", "/v1/audit/verify"),
    ]
    seen: list[str] = []
    for reader, path in gets:
        response = client.get(path, headers=readers[reader])
        assert response.status_code == 200, (path, response.text)
        for where, value in strings(response.json()):
            if TIMESTAMP.match(value):
                seen.append(f"{path}{where}")
                assert value.endswith("Z"), (path, where, value)
    # The walk met every kind of time it is about.
    for kind in ("keys[0].created_at", "keys[1].revoked_at", "next_refresh", "entries[0].time"):
        assert any(s.endswith(kind) or f".{kind}" in s for s in seen), kind
    assert any(".entry.at" in s for s in seen) and any(".document.at" in s for s in seen)
