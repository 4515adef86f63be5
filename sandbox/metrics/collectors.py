"""The live state a scrape reads: the ledger's settled totals (shared by every server process,
from the state store), and this process's executor pool and facts index.

The ledger's totals are counters — ε (pure accounting) or ρ (zCDP) and δ spent, per dataset —
summed from settled charges at each scrape, so they are the same whichever process answers and
survive restarts. Pool and index are gauges of the process that answers the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sandbox.engine.executor import Executor
from sandbox.ledger.totals import settled_totals
from sandbox.metrics.labels import token
from sandbox.verification.facts import FactsIndex

log = logging.getLogger("veil.metrics")
MICRO = 1_000_000
PICO = 1_000_000_000_000
UNITS = {"pure": "epsilon", "zcdp": "rho"}  # policies.accounting.Accounting -> its budget's unit
FACTS_STATES = ("off", "building", "ready")


@dataclass(frozen=True)
class Sources:
    """What the live metrics read: the state store, the executor, the facts index."""

    engine: Engine
    executor: Executor
    facts: FactsIndex


class LiveCollector(Collector):
    """Reads its :class:`Sources` at each scrape; nothing before they are set (the app's
    lifespan sets them once its services exist, and clears them when it ends)."""

    def __init__(self) -> None:
        self.sources: Sources | None = None

    def collect(self) -> Iterator[Metric]:
        sources = self.sources
        if sources is None:
            return
        yield from _ledger(sources.engine)
        yield from _executor(sources.executor)
        yield from _facts(sources.facts)


def _ledger(engine: Engine) -> Iterator[Metric]:
    try:
        totals = settled_totals(engine)
    except SQLAlchemyError as exc:  # a scrape never fails for the state store: the rest is served
        log.warning("metrics: the ledger totals could not be read: %s", type(exc).__name__)
        return
    spent = CounterMetricFamily(
        "veil_budget_spent",
        "Privacy budget spent by settled charges, by dataset and unit (epsilon: pure "
        "accounting; rho: zCDP).",
        labels=["dataset", "unit"],
    )
    delta = CounterMetricFamily(
        "veil_delta_spent", "δ spent by settled charges, by dataset.", labels=["dataset"]
    )
    charged = CounterMetricFamily(
        "veil_charges_settled",
        "Settled charges (answered or failed), by dataset.",
        labels=["dataset"],
    )
    deltas: dict[str, int] = {}
    counts: dict[str, int] = {}
    for total in totals:
        dataset = token(total.dataset)
        spent.add_metric([dataset, UNITS.get(total.accounting, "other")], total.cost_micro / MICRO)
        deltas[dataset] = deltas.get(dataset, 0) + total.delta_pico
        counts[dataset] = counts.get(dataset, 0) + total.charges
    for dataset, pico in deltas.items():
        delta.add_metric([dataset], pico / PICO)
        charged.add_metric([dataset], counts[dataset])
    yield from (spent, delta, charged)


def _executor(executor: Executor) -> Iterator[Metric]:
    pool = executor.pool()
    workers = GaugeMetricFamily(
        "veil_executor_workers",
        "Executor worker processes of this server process, by state (size: configured).",
        labels=["state"],
    )
    for state, count in (
        ("size", pool.size),
        ("alive", pool.alive),
        ("busy", pool.busy),
        ("idle", max(0, pool.alive - pool.busy)),
    ):
        workers.add_metric([state], count)
    yield workers
    yield GaugeMetricFamily(
        "veil_executor_queue", "Requests waiting for a free executor worker.", value=pool.waiting
    )
    yield GaugeMetricFamily(
        "veil_executor_healthy",
        "1 when every worker is alive and locked down (as /healthz), else 0.",
        value=1 if executor.healthy() else 0,
    )


def _facts(facts: FactsIndex) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "veil_facts_index_state",
        "The facts index of this server process: 1 for its state (off, building, ready).",
        labels=["state"],
    )
    now = facts.state()
    for name in FACTS_STATES:
        state.add_metric([name], 1 if name == now else 0)
    yield state
    built, pending, failed = facts.sizes()
    indexes = GaugeMetricFamily(
        "veil_facts_indexes",
        "Facts indexes of this server process: built, pending (queued or building), failed.",
        labels=["state"],
    )
    for name, count in (("built", built), ("pending", pending), ("failed", failed)):
        indexes.add_metric([name], count)
    yield indexes
