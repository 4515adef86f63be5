"""The audit log through the real app: every request kind leaves an entry (a service's own, in its
transaction, or the middleware's), sensitive members are sealed, only auditors open them,
checkpoints are signed on a timer even when idle, and ``GET /v1/audit/verify``, proofs and the
``veil audit`` / ``veil keys rotate`` commands work end to end (also against a live server)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from sandbox.access import members, tenants
from sandbox.access.model import MemberRole
from sandbox.audit.checkpoint import Checkpointer, verify_inclusion_proof
from sandbox.audit.entry import GENESIS
from sandbox.audit.store import read_entries
from sandbox.cli.main import app as cli
from sandbox.config import Settings
from sandbox.keys.signing import public_keys_from_document
from sandbox.store.schema import audit_checkpoints, audit_entries
from sandbox.verification.receipts import commit, new_salt
from tests.support.app import auth, engine_of, running_app
from tests.support.store import LOCAL, local_audit

PURPOSE = "credit_underwriting"
QUERY = {"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.1}


def head(client: TestClient) -> int:
    with engine_of(client).connect() as con:
        return int(con.execute(select(func.coalesce(func.max(audit_entries.c.seq), 0))).scalar())


def since(client: TestClient, seq: int) -> list[dict[str, Any]]:
    with engine_of(client).connect() as con:
        return [r.entry for r in read_entries(con, after=seq, limit=1000)]


def new_member(client: TestClient, role: MemberRole) -> str:
    engine = engine_of(client)
    tenant = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, f"{role} office", "government", "public_welfare"
    )
    _, key = members.create_member(engine, local_audit(engine), LOCAL, tenant, f"{role} one", role)
    return key


def consent(client: TestClient, keys: dict[str, str], claim: int, salt: bytes) -> str:
    response = client.post(
        "/v1/consents",
        json={
            "tenant": keys["verifier_tenant"],
            "template": "REV_TOLERANCE",
            "claim_commitment": commit(claim, salt),
            "purpose": PURPOSE,
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        headers=auth(keys["subject"]),
    )
    assert response.status_code == 201, response.text
    consent_id: str = response.json()["id"]
    return consent_id


@pytest.fixture(scope="module")
def world(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir = tmp_path_factory.mktemp("audit-api") / "data"
    shutil.copytree(demo_dir, data_dir)
    keys = json.loads((data_dir / "demo-keys.json").read_text())
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)
    with running_app(settings) as client:
        keys["auditor"] = new_member(client, MemberRole.AUDITOR)
        yield client, keys


def test_every_request_kind_makes_an_entry(world: Any) -> None:
    client, keys = world
    salt = new_salt()
    consent_id = consent(client, keys, 4_000_000, salt)
    verification = {
        "template": "REV_TOLERANCE",
        "subject": keys["subject_id"],
        "claim": 4_000_000,
        "salt": salt.hex(),
        "consent": consent_id,
        "purpose": PURPOSE,
    }
    tenant_body = {"name": "Audited Bank", "kind": "bank", "purpose_class": "commercial"}
    # (method, path, body, caller, the entries it must leave: (kind, action, status, code))
    cases: list[tuple[str, str, Any, str | None, list[tuple[str, str, int | None, str]]]] = [
        ("POST", "/v1/queries", QUERY, "analyst",
         [("query", "query.charge", None, "ok"), ("query", "query.settle", None, "ok")]),
        ("POST", "/v1/queries", QUERY, "analyst", [("request", "http", 200, "ok")]),  # cached
        ("POST", "/v1/queries/preview", QUERY, "analyst", [("request", "http", 200, "ok")]),
        ("POST", "/v1/queries", {**QUERY, "sql": "SELECT * FROM registry"}, "analyst",
         [("request", "http", 400, "raw_rows")]),
        ("POST", "/v1/queries", QUERY, "verifier", [("request", "http", 403, "forbidden")]),
        ("GET", "/v1/budgets", None, "analyst", [("request", "http", 200, "ok")]),
        ("GET", "/v1/budgets", None, None, [("request", "http", 401, "unauthorized")]),
        ("GET", "/v1/no-such-route", None, "analyst", [("request", "http", 404, "not_found")]),
        ("POST", "/v1/tenants", {"name": ""}, "admin",
         [("request", "http", 422, "invalid_request")]),
        ("POST", "/v1/tenants", tenant_body, "admin", [("admin", "tenant.create", None, "ok")]),
        ("POST", "/v1/verifications", verification, "verifier",
         [("verification", "verification.decide", None, "ok")]),
        ("POST", "/v1/verifications", {**verification, "consent": "cns_0000000000000000"},
         "verifier", [("verification", "verification.decide", None, "consent_refused")]),
        ("GET", "/v1/ledger", None, "auditor", [("request", "http", 200, "ok")]),
        ("GET", "/healthz", None, None, []),  # health checks are not recorded
    ]  # fmt: skip
    for method, path, body, caller, expected in cases:
        before = head(client)
        headers = auth(keys[caller]) if caller else {}
        response = client.request(method, path, json=body, headers=headers)
        found = [(e["kind"], e["action"], e["status"], e["code"]) for e in since(client, before)]
        assert found == expected, (method, path, caller, response.status_code, found)
        for entry in since(client, before):
            request = entry["request"]
            assert request["method"] == method
            assert request["id"] == response.headers["x-request-id"]
            # an unrouted request never reaches authentication: nobody is identified
            known = caller is not None and path != "/v1/no-such-route"
            assert entry["actor"]["type"] == ("member" if known else "anonymous"), path
    # the admin's tenant creation names the route template, the actor and its key
    created = [e for e in since(client, 0) if e["action"] == "tenant.create"][-1]
    assert created["request"]["route"] == "/v1/tenants"
    assert created["actor"]["role"] == "admin" and created["actor"]["key"].startswith("key_")
    assert created["tenant"].startswith("ten_")


def test_sensitive_members_are_sealed_and_only_auditors_open_them(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, keys = world
    caplog.set_level(logging.DEBUG)
    marker_sql = "SELECT * FROM registry WHERE credit_code = 'SQLMARKER7731'"
    marker_subject = "91SUBJECTMARKER7731"
    before = head(client)
    client.post("/v1/queries", json={**QUERY, "sql": marker_sql}, headers=auth(keys["analyst"]))
    client.post(
        "/v1/verifications",
        json={
            "template": "REV_TOLERANCE",
            "subject": marker_subject,
            "claim": 77310001,
            "salt": new_salt().hex(),
            "consent": "cns_0000000000000000",
            "purpose": PURPOSE,
        },
        headers=auth(keys["verifier"]),
    )
    data_dir = Path(client.app.state.services.settings.data_dir)  # type: ignore[attr-defined]
    stored = b"".join(p.read_bytes() for p in data_dir.glob("state.db*"))
    for marker in (b"SQLMARKER7731", b"SUBJECTMARKER7731", b"77310001"):
        assert marker not in stored, marker
        assert marker.decode() not in caplog.text, marker  # nor in any log line
    # admins and analysts may not open sealed members; analysts may not read the log at all
    assert client.get("/v1/audit", headers=auth(keys["analyst"])).status_code == 403
    plain = client.get(f"/v1/audit?after={before}", headers=auth(keys["admin"]))
    assert plain.status_code == 200 and "unsealed" not in plain.text
    assert "SQLMARKER7731" not in plain.text
    denied = client.get(f"/v1/audit?after={before}&decrypt=true", headers=auth(keys["admin"]))
    assert denied.status_code == 403
    opened = client.get(f"/v1/audit?after={before}&decrypt=true", headers=auth(keys["auditor"]))
    assert opened.status_code == 200
    unsealed = [e["unsealed"] for e in opened.json()["entries"] if "unsealed" in e]
    assert {"sql": marker_sql, "client": "testclient"} in unsealed
    assert {"subject": marker_subject, "claim": 77310001, "client": "testclient"} in unsealed
    # opening them is itself an entry
    last = since(client, head(client) - 1)[-1]
    assert last["action"] == "audit.decrypt" and last["actor"]["role"] == "auditor"


def test_verify_proofs_and_keys_over_http(world: Any) -> None:
    client, keys = world
    reader = auth(keys["auditor"])
    services = client.app.state.services  # type: ignore[attr-defined]
    log = services.audit
    assert log is not None
    Checkpointer(services.engine, log.keys.signing, 60).write(force=True)
    report = client.get("/v1/audit/verify", headers=reader).json()
    assert report["ok"], report["problems"]
    assert report["macs_checked"] and report["entries"] >= 10
    public = public_keys_from_document(client.get("/v1/audit/keys", headers=reader).json())
    proof = client.get("/v1/audit/entries/3/proof", headers=reader).json()
    assert verify_inclusion_proof(proof, public) is None
    assert proof["entry"]["seq"] == 3
    checkpoints = client.get("/v1/audit/checkpoints", headers=reader).json()["checkpoints"]
    latest = checkpoints[-1]["document"]
    tail = head(client) + 5  # beyond the log
    assert client.get(f"/v1/audit/entries/{tail}/proof", headers=reader).status_code == 404
    consistency = client.get(
        f"/v1/audit/consistency?first=1&second={latest['tree_size']}", headers=reader
    ).json()
    assert consistency["second_root"] == latest["root"]
    one = client.get("/v1/audit/entries/1", headers=reader).json()
    assert one["seq"] == 1 and one["entry"]["prev"] == GENESIS


def test_checkpoints_are_signed_on_a_timer_also_when_idle(settings: Settings) -> None:
    with running_app(settings, audit_checkpoint_s=0.3) as client:
        time.sleep(1.6)  # no request at all meanwhile
        with engine_of(client).connect() as con:
            sizes = con.execute(select(audit_checkpoints.c.tree_size)).scalars().all()
        assert len(sizes) >= 3
        assert len(set(sizes)) == 1  # the demo build's entries, and nothing since
        key = new_member(client, MemberRole.AUDITOR)
        assert client.get("/v1/audit/verify", headers=auth(key)).json()["ok"]


def test_cli_verify_checkpoint_proof_rotate_and_tampering(
    settings: Settings, keys: dict[str, str]
) -> None:
    data_dir = settings.data_dir
    with running_app(settings) as client:
        client.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"]))
        client.get("/v1/budgets", headers=auth(keys["analyst"]))
        with engine_of(client).connect() as con:
            start = read_entries(con, limit=100_000)[-1].seq  # the demo's, and these
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", "--data-dir", str(data_dir)])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output
    # the local administrator's changes are entries too, with the actor "local"
    made = runner.invoke(
        cli,
        ["tenant", "create", "--name", "CLI Bank", "--kind", "bank",
         "--purpose-class", "commercial", "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    zone = runner.invoke(
        cli,
        ["zone", "create", "--id", "cli-zone", "--kind", "regional", "--operator", "Ops",
         "--title", "CLI zone", "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert zone.exit_code == 0, zone.output
    written = runner.invoke(cli, ["audit", "checkpoint", "--data-dir", str(data_dir)])
    assert written.exit_code == 0, written.output
    assert json.loads(written.output)["tree_size"] >= 5
    proved = runner.invoke(cli, ["audit", "proof", "2", "--data-dir", str(data_dir)])
    assert proved.exit_code == 0, proved.output
    rotated = runner.invoke(cli, ["keys", "rotate", "--which", "all", "--data-dir", str(data_dir)])
    assert rotated.exit_code == 0, rotated.output
    assert set(json.loads(rotated.output)) == {"receipt", "audit", "audit_hmac", "master"}
    with running_app(settings) as client:  # restarted with the new keys
        client.get("/v1/budgets", headers=auth(keys["analyst"]))
        with engine_of(client).connect() as con:
            entries = [r.entry for r in read_entries(con, limit=1000)]
        local = [
            e
            for e in entries
            if e["action"] in ("tenant.create", "zone.create") and e["seq"] > start
        ]
        assert [e["action"] for e in local] == ["tenant.create", "zone.create"]
        for entry in local:
            assert entry["actor"]["type"] == "local" and entry["request"] is None
            assert entry["actor"]["user"]  # the operating-system user who ran the command
        assert len({e["mac_key"] for e in entries}) == 2  # before and after the rotation
        engine = engine_of(client)
        with engine.begin() as con:
            con.execute(update(audit_entries).where(audit_entries.c.seq == start).values(code="x"))
    still = runner.invoke(cli, ["audit", "verify", "--data-dir", str(data_dir)])
    assert still.exit_code == 1
    assert f"entry {start}: entry_columns_mismatch" in still.output


def test_an_auditor_verifies_a_live_server_independently(
    live: str, settings: Settings, keys: dict[str, str]
) -> None:
    import httpx

    url = live  # the shared fixture (tests/conftest.py), serving ``settings``
    with httpx.Client(base_url=url, timeout=60) as http:
        http.post("/v1/queries", json=QUERY, headers=auth(keys["analyst"]))
        tenant = http.post(
            "/v1/tenants",
            json={"name": "Audit Office", "kind": "government", "purpose_class": "public_welfare"},
            headers=auth(keys["admin"]),
        ).json()["id"]
        auditor = http.post(
            f"/v1/tenants/{tenant}/members",
            json={"name": "auditor", "role": "auditor"},
            headers=auth(keys["admin"]),
        ).json()["api_key"]
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", "--url", url, "--key", auditor])
    assert ok.exit_code == 0, ok.output
    assert "independent check" in ok.output and "server check" in ok.output
    from sandbox.store import db

    engine = db.connect(settings.state_url)  # a database writer edits one entry
    try:
        with engine.begin() as con:
            seq, body = con.execute(
                select(audit_entries.c.seq, audit_entries.c.body)
                .where(audit_entries.c.action == "query.charge")
                .order_by(audit_entries.c.seq)
                .limit(1)
            ).one()
            con.execute(
                update(audit_entries)
                .where(audit_entries.c.seq == seq)
                .values(body=body.replace('"query.charge"', '"query.chargd"'))
            )
    finally:
        engine.dispose()
    caught = runner.invoke(cli, ["audit", "verify", "--url", url, "--key", auditor])
    assert caught.exit_code == 1
    assert f"entry {seq}: entry_hash_mismatch" in caught.output
