"""Quota use (docs/verification.md, "Quota counting"): the per-hour use written with each answer
gives exactly the count of the window's events, however the window's start falls, on SQLite and
PostgreSQL; and migration 0006 fills it from the events stored before it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from sandbox.store import db, schema
from sandbox.store.schema import verification_events, verification_quota_use
from sandbox.verification.quota import add_quota_use, quota_hour, quota_used
from sandbox.verification.requests import VerifyRequest
from tests.support.app import engine_of
from tests.support.verification import PURPOSE, grant, member, service


@pytest.fixture(params=["sqlite", "postgresql"])
def zone(request: pytest.FixtureRequest) -> tuple[TestClient, dict[str, str]]:
    if request.param == "sqlite":
        return request.getfixturevalue("client"), request.getfixturevalue("keys")
    return request.getfixturevalue("pg_client"), request.getfixturevalue("pg_keys")


def _answered(client: TestClient, keys: dict[str, str]) -> dict[str, Any]:
    """One real answer's event row (its tenant, member, consent and template)."""
    consent, _ = grant(client, keys, "ENT_STATUS", max_uses=1)
    request = VerifyRequest(
        template="ENT_STATUS", subject=keys["subject_id"], consent=consent, purpose=PURPOSE
    )
    service(client).verify(member(client, keys["verifier"]), request)
    with engine_of(client).connect() as con:
        (row,) = con.execute(select(verification_events))
    return dict(row._mapping)


def _spread(engine: Engine, model: dict[str, Any], rng: random.Random) -> list[datetime]:
    """Store 400 more events like ``model`` over five days, some exactly on hour boundaries,
    the way an answer stores them (events and their hours in one transaction)."""
    base = datetime(2026, 11, 20, tzinfo=UTC)
    times = [base + timedelta(seconds=rng.randrange(5 * 86400)) for _ in range(360)]
    times += [base + timedelta(hours=rng.randrange(5 * 24)) for _ in range(40)]
    rows = [{**model, "receipt_id": f"rcp_t{i:06d}", "at": at} for i, at in enumerate(times)]
    with engine.begin() as con:
        db.insert_many(con, verification_events, rows)
        add_quota_use(con, rows)
    return times


def test_the_hourly_use_counts_exactly_the_windows_events(
    zone: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = zone
    model = _answered(client, keys)
    rng = random.Random(7)
    times = [*_spread(engine_of(client), model, rng), model["at"].replace(tzinfo=UTC)]
    starts = [at + timedelta(microseconds=d) for at in rng.sample(times, 60) for d in (-1, 0, 1)]
    starts += [datetime.fromtimestamp(quota_hour(at) * 3600, UTC) for at in rng.sample(times, 20)]
    starts += [datetime(2026, 11, 19, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)]
    with engine_of(client).connect() as con:
        for since in starts:
            exact = sum(1 for at in times if at > since)
            for cap in (1, 7, 150, 10**9):
                found = quota_used(con, model["tenant_id"], model["template_id"], since, cap)
                assert found == min(cap, exact), (since, cap)
            assert quota_used(con, model["tenant_id"], "ENT_AGE", since, 10**9) == 0


def _use(engine: Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as con:
        return {tuple(r) for r in con.execute(select(verification_quota_use))}


def test_the_migration_fills_the_hourly_use_from_the_stored_events(
    zone: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = zone
    engine = engine_of(client)
    _spread(engine, _answered(client, keys), random.Random(11))
    written = _use(engine)
    assert sum(r[3] for r in written) == 401
    config = Config()
    config.set_main_option("script_location", str(Path(schema.__file__).parent / "migrations"))
    with engine.begin() as con:
        config.attributes["connection"] = con
        command.downgrade(config, "0005")
    db.migrate(engine)
    assert _use(engine) == written
