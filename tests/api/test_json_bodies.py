"""JSON request bodies, on every route that reads one: a member named twice, at any depth, is
refused (``duplicate_json_key``, naming it), and so is nesting deeper than 64 levels
(``invalid_request`` with the ``limit``) — before any route, authentication or Idempotency-Key
claim, and after the body size limit. The decoder itself (:mod:`sandbox.jsonbody`) is tested
first.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from httpx import Response

from sandbox import jsonbody
from sandbox.api.bodies import BodyRoute
from sandbox.config import Settings
from sandbox.errors import DuplicateJsonKey, InvalidRequest
from tests.support.app import auth, running_app

BODY_LIMIT = 8192
PROBLEM = "application/problem+json"

# -- the decoder ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "key"),
    [
        ('{"a": 1, "a": 2}', "a", "a"),
        ('{"a": 1, "b": {"c": [1, {"d": 1, "e": 2, "d": 3}]}}', "b.c.1.d", "d"),
        ('[{"x": 1}, {"x": {"y": 1, "y": 1}}]', "1.x.y", "y"),
        ('{"a": {"z": 1, "z": 1}, "b": {"q": 1, "q": 2}}', "a.z", "z"),  # the first in the text
        ('{"a b": 1, "a b": 2}', "?", "?"),  # a name that is not a plain word is not repeated
        ('{"": 1, "": 2}', "?", "?"),
    ],
)
def test_a_member_named_twice_is_refused_with_where(text: str, field: str, key: str) -> None:
    with pytest.raises(DuplicateJsonKey) as info:
        jsonbody.loads(text.encode())
    problem = info.value.problem()
    assert (problem["code"], problem["status"]) == ("duplicate_json_key", 400)
    assert (problem["field"], problem["key"]) == (field, key)


def test_depth_is_counted_by_structure_not_by_brackets_in_strings() -> None:
    assert jsonbody.loads(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(InvalidRequest) as info:
        jsonbody.loads(b"[" * 65 + b"]" * 65)
    assert info.value.extra["limit"] == jsonbody.MAX_DEPTH == 64
    deep_text = json.dumps({"s": "[{" * 10_000, "t": '\\"[[' * 100, "u": ["]]]" * 50]})
    assert jsonbody.loads(deep_text.encode())["s"] == "[{" * 10_000
    mixed = {"a": [{"b": [{"c": "}}]]" * 40}]}] * 200}
    assert jsonbody.loads(json.dumps(mixed).encode()) == mixed
    with pytest.raises(InvalidRequest):
        jsonbody.loads(('{"a":' * 100_000 + "1" + "}" * 100_000).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"a": 1,}',
        "[1]".encode("utf-16"),  # JSON is UTF-8
        b'["\xed\xa0\x80"]',  # a surrogate, encoded: not UTF-8
        b"1" * 5_000,  # more digits than Python reads into an integer
        b"[1] [2]",
        b"nul",
    ],
)
def test_what_is_not_json_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        jsonbody.loads(data)


def test_json_decodes_as_before() -> None:
    doc = {"a": [1, 2.5, None, True, "é"], "b": {"c": "NaN"}}
    assert jsonbody.loads(json.dumps(doc).encode()) == doc
    assert jsonbody.loads("\ufeff[1]".encode()) == [1]  # a UTF-8 byte order mark is skipped
    assert jsonbody.loads(b"NaN") != jsonbody.loads(b"NaN")  # as Python's reader: a float


# -- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("bodies") / "data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, max_body_bytes=BODY_LIMIT)
    with running_app(settings) as client:
        yield client


@pytest.fixture(scope="module")
def keys(app: TestClient) -> dict[str, str]:
    data_dir: Path = app.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    loaded: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return loaded


def json_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path with every id filled in) of every route that reads a JSON body."""
    found = []
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, APIRoute) and (
            route.body_field is not None or context.path == "/v1/verifications/batch"
        ):
            path = str(context.path).replace("{", "").replace("}", "")
            found += [(method, path) for method in sorted(context.methods or ())]
    return found


def problem_of(response: Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["code"] == code, body
    return body


def send(client: TestClient, method: str, path: str, text: str, key: str) -> Response:
    headers = {**auth(key), "Content-Type": "application/json"}
    return client.request(method, path, content=text.encode(), headers=headers)


def key_for(path: str, keys: dict[str, str]) -> str:
    """The batch route checks the role before it reads the body; other routes read it first."""
    return keys["verifier"] if path == "/v1/verifications/batch" else keys["admin"]


def test_every_route_that_reads_json_goes_through_the_strict_reader(app: TestClient) -> None:
    for context in iter_route_contexts(app.app.routes):  # type: ignore[attr-defined]
        if isinstance(context.original_route, APIRoute):
            assert isinstance(context.original_route, BodyRoute), context.path
    assert len(json_routes(app)) >= 15


def test_every_json_route_refuses_a_member_named_twice(
    app: TestClient, keys: dict[str, str]
) -> None:
    for method, path in json_routes(app):
        key = key_for(path, keys)
        top = send(app, method, path, '{"name": "a", "name": "b"}', key)
        assert problem_of(top, 400, "duplicate_json_key")["field"] == "name", (method, path)
        nested = send(app, method, path, '{"x": [{"y": {"z": 1, "z": 2}}]}', key)
        assert problem_of(nested, 400, "duplicate_json_key")["field"] == "x.0.y.z", (method, path)


def test_every_json_route_refuses_deep_nesting(app: TestClient, keys: dict[str, str]) -> None:
    for method, path in json_routes(app):
        for depth in (65, 1_000, 4_000):
            text = '{"x":' + "[" * depth + "]" * depth + "}"
            deep = send(app, method, path, text, key_for(path, keys))
            assert problem_of(deep, 400, "invalid_request")["limit"] == 64, (method, path)


def test_the_strict_reader_runs_before_authentication(app: TestClient) -> None:
    response = send(app, "POST", "/v1/queries", '{"sql": "a", "sql": "b"}', "no-such-key")
    problem_of(response, 400, "duplicate_json_key")
    malformed = send(app, "POST", "/v1/queries", '{"sql": ', "no-such-key")
    assert problem_of(malformed, 422, "invalid_request")["errors"][0]["rule"] == "json_invalid"


def test_the_body_size_limit_comes_first(app: TestClient, keys: dict[str, str]) -> None:
    padding = "x" * BODY_LIMIT
    text = '{"sql": "a", "sql": "' + padding + '"}'
    problem_of(send(app, "POST", "/v1/queries", text, keys["analyst"]), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"sql": "a", "sql": "'
        for _ in range(4):
            yield padding.encode()[: BODY_LIMIT // 2]
        yield b'"}'

    headers = {**auth(keys["analyst"]), "Content-Type": "application/json"}
    chunked = app.post("/v1/queries", content=chunks(), headers=headers)
    problem_of(chunked, 413, "payload_too_large")


def test_a_refused_body_leaves_its_idempotency_key_free(
    app: TestClient, keys: dict[str, str]
) -> None:
    headers = {
        **auth(keys["analyst"]),
        "Content-Type": "application/json",
        "Idempotency-Key": "json-bodies-1",
    }
    good = {"dataset": "enterprise", "sql": "SELECT COUNT(*) FROM registry", "epsilon": 0.1}
    twice = json.dumps(good)[:-1] + ', "sql": "SELECT COUNT(*) FROM tax"}'
    refused = app.post("/v1/queries", content=twice.encode(), headers=headers)
    problem_of(refused, 400, "duplicate_json_key")
    answered = app.post("/v1/queries", content=json.dumps(good).encode(), headers=headers)
    assert answered.status_code == 200, answered.text
    again = app.post("/v1/queries", content=twice.encode(), headers=headers)
    problem_of(again, 400, "duplicate_json_key")  # refused before the key is looked at
    replayed = app.post("/v1/queries", content=json.dumps(good).encode(), headers=headers)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == answered.json()


def test_a_batch_with_an_idempotency_key_and_deep_json_is_refused(
    app: TestClient, keys: dict[str, str]
) -> None:
    headers = {
        **auth(keys["verifier"]),
        "Content-Type": "application/json",
        "Idempotency-Key": "json-bodies-2",
    }
    text = '{"requests": [' + "[" * 3_000 + "]" * 3_000 + "]}"
    problem_of(
        app.post("/v1/verifications/batch", content=text, headers=headers), 400, "invalid_request"
    )
    fine = app.post("/v1/verifications/batch", content='{"requests": []}', headers=headers)
    assert fine.status_code == 200, fine.text
