"""Version numbers count the versions made: a failed load uses up none (it is kept under its own
load id, its number released), and two loads begun at once never hold the same number.

Through the real load path: HTTP on the demo data directory, and the onboarding services on a
state store of each backend (SQLite; PostgreSQL with ``VEIL_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from sandbox.audit.store import read_entries
from sandbox.clock import now
from sandbox.errors import Conflict, VeilError
from sandbox.onboarding.loads import STALE_AFTER, Loads
from sandbox.onboarding.services import Onboarding
from sandbox.store import db
from sandbox.store.schema import version_loads
from tests.support.app import auth, engine_of
from tests.support.onboarding import (
    POLICY,
    ROWS,
    ZONE,
    current_version,
    load,
    wait,
    workspace_files,
    write_csv,
)
from tests.support.store import LOCAL, local_audit

BAD_TYPE = [ROWS[0], "A2,西城,12a,2020-01-31"]


def test_failed_loads_use_up_no_version_number(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    assert load(client, admin, write_csv(data_dir, "a.csv", ROWS))["version"] == 1
    failures = [
        load(client, admin, write_csv(data_dir, "bad.csv", BAD_TYPE)),
        load(client, admin, "nope.csv"),
        load(client, admin, write_csv(data_dir, "dupes.csv", [ROWS[0], ROWS[0]])),
    ]
    for failed in failures:
        assert (failed["state"], failed["version"], failed["current"]) == ("failed", None, False)
    assert [f["error"]["code"] for f in failures] == [
        "type_conversion",
        "source_not_found",
        "quality_rule_failed",
    ]
    ids = [f["load"] for f in failures]
    assert len(set(ids)) == 3 and all(i.startswith("load_") for i in ids)
    # each failed load stays recorded under its id, with its error
    url = f"/v1/zones/{ZONE}/datasets/firms"
    shown = client.get(f"{url}/loads/{ids[0]}", headers=auth(admin)).json()
    assert (shown["load"], shown["version"], shown["error"]["code"]) == (
        ids[0],
        None,
        "type_conversion",
    )
    # the next good load is version 2, right after the last version made
    ready = load(client, admin, write_csv(data_dir, "b.csv", ROWS[:2]))
    assert (ready["state"], ready["version"], ready["current"]) == ("ready", 2, True)
    assert client.get(f"{url}/versions/2", headers=auth(admin)).json()["load"] == ready["load"]
    listed = client.get(f"{url}/versions", headers=auth(admin)).json()["versions"]
    assert [(v["version"], v.get("load")) for v in listed] == [
        (1, listed[0]["load"]),
        (2, ready["load"]),
        *((None, i) for i in ids),
    ]
    assert workspace_files(data_dir) == ["v1.sealed", "v2.sealed"]
    # the audit log tells the loads apart by id: the released number 2 was held three times
    with engine_of(client).connect() as con:
        entries = [e.entry for e in read_entries(con, limit=100_000, kind="onboarding")]
    failed_refs = [e["refs"] for e in entries if e["action"] == "load.failed"]
    assert [(r["version"], r["load"]) for r in failed_refs] == [(2, i) for i in ids]
    missing = client.get(f"{url}/loads/load_nope", headers=auth(admin))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    refused = client.get(f"{url}/loads/{ids[0]}", headers=auth(keys["analyst"]))
    assert refused.status_code == 403


def test_the_next_number_follows_the_last_version_made_not_the_current_one(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    load(client, admin, write_csv(data_dir, "a.csv", ROWS))
    load(client, admin, write_csv(data_dir, "b.csv", ROWS[:3]))
    url = f"/v1/zones/{ZONE}/datasets/firms/versions"
    assert client.post(f"{url}/1/activate", headers=auth(admin)).status_code == 200
    assert load(client, admin, write_csv(data_dir, "bad.csv", BAD_TYPE))["state"] == "failed"
    again = load(client, admin, write_csv(data_dir, "c.csv", ROWS[:2]))
    assert (again["version"], again["current"]) == (3, True)  # 2 stays version 2
    assert current_version(client, admin) == 3


def test_the_start_of_a_load_points_at_the_load(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    """A client polling what the 202 named learns the outcome even when the load fails and its
    number goes to the next load."""
    admin = keys["admin"]
    body = {"policy": POLICY, "source": write_csv(data_dir, "bad.csv", BAD_TYPE)}
    started = client.post(
        f"/v1/zones/{ZONE}/datasets/firms/versions", json=body, headers=auth(admin)
    )
    assert started.status_code == 202, started.text
    view = started.json()
    assert view["url"] == f"/v1/zones/{ZONE}/datasets/firms/loads/{view['load']}"
    assert started.headers["Location"] == view["url"]
    assert view["version"] == 1  # held while it runs
    done = wait(client, admin, view["url"])
    assert (done["state"], done["version"], done["load"]) == ("failed", None, view["load"])
    quality = client.get(
        f"/v1/datasets/firms/quality?load={view['load']}", headers=auth(admin)
    ).json()
    assert (quality["state"], quality["version"]) == ("failed", None)
    both = client.get(
        f"/v1/datasets/firms/quality?load={view['load']}&version=1", headers=auth(admin)
    )
    assert (both.status_code, both.json()["code"]) == (400, "invalid_request")


# -- the services, on each state store backend ----------------------------------------------------


@pytest.fixture()
def onboarding(state_url: str, tmp_path: Path) -> Any:
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = db.connect(state_url)
    services = Onboarding.build(engine, local_audit(engine), tmp_path / "data" / "workspaces")
    services.zones.create_zone(LOCAL, ZONE, "domain", "Operator", "Zone")
    yield services
    engine.dispose()


def begin_at_once(loads: Loads, source: str, count: int) -> list[Any]:
    """``count`` loads of one dataset begun in the same moment: each pending load or error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def begin(i: int) -> None:
        barrier.wait()
        try:
            results[i] = loads.begin_load(LOCAL, ZONE, "firms", POLICY, source)
        except VeilError as exc:
            results[i] = exc

    threads = [threading.Thread(target=begin, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_loads_begun_at_once_never_hold_one_number(
    onboarding: Onboarding, tmp_path: Path
) -> None:
    good = tmp_path / "firms.csv"
    good.write_text("credit_code,district,revenue,founded\n" + "\n".join(ROWS) + "\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("credit_code,district,revenue,founded\n" + "\n".join(BAD_TYPE) + "\n")
    loads = onboarding.loads
    for round_, source in enumerate((bad, good, good)):  # a new dataset, then an existing one
        results = begin_at_once(loads, str(source), 6)
        begun = [r for r in results if not isinstance(r, VeilError)]
        refused = [r for r in results if isinstance(r, VeilError)]
        assert len(begun) == 1, results
        assert all(isinstance(r, Conflict) and r.status == 409 for r in refused), refused
        (pending,) = begun
        # the failed first load released 1; the second takes it, the third follows it
        assert pending.version == [1, 1, 2][round_]
        try:
            loads.run_load(pending)
        except VeilError:
            assert round_ == 0
    with loads.engine.connect() as con:
        rows = con.execute(
            select(version_loads.c.version, version_loads.c.state).order_by(
                version_loads.c.started_at
            )
        ).all()
    assert [tuple(r) for r in rows] == [(None, "failed"), (1, "ready"), (2, "ready")]
    # the store itself refuses a second load holding a number
    with pytest.raises(IntegrityError), loads.engine.begin() as con:
        con.execute(
            version_loads.insert().values(
                id="load_twin", dataset_id="firms", version=2, zone_id=ZONE, state="loading",
                source="x", policy="x", path="x", rows_loaded=0, started_at=now(),
                updated_at=now(),
            )
        )  # fmt: skip


def test_an_interrupted_load_releases_its_number_and_its_unregistered_file(
    onboarding: Onboarding, tmp_path: Path
) -> None:
    """A load stopped between sealing and registering (kill -9) left a sealed file that no
    version names; the next load marks it interrupted, frees the number and removes the file."""
    good = tmp_path / "firms.csv"
    good.write_text("credit_code,district,revenue,founded\n" + "\n".join(ROWS) + "\n")
    loads = onboarding.loads
    stopped = loads.begin_load(LOCAL, ZONE, "firms", POLICY, str(good))
    stopped.path.parent.mkdir(parents=True, exist_ok=True)
    stopped.path.write_bytes(b"sealed, never registered")
    with loads.engine.begin() as con:
        con.execute(
            update(version_loads)
            .where(version_loads.c.id == stopped.load)
            .values(updated_at=now() - STALE_AFTER - timedelta(seconds=1))
        )
    pending = loads.begin_load(LOCAL, ZONE, "firms", POLICY, str(good))
    assert pending.version == stopped.version == 1
    assert not stopped.path.exists()
    interrupted = onboarding.versions.get_load(LOCAL, ZONE, "firms", stopped.load)
    assert (interrupted.state, interrupted.version) == ("failed", None)
    assert interrupted.error is not None and interrupted.error["code"] == "load_interrupted"
    # the interrupted load, had it gone on, could not register: its number is another's now
    with pytest.raises(VeilError) as info:
        loads.run_load(stopped)
    assert info.value.error_code == "load_interrupted"
    assert loads.run_load(pending).version == 1
    assert pending.path.exists()
