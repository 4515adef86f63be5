"""Hostile queries whose safe outcome is an answer under DP, charged — not a refusal.

The gate cannot tell a difference attack or a query that singles out one subject from an honest
query: both are aggregates over allowed columns. What makes them safe is the accounting and the
release: every query is charged before it runs, every released number carries noise calibrated to
what one privacy unit can change, the same query again returns the same noisy answer free (so
repeating it cannot average the noise away), and every cell of a grouped query is released only if
its noisy number of distinct units reaches the policy's ``min_group_size`` (10 in the demo), with
partition selection for keys that are not public (a query without GROUP BY has one row, always
released). Each class spends from a fresh grant of its own.

Ground truth comes from the demo data generated again (``hostile_truth``), which lets these tests
name the cells that hold one enterprise and check what happens to them.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date
from typing import Any

import pytest

from tests.support.hostile import HostileService, HostileTruth

MIN_GROUP_SIZE = 10  # min_group_size of the demo policy (sandbox/demo/data/enterprise.toml)

ANSWERED_CLASSES = {
    "difference_attacks": ["count_minus_one_firm", "grouped_minus_one_firm", "rephrased_again"],
    "rare_group_keys": ["private_keys_founded", "public_key_grid"],
    "identifier_literals_answered": ["exact_capital", "founded_and_district", "sum_one_firm"],
}


def one_firm(truth: HostileTruth) -> tuple[str, date, float]:
    """(district, founding date, registered capital) of a firm that is alone on its founding day
    in its district, in a district big enough to be released."""
    rows = truth.tables["registry"].to_pylist()
    per_district = Counter(r["district"] for r in rows)
    per_day = Counter((r["district"], r["founded"]) for r in rows)
    capitals = Counter(r["registered_capital"] for r in rows)
    for r in rows:
        if (
            per_district[r["district"]] >= 40
            and per_day[(r["district"], r["founded"])] == 1
            and capitals[r["registered_capital"]] == 1
        ):
            return r["district"], r["founded"], r["registered_capital"]
    raise AssertionError("the demo data has no firm alone on its founding day")


def count_value(body: dict[str, Any], column: str = "n") -> tuple[int, float]:
    """The noisy value of a one-row answer and its 95% interval's half-width."""
    (row,) = body["rows"]
    cell = row[column]
    lo, hi = cell["ci95"]
    return cell["value"], (hi - lo) / 2


@pytest.fixture(scope="module")
def analyst(hostile_service: HostileService) -> tuple[str, str]:
    return hostile_service.new_analyst(budget=100.0, per_query_cap=20.0)


def test_inventory() -> None:
    counts = {name: len(ids) for name, ids in ANSWERED_CLASSES.items()}
    print("\nhostile inputs answered under DP and charged, per class:", counts)
    assert sum(counts.values()) >= 8


# --- difference attacks ------------------------------------------------------------------------


def test_difference_attack_both_charged_and_the_difference_is_noise(
    hostile_service: HostileService, hostile_truth: HostileTruth, analyst: tuple[str, str]
) -> None:
    """Count a district, then the district without one firm: the true counts differ by one.

    Both are answered and both are charged; each answer's 95% interval is several units wide, so
    the difference of the two noisy counts says nothing reliable about that one firm.
    """
    key, tenant = analyst
    district, founded, _ = one_firm(hostile_truth)
    rows = hostile_truth.tables["registry"].to_pylist()
    whole = sum(r["district"] == district for r in rows)
    without = sum(r["district"] == district and r["founded"] != founded for r in rows)
    assert whole - without == 1

    q_all = f"SELECT count(*) AS n FROM registry WHERE district = '{district}'"
    q_but_one = f"{q_all} AND founded <> '{founded.isoformat()}'"
    before = len(hostile_service.tenant_charges(tenant))
    answers = []
    for sql in (q_all, q_but_one):
        response = hostile_service.query(sql, key=key, epsilon=1.0)
        assert response.status_code == 200, response.text
        answers.append(response.json())
        hostile_service.assert_clean(response)
    charges = hostile_service.tenant_charges(tenant)
    assert len(charges) == before + 2
    assert all(c["state"] == "released" and c["amount"] > 0 for c in charges[-2:])
    spent = sum(a["cost"]["epsilon"] for a in answers)
    budget = next(b for b in hostile_service.budgets(key) if b["dataset"] == "enterprise")
    assert budget["spent"] == pytest.approx(spent)
    for answer in answers:
        _, half_width = count_value(answer)
        assert half_width >= 3  # a difference of one unit is well inside the noise
        assert {m["mechanism"] for m in answer["cost"]["mechanisms"]} == {"laplace"}
        assert all(m["scale"] > 0 for m in answer["cost"]["mechanisms"])

    # Asking again gives the same noisy answer for free: the noise cannot be averaged away.
    again = hostile_service.query(q_but_one, key=key, epsilon=1.0)
    assert again.status_code == 200, again.text
    assert again.json()["cached"] is True
    assert again.json()["rows"] == answers[1]["rows"]
    assert again.json()["cost"]["epsilon"] == 0.0
    assert len(hostile_service.tenant_charges(tenant)) == before + 2

    # The same predicate written another way is another release, and is paid for again.
    rephrased = f"{q_all} AND NOT founded = '{founded.isoformat()}'"
    response = hostile_service.query(rephrased, key=key, epsilon=1.0)
    assert response.status_code == 200, response.text
    assert response.json()["cached"] is False
    assert len(hostile_service.tenant_charges(tenant)) == before + 3


def test_grouped_difference_attack_is_charged_per_query(
    hostile_service: HostileService, hostile_truth: HostileTruth, analyst: tuple[str, str]
) -> None:
    key, tenant = analyst
    district, founded, _ = one_firm(hostile_truth)
    base = "SELECT district, count(*) AS n FROM registry"
    queries = (
        f"{base} GROUP BY district",
        f"{base} WHERE founded <> '{founded}' GROUP BY district",
    )
    before = len(hostile_service.tenant_charges(tenant))
    for sql in queries:
        response = hostile_service.query(sql, key=key, epsilon=1.0)
        assert response.status_code == 200, response.text
        row = next(r for r in response.json()["rows"] if r["district"] == district)
        lo, hi = row["n"]["ci95"]
        assert (hi - lo) / 2 >= 3
    assert len(hostile_service.tenant_charges(tenant)) == before + 2


# --- rare group keys ---------------------------------------------------------------------------


def test_rare_private_keys_are_dropped_by_partition_selection(
    hostile_service: HostileService, hostile_truth: HostileTruth, analyst: tuple[str, str]
) -> None:
    """Founding dates are not public keys: a date shows up only if many firms share it.

    Almost every date holds one or two firms. Partition selection releases a key only when its
    noisy distinct-unit count clears a threshold set so that a key of one unit passes with
    probability at most δ, and never below ``min_group_size``; δ is charged.
    """
    key, _ = analyst
    founded = Counter(hostile_truth.column("registry", "founded"))
    rare = [d for d, n in founded.items() if n < MIN_GROUP_SIZE // 2]
    assert len(rare) > 100  # the attack has plenty of one-firm keys to aim at
    response = hostile_service.query(
        "SELECT founded, count(*) AS n FROM registry GROUP BY founded",
        key=key,
        epsilon=1.0,
        delta=1e-6,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cost"]["delta"] > 0
    assert "threshold" in {m["mechanism"] for m in body["cost"]["mechanisms"]}
    for row in body["rows"]:
        assert founded[date.fromisoformat(row["founded"])] >= MIN_GROUP_SIZE // 2, row
    hostile_service.assert_clean(response)


def test_rare_public_cells_are_suppressed_by_min_group_size(
    hostile_service: HostileService, hostile_truth: HostileTruth, analyst: tuple[str, str]
) -> None:
    """Industry × district has 192 public cells, many with a handful of firms or none.

    Every public cell is accounted for (released or counted as suppressed), and a cell is
    released only when its noisy number of distinct firms reaches ``min_group_size``. At ε = 10
    the guard's noise is tiny, so the test can name the cells: every cell of at most 5 firms is
    suppressed, every cell of at least 15 is released.
    """
    key, _ = analyst
    rows = hostile_truth.tables["registry"].to_pylist()
    truth = Counter((r["industry"], r["district"]) for r in rows)
    response = hostile_service.query(
        "SELECT industry, district, count(*) AS n FROM registry GROUP BY industry, district",
        key=key,
        epsilon=10.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["rows"]) + body["suppressed_groups"] == 12 * 16
    released = {(r["industry"], r["district"]) for r in body["rows"]}
    small = {cell for cell in released if truth[cell] <= MIN_GROUP_SIZE // 2}
    assert not small, f"cells of at most 5 firms were released: {sorted(small)}"
    big = [cell for cell, n in truth.items() if n >= MIN_GROUP_SIZE + 5]
    assert big and all(cell in released for cell in big)
    assert sum(1 for n in truth.values() if n <= MIN_GROUP_SIZE // 2) > 0  # there were some


# --- literals that single out one firm ---------------------------------------------------------


@pytest.mark.parametrize("shape", ANSWERED_CLASSES["identifier_literals_answered"])
def test_literal_that_singles_out_one_firm_is_answered_under_dp(
    hostile_service: HostileService,
    hostile_truth: HostileTruth,
    analyst: tuple[str, str],
    shape: str,
) -> None:
    """A literal on a measure or dimension may match one firm only; the gate allows it (it
    cannot know the data), and it is safe: the query is charged, and its answer is DP. Without
    GROUP BY its one row is released whatever the data (there is no group to suppress, so
    ``min_group_size`` takes no share of ε): the whole ε goes to the measurement, and its 95%
    interval is wider than anything one firm can change (one row, or the capital's bound)."""
    key, tenant = analyst
    district, founded, capital = one_firm(hostile_truth)
    sql, column, one_firm_at_most = {
        "exact_capital": (
            f"SELECT count(*) AS n FROM registry WHERE registered_capital = {capital!r}",
            "n",
            1,
        ),
        "founded_and_district": (
            "SELECT count(*) AS n FROM registry "
            f"WHERE founded = '{founded}' AND district = '{district}'",
            "n",
            1,
        ),
        "sum_one_firm": (
            "SELECT sum(registered_capital) AS s FROM registry "
            f"WHERE founded = '{founded}' AND district = '{district}'",
            "s",
            50_000_000,  # registered_capital's upper bound in the demo policy
        ),
    }[shape]
    before = len(hostile_service.tenant_charges(tenant))
    response = hostile_service.query(sql, key=key, epsilon=1.0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["suppressed_groups"] == 0
    (mechanism,) = body["cost"]["mechanisms"]
    assert mechanism["mechanism"] == "laplace" and body["cost"]["epsilon"] == 1.0
    (row,) = body["rows"]
    value, (lower, upper) = row[column]["value"], row[column]["ci95"]
    # The noise's 95% half-width (Laplace: scale · ln 20) spans over twice one firm's most. The
    # released interval is clipped at the column's bounds (a noisy sum below 0 is released as 0),
    # so its own width says less; it still holds the value.
    assert mechanism["scale"] * math.log(20) >= 2 * one_firm_at_most, mechanism
    assert lower <= value <= upper, row
    charges = hostile_service.tenant_charges(tenant)
    assert len(charges) == before + 1 and charges[-1]["amount"] > 0
    hostile_service.assert_clean(response, repr(capital))


def test_service_is_up_after_the_answered_classes(hostile_service: HostileService) -> None:
    hostile_service.assert_up()
