"""The verification batch parser, fuzzed: whatever the body — random bytes, random JSON nested
at random depths with repeated names, random CSV with quotes, line breaks, NULs and long fields —
it yields request lines and per-line errors that are coded 4xx, or refuses the batch with a
coded 4xx. Never another exception (a 500 over HTTP). Then a few random bodies go to the real
route, whose every answer and every per-line error must be a coded 4xx or a success.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.config import Settings
from sandbox.errors import VeilError
from sandbox.verification.requests import VerifyRequest, parse_batch
from tests.support.app import auth, running_app

MEDIA = st.sampled_from(
    ["application/json", "text/csv", "", "application/json; charset=utf-8", "text/plain"]
)
FIELDS = ["template", "version", "subject", "claim", "salt", "consent", "purpose"]
# JSON text hand-written where json.dumps would not write it: lone surrogates, NaN, huge numbers.
ODD_TOKENS = st.sampled_from(
    ['"\\ud800"', '"\\udfff\\ud800"', "NaN", "-Infinity", "1e999", "9" * 5_000, "-0", '"\\u0000"']
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=10,
)


def parse(body: bytes, media: str) -> None:
    """The parser's lines are requests or coded 4xx errors, or it refuses with a coded 4xx."""
    try:
        lines = parse_batch(body, media)
    except VeilError as exc:
        assert 400 <= exc.status < 500 and exc.error_code, exc
        return
    for line in lines:
        if isinstance(line, VeilError):
            assert 400 <= line.status < 500 and line.error_code, line
        else:
            assert isinstance(line, VerifyRequest)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2_000), media=MEDIA)
def test_random_bytes(body: bytes, media: str) -> None:
    parse(body, media)


@st.composite
def json_batches(draw: st.DrawFn) -> str:
    """A batch-shaped document (or not), written as JSON text with odd tokens, deep nesting and
    repeated names spliced in."""
    line = draw(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=7))
    lines = draw(st.lists(st.one_of(st.just(line), VALUES), max_size=5))
    doc: Any = draw(st.sampled_from([{"requests": lines}, lines, {"requests": lines, "x": 1}]))
    text = json.dumps(doc)
    splice = draw(st.integers(0, 4))
    if splice == 1:  # a value somewhere becomes an odd token
        text = text.replace("null", draw(ODD_TOKENS), 1)
    elif splice == 2:  # a member is named twice
        text = text.replace('{"', '{"subject": "a", "', 1).replace('{"', '{"subject": "b", "', 1)
    elif splice == 3:  # some value nests deep
        depth = draw(st.integers(1, 3_000))
        text = text.replace("null", "[" * depth + "1" + "]" * depth, 1)
    elif splice == 4:  # cut short
        text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=150, deadline=None)
@given(text=json_batches(), media=st.sampled_from(["application/json", ""]))
def test_random_json(text: str, media: str) -> None:
    parse(text.encode("utf-8", "surrogatepass"), media)


@st.composite
def csv_batches(draw: st.DrawFn) -> str:
    header = draw(st.lists(st.sampled_from([*FIELDS, "other", ""]), min_size=1, max_size=8))
    rows = draw(
        st.lists(
            st.lists(
                st.one_of(
                    st.text(max_size=30),
                    st.sampled_from(['"', '""', "\n", "\r\n", "\x00", ",", "123", "-1", "9" * 30]),
                    st.just("x" * 131_073),
                ),
                max_size=9,
            ),
            max_size=6,
        )
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):  # unbalanced quotes, stray characters
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(['"', "\x00", "\r", 'a"b'])) + text[at:]
    return text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=csv_batches())
def test_random_csv(text: str) -> None:
    parse(text.encode("utf-8", "surrogatepass"), "text/csv")


# -- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("batch-fuzz") / "data"
    shutil.copytree(demo_dir, data_dir)
    with running_app(Settings(data_dir=data_dir, workers=1, worker_threads=1)) as client:
        yield client


@pytest.fixture(scope="module")
def verifier(app: TestClient) -> dict[str, str]:
    data_dir: Path = app.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    return auth(json.loads((data_dir / "demo-keys.json").read_text())["verifier"])


BODIES = st.one_of(
    st.tuples(
        json_batches().map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.just("application/json"),
    ),
    st.tuples(csv_batches().map(lambda t: t.encode("utf-8", "surrogatepass")), st.just("text/csv")),
    st.tuples(st.binary(max_size=500), MEDIA),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=BODIES)
def test_the_batch_route_answers_random_bodies_with_codes(
    app: TestClient, verifier: dict[str, str], case: tuple[bytes, str]
) -> None:
    body, media = case
    headers = {**verifier, "Content-Type": media} if media else verifier
    response = app.post("/v1/verifications/batch", content=body, headers=headers)
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code == 200:
        for result in answer["results"]:
            if "error" in result:
                assert 400 <= result["error"]["status"] < 500, result
    else:
        assert 400 <= response.status_code < 500 and answer["code"], answer
