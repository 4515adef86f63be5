"""The operator's authorisation of a zone (docs/administration.md#operator-authorisation):
suspended, exited or outside its term, the zone's products refuse with ``zone_not_authorised``
and charge nothing; reads of the audit log still work; only the ``authority`` role changes it,
every change audited; exit deletes the zone's sealed versions and signs a certificate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from sandbox.access import members, tenants
from sandbox.access.model import MemberRole
from sandbox.canonical import b64url_decode, canonical_json
from sandbox.keys.signing import public_keys_from_document
from sandbox.store.schema import audit_entries, versions
from sandbox.vault.sealed import sealed_path
from tests.support.app import auth, engine_of
from tests.support.store import LOCAL, local_audit
from tests.support.verification import REVENUE, ask, events, grant

ZONE = "beijing-finance"
BASE = f"/v1/zones/{ZONE}/authorisation"
QUERY = {"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.1}


def authority_key(client: TestClient) -> str:
    engine = engine_of(client)
    tenant = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, "Authority", "government", "public_welfare"
    )
    _, key = members.create_member(
        engine, local_audit(engine), LOCAL, tenant, "authority", MemberRole.AUTHORITY
    )
    return key


def budgets(client: TestClient, keys: dict[str, str]) -> Any:
    found = client.get("/v1/budgets", headers=auth(keys["analyst"]))
    assert found.status_code == 200, found.text
    return found.json()


def refused(response: Any) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "zone_not_authorised"


def actions(client: TestClient) -> list[str]:
    with engine_of(client).connect() as con:
        return [r.action for r in con.execute(select(audit_entries.c.action))]


def test_a_suspended_zone_refuses_queries_and_verifications_and_charges_nothing(
    client: TestClient, keys: dict[str, str]
) -> None:
    authority = authority_key(client)
    consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    before = budgets(client, keys)
    shown = client.get(BASE, headers=auth(keys["admin"]))
    assert shown.status_code == 200 and shown.json()["state"] == "active", shown.text
    assert shown.json()["term_end"] is None  # the demo zone: open-ended

    suspended = client.post(f"{BASE}/suspend", headers=auth(authority))
    assert suspended.status_code == 200 and suspended.json()["state"] == "suspended"
    refused(client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"])))
    refused(client.post("/v1/queries/preview", json=QUERY, headers=auth(keys["analyst"])))
    verifier = keys["verifier"]
    refused(ask(client, verifier, "REV_TOLERANCE", consent, keys["subject_id"], REVENUE, salt))
    batch = client.post(
        "/v1/verifications/batch",
        json={
            "requests": [
                {
                    "template": "REV_TOLERANCE",
                    "subject": keys["subject_id"],
                    "consent": consent,
                    "purpose": "credit_underwriting",
                    "claim": REVENUE,
                    "salt": salt.hex(),
                }
            ]
        },
        headers=auth(verifier),
    )
    assert batch.status_code == 200, batch.text
    assert "zone_not_authorised" in batch.text
    assert budgets(client, keys) == before
    assert events(client) == []
    # the audit log still reads, and records the suspension
    audit = client.get("/v1/audit", headers=auth(keys["admin"]))
    assert audit.status_code == 200, audit.text
    assert "zone.suspend" in actions(client)

    again = client.post(f"{BASE}/suspend", headers=auth(authority))
    assert again.status_code == 409 and again.json()["state"] == "suspended"
    resumed = client.post(f"{BASE}/resume", headers=auth(authority))
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    assert "zone.resume" in actions(client)
    answered = client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"]))
    assert answered.status_code == 200, answered.text
    verified = ask(client, verifier, "REV_TOLERANCE", consent, keys["subject_id"], REVENUE, salt)
    assert verified.status_code == 200, verified.text


def test_past_its_term_or_outside_its_scope_the_zone_refuses(
    client: TestClient, keys: dict[str, str]
) -> None:
    authority = authority_key(client)
    now = datetime.now(UTC)
    past = {
        "term_start": (now - timedelta(days=400)).isoformat(),
        "term_end": (now - timedelta(days=1)).isoformat(),
    }
    put = client.put(BASE, json=past, headers=auth(authority))
    assert put.status_code == 200, put.text
    assert put.json()["state"] == "active"
    before = budgets(client, keys)
    refused(client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"])))
    assert budgets(client, keys) == before
    assert "zone.authorise" in actions(client)

    current = {"term_start": (now - timedelta(days=1)).isoformat(), "products": ["verification"]}
    assert client.put(BASE, json=current, headers=auth(authority)).status_code == 200
    refused(client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"])))
    renewed = {"term_start": (now - timedelta(days=1)).isoformat()}
    assert client.put(BASE, json=renewed, headers=auth(authority)).status_code == 200
    answered = client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"]))
    assert answered.status_code == 200, answered.text

    backwards = {**past, "term_end": (now - timedelta(days=500)).isoformat()}
    bad = client.put(BASE, json=backwards, headers=auth(authority))
    assert bad.status_code == 400 and bad.json()["field"] == "term_end"


@pytest.mark.parametrize("role", ["admin", "analyst", "verifier"])
def test_only_the_authority_role_changes_an_authorisation(
    client: TestClient, keys: dict[str, str], role: str
) -> None:
    key = keys[role]
    term = {"term_start": datetime.now(UTC).isoformat()}
    assert client.put(BASE, json=term, headers=auth(key)).status_code == 403
    for action in ("suspend", "resume", "exit"):
        answer = client.post(f"{BASE}/{action}", json={"confirm": ZONE}, headers=auth(key))
        assert answer.status_code == 403, (action, answer.text)
        assert answer.json()["code"] == "forbidden"
    assert client.get(BASE, headers=auth(keys["admin"])).json()["state"] == "active"


def test_exit_destroys_the_zones_versions_and_signs_what_it_destroyed(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    authority = authority_key(client)
    with engine_of(client).begin() as con:  # the copy's versions: its own files, not the demo's
        for row in con.execute(select(versions.c.dataset_id, versions.c.version)).all():
            con.execute(
                update(versions)
                .where(versions.c.dataset_id == row.dataset_id, versions.c.version == row.version)
                .values(path=str(sealed_path(data_dir / "workspaces", row.dataset_id, row.version)))
            )
    with engine_of(client).connect() as con:
        files = [Path(r.path) for r in con.execute(select(versions.c.path))]
    assert files and all(f.is_file() for f in files)
    unconfirmed = client.post(f"{BASE}/exit", json={"confirm": "other"}, headers=auth(authority))
    assert unconfirmed.status_code == 400 and unconfirmed.json()["field"] == "confirm"
    assert all(f.is_file() for f in files)
    exited = client.post(f"{BASE}/exit", json={"confirm": ZONE}, headers=auth(authority))
    assert exited.status_code == 200, exited.text
    body = exited.json()
    document = body["document"]
    assert document["zone"] == ZONE
    assert {d["file"] for d in document["destroyed"]} == {f.name for f in files}
    assert all(d["deleted"] for d in document["destroyed"])
    assert not any(f.exists() for f in files)
    public = public_keys_from_document(client.get("/v1/keys").json())[body["key"]]
    public.verify(b64url_decode(body["signature"]), canonical_json(document))  # raises if bad

    shown = client.get(BASE, headers=auth(keys["admin"])).json()
    assert shown["state"] == "exited" and shown["certificate"]["signature"] == body["signature"]
    assert client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"])).status_code in (
        403,
        404,
    )
    assert client.post(f"{BASE}/resume", headers=auth(authority)).status_code == 409
    again = client.post(f"{BASE}/exit", json={"confirm": ZONE}, headers=auth(authority))
    assert again.status_code == 409
    assert "zone.exit" in actions(client)
    assert client.get("/v1/audit/verify", headers=auth(keys["admin"])).status_code == 200


def test_a_suspended_zone_refuses_loads_into_its_datasets(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    from tests.support.onboarding import POLICY, ROWS, write_csv

    authority = authority_key(client)
    body = {"policy": POLICY, "source": write_csv(data_dir, "firms.csv", ROWS)}
    url = f"/v1/zones/{ZONE}/datasets/firms/versions"
    assert client.post(f"{BASE}/suspend", headers=auth(authority)).status_code == 200
    refused(client.post(url, json=body, headers=auth(keys["admin"])))
    assert client.post(f"{BASE}/resume", headers=auth(authority)).status_code == 200
    started = client.post(url, json=body, headers=auth(keys["admin"]))
    assert started.status_code == 202, started.text


def test_the_cli_moves_an_authorisation_on_a_data_directory(data_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from sandbox.cli.main import app

    def veil(*args: str) -> Any:
        result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    assert veil("zone", "suspend", "--zone", ZONE)["state"] == "suspended"
    assert veil("zone", "resume", "--zone", ZONE)["state"] == "active"
    set_term = veil(
        "zone",
        "authorise",
        "--zone",
        ZONE,
        "--term-start",
        "2026-01-01T00:00:00+08:00",
        "--term-end",
        "2031-01-01T00:00:00+08:00",
        "--product",
        "query",
    )
    assert set_term["products"] == ["query"] and set_term["term_end"].startswith("2030-12-31")
    assert veil("zone", "authorisation", "--zone", ZONE)["state"] == "active"
    exited = veil("zone", "exit", "--zone", ZONE, "--confirm", ZONE)
    assert exited["document"]["zone"] == ZONE and exited["signature"]
    # the copy's store names the demo's files, outside this data directory: left alone
    assert not any(d["deleted"] for d in exited["document"]["destroyed"])


def test_an_admin_creates_an_authority_member_over_http(
    client: TestClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    tenant = client.post(
        "/v1/tenants",
        json={"name": "Authority", "kind": "government", "purpose_class": "public_welfare"},
        headers=admin,
    ).json()["id"]
    made = client.post(
        f"/v1/tenants/{tenant}/members", json={"name": "a", "role": "authority"}, headers=admin
    )
    assert made.status_code == 201, made.text
    suspended = client.post(f"{BASE}/suspend", headers=auth(made.json()["api_key"]))
    assert suspended.status_code == 200, suspended.text
