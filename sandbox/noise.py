"""Noise: the only module that imports OpenDP.

Given a :class:`~policies.gate.plan.QueryPlan` and a budget, :func:`calibrate` picks each
mechanism's scale so that its cost — as OpenDP's own privacy map states it — fits its integer share;
the query's cost is the sum of the shares. :func:`release` then turns the engine's exact aggregates
into noisy values with a 95% interval each. Nothing here reads data except through ``release``'s
arguments, and nothing here returns an exact aggregate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import opendp.prelude as dp

from policies.accounting import (
    MICRO,
    PICO,
    Accounting,
    gaussian_scale,
    laplace_scale,
    split,
)
from policies.gate.plan import Output, QuantileStatistic, QueryPlan, Statistic, StatKind
from policies.gate.query import OrderItem
from policies.model import KeyValue

dp.enable_features("contrib")

ALPHA = 0.05  # every interval is a 95% interval
QUANTILE_POINT_SHARE = 2  # of 4: the point estimate; the two interval ends get 1 each
QUANTILE_END_BETA = 0.02  # failure probability of each interval end (the count takes the rest)
WORST_LEVEL = 1e-9  # the quantile level whose cost is highest
LARGE_GAUSSIAN_SCALE = 1_000.0


@dataclass(frozen=True)
class Mechanism:
    """One calibrated mechanism: its noise scale and the integer share of the budget it costs."""

    stat: str
    kind: str  # laplace | gaussian | threshold | quantile
    scale: float
    share_micro: int
    threshold: int | None = None
    delta_pico: int = 0
    quantile_scales: tuple[float, float, float] = (0.0, 0.0, 0.0)  # point, lower, upper


@dataclass(frozen=True)
class Calibration:
    accounting: Accounting
    mechanisms: Mapping[str, Mechanism]
    cost_micro: int  # ε (pure) or ρ (zCDP) in micro-units: the sum of the shares
    delta_pico: int


@dataclass(frozen=True)
class Cell:
    value: float | int | None
    lower: float | int | None
    upper: float | int | None


@dataclass
class Release:
    columns: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    suppressed: int = 0


def calibrate(
    plan: QueryPlan, budget_micro: int, accounting: Accounting, delta_pico: int
) -> Calibration:
    """Split ``budget_micro`` over the plan's mechanisms and fit each scale to its share."""
    names = [s.name for s in plan.statistics] + [q.name for q in plan.quantiles]
    shares = dict(zip(names, split(budget_micro, [1] * len(names)), strict=True))
    if min(shares.values(), default=1) < 1:
        from policies.errors import InvalidBudget

        raise InvalidBudget("the budget is too small to split over this query's statistics")
    mechanisms: dict[str, Mechanism] = {}
    for stat in plan.statistics:
        if stat.name == plan.selection:
            mechanisms[stat.name] = _threshold(
                stat, plan, shares[stat.name], accounting, delta_pico
            )
        else:
            mechanisms[stat.name] = _additive(stat, shares[stat.name], accounting)
    for q in plan.quantiles:
        mechanisms[q.name] = _quantile(q, shares[q.name], accounting)
    return Calibration(
        accounting=accounting,
        mechanisms=mechanisms,
        cost_micro=sum(m.share_micro for m in mechanisms.values()),
        delta_pico=sum(m.delta_pico for m in mechanisms.values()),
    )


# --- calibration ---------------------------------------------------------------------------


def _vector_measurement(accounting: Accounting, scale: float) -> Any:
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    if accounting == Accounting.PURE:
        return dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale)
    return dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale)


def _d_in(stat: Statistic, accounting: Accounting) -> int:
    if accounting == Accounting.PURE:
        return stat.l1
    return math.isqrt(stat.l2_squared - 1) + 1 if stat.l2_squared > 1 else stat.l2_squared


def _fit(share_micro: int, scale: float, cost: Callable[[float], float]) -> float:
    """Nudge ``scale`` up until OpenDP's map states a cost within the share."""
    limit = share_micro / MICRO
    for _ in range(64):
        if cost(scale) <= limit:
            return scale
        scale *= 1 + 1e-9
    raise RuntimeError("could not fit a noise scale to its share")


def _additive(stat: Statistic, share: int, accounting: Accounting) -> Mechanism:
    if accounting == Accounting.PURE:
        scale = laplace_scale(stat.l1, share)
        kind = "laplace"
    else:
        scale = gaussian_scale(_d_in(stat, accounting) ** 2, share)
        kind = "gaussian"
    d_in = _d_in(stat, accounting)
    scale = _fit(share, scale, lambda s: float(_vector_measurement(accounting, s).map(d_in)))
    return Mechanism(stat=stat.name, kind=kind, scale=scale, share_micro=share)


def _threshold_measurement(accounting: Accounting, scale: float, threshold: int) -> Any:
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    if accounting == Accounting.PURE:
        metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
        return dp.m.make_laplace_threshold(domain, metric, scale, threshold)
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))
    return dp.m.make_gaussian_threshold(domain, metric, scale, threshold)


def _threshold(
    stat: Statistic, plan: QueryPlan, share: int, accounting: Accounting, delta_pico: int
) -> Mechanism:
    """Partition selection: noisy counts, released only above a threshold met with prob ≤ δ."""
    if delta_pico <= 0:
        from policies.errors import InvalidBudget

        raise InvalidBudget("grouping by keys that are not public needs a delta above zero")
    linf = 1 if stat.kind == StatKind.COUNT_UNITS else plan.row_cap
    d_in = (plan.group_cap, _d_in(stat, accounting), linf)
    base = _additive(stat, share, accounting).scale
    delta = delta_pico / PICO

    def ok(t: int) -> bool:
        return bool(_threshold_measurement(accounting, base, t).map(d_in)[1] <= delta)

    threshold = max(int(dp.binary_search(ok, T=int)), plan.min_group_size)  # type: ignore[arg-type]
    scale = _fit(
        share, base, lambda s: float(_threshold_measurement(accounting, s, threshold).map(d_in)[0])
    )
    spent_delta = float(_threshold_measurement(accounting, scale, threshold).map(d_in)[1])
    return Mechanism(
        stat=stat.name,
        kind="threshold",
        scale=scale,
        share_micro=share,
        threshold=threshold,
        delta_pico=math.ceil(spent_delta * PICO),
    )


def _quantile_measurement(
    q: QuantileStatistic, level: float, scale: float, accounting: Accounting
) -> Any:
    measure = (
        dp.max_divergence() if accounting == Accounting.PURE else dp.zero_concentrated_divergence()
    )
    return dp.m.make_private_quantile(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        measure,
        list(q.candidates),
        level,
        scale,
    )


def _quantile(q: QuantileStatistic, share: int, accounting: Accounting) -> Mechanism:
    """Three private quantiles (the point and the two interval ends) sharing one budget share.

    The ends run at levels chosen per cell at release time, so their scales are fitted at the most
    expensive level (cost grows with max(level, 1 - level)): any level then costs at most the share.
    """
    parts = split(share, [QUANTILE_POINT_SHARE, 1, 1])
    if min(parts) < 1:
        from policies.errors import InvalidBudget

        raise InvalidBudget("the budget is too small to split over this query's quantiles")
    levels = (q.q, WORST_LEVEL, WORST_LEVEL)
    power = 1 if accounting == Accounting.PURE else 2
    scales: list[float] = []
    for part, level in zip(parts, levels, strict=True):

        def cost(scale: float, level: float = level) -> float:
            return float(_quantile_measurement(q, level, scale, accounting).map(q.rows_per_unit))

        guess = (cost(1.0) / (part / MICRO)) ** (1 / power)
        scales.append(_fit(part, guess, cost))
    return Mechanism(
        stat=q.name,
        kind="quantile",
        scale=scales[0],
        share_micro=sum(parts),
        quantile_scales=(scales[0], scales[1], scales[2]),
    )


# --- accuracy ------------------------------------------------------------------------------


def half_width(mechanism: Mechanism, accounting: Accounting, alpha: float = ALPHA) -> float:
    """Half-width of the (1 - alpha) interval of one noisy integer cell, in integer units."""
    if accounting == Accounting.PURE:
        return float(dp.discrete_laplacian_scale_to_accuracy(mechanism.scale, alpha))
    if mechanism.scale > LARGE_GAUSSIAN_SCALE:
        # OpenDP sums the discrete tail term by term (time linear in σ); at this size the
        # discrete Gaussian's bound is the continuous one rounded up, plus at most one.
        return math.ceil(float(dp.gaussian_scale_to_accuracy(mechanism.scale, alpha))) + 1.0
    return float(dp.discrete_gaussian_scale_to_accuracy(mechanism.scale, alpha))


def expected_accuracy(plan: QueryPlan, calibration: Calibration) -> dict[str, Any]:
    """Per output, the expected 95% half-width where it does not depend on the data."""
    stats = {s.name: s for s in plan.statistics}
    out: dict[str, Any] = {}
    for o in plan.outputs:
        if o.kind in ("count", "count_units", "sum"):
            mech = calibration.mechanisms[o.stats[0]]
            out[o.name] = half_width(mech, calibration.accounting) * stats[o.stats[0]].resolution
        elif o.kind == "mean":
            total = calibration.mechanisms[o.stats[0]]
            resolution = stats[o.stats[0]].resolution
            hw = half_width(total, calibration.accounting, ALPHA / 2) * resolution
            out[o.name] = {f"at_n={n}": hw / n for n in (100, 1_000, 10_000)}
        elif o.kind == "quantile":
            q = next(q for q in plan.quantiles if q.name == o.stats[0])
            out[o.name] = {
                **{
                    f"rank_at_n={n}": quantile_rank_half_width(q, calibration, n)
                    for n in (100, 1_000, 10_000)
                },
                "candidate_step": max(b - a for a, b in itertools.pairwise(q.candidates)),
            }
        elif o.kind != "key":
            out[o.name] = None  # depends on the data; stated with the release
    return out


def quantile_rank_half_width(q: QuantileStatistic, calibration: Calibration, n: int) -> float:
    """How far, in quantile levels, a 95% interval of ``q`` over ``n`` values reaches from q.

    Each end runs at level ``q ∓ e / n_low`` (see :func:`_release_quantiles`) and, except with
    probability β, lands within ``e`` ranks of it, so it lies between the true quantiles at
    levels ``q - h`` and ``q + h`` with ``h = e / n_low + e / n``; 1.0 when the count's lower
    bound is not positive (the interval is then the measure's whole range).
    """
    mech = calibration.mechanisms[q.name]
    count = calibration.mechanisms[q.count]
    n_low = n - half_width(count, calibration.accounting, ALPHA - 2 * QUANTILE_END_BETA)
    if n_low <= 0:
        return 1.0
    rank_error = max(mech.quantile_scales[1:]) * math.log(len(q.candidates) / QUANTILE_END_BETA)
    return min(1.0, rank_error / n_low + rank_error / n)


# --- release -------------------------------------------------------------------------------

Key = tuple[KeyValue | None, ...]


def release(
    plan: QueryPlan,
    calibration: Calibration,
    rows: Sequence[tuple[Any, ...]],
    histograms: Mapping[str, Sequence[tuple[Any, ...]]],
) -> Release:
    """Noisy outputs for every released cell of ``plan`` from the engine's exact ``rows``."""
    n_keys = len(plan.keys)
    names = [s.name for s in plan.statistics]
    exact: dict[Key, dict[str, int]] = {}
    for engine_row in rows:
        exact[tuple(engine_row[:n_keys])] = {
            n: int(v or 0) for n, v in zip(names, engine_row[n_keys:], strict=True)
        }
    accounting = calibration.accounting
    noisy: dict[str, dict[Key, int]] = {}
    if plan.public_cells is not None:
        cells: list[Key] = list(plan.public_cells)
    else:
        assert plan.selection is not None
        mech = calibration.mechanisms[plan.selection]
        assert mech.threshold is not None
        labels = {str(i): key for i, key in enumerate(exact)}
        counts = {label: exact[key][plan.selection] for label, key in labels.items()}
        selected = _threshold_measurement(accounting, mech.scale, mech.threshold)(counts)
        # Released in key order: the engine's row order must not leak into the answer.
        cells = sorted((labels[label] for label in selected), key=_key_order)
        noisy[plan.selection] = {labels[label]: int(v) for label, v in selected.items()}
    zero = dict.fromkeys(names, 0)
    for stat in plan.statistics:
        if stat.name in noisy:
            continue
        mech = calibration.mechanisms[stat.name]
        noise = _vector_measurement(accounting, mech.scale)([0] * len(cells)) if cells else []
        noisy[stat.name] = {
            cell: exact.get(cell, zero)[stat.name] + int(e)
            for cell, e in zip(cells, noise, strict=True)
        }
    quantiles = {
        q.name: _release_quantiles(
            q,
            calibration,
            cells,
            histograms.get(q.name, ()),
            n_keys,
            noisy[q.count],
            half_width(calibration.mechanisms[q.count], accounting, ALPHA - 2 * QUANTILE_END_BETA),
        )
        for q in plan.quantiles
    }
    result = Release(columns=tuple(o.name for o in plan.outputs))
    stats = {s.name: s for s in plan.statistics}
    guard = plan.guard if plan.min_group_size > 0 else None
    for cell in cells:
        if guard is not None and noisy[guard][cell] < plan.min_group_size:
            result.suppressed += 1
            continue
        row: dict[str, Any] = {}
        for o in plan.outputs:
            if o.kind == "key":
                assert o.key is not None
                row[o.name] = cell[o.key]
            elif o.kind == "quantile":
                row[o.name] = quantiles[o.stats[0]][cell]
            else:
                row[o.name] = _post_process(o, cell, noisy, stats, calibration)
        result.rows.append(row)
    result.rows = _order(result.rows, plan.order, plan.limit)
    return result


def _interval(
    name: str,
    cell: Key,
    noisy: Mapping[str, Mapping[Key, int]],
    stats: Mapping[str, Statistic],
    calibration: Calibration,
    alpha: float,
) -> tuple[float, float, float]:
    """(value, lower, upper) of one statistic in its own units."""
    stat = stats[name]
    hw = half_width(calibration.mechanisms[name], calibration.accounting, alpha)
    value = noisy[name][cell]
    res = stat.resolution
    return value * res, (value - hw) * res, (value + hw) * res


def _post_process(
    o: Output,
    cell: Key,
    noisy: Mapping[str, Mapping[Key, int]],
    stats: Mapping[str, Statistic],
    calibration: Calibration,
) -> Cell:
    if o.kind in ("count", "count_units"):
        v, lo, hi = _interval(o.stats[0], cell, noisy, stats, calibration, ALPHA)
        return Cell(max(0, round(v)), max(0, math.floor(lo)), max(0, math.ceil(hi)))
    if o.kind == "sum":
        v, lo, hi = _interval(o.stats[0], cell, noisy, stats, calibration, ALPHA)
        if o.lower is not None and o.lower >= 0:
            v, lo, hi = max(0.0, v), max(0.0, lo), max(0.0, hi)
        return Cell(v, lo, hi)
    assert o.lower is not None and o.upper is not None
    if o.kind == "mean":
        s, s_lo, s_hi = _interval(o.stats[0], cell, noisy, stats, calibration, ALPHA / 2)
        n, n_lo, n_hi = _interval(o.stats[1], cell, noisy, stats, calibration, ALPHA / 2)
        return _ratio(s, s_lo, s_hi, n, n_lo, n_hi, o.lower, o.upper)
    s, s_lo, s_hi = _interval(o.stats[0], cell, noisy, stats, calibration, ALPHA / 3)
    ss, ss_lo, ss_hi = _interval(o.stats[1], cell, noisy, stats, calibration, ALPHA / 3)
    n, n_lo, n_hi = _interval(o.stats[2], cell, noisy, stats, calibration, ALPHA / 3)
    var = _variance(o, s, s_lo, s_hi, ss, ss_lo, ss_hi, n, n_lo, n_hi)
    if o.kind == "stddev" and var.value is not None:
        assert var.lower is not None and var.upper is not None
        return Cell(math.sqrt(var.value), math.sqrt(var.lower), math.sqrt(var.upper))
    return var


def _ratio(
    s: float, s_lo: float, s_hi: float, n: float, n_lo: float, n_hi: float, lo: float, hi: float
) -> Cell:
    """Mean = sum / count, clamped to the bounds; the interval from the corners of the box."""
    if n < 1:
        return Cell(None, lo, hi)
    value = min(max(s / n, lo), hi)
    if n_lo < 1:
        return Cell(value, lo, hi)
    corners = [a / b for a in (s_lo, s_hi) for b in (n_lo, n_hi)]
    # Intersected with the bounds; widened to the (clamped) value when the two disagree.
    return Cell(value, min(max(lo, min(corners)), value), max(min(hi, max(corners)), value))


def _variance(
    o: Output,
    s: float,
    s_lo: float,
    s_hi: float,
    ss: float,
    ss_lo: float,
    ss_hi: float,
    n: float,
    n_lo: float,
    n_hi: float,
) -> Cell:
    assert o.lower is not None and o.upper is not None
    cap = (o.upper - o.lower) ** 2 / 4

    def var(total: float, squares: float, count: float) -> float:
        return (squares - total * total / count) / (count - 1)

    if n < 2:
        return Cell(None, 0.0, cap * 2)
    value = min(max(var(s, ss, n), 0.0), cap * n / (n - 1))
    if n_lo < 2:
        return Cell(value, 0.0, cap * 2)
    s_sq_min = 0.0 if s_lo <= 0 <= s_hi else min(s_lo * s_lo, s_hi * s_hi)
    s_sq_max = max(s_lo * s_lo, s_hi * s_hi)
    grid = [n_lo + (n_hi - n_lo) * i / 16 for i in range(17)]
    lower = min((ss_lo - s_sq_max / c) / (c - 1) for c in grid)
    upper = max((ss_hi - s_sq_min / c) / (c - 1) for c in grid)
    bound = cap * n_lo / (n_lo - 1)
    return Cell(value, min(max(lower, 0.0), value), max(min(upper, bound), value))


def _release_quantiles(
    q: QuantileStatistic,
    calibration: Calibration,
    cells: list[Key],
    histogram: Sequence[tuple[Any, ...]],
    n_keys: int,
    counts: Mapping[Key, int],
    count_half_width: float,
) -> dict[Key, Cell]:
    """Point and interval ends per cell, from histogram bins rebuilt as representative values.

    The exponential mechanism picks, with probability at least 1 - β, a candidate whose rank is
    within ``scale · ln(|C| / β)`` of the target rank. The lower end therefore runs at level
    ``q - e / n`` and the upper end at ``q + e / n`` (n: the noisy count's lower bound), so each
    end lands on the right side of the true quantile except with probability β.
    """
    mech = calibration.mechanisms[q.name]
    bins: dict[Key, dict[int, int]] = {}
    for row in histogram:
        bins.setdefault(tuple(row[:n_keys]), {})[int(row[n_keys])] = int(row[n_keys + 1])
    reps = _representatives(q.candidates)
    point_m = _quantile_measurement(q, q.q, mech.quantile_scales[0], calibration.accounting)
    out: dict[Key, Cell] = {}
    for cell in cells:
        data: list[float] = []
        for b, n in sorted(bins.get(cell, {}).items()):
            data.extend([reps[b]] * n)
        point = float(point_m(data))
        n_low = counts[cell] - count_half_width
        ends: list[float] = []
        for side, scale in ((-1, mech.quantile_scales[1]), (1, mech.quantile_scales[2])):
            rank_error = scale * math.log(len(q.candidates) / QUANTILE_END_BETA)
            level = q.q + side * rank_error / n_low if n_low > 0 else (0.0 if side < 0 else 1.0)
            if level <= 0.0 or level >= 1.0:
                ends.append(q.candidates[0] if side < 0 else q.candidates[-1])
                continue
            m = _quantile_measurement(q, level, scale, calibration.accounting)
            ends.append(float(m(data)))
        out[cell] = Cell(point, min(ends[0], point), max(ends[1], point))
    return out


def _representatives(candidates: tuple[float, ...]) -> list[float]:
    """A value for each histogram bin that compares with every candidate as the bin's values do."""
    reps: list[float] = []
    previous = candidates[0] - 1.0
    for c in candidates:
        reps.append((previous + c) / 2)
        reps.append(c)
        previous = c
    reps.append(candidates[-1] + 1.0)
    return reps


def _order(
    rows: list[dict[str, Any]], order: Sequence[OrderItem], limit: int | None
) -> list[dict[str, Any]]:
    for item in reversed(order):
        name = item.name
        rows.sort(key=lambda r: _sort_value(r[name]), reverse=item.descending)
        rows.sort(key=lambda r: _sort_value(r[name])[0])  # nulls last either way
    return rows if limit is None else rows[:limit]


def _sort_value(value: Any) -> tuple[int, Any]:
    """Sort key of an output value; ``(1, 0)`` for a null, which the caller puts last."""
    if isinstance(value, Cell):
        value = value.value
    return (1, 0) if value is None else (0, value)


def _key_order(key: Key) -> tuple[tuple[int, str, Any], ...]:
    """A total order over key tuples of mixed types (None last)."""
    return tuple((v is None, type(v).__name__, v if v is not None else 0) for v in key)


def zcdp_epsilon(rho: float, delta: float) -> float | None:
    """The tight ε of ρ-zCDP at δ, through OpenDP's conversion (None when δ is 0 or ρ is 0)."""
    if rho <= 0 or delta <= 0:
        return None
    sigma = 1.0 / math.sqrt(2.0 * rho)  # a Gaussian of sensitivity 1 with exactly this ρ
    measurement = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), sigma
    )
    converted: Any = dp.c.make_zCDP_to_approxDP(measurement)
    return float(converted.map(1.0).epsilon(delta))
