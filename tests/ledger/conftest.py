"""Ledger test fixtures: state stores on SQLite and PostgreSQL, demo zones, real servers.

PostgreSQL tests need ``VEIL_TEST_POSTGRES_URL`` (``.ci/run`` starts a throwaway server with
``scripts/postgres.sh``). Without it they skip locally and FAIL under CI (``CI`` set). Each test
gets a fresh database on that server, dropped afterwards, so tests can run in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from policies.accounting import Accounting
from sandbox.access import members, tenants
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.clock import now
from sandbox.demo.build import build_demo
from sandbox.ledger import grants
from sandbox.ledger.service import Ledger
from sandbox.store import db
from sandbox.store.schema import datasets, zones
from tests.conftest import LOCAL, free_port, local_audit

REPO = Path(__file__).resolve().parents[2]
LEDGER_DEMO_ROWS = 20_000


# -- PostgreSQL ---------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def sqlalchemy_postgres_url(url: str) -> str:
    """``scripts/postgres.sh`` prints ``postgresql://``; SQLAlchemy needs psycopg 3's scheme."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL (its maintenance database)."""
    url = os.environ.get("VEIL_TEST_POSTGRES_URL", "").strip()
    if not url:
        message = (
            "VEIL_TEST_POSTGRES_URL is not set: start a server with "
            "`scripts/postgres.sh ENV_FILE` and export the URL it writes"
        )
        if in_ci():
            pytest.fail(f"CI is set but {message}", pytrace=False)
        pytest.skip(message)
    return sqlalchemy_postgres_url(url)


@pytest.fixture()
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    name = f"veil_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.execute(text(f'CREATE DATABASE "{name}"'))
        base, _, _ = postgres_server.rpartition("/")
        yield f"{base}/{name}"
        with admin.connect() as con:
            con.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture()
def state_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A state store URL for ``backend``: SQLite in the data directory, or a fresh PG database."""
    if backend == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{(tmp_path / 'data' / 'state.db').resolve()}"


def connect_store(state_url: str) -> Engine:
    """The state store at ``state_url`` (a SQLite file's directory made first), migrated."""
    if state_url.startswith("sqlite:///"):
        Path(state_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return db.connect(state_url)


# -- demo zone and tenants ----------------------------------------------------------------------


def build_ledger_demo(data_dir: Path, state_url: str, rows: int = LEDGER_DEMO_ROWS) -> Engine:
    """The demo zone in ``data_dir`` (workspaces) with its state in ``state_url``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.connect(state_url)
    build_demo(engine, data_dir, rows=rows, audit=local_audit(engine))
    return engine


def seed_catalog(engine: Engine, dataset: str = "ds") -> None:
    """A zone and a dataset row (no workspace): enough for grants and the ledger."""
    with engine.begin() as con:
        con.execute(
            zones.insert().values(
                id="z", kind="domain", title="z", operator="o", description="", created_at=now()
            )
        )
        con.execute(datasets.insert().values(id=dataset, zone_id="z", title="d", created_at=now()))


def demo_keys(data_dir: Path) -> dict[str, str]:
    keys: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return keys


def local_ledger(engine: Engine) -> Ledger:
    """The ledger of a test's own state store, recording in its audit log."""
    return Ledger(engine, local_audit(engine))


def analyst_actor(member_id: str, tenant_id: str) -> Actor:
    """An analyst acting (as its API key would make it), for calls made without HTTP."""
    return Actor.of(Member(member_id, tenant_id, "analyst", MemberRole.ANALYST))


@dataclass(frozen=True)
class Analyst:
    tenant_id: str
    member_id: str
    key: str
    grant_id: str

    @property
    def actor(self) -> Actor:
        return analyst_actor(self.member_id, self.tenant_id)


def new_analyst(
    engine: Engine,
    *,
    budget_micro: int,
    cap_micro: int,
    dataset: str = "enterprise",
    delta_pico: int = 0,
    refresh: grants.Refresh = grants.Refresh.NONE,
    name: str = "Ledger Test Institute",
) -> Analyst:
    """A fresh research tenant with one analyst (and key) and one grant on ``dataset``."""
    tenant = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, name, "research", "public_welfare"
    )
    member, key = members.create_member(
        engine, local_audit(engine), LOCAL, tenant, "analyst", MemberRole.ANALYST
    )
    grant = local_ledger(engine).grants.create_grant(
        LOCAL,
        tenant,
        dataset,
        Accounting.PURE,
        budget_micro=budget_micro,
        delta_pico=delta_pico,
        per_query_cap_micro=cap_micro,
        refresh=refresh,
    )
    return Analyst(tenant, member, key, grant)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count_sql(day: int) -> str:
    """A distinct COUNT query per ``day`` (the answer cache would make repeats free)."""
    since = date(2000, 1, 1) + timedelta(days=day)
    return f"SELECT COUNT(*) AS n FROM registry WHERE founded >= '{since.isoformat()}'"


# -- real servers -------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


# Start failures worth another try: a free port taken before uvicorn bound it.
RETRY_START_ON = ("address already in use",)


class Server:
    """``uvicorn server:create_app --factory`` as a subprocess in its own process group.

    Only this group is ever signalled: ``stop`` terminates it (SIGTERM, then SIGKILL), including
    executor workers orphaned by a killed server process.
    """

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        database_url: str | None = None,
        workers: int = 1,
        executor_workers: int = 1,
        query_timeout_s: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.workers = workers
        self.env = {
            **os.environ,
            "VEIL_DATA_DIR": str(data_dir.resolve()),
            "VEIL_WORKERS": str(executor_workers),
            "VEIL_WORKER_THREADS": "1",
            "VEIL_QUERY_TIMEOUT_S": str(query_timeout_s),
        }
        self.env.pop("VEIL_DATABASE_URL", None)
        if database_url is not None:
            self.env["VEIL_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> None:
        for _attempt in range(3):  # a free port can be taken before uvicorn binds it
            self.port = free_port()
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "server:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                # A 2-core CI machine under load: a slow health-check answer must not get a busy
                # worker restarted, nor an idle keep-alive connection be closed under a client
                # that is about to reuse it (both reset connections mid-test).
                "--timeout-worker-healthcheck",
                "60",
                "--timeout-keep-alive",
                "120",
                "--log-level",
                "info",
            ]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready(timeout_s):
                return
            self.stop()
            if not any(sign in self.log() for sign in RETRY_START_ON):
                break
        raise AssertionError(f"the server did not start; its log:\n{self.log()[-4000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        """Ready when /healthz answers and every uvicorn worker finished its startup."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        start_mark = len(self.log())
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            started = self.log()[start_mark:].count("Application startup complete")
            if started >= self.workers:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        return True
            time.sleep(0.1)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group is the server's own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None


@contextlib.contextmanager
def running_server(data_dir: Path, log_path: Path, **kwargs: object) -> Iterator[Server]:
    server = Server(data_dir, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()
