"""Prometheus metrics at ``/metrics`` (docs/operations.md): zone staff only on the API's port,
or without a key on a separate listener (``metrics_port``); labels are route templates, codes,
dataset and template ids — never SQL, a subject id or a key."""

from __future__ import annotations

import re
import socket

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sandbox.config import Settings
from tests.support.app import auth, running_app
from tests.support.servers import free_port
from tests.support.verification import ask, grant

QUERY_SQL = "SELECT industry, COUNT(*) AS n FROM registry GROUP BY industry"
REFUSED_SQL = "SELECT credit_code FROM registry WHERE credit_code = '91110108MA01XYZW9Q'"
TEMPLATE = "SI_CONTINUITY"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: TestClient, key: str) -> str:
    response = client.get("/metrics", headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_metrics_are_served_to_zone_staff_only(client: TestClient, keys: dict[str, str]) -> None:
    assert client.get("/metrics").status_code == 401
    refused = client.get("/metrics", headers=auth(keys["analyst"]))
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert client.get("/metrics", headers=auth(keys["verifier"])).status_code == 403
    assert "veil_http_requests_total" in scrape(client, keys["admin"])


def test_a_query_a_verification_and_a_refusal_are_counted(
    client: TestClient, keys: dict[str, str]
) -> None:
    analyst = auth(keys["analyst"])
    answered = client.post(
        "/v1/queries",
        json={"dataset": "enterprise", "sql": QUERY_SQL, "epsilon": 0.5},
        headers=analyst,
    )
    assert answered.status_code == 200, answered.text
    refused = client.post(
        "/v1/queries",
        json={"dataset": "enterprise", "sql": REFUSED_SQL, "epsilon": 0.5},
        headers=analyst,
    )
    assert refused.status_code == 400, refused.text
    code = refused.json()["code"]
    consent, salt = grant(client, keys, TEMPLATE, 6)
    verified = ask(client, keys["verifier"], TEMPLATE, consent, keys["subject_id"], 6, salt)
    assert verified.status_code == 200, verified.text
    outcome = verified.json()["outcome"]

    # a caller's text where a template id goes is never a label
    wrong = ask(client, keys["verifier"], keys["subject_id"], consent, keys["subject_id"], 6, salt)
    assert wrong.status_code >= 400

    text = scrape(client, keys["admin"])
    assert value(text, "veil_verifications_total", template="unknown", outcome="refused") == 1
    route = {"route": "/v1/queries", "method": "POST"}
    assert value(text, "veil_http_requests_total", **route, status="200") == 1
    assert value(text, "veil_http_requests_total", **route, status="400") == 1
    assert (
        value(
            text, "veil_http_requests_total", route="/v1/verifications", method="POST", status="200"
        )
        == 1
    )
    assert value(text, "veil_http_request_duration_seconds_count", route="/v1/queries") == 2
    assert value(text, "veil_refusals_total", code=code) == 1
    assert value(text, "veil_verifications_total", template=TEMPLATE, outcome=outcome) == 1
    # ε from the ledger's settled charges: the answered query's, not the refused one's
    assert value(text, "veil_budget_spent_total", dataset="enterprise", unit="epsilon") == 0.5
    assert value(text, "veil_executor_workers", state="alive") == 2
    assert value(text, "veil_executor_workers", state="size") == 2
    busy = value(text, "veil_executor_workers", state="busy")  # the facts index may be building
    assert busy + value(text, "veil_executor_workers", state="idle") == 2
    assert value(text, "veil_executor_queue") >= 0
    assert value(text, "veil_executor_healthy") == 1
    states = {"off", "building", "ready"}
    assert sum(value(text, "veil_facts_index_state", state=s) for s in states) == 1

    # no label value carries the SQL, the subject, a consent, a salt or a key
    for secret in (
        QUERY_SQL,
        REFUSED_SQL,
        "91110108MA01XYZW9Q",
        keys["subject_id"],
        consent,
        salt.hex(),
        *(v for k, v in keys.items() if v.startswith("veil_")),
    ):
        assert secret not in text, secret
    labels = {v for (_, pairs) in samples(text) for (_, v) in pairs}
    assert all(re.fullmatch(r"[A-Za-z0-9_./{}+:-]*", v) for v in labels), labels


def test_raw_paths_are_not_labels(client: TestClient, keys: dict[str, str]) -> None:
    admin = auth(keys["admin"])
    client.get("/v1/datasets/enterprise", headers=admin)
    client.get("/v1/no/such/path/91110108MA01XYZW9Q", headers=admin)
    text = scrape(client, keys["admin"])
    assert (
        value(
            text,
            "veil_http_requests_total",
            route="/v1/datasets/{dataset}",
            method="GET",
            status="200",
        )
        == 1
    )
    assert "91110108MA01XYZW9Q" not in text and "/v1/no/such" not in text
    assert (
        value(text, "veil_http_requests_total", route="unmatched", method="GET", status="404") == 1
    )


def test_a_separate_listener_serves_metrics_without_a_key(settings: Settings) -> None:
    port = free_port()
    with running_app(settings, metrics_port=port) as client:
        client.get("/healthz")
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200
        assert 'veil_http_requests_total{method="GET",route="/healthz",status="200"}' in (
            response.text
        )
    # the listener is closed with the app
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        closed = False
    except httpx.TransportError:
        closed = True
    assert closed


def test_a_metrics_port_that_cannot_be_taken_refuses_to_start(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError), running_app(settings, metrics_port=port):
            pass
