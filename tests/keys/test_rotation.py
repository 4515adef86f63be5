"""Key rotation on a running server: ``veil keys rotate --which all`` run by the CLI on the data
directory of a server that keeps running. The server follows the key directory: a version
sealed under the new master key opens, ``/v1/keys`` and ``/v1/audit/keys`` name the new current
keys, new receipts are signed with the new receipt key, and the audit log (entries MAC'd and
sealed by the CLI under the new keys) still verifies and opens (docs/security.md).

Real demo zone, real app and workers, the real CLI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sandbox.cli.main import app as cli_app
from sandbox.config import Settings
from sandbox.vault.sealed import read_header
from tests.support.app import auth, running_app
from tests.support.onboarding import POLICY, ROWS, ZONE, write_csv

SECOND_MS = 1000


def veil(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def current_key(document: dict[str, Any]) -> str:
    (current,) = [k["key_id"] for k in document["keys"] if k["status"] == "current"]
    return current


def until(check: Any, what: str, seconds: float = 5.0) -> Any:
    """``check()`` once it is truthy (the server re-reads the key directory within a second)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, what
            return found
        time.sleep(0.05)


def grant_firms(client: TestClient, keys: dict[str, str]) -> None:
    """Give the demo analyst's tenant a grant on ``firms``."""
    (tenant,) = client.get("/v1/tenants", headers=auth(keys["analyst"])).json()["tenants"]
    grant = client.post(
        f"/v1/tenants/{tenant['id']}/grants",
        json={
            "dataset": "firms",
            "accounting": "pure",
            "epsilon": 5.0,
            "delta": 1e-6,
            "per_query_cap": 1.0,
        },
        headers=auth(keys["admin"]),
    )
    assert grant.status_code == 201, grant.text


def test_a_running_server_follows_rotate_all_by_the_cli(
    settings: Settings, keys: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    dd = ["--data-dir", str(data_dir)]
    with running_app(settings) as client:
        before = client.get("/v1/keys").json()
        audit_before = client.get("/v1/audit/keys", headers=auth(keys["admin"])).json()
        rotated = json.loads(veil("keys", "rotate", "--which", "all", *dd))
        assert set(rotated) == {"receipt", "audit", "audit_hmac", "master"}
        receipt_kid = current_key(rotated["receipt"])
        assert receipt_kid != current_key(before)

        # A new dataset loaded by the CLI is sealed under the new master key ...
        policy = tmp_path / "firms.toml"
        policy.write_text(POLICY, encoding="utf-8")
        source = data_dir / "sources" / write_csv(data_dir, "firms.csv", ROWS)
        veil(
            "load", "--zone", ZONE, "--dataset", "firms", "--policy", str(policy), str(source), *dd
        )
        with (data_dir / "workspaces" / "firms" / "v1.sealed").open("rb") as handle:
            assert read_header(handle, "firms").kid == rotated["master"]["current"]
        # ... and the running server opens it, with no restart.
        grant_firms(client, keys)
        body = {"dataset": "firms", "sql": "SELECT COUNT(*) AS n FROM firms", "epsilon": 0.5}
        answered = client.post("/v1/queries", json=body, headers=auth(keys["analyst"]))
        assert answered.status_code == 200, answered.text

        # The public key documents name the new current keys, the old ones as retired.
        shown = until(
            lambda: (
                (doc := client.get("/v1/keys").json()) and current_key(doc) == receipt_kid and doc
            ),
            "GET /v1/keys names the rotated receipt key",
        )
        assert current_key(before) in {k["key_id"] for k in shown["keys"]}
        audit_kid = current_key(rotated["audit"])
        until(
            lambda: (
                current_key(client.get("/v1/audit/keys", headers=auth(keys["admin"])).json())
                == audit_kid
            ),
            "GET /v1/audit/keys names the rotated checkpoint key",
        )
        assert audit_kid != current_key(audit_before)

        # The audit log, with entries the CLI MAC'd and sealed under the new keys (a tenant and
        # its auditor, made on the data directory), verifies and opens in the server.
        tenant = json.loads(
            veil("tenant", "create", "--name", "Rotated Research", "--kind", "research",
                 "--purpose-class", "public_welfare", *dd)
        )  # fmt: skip
        auditor = json.loads(
            veil("member", "create", "--tenant", tenant["id"], "--name", "auditor",
                 "--role", "auditor", *dd)
        )  # fmt: skip
        report = client.get("/v1/audit/verify", headers=auth(keys["admin"]))
        assert report.status_code == 200, report.text
        assert report.json()["ok"], report.json()["problems"][:3]
        after, unopened, seen = 0, [], 0
        while True:
            page = client.get(
                "/v1/audit",
                params={"decrypt": "true", "limit": 1000, "after": after},
                headers=auth(auditor["api_key"]),
            )
            assert page.status_code == 200, page.text
            entries = page.json()["entries"]
            seen += len(entries)
            unopened += [e["seq"] for e in entries if "error" in (e.get("unsealed") or {})]
            if page.json()["next"] is None:
                break
            after = page.json()["next"]
        assert seen and unopened == []
