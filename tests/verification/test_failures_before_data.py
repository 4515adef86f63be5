"""A verification whose query fails before any data was read is not charged.

A verification is charged in its answer transaction: the leakage event (bits), the quota unit
and the consent's use are written with the outcome, and a line whose query failed once the
engine ran is charged all the same (an uncertain outcome). When the query fails before a worker
received it — here, the stored workspace is missing — there is no outcome at all: the answer is
the coded error and nothing is charged, so the consent can be used again once the file is back.

Real demo zone, real app and workers, real state store.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from sandbox.config import Settings
from sandbox.store import db
from sandbox.store.schema import consents, verification_events, verification_quota_use, versions
from tests.support.app import auth, engine_of, running_app


def own_workspace(settings: Settings, dataset: str) -> Path:
    """Point the catalogue at this test's copy of the workspace (the copied state store names
    the files of the shared demo directory, which no test may alter)."""
    copy = settings.workspace_dir / dataset / "v1.sealed"
    engine = db.connect(settings.state_url)
    with engine.begin() as con:
        con.execute(update(versions).where(versions.c.dataset_id == dataset).values(path=str(copy)))
    engine.dispose()
    return copy


def consent(client: TestClient, keys: dict[str, str]) -> str:
    granted = client.post(
        "/v1/consents",
        json={
            "tenant": keys["verifier_tenant"],
            "template": "ENT_STATUS",
            "purpose": "credit_underwriting",
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            "max_uses": 1,
        },
        headers=auth(keys["subject"]),
    )
    assert granted.status_code == 201, granted.text
    return str(granted.json()["id"])


def verify(client: TestClient, keys: dict[str, str], consent_id: str) -> Any:
    return client.post(
        "/v1/verifications",
        json={
            "template": "ENT_STATUS",
            "subject": keys["subject_id"],
            "consent": consent_id,
            "purpose": "credit_underwriting",
        },
        headers=auth(keys["verifier"]),
    )


def charged(client: TestClient, consent_id: str) -> tuple[int, int, int]:
    """(events, quota units, consent uses) in the state store."""
    with engine_of(client).connect() as con:
        events = con.execute(select(func.count()).select_from(verification_events)).scalar_one()
        quota = con.execute(
            select(func.coalesce(func.sum(verification_quota_use.c.units), 0))
        ).scalar_one()
        uses = con.execute(select(consents.c.uses).where(consents.c.id == consent_id)).scalar_one()
    return int(events), int(quota), int(uses)


def test_a_missing_workspace_charges_no_verification(
    data_dir: Path, keys: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)
    stored = own_workspace(settings, "enterprise")
    kept = tmp_path / "kept.sealed"
    shutil.move(stored, kept)
    with running_app(settings) as client:
        consent_id = consent(client, keys)
        failed = verify(client, keys, consent_id)
        assert (failed.status_code, failed.json()["code"]) == (500, "workspace_missing")
        assert charged(client, consent_id) == (0, 0, 0)
    shutil.move(kept, stored)  # the file is back: the one use of the consent is still there
    with running_app(settings) as client:
        answered = verify(client, keys, consent_id)
        assert answered.status_code == 200, answered.text
        assert charged(client, consent_id) == (1, 1, 1)
