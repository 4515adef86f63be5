"""The metrics of one app: what the HTTP edge counts, and the registry a scrape reads.

Every label value comes from a closed set Veil defines — route templates (never a raw path),
HTTP methods, statuses, problem codes, template ids and outcomes, dataset ids — and is checked
here again (:func:`token`): a value that does not look like one becomes ``other``. No metric
carries data values, SQL text, subject ids, tenant ids or keys.

With several server processes (``uvicorn --workers N``), each keeps its own counters. When
``PROMETHEUS_MULTIPROC_DIR`` names an empty directory before the processes start, prometheus-client
writes every process's counters there and a scrape of any process sums them all (its multiprocess
mode); otherwise a scrape shows the counters of the process that answered it.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from sandbox.metrics.collectors import LiveCollector
from sandbox.metrics.labels import OTHER, token

UNMATCHED = "unmatched"  # a request that matched no route: its path is never a label
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROUTE = re.compile(r"^/[A-Za-z0-9_./{}-]{0,255}$")


def multiprocess() -> bool:
    """Whether prometheus-client runs in its multiprocess mode (chosen when it was imported)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """The counters of one app and the registry its scrapes read (live collectors included)."""

    def __init__(self) -> None:
        own = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "veil_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "veil_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.refusals = Counter(
            "veil_refusals",
            "Problem answers and refused batch lines, by problem code (docs/errors.md).",
            ["code"],
            registry=own,
        )
        self.verifications = Counter(
            "veil_verifications",
            "Verifications, by template id and outcome (refused: no outcome was given).",
            ["template", "outcome"],
            registry=own,
        )
        if multiprocess():
            self.registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            self.registry = own
        self.live = LiveCollector()  # its sources are set by the app's lifespan
        self.registry.register(self.live)

    def request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        label = route if route is not None and _ROUTE.fullmatch(route) else UNMATCHED
        verb = method if method in METHODS else OTHER
        self.requests.labels(label, verb, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def refused(self, code: str, count: int = 1) -> None:
        if count:
            self.refusals.labels(token(code)).inc(count)

    def verified(self, template: str, outcome: str, count: int = 1) -> None:
        if count:
            self.verifications.labels(token(template), token(outcome)).inc(count)

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
