"""Crashes after the reservation: the charge stays, no answer is released, budgets stay consistent.

Two kills, both with SIGKILL while a query is running, after its charge was reserved:

(a) the DuckDB executor worker (in-process app): the request fails with a 5xx and no values, the
    charge is marked ``failed`` and its cost stays spent;
(b) the server process itself (uvicorn, one worker; SQLite and PostgreSQL): the client gets no
    answer; after a restart on the same data directory and store the charge is still
    ``reserved``, still spent, never refunded, and the grant's counters agree with the ledger.

The query is made slow on purpose (a two-table join grouped by year, about 4 s on a 100,000-row
demo with one DuckDB thread). The kill is not timed by a sleep: a watcher waits until the charge
row is ``reserved`` in the state store AND the executor worker has burnt CPU since (it is running
that query), then kills. The query runs for seconds after that point, so the kill lands mid-query.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from sandbox.config import Settings
from sandbox.ledger.charges import ChargeState, consistency
from sandbox.store import db
from sandbox.store.schema import charges
from tests.support.app import auth, running_app
from tests.support.demo import build_ledger_demo, demo_keys
from tests.support.ledger import Analyst, new_analyst
from tests.support.servers import Server, alive, child_pids
from tests.support.store import LOCAL

pytestmark = pytest.mark.slow

CRASH_DEMO_ROWS = 100_000
SLOW_SQL = (
    "SELECT year(t.month) AS y, COUNT(*) AS n "
    "FROM tax t JOIN utilities u USING (credit_code) GROUP BY y"
)
EPSILON = 0.1
COST_MICRO = 100_000
BUDGET_MICRO = 1_000_000
TICKS_BUSY = 5  # clock ticks (1/100 s) of worker CPU after the reservation: it is running


@pytest.fixture(scope="module")
def crash_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo big enough for a query that runs for seconds; built once per module."""
    data_dir = tmp_path_factory.mktemp("crash-demo") / "data"
    engine = build_ledger_demo(
        data_dir, f"sqlite:///{(data_dir / 'state.db').resolve()}", rows=CRASH_DEMO_ROWS
    )
    engine.dispose()
    return data_dir


@pytest.fixture()
def crash_dir(crash_demo: Path, tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "data"
    shutil.copytree(crash_demo, target)
    yield target


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _reserved(engine: Engine, grant_id: str) -> list[str]:
    with engine.connect() as con:
        rows = con.execute(
            select(charges.c.id).where(
                charges.c.grant_id == grant_id, charges.c.state == ChargeState.RESERVED
            )
        ).all()
    return [r.id for r in rows]


# The verification facts index builds on the executor's only worker when a server starts; a
# test that kills "the worker busy with the query" must not find it busy with that instead.
NO_INDEX = {"VEIL_VERIFICATION_INDEX_MAX_SUBJECTS": "0"}


class Killer(threading.Thread):
    """SIGKILLs ``victim()`` once ``grant_id`` has a reserved charge and ``worker`` is busy."""

    def __init__(self, engine: Engine, grant_id: str, worker: int, victim: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.grant_id, self.worker, self.victim = engine, grant_id, worker, victim
        self.killed_charge: str | None = None
        self.worker_ticks_at_kill = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                reserved = _reserved(self.engine, self.grant_id)
                if reserved:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("no charge was reserved within 60 s")
            start = _cpu_ticks(self.worker)
            while time.monotonic() < deadline:
                ticks = _cpu_ticks(self.worker) - start
                if ticks >= TICKS_BUSY:
                    assert _reserved(self.engine, self.grant_id) == reserved  # still running
                    os.kill(self.victim, signal.SIGKILL)
                    self.killed_charge, self.worker_ticks_at_kill = reserved[0], ticks
                    return
                time.sleep(0.005)
            raise AssertionError("the executor worker never started on the query")
        except BaseException as exc:
            self.error = exc


def _charge(engine: Engine, charge_id: str) -> dict[str, object]:
    with engine.connect() as con:
        row = con.execute(select(charges).where(charges.c.id == charge_id)).one()
    return dict(row._mapping)


def test_executor_worker_killed_mid_query_fails_the_charge_and_keeps_it_spent(
    crash_dir: Path,
) -> None:
    engine = db.connect(f"sqlite:///{(crash_dir / 'state.db').resolve()}")
    analyst = new_analyst(engine, budget_micro=BUDGET_MICRO, cap_micro=COST_MICRO)
    settings = Settings(
        data_dir=crash_dir,
        workers=1,
        worker_threads=1,
        query_timeout_s=60,
        verification_index_max_subjects=0,  # see NO_INDEX
    )
    body = {"dataset": "enterprise", "sql": SLOW_SQL, "epsilon": EPSILON}
    try:
        with running_app(settings, raise_server_exceptions=False) as client:
            executor = client.app.state.services.executor  # type: ignore[attr-defined]
            (worker,) = executor.worker_pids()
            killer = Killer(engine, analyst.grant_id, worker, victim=worker)
            killer.start()
            response = client.post("/v1/queries", json=body, headers=auth(analyst.key))
            killer.join(timeout=30)
            assert killer.error is None, killer.error
            assert killer.killed_charge is not None

            # No answer: a 5xx problem without values.
            assert 500 <= response.status_code < 600, response.text
            problem = response.json()
            assert problem["code"] == "execution_failed"
            assert "rows" not in problem and "value" not in response.text

            # The charge stays, failed, its cost spent; the ledger agrees with the grant.
            charge = _charge(engine, killer.killed_charge)
            assert charge["state"] == ChargeState.FAILED
            assert charge["cost_micro"] == COST_MICRO
            assert charge["answer"] is None
            ledger = client.app.state.services.ledger  # type: ignore[attr-defined]
            grant = ledger.grants.grant_by_id(LOCAL, analyst.grant_id)
            assert grant.spent_micro == COST_MICRO
            assert consistency(engine, analyst.grant_id).ok

            # The pool replaced the worker; the next query runs and is charged on top.
            assert executor.worker_pids() != [worker]
            assert not alive(worker)
            again = client.post(
                "/v1/queries",
                json={**body, "sql": "SELECT COUNT(*) AS n FROM registry"},
                headers=auth(analyst.key),
            )
            assert again.status_code == 200, again.text
            assert again.json()["budget"]["spent"] == 2 * EPSILON
            # A retry of the failed query is charged again: a failed release is not cached.
            retry = client.post("/v1/queries", json=body, headers=auth(analyst.key))
            assert retry.status_code == 200, retry.text
            assert retry.json()["cached"] is False
            assert retry.json()["budget"]["spent"] == pytest.approx(3 * EPSILON)
        assert consistency(engine, analyst.grant_id).ok
    finally:
        engine.dispose()


def _executor_workers(server_pid: int) -> list[int]:
    """The server's executor processes (multiprocessing spawn children)."""
    found = []
    for pid in child_pids(server_pid):
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def test_server_killed_mid_query_keeps_the_reservation_after_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url: str | None = None
    if backend == "sqlite":
        crash_dir: Path = request.getfixturevalue("crash_dir")
        engine = db.connect(f"sqlite:///{(crash_dir / 'state.db').resolve()}")
    else:
        database_url = request.getfixturevalue("postgres_url")
        crash_dir = tmp_path / "pg-data"
        engine = build_ledger_demo(crash_dir, database_url, rows=CRASH_DEMO_ROWS)
    analyst: Analyst = new_analyst(engine, budget_micro=BUDGET_MICRO, cap_micro=COST_MICRO)
    admin = demo_keys(crash_dir)["admin"]
    body = {"dataset": "enterprise", "sql": SLOW_SQL, "epsilon": EPSILON}
    first = Server(crash_dir, tmp_path / "server-1.log", database_url=database_url, workers=1)
    second = Server(crash_dir, tmp_path / "server-2.log", database_url=database_url, workers=1)
    first.env.update(NO_INDEX)
    try:
        first.start()
        (worker,) = _executor_workers(first.pid)
        killer = Killer(engine, analyst.grant_id, worker, victim=first.pid)
        killer.start()
        outcome: object
        try:
            outcome = httpx.post(
                f"{first.url}/v1/queries", json=body, headers=auth(analyst.key), timeout=60
            )
        except httpx.HTTPError as exc:  # the connection dies with the server
            outcome = exc
        killer.join(timeout=30)
        assert killer.error is None, killer.error
        assert killer.killed_charge is not None
        assert isinstance(outcome, httpx.HTTPError), f"an answer was released: {outcome!r}"
        assert first.process is not None
        assert first.process.wait(timeout=10) == -signal.SIGKILL

        # The orphaned executor worker notices its parent is gone and exits.
        deadline = time.monotonic() + 20
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker), "the executor worker outlived its server"
        first.stop()

        # Nothing released, nothing refunded: the charge is still reserved and spent.
        charge = _charge(engine, killer.killed_charge)
        assert charge["state"] == ChargeState.RESERVED
        assert charge["answer"] is None

        second.start()
        with httpx.Client(base_url=second.url, timeout=60) as http:
            entries = http.get(
                "/v1/ledger", params={"tenant": analyst.tenant_id}, headers=auth(admin)
            ).json()["entries"]
            (entry,) = [e for e in entries if e["entry"] == "charge"]
            assert entry["id"] == killer.killed_charge
            assert entry["state"] == "reserved"
            assert entry["amount"] == EPSILON
            budgets = http.get("/v1/budgets", headers=auth(analyst.key)).json()["budgets"]
            (budget,) = budgets
            assert budget["spent"] == EPSILON
            assert budget["remaining"] == pytest.approx(BUDGET_MICRO / 1e6 - EPSILON)
            assert consistency(engine, analyst.grant_id).ok

            # The restarted server serves, and spends on top of the uncertain charge.
            after = http.post(
                "/v1/queries",
                json={**body, "sql": "SELECT COUNT(*) AS n FROM registry"},
                headers=auth(analyst.key),
            )
            assert after.status_code == 200, after.text
            assert after.json()["budget"]["spent"] == 2 * EPSILON
        assert consistency(engine, analyst.grant_id).ok
    finally:
        first.stop()
        second.stop()
        engine.dispose()
