"""Privacy accounting arithmetic: exact integers, never float sums of ε.

Budgets and costs are integers in micro-units (1 µε = 1e-6 ε, or 1e-6 ρ under zCDP) and δ in
pico-units (1e-12), always rounded up. A query's budget is split into integer shares, one per
mechanism, and each mechanism's noise scale is chosen so that its exact cost (sensitivity / scale,
as a rational number) is at most its share. The cost charged is then the sum of the shares: the
composition of the mechanisms, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from fractions import Fraction

from policies.errors import InvalidBudget

MICRO = 1_000_000
PICO = 10**12
MAX_EPSILON = 100.0
MAX_DELTA = 1e-3


class Accounting(StrEnum):
    PURE = "pure"  # ε-DP, discrete Laplace; budget in micro-ε
    ZCDP = "zcdp"  # ρ-zCDP, discrete Gaussian; budget in micro-ρ


def to_micro(value: float, name: str = "epsilon") -> int:
    """A requested ε (or ρ) in micro-units; refuses NaN, infinities, non-positive, huge."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidBudget(f"{name} must be a number", field=name)
    if not math.isfinite(value) or value <= 0:
        raise InvalidBudget(f"{name} must be a finite positive number", field=name)
    if value > MAX_EPSILON:
        raise InvalidBudget(f"{name} must be at most {MAX_EPSILON}", field=name)
    micro = math.floor(Fraction(repr(value)) * MICRO)  # the decimal the caller wrote
    if micro < 1:
        raise InvalidBudget(f"{name} must be at least 1e-6", field=name)
    return micro


def delta_to_pico(value: float, name: str = "delta") -> int:
    """A δ as pico-units, rounded up; refuses NaN, infinities, negatives and anything above 1e-3."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidBudget(f"{name} must be a finite number", field=name)
    if value < 0 or value > MAX_DELTA:
        raise InvalidBudget(f"{name} must lie in [0, {MAX_DELTA}]", field=name)
    return math.ceil(Fraction(repr(value)) * PICO)


def request_delta_to_pico(value: float, name: str = "delta") -> int:
    """A query's δ, the most its mechanisms may spend, in pico-units rounded **down**.

    A charge is rounded up; a request is a cap, and rounding it up would let partition selection
    spend more than the caller allowed. So a δ above zero but below one pico-unit (1e-12, e.g. a
    subnormal float) is refused rather than silently raised to 1e-12.
    """
    delta_to_pico(value, name)  # the same checks: a finite number in [0, MAX_DELTA]
    pico = math.floor(Fraction(repr(value)) * PICO)
    if value > 0 and pico < 1:
        raise InvalidBudget(f"{name} must be 0 or at least 1e-12", field=name)
    return pico


def epsilon_to_rho_micro(epsilon_micro: int) -> int:
    """ε-DP implies (ε²/2)-zCDP: the ρ a pure request of ε is worth, rounded up."""
    return math.ceil(Fraction(epsilon_micro, MICRO) ** 2 / 2 * MICRO)


def split(total: int, weights: Sequence[int]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights``, rounded down (sum ≤ total)."""
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    whole = sum(weights)
    return [total * w // whole for w in weights]


def laplace_scale(l1: int, share_micro: int) -> float:
    """The smallest float scale whose exact cost ``l1 / scale`` is at most ``share_micro`` µε."""
    budget = Fraction(share_micro, MICRO)
    scale = float(Fraction(l1) / budget)
    while Fraction(l1) / Fraction(scale) > budget:
        scale = math.nextafter(scale, math.inf)
    return scale


def laplace_cost(l1: int, scale: float) -> Fraction:
    """The exact ε of a Laplace mechanism with L1 sensitivity ``l1`` at ``scale``."""
    return Fraction(l1) / Fraction(scale)


def gaussian_scale(l2_squared: int, share_micro: int) -> float:
    """The smallest float σ whose exact zCDP cost ``l2² / (2σ²)`` is at most ``share_micro`` µρ."""
    budget = Fraction(share_micro, MICRO)
    sigma = math.sqrt(float(Fraction(l2_squared) / (2 * budget)))
    while gaussian_cost(l2_squared, sigma) > budget:
        sigma = math.nextafter(sigma, math.inf)
    return sigma


def gaussian_cost(l2_squared: int, sigma: float) -> Fraction:
    """The exact ρ of a Gaussian mechanism with squared L2 sensitivity ``l2_squared`` at ``σ``."""
    return Fraction(l2_squared) / (2 * Fraction(sigma) ** 2)


def ceil_micro(value: Fraction | float) -> int:
    """A cost in micro-units, rounded up."""
    return math.ceil(Fraction(value) * MICRO)
