"""Quantiles over the HTTP app: the preview states their interval widths, and a request can ask
for a finer candidate grid (``quantile_resolution``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.app import auth

MEDIAN = "SELECT MEDIAN(wage) AS med FROM cps1988"
DECLARED = {
    *[25.0 * i for i in range(41)],
    *[1000.0 + 50.0 * i for i in range(21)],
    *[2000.0 + 100.0 * i for i in range(21)],
}


def post(client: TestClient, key: str, path: str, **body: object):
    payload = {"dataset": "cps1988", "sql": MEDIAN, "epsilon": 1.0, **body}
    return client.post(path, json=payload, headers=auth(key))


def test_preview_states_quantile_interval_widths(client, keys):
    response = post(client, keys["analyst"], "/v1/queries/preview")
    assert response.status_code == 200, response.text
    width = response.json()["expected_ci95_half_width"]["med"]
    assert width is not None  # null before: "depends on the data"
    assert set(width) == {"rank_at_n=100", "rank_at_n=1000", "rank_at_n=10000", "candidate_step"}
    assert 0 < width["rank_at_n=10000"] < width["rank_at_n=1000"] < 0.5
    assert width["candidate_step"] == 100.0  # the widest gap of the declared candidates
    finer = post(client, keys["analyst"], "/v1/queries/preview", quantile_resolution=1000)
    assert finer.status_code == 200, finer.text
    fine = finer.json()["expected_ci95_half_width"]["med"]
    assert fine["candidate_step"] == pytest.approx(4000 / 999)
    assert fine["rank_at_n=10000"] > width["rank_at_n=10000"]  # more candidates: a bit wider


@pytest.mark.parametrize("value", [1, 1001, 10.5, "64", True])
@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/preview"])
def test_quantile_resolution_is_validated(client, keys, path, value):
    response = post(client, keys["analyst"], path, quantile_resolution=value)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert "quantile_resolution" in response.text


def test_finer_resolution_changes_the_answers_granularity(client, keys):
    coarse = post(client, keys["analyst"], "/v1/queries", epsilon=1.0)
    assert coarse.status_code == 200, coarse.text
    (row,) = coarse.json()["rows"]
    assert row["med"]["value"] in DECLARED
    assert all(end in DECLARED for end in row["med"]["ci95"])
    grid = {i * 4000 / 999 for i in range(1000)}
    off_declared = 0
    for epsilon in (1.0, 1.2, 1.5):
        fine = post(
            client, keys["analyst"], "/v1/queries", epsilon=epsilon, quantile_resolution=1000
        )
        assert fine.status_code == 200, fine.text
        assert not fine.json()["cached"]  # a resolution is a different query
        value = fine.json()["rows"][0]["med"]["value"]
        assert value in DECLARED or min(abs(value - g) for g in grid) < 1e-9
        off_declared += value not in DECLARED
    assert off_declared >= 1


def test_two_resolutions_are_two_cached_answers(client, keys):
    first = post(client, keys["analyst"], "/v1/queries", epsilon=0.3, quantile_resolution=200)
    again = post(client, keys["analyst"], "/v1/queries", epsilon=0.3, quantile_resolution=200)
    other = post(client, keys["analyst"], "/v1/queries", epsilon=0.3, quantile_resolution=300)
    assert first.status_code == again.status_code == other.status_code == 200, other.text
    assert again.json()["cached"] and not first.json()["cached"]
    assert not other.json()["cached"]
