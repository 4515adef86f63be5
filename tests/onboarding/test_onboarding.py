"""Onboarding over HTTP and the CLI: zones, providers, loads into versions, quality, issues.

Real app, real DuckDB, real state store. Sources live in ``<data_dir>/sources`` (loads over HTTP
may only read files there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from connectors.base import Progress
from policies.accounting import Accounting
from sandbox import catalog
from sandbox.access import members, model, tenants
from sandbox.access.model import MemberRole
from sandbox.audit.store import read_entries
from sandbox.cli.main import app as cli_app
from sandbox.clock import now
from sandbox.errors import ServiceUnavailable
from sandbox.ledger.grants import Grants
from sandbox.onboarding.loads import Loads
from sandbox.onboarding.progress import ProgressWriter
from sandbox.onboarding.services import Onboarding
from sandbox.store import db
from sandbox.store.schema import charges, consents, receipts, verification_events
from tests.support.app import auth, engine_of
from tests.support.onboarding import (
    HEADER,
    POLICY,
    ROWS,
    ZONE,
    current_version,
    load,
    sources,
    wait,
    workspace_files,
    write_csv,
)
from tests.support.store import LOCAL, local_audit


def member(client: TestClient, role: MemberRole, tenant: str | None = None) -> tuple[str, str]:
    """(member id, API key) of a new member; in a new government tenant unless ``tenant``."""
    engine = engine_of(client)
    tenant = tenant or tenants.create_tenant(
        engine, local_audit(engine), LOCAL, "Dept", "government", "public_welfare"
    )
    return members.create_member(
        engine, local_audit(engine), LOCAL, tenant, f"{role.value} member", role
    )


def test_admin_creates_zones_and_providers(client: TestClient, keys: dict[str, str]) -> None:
    admin = auth(keys["admin"])
    body = {"id": "haidian", "kind": "regional", "operator": "Haidian Data Co.", "title": "Haidian"}
    assert client.post("/v1/zones", json=body, headers=admin).status_code == 201
    assert client.post("/v1/zones", json=body, headers=admin).json()["code"] == "conflict"
    refused = client.post("/v1/zones", json={**body, "id": "x"}, headers=auth(keys["analyst"]))
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    bad = client.post("/v1/zones", json={**body, "kind": "galactic"}, headers=admin)
    assert bad.status_code == 422
    zones = client.get("/v1/zones", headers=admin).json()["zones"]
    assert {"haidian", ZONE} <= {z["id"] for z in zones}

    provider = {"id": "bj-tax", "name": "Beijing Tax Bureau", "zone": ZONE}
    created = client.post("/v1/providers", json=provider, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["datasets"] == []
    pid, _ = member(client, MemberRole.PROVIDER)
    linked = client.post("/v1/providers/bj-tax/members", json={"member": pid}, headers=admin)
    assert linked.status_code == 201, linked.text
    aid, _ = member(client, MemberRole.ANALYST)
    wrong = client.post("/v1/providers/bj-tax/members", json={"member": aid}, headers=admin)
    assert wrong.json()["code"] == "invalid_request"
    listed = client.get("/v1/providers", headers=auth(keys["analyst"])).json()["providers"]
    assert [p["id"] for p in listed] == ["bj-tax"]


def test_load_csv_gbk_and_parquet_glob_make_versions(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    _, operator = member(client, MemberRole.OPERATOR)
    v1 = load(client, operator, write_csv(data_dir, "firms.csv", ROWS))
    assert (v1["state"], v1["version"], v1["current"], v1["rows_loaded"]) == ("ready", 1, True, 4)
    # measured by the load's profile: queries on it are planned once, without the row-cap window
    assert catalog.current(engine_of(client), "firms").within_row_caps == frozenset({"firms"})
    assert v1["quality"] == {"status": "passed", "failed_rules": []}
    assert v1["progress"]["fraction"] == 1.0

    gbk = write_csv(data_dir, "firms-gbk.csv", [*ROWS, "A5,东城,5,2011-01-01"], "gbk")
    v2 = load(client, operator, f"file://{sources(data_dir) / gbk}?encoding=gbk")
    assert (v2["state"], v2["version"], v2["rows_loaded"]) == ("ready", 2, 5)

    parts = sources(data_dir) / "parts"
    parts.mkdir()
    schema = pa.schema(
        [("credit_code", pa.string()), ("district", pa.string()), ("revenue", pa.float64()),
         ("founded", pa.date32())]
    )  # fmt: skip
    for i in range(3):
        rows = [(f"P{i}{j}", "西城", float(j), None) for j in range(10)]
        table = pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows])
        pq.write_table(table.cast(schema), parts / f"part-{i}.parquet")
    v3 = load(client, operator, "parts/*.parquet")
    assert (v3["state"], v3["version"], v3["rows_loaded"]) == ("ready", 3, 30)
    assert current_version(client, admin) == 3
    report = client.get("/v1/datasets/firms/quality", headers=auth(admin)).json()["report"]
    assert report["tables"][0]["rows"] == 30
    assert report["tables"][0]["previous_rows"] == 5
    assert workspace_files(data_dir) == ["v1.sealed", "v2.sealed", "v3.sealed"]
    listed = client.get(f"/v1/zones/{ZONE}/datasets/firms/versions", headers=auth(operator))
    assert [v["version"] for v in listed.json()["versions"]] == [1, 2, 3]


def test_http_loads_read_only_the_sources_folder(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    outside = data_dir / "outside.csv"
    outside.write_text(HEADER + "\n" + ROWS[0] + "\n")
    for source in (str(outside), "../outside.csv", f"file://{outside}"):
        body = {"policy": POLICY, "source": source}
        refused = client.post(
            f"/v1/zones/{ZONE}/datasets/firms/versions", json=body, headers=auth(keys["admin"])
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "invalid_source"), source


def test_bad_csv_fails_the_version_and_changes_nothing(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    load(client, admin, write_csv(data_dir, "good.csv", ROWS))
    with engine_of(client).connect() as con:
        charges_before = con.execute(select(func.count()).select_from(charges)).scalar()

    bad_type = write_csv(data_dir, "bad-type.csv", [ROWS[0], "A2,西城,12a,2020-01-31"])
    failed = load(client, admin, bad_type)
    # failed: the number it held (2) is released, the load keeps its own id
    assert (failed["state"], failed["version"], failed["current"]) == ("failed", None, False)
    assert failed["load"].startswith("load_")
    error = failed["error"]
    assert error["code"] == "type_conversion"
    assert (error["line"], error["column"]) == (3, "revenue")
    assert error["file"].endswith("bad-type.csv")
    assert "line 3" in error["detail"] and "revenue" in error["detail"]

    malformed = write_csv(data_dir, "bad-fields.csv", [ROWS[0], "A2,西城,20,2020-01-31,extra"])
    failed = load(client, admin, malformed)
    assert (failed["state"], failed["error"]["code"], failed["error"]["line"]) == (
        "failed",
        "malformed_csv",
        3,
    )
    assert current_version(client, admin) == 1
    assert workspace_files(data_dir) == ["v1.sealed"]
    with engine_of(client).connect() as con:
        assert con.execute(select(func.count()).select_from(charges)).scalar() == charges_before
    # a failed load has no version to make current
    refused = client.post(
        f"/v1/zones/{ZONE}/datasets/firms/versions/2/activate", headers=auth(admin)
    )
    assert (refused.status_code, refused.json()["code"]) == (404, "not_found")


def test_bad_policy_and_missing_source_are_refused_before_a_version(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = auth(keys["admin"])
    url = f"/v1/zones/{ZONE}/datasets/firms/versions"
    bad = client.post(url, json={"policy": POLICY + "\n[oops", "source": "x.csv"}, headers=admin)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_policy")
    other = client.post(
        "/v1/zones/beijing-finance/datasets/other/versions",
        json={"policy": POLICY, "source": "x.csv"},
        headers=admin,
    )
    assert other.json()["code"] == "invalid_request"
    missing = client.post(url, json={"policy": POLICY, "source": "nope.csv"}, headers=admin)
    if missing.status_code == 202:  # found missing while reading: a failed version
        assert wait(client, keys["admin"], missing.json()["url"])["error"]["code"] == (
            "source_not_found"
        )
    else:
        assert missing.json()["code"] == "source_not_found"


def test_quality_rule_failure_records_the_report_naming_the_rule(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    load(client, admin, write_csv(data_dir, "good.csv", ROWS))
    nulls = write_csv(data_dir, "nulls.csv", ["B1,东城,,", "B2,东城,,", "B3,西城,1,"])
    failed = load(client, admin, nulls)
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "quality_rule_failed"
    assert failed["quality"]["status"] == "failed"
    (rule,) = failed["quality"]["failed_rules"]
    assert (rule["rule"], rule["column"]) == ("max_null_rate", "revenue")
    report = client.get(
        f"/v1/datasets/firms/quality?load={failed['load']}", headers=auth(admin)
    ).json()
    assert report["state"] == "failed" and report["report"]["status"] == "failed"
    assert (report["version"], report["load"]) == (None, failed["load"])
    dupes = write_csv(data_dir, "dupes.csv", [ROWS[0], ROWS[0]])
    failed = load(client, admin, dupes)
    assert failed["quality"]["failed_rules"][0]["rule"] == "unique_unit"
    assert current_version(client, admin) == 1


def test_rollback_and_forward(client: TestClient, keys: dict[str, str], data_dir: Path) -> None:
    admin = keys["admin"]
    load(client, admin, write_csv(data_dir, "a.csv", ROWS[:2]))
    load(client, admin, write_csv(data_dir, "b.csv", ROWS))
    assert current_version(client, admin) == 2
    url = f"/v1/zones/{ZONE}/datasets/firms/versions"
    back = client.post(f"{url}/1/activate", headers=auth(keys["admin"]))
    assert back.status_code == 200, back.text
    assert back.json()["current"] is True
    assert current_version(client, admin) == 1
    assert client.get("/v1/datasets/firms/quality", headers=auth(admin)).json()["version"] == 1
    assert client.post(f"{url}/2/activate", headers=auth(admin)).status_code == 200
    assert current_version(client, admin) == 2
    assert client.post(f"{url}/9/activate", headers=auth(admin)).status_code == 404
    refused = client.post(f"{url}/1/activate", headers=auth(keys["analyst"]))
    assert refused.status_code == 403


def test_a_load_is_recorded_as_the_member_who_started_it(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    operator_id, operator = member(client, MemberRole.OPERATOR)
    load(client, operator, write_csv(data_dir, "firms.csv", ROWS))
    bad = write_csv(data_dir, "bad.csv", [ROWS[0], "A2,西城,12a,2020-01-31"])
    assert load(client, operator, bad)["state"] == "failed"
    with engine_of(client).connect() as con:
        entries = [e.entry for e in read_entries(con, limit=100_000, kind="onboarding")]
    actions = [e["action"] for e in entries if e["refs"].get("dataset") == "firms"]
    assert actions == ["load.begin", "load.ready", "load.begin", "load.failed"]
    begun, ready, _, failed = (e for e in entries if e["refs"].get("dataset") == "firms")
    for entry in (begun, ready, failed):
        assert (entry["actor"]["type"], entry["actor"]["member"]) == ("member", operator_id)
    # the outcome, written by the background thread, names the request that started the load
    assert ready["request"]["id"] == begun["request"]["id"]
    assert failed["code"] == "type_conversion"


def test_onboarding_refuses_to_start_without_an_audit_log(settings: Any) -> None:
    engine = db.connect(settings.state_url)
    try:
        with pytest.raises(ServiceUnavailable):
            Onboarding.build(engine, None, settings.workspace_dir)  # type: ignore[arg-type]
        with pytest.raises(ServiceUnavailable):
            Loads(engine, None, settings.workspace_dir)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_quality_for_staff_and_the_provider_only(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = auth(keys["admin"])
    client.post("/v1/providers", json={"id": "bj-tax", "name": "Tax", "zone": ZONE}, headers=admin)
    client.post("/v1/providers", json={"id": "bj-si", "name": "SI", "zone": ZONE}, headers=admin)
    ours_id, ours = member(client, MemberRole.PROVIDER)
    theirs_id, theirs = member(client, MemberRole.PROVIDER)
    client.post("/v1/providers/bj-tax/members", json={"member": ours_id}, headers=admin)
    client.post("/v1/providers/bj-si/members", json={"member": theirs_id}, headers=admin)
    _, operator = member(client, MemberRole.OPERATOR)
    load(client, operator, write_csv(data_dir, "firms.csv", ROWS), provider="bj-tax")

    for key in (keys["admin"], operator, ours):
        shown = client.get("/v1/datasets/firms/quality", headers=auth(key))
        assert shown.status_code == 200, shown.text
        assert shown.json()["report"]["tables"][0]["rows"] == 4
    html = client.get("/v1/datasets/firms/quality?format=html", headers=auth(ours))
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "firms" in html.text
    for key in (theirs, keys["analyst"], keys["verifier"], keys["subject"]):
        refused = client.get("/v1/datasets/firms/quality", headers=auth(key))
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        assert (
            client.get(f"/v1/zones/{ZONE}/datasets/firms/versions/1", headers=auth(key)).status_code
            == 403
        )
    assert client.get("/v1/datasets/nope/quality", headers=admin).status_code == 404
    providers = client.get("/v1/providers", headers=admin).json()["providers"]
    assert {p["id"]: p["datasets"] for p in providers} == {"bj-si": [], "bj-tax": ["firms"]}


def test_progress_is_visible_while_loading(
    client: TestClient, keys: dict[str, str], data_dir: Path, settings: Any
) -> None:
    admin = keys["admin"]
    loads = Loads(engine_of(client), local_audit(engine_of(client)), settings.workspace_dir)
    pending = loads.begin_load(
        LOCAL, ZONE, "firms", POLICY, write_csv(data_dir, "firms.csv", ROWS),
        confine_to=sources(data_dir),
    )  # fmt: skip
    url = f"/v1/zones/{ZONE}/datasets/firms/versions/{pending.version}"
    view = client.get(url, headers=auth(admin)).json()
    assert (view["state"], view["rows_loaded"], view["current"]) == ("loading", 0, False)
    # a second load while one runs is refused
    again = client.post(
        f"/v1/zones/{ZONE}/datasets/firms/versions",
        json={"policy": POLICY, "source": "firms.csv"},
        headers=auth(admin),
    )
    assert (again.status_code, again.json()["code"]) == (409, "conflict")
    ProgressWriter(engine_of(client), pending, None)(Progress("firms", 3, 50, 200))
    view = client.get(url, headers=auth(admin)).json()
    assert view["state"] == "loading"
    assert view["progress"] == {
        "rows": 3,
        "table": "firms",
        "bytes_read": 50,
        "bytes_total": 200,
        "fraction": 0.25,
    }
    seen: list[int] = []
    loads.run_load(pending, on_progress=lambda p: seen.append(p.rows))
    assert seen and seen[-1] == 4
    done = client.get(url, headers=auth(admin)).json()
    assert (done["state"], done["rows_loaded"], done["current"]) == ("ready", 4, True)


def _receipt(engine: Engine, subject_ref: str, version: str, tenant: str, issuer: str) -> str:
    """A receipt about ``subject_ref`` answered from ``firms`` version ``version`` (inserted
    directly: the verification flow has its own tests)."""
    consent, receipt = model.new_id("cns"), model.new_id("rcp")
    at = now()
    with engine.begin() as con:
        con.execute(
            consents.insert().values(
                id=consent, tenant_id=tenant, subject_ref=subject_ref, template_id="T",
                template_version=1, purpose="p", max_uses=9, uses=1, expires_at=at,
                created_at=at,
            )
        )  # fmt: skip
        con.execute(
            receipts.insert().values(
                id=receipt, tenant_id=tenant, subject_ref=subject_ref, template_id="T",
                template_version=1, consent_id=consent, outcome="match", issued_at=at,
                document="{}", status="valid",
            )
        )  # fmt: skip
        con.execute(
            verification_events.insert().values(
                receipt_id=receipt, subject_ref=subject_ref, tenant_id=tenant, member_id=issuer,
                consent_id=consent, template_id="T", template_version=1, attribute="a",
                dataset="firms", dataset_version=version, at=at, bits_charged=0,
                quota_units=1, sticky=False,
            )
        )  # fmt: skip
    return receipt


def test_issue_raise_answer_resolve_and_revoke(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    engine = engine_of(client)
    admin = auth(keys["admin"])
    client.post("/v1/providers", json={"id": "bj-tax", "name": "Tax", "zone": ZONE}, headers=admin)
    provider_id, provider = member(client, MemberRole.PROVIDER)
    client.post("/v1/providers/bj-tax/members", json={"member": provider_id}, headers=admin)
    load(client, keys["admin"], write_csv(data_dir, "firms.csv", ROWS), provider="bj-tax")

    bank = tenants.create_tenant(engine, local_audit(engine), LOCAL, "Bank", "bank", "commercial")
    verifier_id, verifier = members.create_member(
        engine, local_audit(engine), LOCAL, bank, "v", MemberRole.VERIFIER
    )
    lab = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, "Lab", "research", "public_welfare"
    )
    _, analyst = members.create_member(
        engine, local_audit(engine), LOCAL, lab, "a", MemberRole.ANALYST
    )
    _, stranger = member(client, MemberRole.ANALYST)  # no grant on firms
    Grants(engine, local_audit(engine)).create_grant(
        LOCAL, lab, "firms", Accounting.PURE, budget_micro=1, delta_pico=0,
        per_query_cap_micro=1,
    )  # fmt: skip

    subject = "91110108MA01ABCD2X"
    raised = client.post(
        "/v1/datasets/firms/issues",
        json={"title": "revenue of A2 wrong", "description": "filed 30, shows 20",
              "subject": subject},
        headers=auth(verifier),
    )  # fmt: skip
    assert raised.status_code == 201, raised.text
    issue = raised.json()
    assert (issue["number"], issue["state"], issue["about_subject"]) == (1, "open", True)
    assert subject not in raised.text
    by_analyst = client.post(
        "/v1/datasets/firms/issues", json={"title": "nulls in founded"}, headers=auth(analyst)
    )
    assert by_analyst.status_code == 201 and by_analyst.json()["number"] == 2
    no_grant = client.post("/v1/datasets/firms/issues", json={"title": "x"}, headers=auth(stranger))
    assert (no_grant.status_code, no_grant.json()["code"]) == (403, "no_grant")

    def numbers(key: str) -> list[int]:
        listed = client.get("/v1/datasets/firms/issues", headers=auth(key))
        assert listed.status_code == 200, listed.text
        assert subject not in listed.text
        return [i["number"] for i in listed.json()["issues"]]

    assert numbers(provider) == numbers(keys["admin"]) == [1, 2]
    assert numbers(verifier) == [1] and numbers(analyst) == [2] and numbers(stranger) == []
    assert client.get("/v1/datasets/firms/issues/2", headers=auth(verifier)).status_code == 404

    refused = client.post(
        "/v1/datasets/firms/issues/1/answer", json={"answer": "no"}, headers=auth(verifier)
    )
    assert refused.status_code == 403
    answered = client.post(
        "/v1/datasets/firms/issues/1/answer", json={"answer": "checking"}, headers=auth(provider)
    )
    assert answered.status_code == 200 and answered.json()["state"] == "answered"

    # receipts about the subject: one from version 1 (revoked by the correction), one newer
    from sandbox.verification.receipts import subject_ref

    ref = subject_ref(subject, client.app.state.services.verification.zone_secret)  # type: ignore[attr-defined]
    old = _receipt(engine, ref, "1", bank, verifier_id)
    other_subject = _receipt(engine, "0" * 64, "1", bank, verifier_id)

    not_yet = client.post(
        "/v1/datasets/firms/issues/1/resolve",
        json={"kind": "corrected", "version": 2},
        headers=auth(provider),
    )
    assert (not_yet.status_code, not_yet.json()["code"]) == (400, "invalid_request")
    fixed = [r.replace("A2,西城,20", "A2,西城,30") for r in ROWS]
    load(client, keys["admin"], write_csv(data_dir, "fixed.csv", fixed))
    newer = _receipt(engine, ref, "2", bank, verifier_id)
    resolved = client.post(
        "/v1/datasets/firms/issues/1/resolve",
        json={"kind": "corrected", "version": 2, "note": "reloaded"},
        headers=auth(provider),
    )
    assert resolved.status_code == 200, resolved.text
    resolution = resolved.json()["resolution"]
    assert (resolution["kind"], resolution["version"], resolution["revoked_receipts"]) == (
        "corrected",
        2,
        1,
    )
    status = {r: client.get(f"/v1/receipts/{r}/status").json() for r in (old, newer, other_subject)}
    assert status[old]["status"] == "revoked" and status[old]["reason"] == "data_correction"
    assert status[newer]["status"] == status[other_subject]["status"] == "valid"
    again = client.post(
        "/v1/datasets/firms/issues/1/resolve", json={"kind": "no_change"}, headers=auth(provider)
    )
    assert again.status_code == 409
    closed = client.post(
        "/v1/datasets/firms/issues/2/resolve", json={"kind": "no_change"}, headers=admin
    )
    assert closed.json()["resolution"]["revoked_receipts"] == 0


def test_subject_raises_about_its_own_records_only(
    client: TestClient, keys: dict[str, str]
) -> None:
    subject = auth(keys["subject"])
    other = client.post(
        "/v1/datasets/enterprise/issues",
        json={"title": "mine?", "subject": "SOMEONE-ELSE"},
        headers=subject,
    )
    assert other.status_code == 403
    own = client.post("/v1/datasets/enterprise/issues", json={"title": "my tax"}, headers=subject)
    assert own.status_code == 201 and own.json()["about_subject"] is True


def test_cli_load_quality_versions_and_bad_input(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    policy = tmp_path / "firms.toml"
    policy.write_text(POLICY, encoding="utf-8")
    good = sources(data_dir) / write_csv(data_dir, "firms.csv", ROWS)
    common = ["--zone", ZONE, "--dataset", "firms", "--policy", str(policy)]
    dd = ["--data-dir", str(data_dir)]
    done = runner.invoke(cli_app, ["load", *common, str(good), *dd])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["state"] == "ready"
    bad = sources(data_dir) / write_csv(data_dir, "bad.csv", [ROWS[0], "A2,西城,12a,2020-01-31"])
    failed = runner.invoke(cli_app, ["load", *common, "--table", f"firms={bad}", *dd])
    assert failed.exit_code == 1
    assert "type_conversion" in failed.stderr and "line 3" in failed.stderr
    assert "revenue" in failed.stderr
    quality = runner.invoke(cli_app, ["quality", "firms", *dd])
    assert quality.exit_code == 0, quality.output
    assert json.loads(quality.stdout)["version"] == 1
    listed = runner.invoke(cli_app, ["versions", "--zone", ZONE, "firms", *dd])
    views = json.loads(listed.stdout)["versions"]
    assert [(v["version"], v["state"]) for v in views] == [(1, "ready"), (None, "failed")]
    html = runner.invoke(cli_app, ["quality", "firms", "--load", views[1]["load"], "--html", *dd])
    assert html.exit_code == 0 and html.stdout.lstrip().startswith("<!")
    missing = runner.invoke(cli_app, ["quality", "nope", *dd])
    assert missing.exit_code == 1 and "not_found" in missing.stderr


@pytest.mark.parametrize("kind", ["domain", "comprehensive"])
def test_cli_zone_and_provider(data_dir: Path, kind: str) -> None:
    runner = CliRunner()
    dd = ["--data-dir", str(data_dir)]
    made = runner.invoke(
        cli_app,
        ["zone", "create", "--id", f"z-{kind}", "--kind", kind, "--operator", "o", "--title", "t",
         *dd],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    prov = runner.invoke(
        cli_app, ["provider", "create", "--id", "p1", "--name", "P", "--zone", f"z-{kind}", *dd]
    )
    assert prov.exit_code == 0, prov.output
    listed = runner.invoke(cli_app, ["provider", "list", *dd])
    assert [p["id"] for p in json.loads(listed.stdout)] == ["p1"]


# -- Idempotency-Key on every mutating onboarding route -------------------------------------------


def replayed(
    client: TestClient,
    key: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    other: tuple[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """The call once with an Idempotency-Key, again (the same response: status and body), and
    the key with another request (``idempotency_key_reused``). Returns the first body."""
    headers = {**auth(key), "Idempotency-Key": f"k-{path}"}
    first = client.post(path, json=body, headers=headers)
    assert first.status_code == status, first.text
    again = client.post(path, json=body, headers=headers)
    assert (again.status_code, again.json()) == (status, first.json())
    reused = client.post(other[0], json=other[1], headers=headers)
    assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_key_reused")
    body_: dict[str, Any] = first.json()
    return body_


def test_idempotency_key_zones_and_providers(client: TestClient, keys: dict[str, str]) -> None:
    admin = keys["admin"]
    zone = {"id": "haidian", "kind": "regional", "operator": "Haidian Data Co.", "title": "H"}
    made = replayed(client, admin, "/v1/zones", zone, 201, ("/v1/zones", {**zone, "id": "x"}))
    assert made["id"] == "haidian"
    zones = [z["id"] for z in client.get("/v1/zones", headers=auth(admin)).json()["zones"]]
    assert zones.count("haidian") == 1 and "x" not in zones  # one effect; the reuse had none

    provider = {"id": "bj-tax", "name": "Beijing Tax Bureau", "zone": ZONE}
    replayed(
        client, admin, "/v1/providers", provider, 201,
        ("/v1/providers", {**provider, "name": "Another"}),
    )  # fmt: skip
    providers = client.get("/v1/providers", headers=auth(admin)).json()["providers"]
    assert [(p["id"], p["name"]) for p in providers] == [("bj-tax", "Beijing Tax Bureau")]

    first_id, _ = member(client, MemberRole.PROVIDER)
    second_id, _ = member(client, MemberRole.PROVIDER)
    linked = replayed(
        client, admin, "/v1/providers/bj-tax/members", {"member": first_id}, 201,
        ("/v1/providers/bj-tax/members", {"member": second_id}),
    )  # fmt: skip
    assert linked == {"provider": "bj-tax", "member": first_id}


def test_idempotency_key_loads_and_activation(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    url = f"/v1/zones/{ZONE}/datasets/firms/versions"
    body = {"policy": POLICY, "source": write_csv(data_dir, "firms.csv", ROWS)}
    headers = {**auth(admin), "Idempotency-Key": "load-1"}
    started = client.post(url, json=body, headers=headers)
    assert started.status_code == 202, started.text
    wait(client, admin, started.json()["url"])
    again = client.post(url, json=body, headers=headers)
    assert (again.status_code, again.json()) == (202, started.json())  # the first response
    assert again.headers["Location"] == started.headers["Location"] == started.json()["url"]
    listed = client.get(url, headers=auth(admin)).json()["versions"]
    assert [v["version"] for v in listed] == [1]  # no second load
    other = client.post(url, json={**body, "source": "other.csv"}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    load(client, admin, write_csv(data_dir, "more.csv", ROWS[:2]))  # version 2, current
    assert current_version(client, admin) == 2

    back = replayed(client, admin, f"{url}/1/activate", None, 200, (f"{url}/2/activate", None))
    assert back["current"] is True and back["version"] == 1
    assert current_version(client, admin) == 1
    client.post(f"{url}/2/activate", headers=auth(admin))  # forward again, without a key
    replay = client.post(
        f"{url}/1/activate", headers={**auth(admin), "Idempotency-Key": f"k-{url}/1/activate"}
    )
    assert replay.json() == back  # the stored answer, not a second rollback
    assert current_version(client, admin) == 2


def test_idempotency_key_issues(client: TestClient, keys: dict[str, str], data_dir: Path) -> None:
    admin = keys["admin"]
    load(client, admin, write_csv(data_dir, "firms.csv", ROWS))
    load(client, admin, write_csv(data_dir, "fixed.csv", ROWS))
    issues = "/v1/datasets/firms/issues"
    issue = {"title": "revenue of A2 wrong", "description": "filed 30"}
    raised = replayed(client, admin, issues, issue, 201, (issues, {**issue, "title": "other"}))
    assert raised["number"] == 1
    assert [i["number"] for i in client.get(issues, headers=auth(admin)).json()["issues"]] == [1]

    answered = replayed(
        client, admin, f"{issues}/1/answer", {"answer": "checking"}, 200,
        (f"{issues}/1/answer", {"answer": "something else"}),
    )  # fmt: skip
    assert answered["answer"]["text"] == "checking"
    resolution = {"kind": "no_change", "note": "as filed"}
    resolved = replayed(
        client, admin, f"{issues}/1/resolve", resolution, 200,
        (f"{issues}/1/resolve", {"kind": "corrected", "version": 2}),
    )  # fmt: skip
    assert resolved["state"] == "resolved"
    # without the key, a second resolution is refused: the replay above was not one
    plain = client.post(f"{issues}/1/resolve", json=resolution, headers=auth(admin))
    assert (plain.status_code, plain.json()["code"]) == (409, "conflict")


def test_idempotency_keys_are_per_member_and_released_by_failures(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    _, other_admin = member(client, MemberRole.ADMIN, tenant=None)
    zone = {"id": "shunyi", "kind": "regional", "operator": "o", "title": "t"}
    key = {"Idempotency-Key": "same"}
    assert client.post("/v1/zones", json=zone, headers={**auth(admin), **key}).status_code == 201
    # the same key of another member is its own: this is a second, refused, creation
    clash = client.post("/v1/zones", json=zone, headers={**auth(other_admin), **key})
    assert (clash.status_code, clash.json()["code"]) == (409, "conflict")
    # that failure released the key: the other member may use it for another request
    fresh = client.post(
        "/v1/zones", json={**zone, "id": "miyun"}, headers={**auth(other_admin), **key}
    )
    assert fresh.status_code == 201, fresh.text
    too_long = client.post(
        "/v1/zones",
        json={**zone, "id": "pinggu"},
        headers={**auth(admin), "Idempotency-Key": "k" * 129},
    )
    assert too_long.status_code == 422


def test_one_key_sent_at_once_has_one_effect(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    admin = keys["admin"]
    load(client, admin, write_csv(data_dir, "firms.csv", ROWS))
    headers = {**auth(admin), "Idempotency-Key": "burst"}
    issue = {"title": "one issue"}

    def send(_: int) -> tuple[int, dict[str, Any]]:
        response = client.post("/v1/datasets/firms/issues", json=issue, headers=headers)
        return response.status_code, response.json()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    created = [body for status, body in answers if status == 201]
    assert created and all(body == created[0] for body in created)
    assert all(status in (201, 409) for status, _ in answers)
    listed = client.get("/v1/datasets/firms/issues", headers=auth(admin)).json()["issues"]
    assert len(listed) == 1


def test_cluster_by_in_the_load_request_or_the_policy(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    source = write_csv(data_dir, "firms.csv", ROWS)
    url = f"/v1/zones/{ZONE}/datasets/firms/versions"
    body = {"policy": POLICY, "source": source, "cluster_by": "nope"}
    refused = client.post(url, json=body, headers=auth(admin))
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_request")
    assert refused.json()["field"] == "cluster_by"
    assert load(client, admin, source, cluster_by="revenue")["state"] == "ready"
    clustered = POLICY.replace(
        "min_group_size = 0\n", 'min_group_size = 0\n\n[storage]\ncluster_by = "credit_code"\n'
    )
    assert load(client, admin, source, policy=clustered)["state"] == "ready"
    bad = clustered.replace('cluster_by = "credit_code"', 'cluster_by = "nope"')
    wrong = client.post(url, json={"policy": bad, "source": source}, headers=auth(admin))
    assert (wrong.status_code, wrong.json()["code"]) == (422, "invalid_policy")
    assert wrong.json()["key"] == "storage.cluster_by"
