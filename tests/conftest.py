"""Shared fixtures: a real demo data directory, a real app, real workers."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from sandbox.access.model import Actor
from sandbox.audit.log import AuditLog
from sandbox.config import Settings
from sandbox.demo.build import build_demo
from sandbox.store import db
from server import create_app

DEMO_TEST_ROWS = 36_000  # about 1,300 enterprises: enough for real answers, quick to build
LOCAL = Actor.local()  # the local administrator: who a test acts as when it sets up its store
_AUDIT_LOGS: weakref.WeakKeyDictionary[Engine, AuditLog] = weakref.WeakKeyDictionary()


def local_audit(engine: Engine) -> AuditLog:
    """The audit log of a test's own state store: one per engine, with keys beside a SQLite
    store (or in a fresh directory for PostgreSQL)."""
    found = _AUDIT_LOGS.get(engine)
    if found is None:
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database:
            key_dir = Path(database).parent / "keys"
        else:
            key_dir = Path(tempfile.mkdtemp(prefix="veil-test-keys-"))
        found = _AUDIT_LOGS[engine] = AuditLog.open(engine, key_dir)
    return found


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
    import shutil

    target = tmp_path / "data"
    shutil.copytree(demo_dir, target)
    return target


@pytest.fixture()
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, workers=2, worker_threads=1, query_timeout_s=20)


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture()
def keys(data_dir: Path) -> dict[str, str]:
    import json

    loaded: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return loaded


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    """A port nothing listens on now (it may be taken before it is used: callers retry)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture()
def live(settings: Settings) -> Iterator[str]:
    """A real server on a free port (uvicorn in a thread), for CLI commands run with ``--url``."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
