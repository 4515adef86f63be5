"""Schemathesis against the app's own OpenAPI document, in process (ASGI): every operation, with
generated valid and invalid input, called as a demo member whose role may make the call.

Checked: no 5xx, and every answer is documented — its status code, its content type, its headers
and its body's schema (problem documents included). A few examples per operation keep the run
to a minute or two on a 2-core machine; ``-m "not schemathesis"`` leaves it out locally.

One pytest item per operation (listed from the document of an app that is never started); the
examples come from Hypothesis directly, with the operation's strategies.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi

from sandbox.config import Settings
from tests.support.app import auth, build_app

pytestmark = pytest.mark.schemathesis

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 4}


def operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the document (building it starts nothing)."""
    document = build_app(Settings(data_dir=Path("never-created"))).openapi()
    return sorted(
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    )


@pytest.fixture(scope="module")
def app(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data_dir = tmp_path_factory.mktemp("schemathesis") / "data"
    shutil.copytree(demo_dir, data_dir)
    yield build_app(Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20))
    asgi.shutdown_lifespans()  # schemathesis started the app (executor included): stop it


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def keys_by_role(demo_dir: Path) -> dict[str, str]:
    """The demo members' keys (the app's data directory is a copy of the demo's)."""
    loaded: dict[str, str] = json.loads((demo_dir / "demo-keys.json").read_text())
    return loaded


def caller(method: str, path: str) -> str:
    """The demo member whose role may make the call (the admin for everything administrative)."""
    if path.startswith("/v1/queries"):
        return "analyst"
    if path.startswith("/v1/verifications") or (
        path.startswith("/v1/receipts") and method == "GET"
    ):
        return "verifier"
    if path.startswith("/v1/consents") and method != "GET":
        return "subject"
    return "admin"


@pytest.mark.parametrize(("method", "path"), operations(), ids=lambda v: str(v))
def test_operation_answers_as_documented(
    api_schema: Any, keys_by_role: dict[str, str], method: str, path: str
) -> None:
    operation = api_schema[path][method]
    headers = auth(keys_by_role[caller(method, path)])
    for mode, examples in EXAMPLES.items():

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # no invalid input to make (every value its parameters take is valid)
            if mode != GenerationMode.NEGATIVE:
                raise
