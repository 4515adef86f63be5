"""The public client against a served demo: retries that reuse one Idempotency-Key (charged
once), typed errors with the problem code, and answers as plain results and DataFrames."""

from __future__ import annotations

import pytest

from sandbox.client import (
    ApiError,
    BadRequest,
    BudgetExceeded,
    Client,
    ConnectionFailed,
    NotFound,
    Retries,
    Unauthorized,
)
from tests.support.proxy import failing_once

FAST = Retries(attempts=3, backoff_s=0.01)
MEAN_WAGE = "SELECT AVG(wage) AS mean_wage FROM cps1988"


def _spent(client: Client) -> float:
    (budget,) = client.budgets("cps1988")
    return budget.spent


def _charges(admin: Client, query_id: str) -> list[dict[str, object]]:
    entries = admin.call("GET", "/v1/ledger", params={"dataset": "cps1988"})["entries"]
    return [e for e in entries if query_id in str(e)]


def test_a_retry_after_a_lost_answer_reuses_its_key_and_is_charged_once(demo_server) -> None:
    url, keys, _ = demo_server
    with Client(url, keys["analyst"]) as direct, Client(url, keys["admin"]) as admin:
        before = _spent(direct)
        with (
            failing_once(url, "drop_answer") as proxy,
            Client(proxy.url, keys["analyst"], retries=FAST) as veil,
        ):
            answer = veil.query("cps1988", MEAN_WAGE, epsilon=0.05)
        assert len(proxy.keys) == 2 and proxy.keys[0] is not None
        assert proxy.keys[0] == proxy.keys[1]  # one key for the call, sent with each attempt
        assert answer.replayed and not answer.cached  # the stored answer, not a second run
        assert _spent(direct) == pytest.approx(before + 0.05)
        assert answer.budget.spent == pytest.approx(before + 0.05)
        assert len(_charges(admin, answer.query_id)) == 1


def test_a_503_is_retried_with_the_same_key(demo_server) -> None:
    url, keys, _ = demo_server
    with Client(url, keys["analyst"]) as direct:
        before = _spent(direct)
        with (
            failing_once(url, "unavailable") as proxy,
            Client(proxy.url, keys["analyst"], retries=FAST) as veil,
        ):
            answer = veil.query("cps1988", MEAN_WAGE, epsilon=0.06)
        assert len(proxy.keys) == 2 and proxy.keys[0] == proxy.keys[1] is not None
        assert not answer.replayed and not answer.cached
        assert _spent(direct) == pytest.approx(before + 0.06)


def test_a_retry_while_the_first_attempt_runs_waits_for_its_answer(demo_server) -> None:
    url, keys, _ = demo_server
    with Client(url, keys["analyst"]) as direct:
        before = _spent(direct)
        with (
            failing_once(url, "drop_request") as proxy,
            Client(proxy.url, keys["analyst"], retries=Retries(attempts=8, backoff_s=0.01)) as veil,
        ):
            answer = veil.query("cps1988", MEAN_WAGE, epsilon=0.07)
        assert len(set(proxy.keys)) == 1 and answer.replayed
        # the retries found the first attempt still running (409, state pending) and waited
        assert 409 in proxy.statuses and proxy.statuses.count(200) == 2
        assert _spent(direct) == pytest.approx(before + 0.07)


def test_each_call_has_its_own_key(demo_server) -> None:
    url, keys, _ = demo_server
    with (
        failing_once(url, "unavailable") as proxy,
        Client(proxy.url, keys["analyst"], retries=FAST) as veil,
    ):
        veil.preview("cps1988", MEAN_WAGE, epsilon=0.05)
        veil.preview("cps1988", MEAN_WAGE, epsilon=0.05)
    assert len(proxy.keys) == 3 and proxy.keys[1] != proxy.keys[2]


def test_without_retries_a_lost_answer_is_a_connection_failure(demo_server) -> None:
    url, keys, _ = demo_server
    with (
        failing_once(url, "drop_answer") as proxy,
        Client(proxy.url, keys["analyst"], retries=Retries(attempts=1)) as veil,
        pytest.raises(ConnectionFailed) as caught,
    ):
        veil.query("cps1988", MEAN_WAGE, epsilon=0.05)
    assert caught.value.error_code == "connection_failed"


def test_refusals_are_typed_errors_with_the_problem_code(demo_server) -> None:
    url, keys, _ = demo_server
    with Client(url, keys["analyst"], retries=FAST) as veil:
        with pytest.raises(BadRequest) as grouped:
            veil.query(
                "cps1988",
                "SELECT education, COUNT(*) AS n FROM cps1988 GROUP BY education",
                epsilon=0.1,
            )
        assert grouped.value.code == "column_not_groupable"
        assert grouped.value.status == 400
        assert grouped.value.problem()["code"] == "column_not_groupable"
        with pytest.raises(BudgetExceeded) as costly:
            cap = veil.budgets("cps1988")[0].per_query_cap
            veil.query("cps1988", MEAN_WAGE, epsilon=cap * 1.5)
        assert (costly.value.code, costly.value.status) == ("budget_exhausted", 403)
        with pytest.raises(NotFound) as missing:
            veil.dataset("no_such_dataset")
        assert missing.value.code == "not_found"
    with Client(url, "not-a-key", retries=FAST) as stranger, pytest.raises(Unauthorized) as who:
        stranger.budgets()
    assert isinstance(who.value, ApiError) and who.value.status == 401


def test_an_answer_as_rows_and_as_dataframes(demo_server) -> None:
    url, keys, _ = demo_server
    sql = "SELECT region, COUNT(*) AS n, AVG(wage) AS mean_wage FROM cps1988 GROUP BY region"
    with Client(url, keys["analyst"]) as veil:
        answer = veil.query("cps1988", sql, epsilon=0.2)
    assert answer.keys == ("region",) and answer.outputs == ("n", "mean_wage")
    cell = answer.cell("mean_wage", region="south")
    assert cell.ci_low is not None and cell.ci_high is not None and cell.value is not None
    assert cell.ci_low <= cell.ci_high
    long = answer.to_pandas()
    assert list(long.columns) == ["region", "output", "value", "ci_low", "ci_high"]
    assert len(long) == 2 * len(answer.rows) == 8
    south = long[(long.region == "south") & (long.output == "mean_wage")].iloc[0]
    assert south.value == cell.value and south.ci_low == cell.ci_low
    wide = answer.to_pandas(wide=True)
    assert list(wide.columns) == [
        "region", "n", "n_ci_low", "n_ci_high",
        "mean_wage", "mean_wage_ci_low", "mean_wage_ci_high",
    ]  # fmt: skip
    assert str(wide["mean_wage"].dtype) == "float64"
