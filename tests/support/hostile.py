"""The hostile-query suite's helpers: its ground truth, its running app with the checks every
hostile case makes, and the literals no response may repeat (its fixtures are in
``tests/security/conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastapi.testclient import TestClient
from httpx import Response

from sandbox.config import Settings
from tests.support.app import auth

# A literal the hostile inputs carry: no response may ever repeat it.
HOSTILE_SECRET = "veil-hostile-secret-4711"

# Words that only an engine or library message carries (DuckDB's "<Kind> Error: …", its caret
# "LINE 1:", a Python traceback, the parser's own name).
HOSTILE_ENGINE_WORDS = (
    "Error:",
    "LINE 1",
    "Traceback",
    "sqlglot",
    "Exception",
    "root:x:0:0",  # a line of /etc/passwd
)


def hostile_settings(data_dir: Path) -> Settings:
    """Small, real limits: the engine deadline and the watchdog act within seconds."""
    return Settings(
        data_dir=data_dir,
        workers=2,
        worker_threads=1,
        worker_memory_limit="256MB",
        worker_address_space_gb=2.0,
        query_timeout_s=5.0,
    )


HOSTILE_NORMAL_QUERY = "SELECT industry, COUNT(*) AS n FROM registry GROUP BY industry"


@dataclass(frozen=True)
class HostileTruth:
    """The demo zone's enterprise tables, regenerated from the same seed and size."""

    tables: Mapping[str, pa.Table]
    sources: Mapping[str, Path]

    def column(self, table: str, name: str) -> list[Any]:
        return list(self.tables[table].column(name).to_pylist())

    def secrets(self) -> tuple[str, ...]:
        """Values no response may contain: hidden names and privacy-unit ids of real rows."""
        names = self.column("registry", "name")[:3]
        codes = self.column("registry", "credit_code")[:3]
        return (*names, *codes)


@dataclass
class HostileService:
    """The running app and its demo members, with the checks every hostile case makes."""

    client: TestClient
    keys: dict[str, str]
    data_dir: Path
    truth: HostileTruth
    forbidden: tuple[str, ...] = field(default=())

    # -- requests ---------------------------------------------------------------------------
    def query(
        self,
        sql: str,
        *,
        key: str | None = None,
        dataset: str = "enterprise",
        path: str = "/v1/queries",
        **extra: Any,
    ) -> Response:
        body = {"dataset": dataset, "sql": sql, **extra}
        if not any(k in extra for k in ("epsilon", "rho")):
            body["epsilon"] = 0.5
        return self.client.post(path, json=body, headers=auth(key or self.keys["analyst"]))

    def post_raw(self, path: str, content: bytes, key: str | None = None) -> Response:
        headers = {**auth(key or self.keys["analyst"]), "Content-Type": "application/json"}
        return self.client.post(path, content=content, headers=headers)

    def ledger_entries(self) -> list[dict[str, Any]]:
        response = self.client.get("/v1/ledger", headers=auth(self.keys["admin"]))
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    def tenant_charges(self, tenant_id: str) -> list[dict[str, Any]]:
        """The charges (not the credits) of one tenant, oldest first."""
        return [
            e for e in self.ledger_entries() if e["tenant"] == tenant_id and e["entry"] == "charge"
        ]

    def budgets(self, key: str | None = None) -> list[dict[str, Any]]:
        response = self.client.get("/v1/budgets", headers=auth(key or self.keys["analyst"]))
        assert response.status_code == 200, response.text
        budgets: list[dict[str, Any]] = response.json()["budgets"]
        return budgets

    def charges(self) -> tuple[int, str]:
        """What a rejection must leave unchanged: the ledger's entries and every budget."""
        return len(self.ledger_entries()), json.dumps(self.budgets(), sort_keys=True)

    def new_analyst(
        self,
        *,
        accounting: str = "pure",
        budget: float = 100.0,
        per_query_cap: float = 100.0,
        delta: float = 1e-3,
    ) -> tuple[str, str]:
        """A fresh tenant with one analyst and one grant on ``enterprise``: (API key, tenant id).

        Classes that are answered (and charged) spend from their own grant, never the demo's.
        """
        admin = auth(self.keys["admin"])
        tenant = self.client.post(
            "/v1/tenants",
            json={"name": "hostile-suite", "kind": "research", "purpose_class": "public_welfare"},
            headers=admin,
        )
        assert tenant.status_code == 201, tenant.text
        tenant_id = tenant.json()["id"]
        member = self.client.post(
            f"/v1/tenants/{tenant_id}/members",
            json={"name": "hostile analyst", "role": "analyst"},
            headers=admin,
        )
        assert member.status_code == 201, member.text
        unit = "epsilon" if accounting == "pure" else "rho"
        grant = self.client.post(
            f"/v1/tenants/{tenant_id}/grants",
            json={
                "dataset": "enterprise",
                "accounting": accounting,
                unit: budget,
                "delta": delta,
                "per_query_cap": per_query_cap,
            },
            headers=admin,
        )
        assert grant.status_code == 201, grant.text
        return str(member.json()["api_key"]), tenant_id

    # -- checks -----------------------------------------------------------------------------
    def assert_clean(self, response: Response, *extra: str) -> None:
        """No engine text, no server path and no data value in the response."""
        text = response.text
        for word in (*HOSTILE_ENGINE_WORDS, *self.forbidden, *extra):
            assert word not in text, f"the response repeats {word!r}: {text[:300]}"

    def assert_refused(
        self,
        response: Response,
        code: str,
        status: int = 400,
        *,
        subject: str | None = None,
        field: str | None = None,
    ) -> dict[str, Any]:
        """A problem document with exactly this code and status (and subject or field)."""
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem: dict[str, Any] = response.json()
        assert problem["code"] == code, problem
        assert problem["status"] == status
        if subject is not None:
            assert problem.get("subject") == subject, problem
        if field is not None:
            if status == 422:
                assert problem["errors"][0]["field"] == field, problem
            else:
                assert problem.get("field") == field, problem
        self.assert_clean(response, HOSTILE_SECRET)
        return problem

    def assert_up(self) -> None:
        """The service answers: ``/healthz`` is ok, the pool is healthy, a normal query runs."""
        health = self.client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        services = self.client.app.state.services  # type: ignore[attr-defined]
        assert services.executor.healthy()
        answer = self.query(HOSTILE_NORMAL_QUERY, epsilon=0.1)
        assert answer.status_code == 200, answer.text


@dataclass(frozen=True)
class HostileWorkspaces:
    """Plain (unsealed) workspaces for the second line: the enterprise data and another one."""

    enterprise: Path
    other: Path
    root: Path
