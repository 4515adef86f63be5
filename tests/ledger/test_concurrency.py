"""Concurrency: 200 concurrent queries through 4 server processes against a budget that fits 50.

The server runs as ``uvicorn --workers 4`` (four processes, each with its own connection pool
and one executor worker) on SQLite and on PostgreSQL. Exactly 50 answers are released, the other
150 are refused with ``budget_exhausted``, and the ledger holds exactly 50 charges, all released.
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.config import Settings
from sandbox.engine.executor import Executor
from sandbox.engine.limits import ExecutorLimits
from sandbox.ledger import charges, entries
from tests.support.app import auth
from tests.support.demo import build_ledger_demo, demo_keys
from tests.support.ledger import count_sql
from tests.support.servers import child_pids, running_server

N_QUERIES = 200
FITS = 50
EPSILON = 0.1
BUDGET = FITS * EPSILON  # 5.0: exactly 50 queries at ε = 0.1


def _fire(url: str, key: str, n: int) -> list[tuple[int, dict[str, Any]]]:
    """``n`` different queries, released together from ``n`` threads, one client each.

    The clients are made up front, sharing one TLS context (building 200 of them inside the
    threads costs seconds of CPU on a small machine and staggers the start).
    """
    tls = ssl.create_default_context()
    clients = [
        httpx.Client(base_url=url, headers=auth(key), timeout=120, verify=tls) for _ in range(n)
    ]
    barrier = threading.Barrier(n, timeout=60)

    def one(i: int) -> tuple[int, dict[str, Any]]:
        body = {"dataset": "enterprise", "sql": count_sql(i), "epsilon": EPSILON}
        barrier.wait()
        response = clients[i].post("/v1/queries", json=body)
        return response.status_code, response.json()

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n), timeout=240))
    finally:
        for client in clients:
            client.close()


@pytest.mark.slow
def test_budget_for_50_releases_exactly_50_of_200_concurrent_queries(
    backend: str, state_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    engine = build_ledger_demo(data_dir, state_url)
    admin = demo_keys(data_dir)["admin"]
    database_url = state_url if backend == "postgresql" else None
    try:
        with running_server(
            data_dir, tmp_path / "server.log", database_url=database_url, workers=4
        ) as server:
            assert len(server_workers(server.pid)) >= 4
            with httpx.Client(base_url=server.url, headers=auth(admin), timeout=60) as http:
                tenant = http.post(
                    "/v1/tenants",
                    json={
                        "name": "Race Institute",
                        "kind": "research",
                        "purpose_class": "public_welfare",
                    },
                ).json()["id"]
                member = http.post(
                    f"/v1/tenants/{tenant}/members", json={"name": "racer", "role": "analyst"}
                ).json()
                grant = http.post(
                    f"/v1/tenants/{tenant}/grants",
                    json={"dataset": "enterprise", "epsilon": BUDGET, "per_query_cap": EPSILON},
                )
                assert grant.status_code == 201, grant.text
                grant_id = grant.json()["id"]
                key = member["api_key"]
                preview = http.post(
                    "/v1/queries/preview",
                    json={"dataset": "enterprise", "sql": count_sql(0), "epsilon": EPSILON},
                    headers=auth(key),
                ).json()
                assert preview["cost"]["epsilon"] == EPSILON  # so the budget fits exactly 50
                assert preview["budget"]["queries_left_at_this_cost"] == FITS

                results = _fire(server.url, key, N_QUERIES)

                statuses = Counter(status for status, _ in results)
                assert statuses == {200: FITS, 403: N_QUERIES - FITS}, statuses
                refused = [body for status, body in results if status == 403]
                assert {body["code"] for body in refused} == {"budget_exhausted"}
                answers = [body for status, body in results if status == 200]
                assert all(a["cost"]["epsilon"] == EPSILON and not a["cached"] for a in answers)
                released_ids = {a["query_id"] for a in answers}
                assert len(released_ids) == FITS

                listed = http.get("/v1/ledger", params={"tenant": tenant}).json()["entries"]
                charged = [e for e in listed if e["entry"] == "charge"]
                assert len(charged) == FITS
                assert {c["grant"] for c in charged} == {grant_id}
                assert {c["state"] for c in charged} == {"released"}
                assert {c["id"] for c in charged} == released_ids
                assert [e["entry"] for e in listed if e["entry"] != "charge"] == ["credit:grant"]

                budgets = http.get("/v1/budgets", headers=auth(key)).json()["budgets"]
                (mine,) = [b for b in budgets if b["grant"] == grant_id]
                assert mine["spent"] == BUDGET
                assert mine["remaining"] == 0

        # After the server is gone: the store itself agrees.
        stored = [e for e in entries.entries(engine, tenant_id=tenant) if e.entry == "charge"]
        assert len(stored) == FITS
        assert {e.state for e in stored} == {"released"}
        check = charges.consistency(engine, grant_id)
        assert check.ok, check
        assert check.spent_micro == check.budget_micro == check.charged_micro == 5_000_000
    finally:
        engine.dispose()


def server_workers(pid: int) -> list[int]:
    """The uvicorn worker processes: children of the supervisor that have executor children."""
    return [child for child in child_pids(pid) if child_pids(child)]


def test_executor_temp_dirs_of_server_processes_on_one_data_dir_stay_apart(
    tmp_path: Path,
) -> None:
    """Two executors on one temp root (two server processes on one data directory)."""
    temp_root = Settings(data_dir=tmp_path).temp_dir  # the same for every server process
    limits = ExecutorLimits(workers=1, threads=1)
    with Executor(limits, temp_root) as first:
        assert first.healthy()
        own = [d for d in temp_root.iterdir() if d.is_dir()]
        assert own, "the first executor made no worker directory"
        for directory in own:  # stands for a spill file DuckDB is using right now
            (directory / "in-use.tmp").write_bytes(b"spill")
        with Executor(limits, temp_root) as second:
            assert second.healthy()
            survivors = [d for d in own if (d / "in-use.tmp").exists()]
            assert survivors == own, "starting a second executor deleted the first one's files"
