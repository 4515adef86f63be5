"""Every date-time query parameter takes an RFC 3339 date-time with an offset and nothing else.

A number (``until=0.5`` was read as half a second after 1970), a bare date, a date-time without
an offset (whose zone is anyone's guess), or the variants a lenient parser takes (no seconds,
``+0800``, a space for the ``T`` — which is also what an unescaped ``+`` becomes in a query
string) is refused with the request-validation problem naming the parameter. The parameters are
found on the app's routes, so a new one is covered without being listed here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sandbox.api.params import RFC3339
from sandbox.config import Settings
from tests.support.app import auth, running_app

REFUSED = [
    "0.5",
    "1700000000",
    "-1",
    "1e9",
    "2026-01-01",  # a bare date
    "2026-01-01T00:00:00",  # no offset
    "2026-01-01T00:00Z",  # no seconds
    "2026-01-01T00:00:00+0800",
    "2026-01-01 00:00:00Z",
    "2026-01-01T00:00:00 08:00",  # "+08:00" sent unescaped
    "2026-13-01T00:00:00Z",  # the right shape, no such month (pydantic's message says so)
    "2026-02-30T00:00:00Z",
    "2026-01-01T23:59:60Z",
    "2026-01-01T00:00:00Z junk",
    "now",
    "",
]
ACCEPTED = [
    "2026-01-01T00:00:00Z",
    "2026-01-01T08:00:00+08:00",
    "2025-12-31T19:00:00-05:00",
    "2026-01-01T00:00:00.123456Z",
    "2026-01-01t00:00:00z",
]


@pytest.fixture(scope="module")
def app(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("times") / "data"
    shutil.copytree(demo_dir, data_dir)
    with running_app(Settings(data_dir=data_dir, workers=1, worker_threads=1)) as client:
        yield client


@pytest.fixture(scope="module")
def admin(app: TestClient) -> dict[str, str]:
    data_dir: Path = app.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    return auth(json.loads((data_dir / "demo-keys.json").read_text())["admin"])


def date_time_parameters(client: TestClient) -> list[tuple[str, str]]:
    """(path, name) of every query parameter of a GET route that the OpenAPI document says is a
    date-time."""
    found = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for param in operations.get("get", {}).get("parameters", []):
            schema = param["schema"]
            if param["in"] == "query" and any(
                option.get("format") == "date-time" for option in schema.get("anyOf", [schema])
            ):
                found.append((path, param["name"]))
    return found


def test_the_date_time_parameters_are_found(app: TestClient) -> None:
    assert {("/v1/ledger", "since"), ("/v1/ledger", "until")} <= set(date_time_parameters(app))


@pytest.mark.parametrize("value", REFUSED)
def test_a_date_time_parameter_refuses_anything_but_rfc_3339(
    app: TestClient, admin: dict[str, str], value: str
) -> None:
    for path, name in date_time_parameters(app):
        response = app.get(path, params={name: value}, headers=admin)
        assert response.status_code == 422, (path, name, value, response.text)
        problem = response.json()
        assert problem["code"] == "invalid_request"
        assert problem["errors"][0]["field"] == f"query.{name}", problem
        if not RFC3339.fullmatch(value):
            assert "RFC 3339" in problem["errors"][0]["message"], problem


@pytest.mark.parametrize("value", ACCEPTED)
def test_a_date_time_parameter_takes_rfc_3339_with_an_offset(
    app: TestClient, admin: dict[str, str], value: str
) -> None:
    for path, name in date_time_parameters(app):
        response = app.get(path, params={name: value}, headers=admin)
        assert response.status_code == 200, (path, name, value, response.text)
