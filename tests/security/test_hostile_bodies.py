"""Hostile request bodies: JSON nested past any parser's depth, a CSV field past the CSV reader's
field limit, and JSON objects that name a member twice.

Each must be refused with a coded problem, never a 500: a verification batch nested 1,000 and
100,000 levels deep (``invalid_request``, with the ``limit``), also when an ``Idempotency-Key``
makes the edge read the body before the route does; a CSV batch with a field of 131,073
characters (one past Python's CSV field limit, ``invalid_request``); and a query whose body says
``sql`` twice — a proxy reading the first member would see another query than the last-wins
reader behind it — which is ``duplicate_json_key`` naming the member. Nothing is charged.
"""

from __future__ import annotations

import pytest

from tests.support.app import auth
from tests.support.hostile import HostileService

BATCH = "/v1/verifications/batch"
LINE = '{"template":"ENT_STATUS","subject":"s","consent":"c","purpose":"credit_underwriting"}'
CSV_HEADER = "template,subject,consent,purpose\n"


def deep_batch(depth: int) -> bytes:
    """A batch whose one line's claim is ``depth`` arrays deep."""
    claim = "[" * depth + "1" + "]" * depth
    return ('{"requests":[' + LINE[:-1] + ',"claim":' + claim + "}]}").encode()


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotency_key"])
def test_a_json_batch_nested_past_the_parser_is_refused_with_a_code(
    hostile_service: HostileService, depth: int, idempotent: bool
) -> None:
    headers = {**auth(hostile_service.keys["verifier"]), "Content-Type": "application/json"}
    if idempotent:
        headers["Idempotency-Key"] = f"hostile-deep-{depth}"
    before = hostile_service.charges()
    response = hostile_service.client.post(BATCH, content=deep_batch(depth), headers=headers)
    problem = hostile_service.assert_refused(response, "invalid_request")
    assert problem["limit"] == 64 and "nest" in problem["detail"], problem
    assert hostile_service.charges() == before


def test_a_json_object_nested_past_the_parser_is_refused_on_a_query(
    hostile_service: HostileService,
) -> None:
    nested = '{"a":' * 5_000 + "1" + "}" * 5_000
    body = '{"dataset":"enterprise","sql":"SELECT 1","epsilon":0.1,"x":' + nested + "}"
    before = hostile_service.charges()
    response = hostile_service.post_raw("/v1/queries", body.encode())
    hostile_service.assert_refused(response, "invalid_request")
    assert hostile_service.charges() == before


@pytest.mark.parametrize("size", [131_073, 1_000_000])
def test_a_csv_batch_field_past_the_field_limit_is_refused_with_a_code(
    hostile_service: HostileService, size: int
) -> None:
    headers = {**auth(hostile_service.keys["verifier"]), "Content-Type": "text/csv"}
    body = CSV_HEADER + "ENT_STATUS,s,c," + "x" * size + "\n"
    response = hostile_service.client.post(BATCH, content=body.encode(), headers=headers)
    problem = hostile_service.assert_refused(response, "invalid_request")
    assert "line 2" in problem["detail"], problem


def test_a_query_naming_sql_twice_is_refused_and_charges_nothing(
    hostile_service: HostileService,
) -> None:
    body = (
        '{"dataset": "enterprise", "sql": "SELECT COUNT(*) FROM registry", '
        '"sql": "SELECT * FROM registry", "epsilon": 0.1}'
    )
    before = hostile_service.charges()
    response = hostile_service.post_raw("/v1/queries", body.encode())
    problem = hostile_service.assert_refused(response, "duplicate_json_key", field="sql")
    assert problem["key"] == "sql"
    assert hostile_service.charges() == before


def test_a_batch_line_naming_a_member_twice_refuses_the_batch(
    hostile_service: HostileService,
) -> None:
    line = LINE[:-1] + ',"subject":"t"}'
    body = '{"requests":[' + LINE + "," + line + "]}"
    headers = {**auth(hostile_service.keys["verifier"]), "Content-Type": "application/json"}
    response = hostile_service.client.post(BATCH, content=body.encode(), headers=headers)
    hostile_service.assert_refused(response, "duplicate_json_key", field="requests.1.subject")


def test_service_is_up_after_the_hostile_bodies(hostile_service: HostileService) -> None:
    hostile_service.assert_up()
