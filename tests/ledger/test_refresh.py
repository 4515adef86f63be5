"""Refresh periods add budget at period boundaries, as visible ledger credits; nothing resets.

A grant's clock is its ``created_at``; the tests move it back (an UPDATE of the row, as if the
grant had been made days ago) instead of waiting. Every period begun since the last credit adds
one ``credit:refresh`` entry of the period's budget; what was spent stays spent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from sandbox.audit.store import read_entries
from sandbox.clock import utc
from sandbox.config import Settings
from sandbox.ledger import entries
from sandbox.ledger.charges import consistency
from sandbox.ledger.grants import Refresh
from sandbox.store import db
from sandbox.store.schema import grants
from tests.support.app import auth, engine_of, running_app
from tests.support.demo import demo_keys
from tests.support.ledger import local_ledger, new_analyst
from tests.support.store import seed_catalog

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("refresh") / "data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)
    with running_app(settings) as test_client:
        yield test_client


def backdate(engine: Engine, grant_id: str, by: timedelta) -> datetime:
    """Move the grant's creation back by ``by``; returns the new origin."""
    with engine.begin() as con:
        origin = con.execute(
            select(grants.c.created_at).where(grants.c.id == grant_id)
        ).scalar_one()
        moved = utc(origin) - by
        con.execute(update(grants).where(grants.c.id == grant_id).values(created_at=moved))
    return moved


def _ledger(client: TestClient, admin: str, tenant: str) -> list[dict[str, Any]]:
    response = client.get("/v1/ledger", params={"tenant": tenant}, headers=auth(admin))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def test_daily_grant_gets_a_visible_credit_per_elapsed_day(client: TestClient) -> None:
    engine = engine_of(client)
    admin = demo_keys(Path(client.app.state.services.settings.data_dir))["admin"]  # type: ignore[attr-defined]
    analyst = new_analyst(
        engine,
        budget_micro=1_000_000,
        cap_micro=500_000,
        delta_pico=1_000,
        refresh=Refresh.DAILY,
    )
    key = auth(analyst.key)
    spend = client.post(
        "/v1/queries",
        json={"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.5},
        headers=key,
    )
    assert spend.status_code == 200, spend.text
    (before,) = client.get("/v1/budgets", headers=key).json()["budgets"]
    assert (before["total"], before["spent"], before["remaining"]) == (1.0, 0.5, 0.5)

    origin = backdate(engine, analyst.grant_id, 3 * DAY + timedelta(hours=1))

    (after,) = client.get("/v1/budgets", headers=key).json()["budgets"]
    assert after["total"] == 4.0  # the first day's budget and three refreshes
    assert after["spent"] == 0.5  # nothing reset: what was spent stays spent
    assert after["remaining"] == 3.5
    assert after["delta_total"] == pytest.approx(4e-9)
    assert after["refresh"] == "daily"
    assert datetime.fromisoformat(after["next_refresh"]) == origin + 4 * DAY

    entries = _ledger(client, admin, analyst.tenant_id)
    kinds = [e["entry"] for e in entries]
    assert kinds == ["credit:grant", "charge", "credit:refresh", "credit:refresh", "credit:refresh"]
    refreshes = [e for e in entries if e["entry"] == "credit:refresh"]
    assert all(e["amount"] == 1.0 and e["grant"] == analyst.grant_id for e in refreshes)
    charge = entries[1]
    assert (charge["amount"], charge["state"]) == (0.5, "released")

    # Reading again credits nothing more: each period is credited once.
    client.get("/v1/budgets", headers=key)
    client.get(f"/v1/tenants/{analyst.tenant_id}/grants", headers=auth(admin))
    assert len(_ledger(client, admin, analyst.tenant_id)) == 5
    check = consistency(engine, analyst.grant_id)
    assert check.ok and check.credited_micro == 4_000_000 and check.spent_micro == 500_000

    # The CSV export shows the same entries.
    csv = client.get(
        "/v1/ledger", params={"tenant": analyst.tenant_id, "format": "csv"}, headers=auth(admin)
    )
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].split(",")[:2] == ["time", "entry"]
    assert sum(",credit:refresh," in line for line in lines) == 3


def test_refreshed_budget_is_spendable_and_the_cap_still_holds(client: TestClient) -> None:
    engine = engine_of(client)
    analyst = new_analyst(engine, budget_micro=500_000, cap_micro=500_000, refresh=Refresh.DAILY)
    key = auth(analyst.key)
    body = {"dataset": "enterprise", "epsilon": 0.5}
    first = client.post(
        "/v1/queries", json={**body, "sql": "SELECT COUNT(*) FROM tax"}, headers=key
    )
    assert first.status_code == 200, first.text
    second = {**body, "sql": "SELECT COUNT(*) FROM utilities"}
    refused = client.post("/v1/queries", json=second, headers=key)
    assert refused.status_code == 403 and refused.json()["code"] == "budget_exhausted"
    backdate(engine, analyst.grant_id, DAY)
    allowed = client.post("/v1/queries", json=second, headers=key)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["budget"]["total"] == 1.0
    assert allowed.json()["budget"]["remaining"] == 0.0
    assert consistency(engine, analyst.grant_id).ok


@pytest.mark.parametrize(
    ("refresh", "elapsed", "credits_due"),
    [
        (Refresh.NONE, 400 * DAY, 0),
        (Refresh.DAILY, DAY - timedelta(minutes=1), 0),
        (Refresh.DAILY, 10 * DAY + timedelta(minutes=1), 10),
        (Refresh.WEEKLY, 6 * DAY, 0),
        (Refresh.WEEKLY, 15 * DAY, 2),
        (Refresh.MONTHLY, 25 * DAY, 0),
        (Refresh.MONTHLY, 65 * DAY, 2),
    ],
)
def test_periods_credit_exactly_what_has_begun(
    tmp_path: Path, refresh: Refresh, elapsed: timedelta, credits_due: int
) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        seed_catalog(engine)
        analyst = new_analyst(
            engine, budget_micro=700_000, cap_micro=100_000, dataset="ds", refresh=refresh
        )
        ledger = local_ledger(engine)
        reader = analyst.actor
        grant = ledger.grants.grant_by_id(reader, analyst.grant_id)
        ledger.charges.reserve(reader, grant, "q" * 64, 1, 100_000, 0)
        backdate(engine, analyst.grant_id, elapsed)
        grant = ledger.grants.grant_by_id(reader, analyst.grant_id)
        assert grant.budget_micro == 700_000 * (1 + credits_due)
        assert grant.spent_micro == 100_000
        assert grant.periods_credited == 1 + credits_due
        refreshes = [e for e in entries.entries(engine) if e.entry == "credit:refresh"]
        assert len(refreshes) == credits_due
        assert consistency(engine, analyst.grant_id).ok
        # The credits are the change of whoever read the grant, recorded as a side effect.
        with engine.connect() as con:
            recorded = [r.entry for r in read_entries(con, kind="admin", limit=1000)]
        refreshed = [e for e in recorded if e["action"] == "grant.refresh"]
        if credits_due:
            (entry,) = refreshed
            assert entry["refs"] == {"grant": analyst.grant_id, "periods": credits_due}
            assert entry["actor"]["member"] == analyst.member_id
        else:
            assert refreshed == []
    finally:
        engine.dispose()
