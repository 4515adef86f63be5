"""Exact tests of the privacy accounting arithmetic (policies/accounting.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.accounting import (
    MAX_DELTA,
    MICRO,
    PICO,
    ceil_micro,
    delta_to_pico,
    epsilon_to_rho_micro,
    gaussian_cost,
    gaussian_scale,
    laplace_cost,
    laplace_scale,
    split,
    to_micro,
)
from policies.errors import InvalidBudget, InvalidRequest

TIGHT = Fraction(1, 10**9)  # relative slack allowed between a mechanism's cost and its share

# --- to_micro ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        (1, 1_000_000),
        (1.0, 1_000_000),
        (0.5, 500_000),
        (0.25, 250_000),
        (2, 2_000_000),
        (0.1, 100_000),
        (1.5, 1_500_000),
        (100, 100_000_000),
        (100.0, 100_000_000),
        (2**-10, 976),  # 976.5625 µε, rounded down
        (3e-6, 3),
        (0.000_123, 123),
    ],
)
def test_to_micro_exact(value: float, micro: int) -> None:
    assert to_micro(value) == micro


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        -1.0,
        -1e-9,
        0,
        0.0,
        -0.0,
        100.000_001,
        101,
        1e300,
        True,
        False,
        "1",
        None,
        Fraction(1, 2),
        4e-7,  # positive but below one micro-unit
    ],
)
def test_to_micro_refuses(value: object) -> None:
    with pytest.raises(InvalidBudget) as info:
        to_micro(value, "rho")  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, InvalidRequest)
    assert err.code == "invalid_budget" and err.status == 400
    assert err.extra == {"field": "rho"}


@given(st.floats(min_value=1e-5, max_value=100.0, allow_nan=False, allow_infinity=False))
def test_to_micro_never_exceeds_request(value: float) -> None:
    micro = to_micro(value)
    assert 1 <= micro <= 100 * MICRO
    # Rounded down: the budget spent is at most what was asked, and less than one µε below it.
    assert Fraction(micro, MICRO) <= Fraction(repr(value)) < Fraction(micro + 1, MICRO)


def test_to_micro_accepts_its_documented_minimum() -> None:
    assert to_micro(1e-6) == 1


# --- delta_to_pico -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "pico"),
    [
        (0, 0),
        (0.0, 0),
        (1e-12, 1),
        (5e-13, 1),
        (1e-13, 1),
        (2**-40, math.ceil(Fraction(repr(2**-40)) * PICO)),
        (1e-9, 1_000),  # the decimal the caller wrote, not the double just above it
        (1e-6, 1_000_000),
        (MAX_DELTA, 10**9),
    ],
)
def test_delta_to_pico_rounds_up(value: float, pico: int) -> None:
    got = delta_to_pico(value)
    assert got == pico
    assert Fraction(got, PICO) >= Fraction(repr(value))
    assert Fraction(got - 1, PICO) < Fraction(repr(value)) or got == 0


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, -1e-12, -0.5, 1.1e-3, 1.0, True, False, "0"]
)
def test_delta_to_pico_refuses(value: object) -> None:
    with pytest.raises(InvalidBudget) as info:
        delta_to_pico(value)  # type: ignore[arg-type]
    assert info.value.extra == {"field": "delta"}


@given(st.floats(min_value=0.0, max_value=MAX_DELTA))
def test_delta_to_pico_is_the_ceiling(value: float) -> None:
    pico = delta_to_pico(value)
    assert pico == math.ceil(Fraction(repr(value)) * PICO)
    assert Fraction(pico, PICO) >= Fraction(repr(value))


# --- conversions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon_micro", "rho_micro"),
    [
        (1_000_000, 500_000),  # ε = 1 → ρ = 1/2
        (2_000_000, 2_000_000),  # ε = 2 → ρ = 2
        (100_000, 5_000),  # ε = 0.1 → ρ = 0.005
        (1, 1),  # 5e-13 ρ, rounded up to one µρ
        (1_414, 1),  # 0.000999698 µρ → 1
        (1_415, 2),  # 1.0011... µρ → 2
        (100_000_000, 5_000_000_000),  # ε = 100 → ρ = 5000
    ],
)
def test_epsilon_to_rho_micro(epsilon_micro: int, rho_micro: int) -> None:
    assert epsilon_to_rho_micro(epsilon_micro) == rho_micro


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        (Fraction(1, 3), 333_334),
        (Fraction(1, 2), 500_000),
        (Fraction(0), 0),
        (Fraction(1, 10**7), 1),
        (0.5, 500_000),
        (1e-7, 1),
    ],
)
def test_ceil_micro(value: Fraction | float, micro: int) -> None:
    assert ceil_micro(value) == micro


# --- split -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weights", "shares"),
    [
        (1_000_000, [1], [1_000_000]),
        (1_000_000, [1, 1], [500_000, 500_000]),
        (10, [1, 1, 1], [3, 3, 3]),
        (7, [2, 1, 1], [3, 1, 1]),
        (100, [8, 1, 1], [80, 10, 10]),
        (0, [1, 2], [0, 0]),
        (1, [1, 1], [0, 0]),
        (5, [0, 1], [0, 5]),
    ],
)
def test_split_exact(total: int, weights: list[int], shares: list[int]) -> None:
    assert split(total, weights) == shares


@pytest.mark.parametrize("weights", [[], [0], [0, 0], [1, -1]])
def test_split_refuses_non_positive_weights(weights: list[int]) -> None:
    with pytest.raises(ValueError, match="weights must be non-negative"):
        split(10, weights)


def test_split_refuses_a_negative_weight() -> None:
    with pytest.raises(ValueError):
        split(10, [2, -1])


@given(
    st.integers(min_value=0, max_value=10**15),
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20).filter(
        lambda ws: sum(ws) > 0
    ),
)
def test_split_properties(total: int, weights: list[int]) -> None:
    shares = split(total, weights)
    whole = sum(weights)
    assert len(shares) == len(weights)
    assert all(s >= 0 for s in shares)
    assert sum(shares) <= total
    # Each share is the floor of its exact proportion, so the total loses less than one unit per
    # share.
    for share, weight in zip(shares, weights, strict=True):
        assert share == math.floor(Fraction(total * weight, whole))
        assert share <= total
    assert total - sum(shares) < len(weights)


# --- laplace_scale -----------------------------------------------------------------------------


def check_laplace(l1: int, share: int) -> float:
    scale = laplace_scale(l1, share)
    budget = Fraction(share, MICRO)
    assert isinstance(scale, float) and math.isfinite(scale) and scale > 0
    cost = Fraction(l1) / Fraction(scale)
    assert cost == laplace_cost(l1, scale)
    assert cost <= budget  # exactly, as rationals
    assert cost >= budget * (1 - TIGHT)  # and tight
    # The smallest such float: one step down costs too much.
    assert laplace_cost(l1, math.nextafter(scale, 0.0)) > budget
    return scale


@pytest.mark.parametrize(
    ("l1", "share", "scale"),
    [
        (1, 1_000_000, 1.0),
        (1, 500_000, 2.0),
        (2, 1_000_000, 2.0),
        (36, 1_000_000, 36.0),
        (1, 250_000, 4.0),
        (1, 100_000, 10.0),
        (3, 1_000_000, 3.0),
        (1, 300_000, None),  # 10/3: not a float; must round up
        (7, 333_333, None),
        (36 * 2**40, 1, 36 * 2**40 * 1e6),
        (1, 100_000_000, 0.01),
    ],
)
def test_laplace_scale_exact(l1: int, share: int, scale: float | None) -> None:
    got = check_laplace(l1, share)
    if scale is not None:
        assert got == scale
    assert Fraction(got) >= Fraction(l1 * MICRO, share)


@settings(max_examples=300)
@given(
    st.integers(min_value=1, max_value=10**18),
    st.integers(min_value=1, max_value=100 * MICRO),
)
def test_laplace_scale_properties(l1: int, share: int) -> None:
    check_laplace(l1, share)


# --- gaussian_scale ----------------------------------------------------------------------------


def check_gaussian(l2_squared: int, share: int) -> float:
    sigma = gaussian_scale(l2_squared, share)
    budget = Fraction(share, MICRO)
    assert isinstance(sigma, float) and math.isfinite(sigma) and sigma > 0
    cost = gaussian_cost(l2_squared, sigma)
    assert cost == Fraction(l2_squared) / (2 * Fraction(sigma) ** 2)
    assert cost <= budget
    assert cost >= budget * (1 - TIGHT)
    return sigma


@pytest.mark.parametrize(
    ("l2_squared", "share", "sigma"),
    [
        (1, 500_000, 1.0),  # ρ = 1/2 at σ = 1
        (4, 500_000, 2.0),
        (1, 2_000_000, 0.5),
        (1, 1_000_000, None),  # σ = 1/√2: irrational
        (2, 1_000_000, 1.0),
        (36 * 36, 500_000, 36.0),
        (3, 1, None),
        ((36 * 2**40) ** 2, 7, None),
    ],
)
def test_gaussian_scale_exact(l2_squared: int, share: int, sigma: float | None) -> None:
    got = check_gaussian(l2_squared, share)
    if sigma is not None:
        assert got == sigma


@settings(max_examples=300)
@given(
    st.integers(min_value=1, max_value=10**30),
    st.integers(min_value=1, max_value=100 * MICRO),
)
def test_gaussian_scale_properties(l2_squared: int, share: int) -> None:
    check_gaussian(l2_squared, share)


def test_costs_compose_to_at_most_the_budget() -> None:
    """Split a budget among mechanisms, scale each to its share: the exact total fits the budget."""
    budget = to_micro(0.7)
    shares = split(budget, [8, 1, 1, 3])
    l1s = [36, 36 * 2**20, 1, 72]
    total = sum(
        (laplace_cost(l1, laplace_scale(l1, s)) for l1, s in zip(l1s, shares, strict=True)),
        Fraction(0),
    )
    assert total <= Fraction(sum(shares), MICRO) <= Fraction(budget, MICRO)
    assert ceil_micro(total) <= budget
