"""A query that fails before any data was read gives its reservation back.

The charge is reserved before the run (docs/ledger.md#reserving-a-charge). When the run then
fails before a worker received the SQL — the stored workspace is missing or does not open, its
master key is not in the ring even after the key directory is read again, no executor worker
can take the query — the reservation is cancelled in one transaction: the budget is as it was,
the charge shows ``cancelled``, and the error is a coded 5xx. Once the engine ran, a failure
keeps the charge (``tests/ledger/test_crash.py``).

Real demo zone, real app and workers, real state store.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from sandbox.config import Settings
from sandbox.ledger.charges import ChargeState, consistency
from sandbox.store import db
from sandbox.store.schema import charges, versions
from tests.support.app import auth, engine_of, running_app

SQL = "SELECT COUNT(*) AS n FROM registry"


def own_workspace(settings: Settings, dataset: str) -> Path:
    """Point the catalogue at this test's copy of the workspace (the copied state store names
    the files of the shared demo directory, which no test may alter)."""
    copy = settings.workspace_dir / dataset / "v1.sealed"
    engine = db.connect(settings.state_url)
    with engine.begin() as con:
        con.execute(update(versions).where(versions.c.dataset_id == dataset).values(path=str(copy)))
    engine.dispose()
    return copy


def budgets(client: TestClient, key: str) -> Any:
    answer = client.get("/v1/budgets", headers=auth(key))
    assert answer.status_code == 200, answer.text
    return answer.json()


def query(client: TestClient, key: str) -> Any:
    body = {"dataset": "enterprise", "sql": SQL, "epsilon": 0.1}
    return client.post("/v1/queries", json=body, headers=auth(key))


def assert_given_back(client: TestClient, keys: dict[str, str], code: str, status: int) -> None:
    """The query fails with ``code``; the budget is as before; its charge is cancelled."""
    key = keys["analyst"]
    before = budgets(client, key)
    failed = query(client, key)
    assert (failed.status_code, failed.json()["code"]) == (status, code), failed.text
    assert "duckdb" not in failed.text.lower()
    assert budgets(client, key) == before
    engine = engine_of(client)
    with engine.connect() as con:
        rows = con.execute(select(charges.c.state, charges.c.grant_id)).all()
    assert [r.state for r in rows] == [ChargeState.CANCELLED]
    assert consistency(engine, rows[0].grant_id).ok
    entries = client.get(
        "/v1/ledger", params={"dataset": "enterprise"}, headers=auth(keys["admin"])
    )
    assert entries.status_code == 200, entries.text
    (charge,) = [e for e in entries.json()["entries"] if e["entry"] == "charge"]
    assert charge["state"] == "cancelled"


def quiet(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)


def test_a_missing_workspace_gives_the_reservation_back(
    data_dir: Path, keys: dict[str, str]
) -> None:
    settings = quiet(data_dir)
    own_workspace(settings, "enterprise").unlink()
    with running_app(settings) as client:
        assert_given_back(client, keys, "workspace_missing", 500)


def test_a_workspace_that_does_not_open_gives_the_reservation_back(
    data_dir: Path, keys: dict[str, str]
) -> None:
    settings = quiet(data_dir)
    stored = own_workspace(settings, "enterprise")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x20
    stored.write_bytes(bytes(data))
    with running_app(settings) as client:
        assert_given_back(client, keys, "workspace_integrity", 500)


def test_a_master_key_not_in_the_ring_gives_the_reservation_back(
    data_dir: Path, keys: dict[str, str]
) -> None:
    shutil.rmtree(data_dir / "keys" / "master")  # the server starts with a new, different key
    with running_app(quiet(data_dir)) as client:
        assert_given_back(client, keys, "master_key_error", 500)


def test_no_executor_worker_gives_the_reservation_back(
    data_dir: Path, keys: dict[str, str]
) -> None:
    with running_app(quiet(data_dir)) as client:
        client.app.state.services.executor.close()  # type: ignore[attr-defined]
        assert_given_back(client, keys, "service_unavailable", 503)
