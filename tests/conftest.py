"""Shared fixtures: a real demo data directory, a real app, real workers, and state stores on
SQLite and PostgreSQL. Every app of the tests is built by ``tests.support.app`` (``running_app``,
``serving``), the ``client`` and ``live`` fixtures included.

PostgreSQL tests need ``VEIL_TEST_POSTGRES_URL`` (``.ci/run`` starts a throwaway server with
``scripts/postgres.sh``). Without it they skip locally and FAIL under CI (``CI`` set). Each test
gets a fresh database on that server, dropped afterwards, so tests can run in parallel.

Helpers (functions, classes, constants) are in ``tests/support/``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from sandbox.config import Settings
from sandbox.demo.build import build_demo
from sandbox.store import db
from tests.support.app import running_app, serving
from tests.support.demo import DEMO_TEST_ROWS
from tests.support.store import in_ci, local_audit, sqlalchemy_postgres_url

# -- the demo zone and its app ------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("veil-demo")
    engine = db.connect(Settings(data_dir=data_dir).state_url)
    build_demo(engine, data_dir, rows=DEMO_TEST_ROWS, audit=local_audit(engine))
    engine.dispose()
    return data_dir


@pytest.fixture()
def data_dir(demo_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo data directory, so each test starts from fresh budgets."""
    target = tmp_path / "data"
    shutil.copytree(demo_dir, target)
    return target


@pytest.fixture()
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, workers=2, worker_threads=1, query_timeout_s=20)


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture()
def keys(data_dir: Path) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return loaded


@pytest.fixture()
def live(settings: Settings) -> Iterator[str]:
    """A real server on a free port (uvicorn in a thread), for CLI commands run with ``--url``."""
    with serving(settings) as url:
        yield url


# -- state stores: SQLite and PostgreSQL --------------------------------------------------------


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


@pytest.fixture()
def pg_client(postgres_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The demo zone with its state store on PostgreSQL."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine = db.connect(postgres_url)  # the server's keys: it checks the entries' MACs
    build_demo(engine, data_dir, rows=DEMO_TEST_ROWS, audit=local_audit(engine, data_dir / "keys"))
    engine.dispose()
    settings = Settings(data_dir=data_dir, database_url=postgres_url, workers=1, worker_threads=1)
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture()
def pg_keys(pg_client: TestClient) -> dict[str, str]:
    data_dir: Path = pg_client.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    loaded: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return loaded
