"""Fixtures of the connector tests: a small policy, and real PostgreSQL and S3-compatible servers.

PostgreSQL: the tests use ``VEIL_TEST_POSTGRES_URL`` when it is set; otherwise one throwaway server
per test session (per xdist worker) is started with ``scripts/postgres.sh`` and stopped at the end.
If that cannot be done the PostgreSQL tests are skipped — except under CI (``CI`` set), where they
fail. S3: moto's server mode on a free local port, one per session.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from policies.loader import parse_policy
from policies.model import Policy, Table
from tests.support.connectors import POLICY
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def policy() -> Policy:
    return parse_policy(POLICY, "firms.toml")


@pytest.fixture()
def table(policy: Policy) -> Table:
    return policy.tables[0]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("VEIL_TEST_POSTGRES_URL")
    if url:
        yield from _own_database(url)
        return
    env_file = tmp_path_factory.mktemp("pg") / "postgres.env"
    script = ROOT / "scripts" / "postgres.sh"
    try:
        subprocess.run(
            ["bash", str(script), "start", str(env_file)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _unavailable(f"scripts/postgres.sh failed: {detail.decode(errors='replace')[-500:]}")
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    try:
        yield values["VEIL_TEST_POSTGRES_URL"]
    finally:
        subprocess.run(
            ["bash", str(script), "stop", values["VEIL_TEST_POSTGRES_DIR"]],
            check=False,
            capture_output=True,
            timeout=120,
        )


def _own_database(url: str) -> Iterator[str]:
    """A database of this session (this xdist worker) on the shared server: the tests create
    and drop schemas in it, which tests on another worker must not see."""
    name = f"veil_conn_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
