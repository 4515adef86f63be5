"""Idempotency keys and the answer cache: a retry never charges twice; a repeat is free.

- The same ``Idempotency-Key`` retried 10 times (one after another, or 10 at once from threads)
  makes exactly one charge.
- The same canonical query again from the same tenant returns the stored noisy answer at no cost,
  even when the SQL text differs only in ways the gate canonicalises away (case, spacing,
  aliases, ``DATE`` literals, a trailing semicolon, comments).
- A genuinely different query, the same query at another ε, the same query from another tenant,
  and an equivalent query that the gate does NOT canonicalise to the same text are all charged.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sandbox.access.members import create_member
from sandbox.access.model import MemberRole
from sandbox.config import Settings
from sandbox.ledger import charges, entries
from sandbox.ledger.service import Ledger
from tests.support.app import auth, engine_of, running_app
from tests.support.ledger import Analyst, new_analyst
from tests.support.store import LOCAL, local_audit

SQL = "SELECT COUNT(*) AS n FROM registry WHERE founded >= '2001-01-01'"
EPSILON = 0.1
COST_MICRO = 100_000


@pytest.fixture(scope="module")
def client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the module: every test makes its own tenants, so they do not interfere."""
    data_dir = tmp_path_factory.mktemp("idempotency") / "data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=2, worker_threads=1, query_timeout_s=20)
    with running_app(settings) as test_client:
        yield test_client


def _analyst(client: TestClient, budget_micro: int = 2_000_000) -> Analyst:
    return new_analyst(engine_of(client), budget_micro=budget_micro, cap_micro=1_000_000)


def _query(
    client: TestClient, key: str, sql: str = SQL, epsilon: float = EPSILON, idem: str | None = None
) -> Any:
    headers = auth(key)
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return client.post(
        "/v1/queries",
        json={"dataset": "enterprise", "sql": sql, "epsilon": epsilon},
        headers=headers,
    )


def _charges(client: TestClient, analyst: Analyst) -> list[entries.LedgerEntry]:
    records = entries.entries(engine_of(client), tenant_id=analyst.tenant_id)
    return [e for e in records if e.entry == "charge"]


def _spent(client: TestClient, analyst: Analyst) -> int:
    ledger: Ledger = client.app.state.services.ledger  # type: ignore[attr-defined]
    return ledger.grants.grant_by_id(LOCAL, analyst.grant_id).spent_micro


def test_same_idempotency_key_retried_10_times_charges_once(client: TestClient) -> None:
    analyst = _analyst(client)
    responses = [_query(client, analyst.key, idem="retry-me") for _ in range(10)]
    assert {r.status_code for r in responses} == {200}
    first = responses[0].json()
    assert all(r.json() == first for r in responses)  # the very same answer, byte for byte
    assert first["cached"] is False
    (charge,) = _charges(client, analyst)
    assert charge.id == first["query_id"]
    assert charge.state == "released"
    assert _spent(client, analyst) == COST_MICRO
    assert charges.consistency(engine_of(client), analyst.grant_id).ok


def test_same_idempotency_key_from_10_threads_at_once_charges_once(client: TestClient) -> None:
    """One request claims the key. Each other one, depending on when it looks, gets:

    - 409 ``conflict`` (the key is still ``pending``: in progress), or
    - the released answer itself, replayed (the key is answered).

    Never a second charge, never a different noisy answer.
    """
    analyst = _analyst(client)
    n = 10
    barrier = threading.Barrier(n, timeout=30)

    def one(_: int) -> tuple[int, dict[str, Any]]:
        barrier.wait()
        response = _query(client, analyst.key, idem="together")
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n), timeout=120))

    (charge,) = _charges(client, analyst)
    assert charge.state == "released"
    assert _spent(client, analyst) == COST_MICRO
    original = _query(client, analyst.key, idem="together").json()  # a late retry: the answer
    assert original["query_id"] == charge.id
    assert original["cached"] is False

    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 409}, results
    assert statuses.count(200) >= 1  # the winner
    for status, body in results:
        if status == 409:
            # in progress: seen at the key check ("state": "pending"), or lost the race to
            # insert the key (nothing was charged)
            assert body["code"] == "conflict"
            assert body.get("state", "pending") == "pending"
        elif body["cached"]:
            assert body["query_id"] == original["query_id"]
            assert body["rows"] == original["rows"]
            assert body["cost"]["epsilon"] == 0.0
        else:
            assert body == original
    assert charges.consistency(engine_of(client), analyst.grant_id).ok


def test_idempotency_key_of_a_failed_query_stays_refused(settings: Settings) -> None:
    """A key whose query failed with a 5xx is not run again: 409 ``failed``, and no second
    charge. (Here the engine is gone, so the run failed before any data was read and its
    reservation was given back: the one charge is ``cancelled``.)"""
    with running_app(settings) as fresh:
        analyst = _analyst(fresh)
        fresh.app.state.services.executor.close()  # type: ignore[attr-defined]  # the engine is gone
        failed = _query(fresh, analyst.key, idem="doomed")
        assert failed.status_code >= 500, failed.text
        assert _spent(fresh, analyst) == 0  # reserved, then given back: nothing was read
        response = _query(fresh, analyst.key, idem="doomed")
        assert response.status_code == 409
        assert response.json()["code"] == "conflict"
        assert response.json()["state"] == "failed"
        assert _spent(fresh, analyst) == 0
        assert len(_charges(fresh, analyst)) == 1


def test_same_canonical_query_again_is_free_and_the_same_answer(client: TestClient) -> None:
    analyst = _analyst(client)
    first = _query(client, analyst.key)
    assert first.status_code == 200, first.text
    paid = first.json()
    again = _query(client, analyst.key).json()
    assert again["cached"] is True
    assert again["query_id"] == paid["query_id"]
    assert again["rows"] == paid["rows"]  # the stored noisy answer, not a new draw
    assert again["cost"]["epsilon"] == 0.0
    assert again["cost"]["delta"] == 0.0
    assert again["cost"]["mechanisms"] == []
    assert again["budget"]["spent"] == EPSILON
    assert len(_charges(client, analyst)) == 1
    assert _spent(client, analyst) == COST_MICRO

    # Another analyst of the same tenant: same tenant, same answer, still free.
    _, colleague = create_member(
        engine_of(client),
        local_audit(engine_of(client)),
        LOCAL,
        analyst.tenant_id,
        "colleague",
        MemberRole.ANALYST,
    )
    shared = _query(client, colleague).json()
    assert shared["cached"] is True
    assert shared["rows"] == paid["rows"]
    assert _spent(client, analyst) == COST_MICRO


EQUIVALENT_TEXTS = [
    "select   count(*)  as n\nfrom REGISTRY\nwhere FOUNDED >= '2001-01-01'",
    "SELECT COUNT(*) AS n FROM registry AS r WHERE r.founded >= '2001-01-01'",
    "SELECT COUNT(*) AS n FROM registry r WHERE (founded >= DATE '2001-01-01')",
    "SELECT COUNT(*) AS n FROM registry WHERE founded >= '2001-01-01';",
    "SELECT COUNT(*) n FROM registry WHERE founded >= '2001-01-01' -- the same query",
]


def test_equivalent_text_that_canonicalises_identically_is_cached(client: TestClient) -> None:
    analyst = _analyst(client)
    paid = _query(client, analyst.key).json()
    for text in EQUIVALENT_TEXTS:
        response = _query(client, analyst.key, sql=text)
        assert response.status_code == 200, (text, response.text)
        body = response.json()
        assert body["cached"] is True, text
        assert body["rows"] == paid["rows"], text
    assert len(_charges(client, analyst)) == 1
    assert _spent(client, analyst) == COST_MICRO


def test_different_queries_are_charged(client: TestClient) -> None:
    analyst = _analyst(client)
    paid = _query(client, analyst.key).json()
    assert paid["cached"] is False
    different = [
        # another literal: another query
        (SQL.replace("2001", "2002"), EPSILON),
        # the same text at another ε: another release
        (SQL, 0.2),
        # another output name: another query
        (SQL.replace("AS n", "AS m"), EPSILON),
        # equivalent, but the gate keeps the comparison's orientation: charged again (issue 3:
        # "equivalent-but-different queries are charged again")
        ("SELECT COUNT(*) AS n FROM registry WHERE '2001-01-01' <= founded", EPSILON),
    ]
    spent = COST_MICRO
    for sql, epsilon in different:
        response = _query(client, analyst.key, sql=sql, epsilon=epsilon)
        assert response.status_code == 200, (sql, response.text)
        body = response.json()
        assert body["cached"] is False, sql
        assert body["query_id"] != paid["query_id"]
        spent += round(epsilon * 1e6)
        assert _spent(client, analyst) == spent
    assert len(_charges(client, analyst)) == 1 + len(different)

    # Another tenant asking the same query pays for its own answer.
    other = _analyst(client)
    theirs = _query(client, other.key).json()
    assert theirs["cached"] is False
    assert _spent(client, other) == COST_MICRO
    assert charges.consistency(engine_of(client), analyst.grant_id).ok
    assert charges.consistency(engine_of(client), other.grant_id).ok
