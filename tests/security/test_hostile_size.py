"""Huge and deeply nested SQL: a coded refusal every time, never a 500 or a crashed parser.

The gate checks the text's length and its bracket nesting before anything parses it
(``policies/gate/limits.py``: ``sql_too_long``, ``sql_too_deep``; over HTTP the body schema caps
``sql`` as well, ``invalid_request``), and refuses expressions nested deeper than it accepts while
parsing (``sql_too_deep`` again), including nesting without brackets (``NOT NOT …``,
``a OR b OR …``) and the parser's own ``RecursionError``. The gate is checked twice: with its
limits, and with the length and bracket limits lifted, so that the expression depth rules are
shown to hold on their own (in a thread, like a request).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from policies.errors import QueryRejected
from policies.gate import check, parse, plan
from policies.gate import limits as limits_module
from policies.gate.limits import DEFAULT, SqlLimits
from policies.loader import load_policy
from tests.support.hostile import HostileService

WHERE = "SELECT count(*) FROM tax WHERE "
MIB = 2**20

SIZE_CASES = {
    "one_mib_comment": "SELECT count(*) FROM tax /*" + "x" * MIB + "*/",
    "one_mib_string": "SELECT count(*) FROM registry WHERE industry = '" + "x" * MIB + "'",
    "parentheses_10000": WHERE + "(" * 10_000 + "arrears" + ")" * 10_000,
    "or_terms_5000": WHERE + " OR ".join(["revenue = 1"] * 5_000),
    "in_items_200000": WHERE + "revenue IN (" + ",".join(["1"] * 200_000) + ")",
    "statements_100000": "SELECT 1;" * 100_000,
    "parentheses_4980": WHERE + "(" * 4_980 + "arrears" + ")" * 4_980,
    "brackets_open_9900": WHERE + "revenue = " + "[" * 9_900,
    "functions_1900": WHERE + "revenue = " + "abs(" * 1_900 + "1" + ")" * 1_900,
    "subqueries_600": "SELECT count(*) FROM " + "(SELECT * FROM " * 600 + "tax" + ")" * 600,
    "brackets_33": WHERE + "(" * 33 + "arrears" + ")" * 33,
    "not_chain_2400": WHERE + "NOT " * 2_400 + "arrears",
    "or_chain_880": WHERE + " OR ".join(["arrears"] * 880),
    "unary_minus_4900": WHERE + "revenue = " + "- " * 4_900 + "1",
    "plus_chain_4900": WHERE + "revenue = " + "+".join(["1"] * 4_900),
    "statements_1100": "SELECT 1;" * 1_100,
}

# What refuses each case over HTTP (the size limits are configurable, so where the body schema
# might refuse first, either coded refusal is accepted).
HTTP_EXPECTED: dict[str, set[tuple[str, int]]] = {
    "one_mib_comment": {("invalid_request", 422), ("sql_too_long", 400)},
    "one_mib_string": {("invalid_request", 422), ("sql_too_long", 400)},
    "parentheses_10000": {("sql_too_long", 400)},
    "or_terms_5000": {("sql_too_long", 400)},
    "in_items_200000": {("sql_too_long", 400)},
    "statements_100000": {("sql_too_long", 400)},
    "parentheses_4980": {("sql_too_deep", 400)},
    "brackets_open_9900": {("sql_too_deep", 400)},
    "functions_1900": {("sql_too_deep", 400)},
    "subqueries_600": {("sql_too_deep", 400)},
    "brackets_33": {("sql_too_deep", 400)},
    "not_chain_2400": {("sql_too_deep", 400)},
    "or_chain_880": {("sql_too_deep", 400)},
    "unary_minus_4900": {("sql_too_deep", 400)},
    "plus_chain_4900": {("sql_too_deep", 400)},
    "statements_1100": {("multiple_statements", 400)},
}

# The gate alone, with its length cap lifted: the rule that refuses each case.
UNCAPPED_EXPECTED = {
    "parentheses_10000": "sql_too_deep",
    "or_terms_5000": "sql_too_deep",
    "parentheses_4980": "sql_too_deep",
    "brackets_open_9900": "sql_too_deep",
    "functions_1900": "sql_too_deep",
    "subqueries_600": "sql_too_deep",
    "not_chain_2400": "sql_too_deep",
    "or_chain_880": "sql_too_deep",
    "unary_minus_4900": "sql_too_deep",
    "plus_chain_4900": "sql_too_deep",
    "statements_1100": "multiple_statements",
    "one_mib_string": "invalid_literal",
}

POLICY = load_policy(
    Path(__file__).resolve().parents[2] / "sandbox" / "demo" / "data" / "enterprise.toml"
)


def gate_in_thread(sql: str, limits: SqlLimits = DEFAULT) -> BaseException | None:
    """Run the whole gate in a fresh thread (a request's situation); return what it raised."""
    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            plan(check(parse(sql, limits), POLICY), POLICY)
        except BaseException as exc:  # anything at all must be reported, not lost
            raised[0] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the gate did not finish"
    return raised[0]


def test_inventory() -> None:
    print(f"\nhuge or deeply nested SQL: {len(SIZE_CASES)} inputs")
    assert len(SIZE_CASES) >= 12
    assert set(HTTP_EXPECTED) == set(SIZE_CASES)


@pytest.mark.parametrize("name", list(SIZE_CASES))
def test_http_refuses_with_a_code_and_charges_nothing(
    hostile_service: HostileService, name: str
) -> None:
    before = hostile_service.charges()
    response = hostile_service.query(SIZE_CASES[name])
    assert response.status_code < 500, response.text[:300]
    problem = response.json()
    assert (problem["code"], response.status_code) in HTTP_EXPECTED[name], problem
    hostile_service.assert_refused(response, problem["code"], response.status_code)
    assert len(response.content) < 4096  # the refusal does not echo the text back
    assert hostile_service.charges() == before


@pytest.mark.parametrize("name", ["one_mib_comment", "parentheses_10000", "or_terms_5000"])
def test_gate_refuses_over_its_length_cap(name: str) -> None:
    raised = gate_in_thread(SIZE_CASES[name])
    assert isinstance(raised, QueryRejected) and raised.rule == "sql_too_long", raised


@pytest.mark.parametrize("name", list(UNCAPPED_EXPECTED))
def test_gate_depth_rules_hold_without_the_length_cap(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Even past the length and bracket limits, nothing escapes as a crash: every case gets its
    rule."""
    monkeypatch.setattr(limits_module, "MAX_SQL_CHARS", 10 * MIB)
    lifted = SqlLimits(max_chars=10 * MIB, max_depth=10**9)
    started = time.monotonic()
    raised = gate_in_thread(SIZE_CASES[name], lifted)
    assert isinstance(raised, QueryRejected), repr(raised)
    assert raised.rule == UNCAPPED_EXPECTED[name], raised
    assert time.monotonic() - started < 20


def test_service_is_up_after_the_size_cases(hostile_service: HostileService) -> None:
    hostile_service.assert_up()
