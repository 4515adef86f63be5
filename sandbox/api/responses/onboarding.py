"""Zones, providers, versions and their loads, quality reports and issues (staff views): the wire
form of the results of :mod:`sandbox.onboarding` (zones are :mod:`sandbox.api.responses.catalog`'s
``Zone``), for the routes and the ``veil`` commands alike.

Over HTTP, paths under the data directory are shown relative to it (``sandbox/api/redact.py``);
a source is shown as the caller named it, relative to ``<data_dir>/sources``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar, Self

from pydantic import ConfigDict, Field

from connectors.quality import report
from sandbox.api.responses.base import View
from sandbox.onboarding import issues, providers, versions


class Provider(View):
    mirrors = providers.Provider

    id: str
    name: str
    zone: str
    description: str
    datasets: list[str]


class ProviderList(View):
    providers: list[Provider]


class ProviderMember(View):
    mirrors = providers.ProviderMember

    provider: str
    member: str


class LoadProgress(View):
    mirrors = versions.LoadProgress

    rows: int
    table: str | None
    bytes_read: int | None
    bytes_total: int | None
    fraction: float | None


class LoadError(View):
    """Why a load failed: the problem it raised (where in which file, never a data value).

    The stored problem may carry more extension members than these (a failed quality rule's
    results, which the version's quality report shows): only the ones declared here are sent."""

    model_config = ConfigDict(extra="ignore")

    code: str
    title: str
    status: int
    detail: str
    file: str | None = None
    line: int | None = None
    row: int | None = None
    column: str | None = None
    table: str | None = None
    field: str | None = None
    key: str | None = None
    rule: str | None = None
    source: str | None = None


class RuleResult(View):
    mirrors = report.RuleResult

    rule: str
    table: str
    column: str | None
    passed: bool
    limit: float
    actual: float
    message: str


class QualitySummary(View):
    mirrors = versions.QualitySummary

    status: str
    failed_rules: list[RuleResult]


class Version(View):
    mirrors: ClassVar[type | None] = versions.Version  # not StartedLoad's
    # a version registered without a recorded load has none of these; only a ready one has
    # row counts, only a failed one an error, only one with a report a quality summary
    omit_none = frozenset(
        {"load", "source", "progress", "started_at", "row_counts", "error", "quality"}
    )

    dataset: str
    zone: str
    version: int | None = Field(
        description="The version number; null for a failed load, which released the number it "
        "held (the next load takes it)."
    )
    load: str | None = Field(
        None, description="The load's own id (absent: a version registered without a load)."
    )
    current: bool
    state: str = Field(description="loading, ready or failed.")
    source: str | None = None
    rows_loaded: int
    progress: LoadProgress | None = None
    started_at: datetime | None = None
    finished_at: datetime | None
    row_counts: dict[str, int] | None = None
    error: LoadError | None = None
    quality: QualitySummary | None = None


class StartedLoad(Version):
    """A version just recorded as ``loading``, and where to follow it."""

    mirrors = None  # the Version's fields, and the url of the route that shows it

    url: str = Field(
        description="Poll this for the load's progress and outcome (also the Location header): "
        "the load's own route, which names it whether it becomes a version or fails."
    )

    @classmethod
    def started(cls, version: versions.Version, url: str) -> Self:
        shown = Version.of(version)
        return cls(**{name: getattr(shown, name) for name in shown.model_fields_set}, url=url)


class VersionList(View):
    mirrors = versions.VersionList

    dataset: str
    zone: str
    versions: list[Version]

    @classmethod
    def of(cls, result: Any) -> Self:
        """Each version as :meth:`Version.of` shows it (members absent rather than null)."""
        if not isinstance(result, versions.VersionList):
            raise TypeError(f"{cls.__name__}.of takes a VersionList, not {type(result)}")
        return cls(
            dataset=result.dataset,
            zone=result.zone,
            versions=[Version.of(v) for v in result.versions],
        )


class ColumnQuality(View):
    mirrors = report.ColumnQuality

    name: str
    type: str
    role: str
    nulls: int
    null_rate: float
    missing_codes: int = Field(
        0, description="Values equal to a declared missing code, loaded as NULL (in nulls)."
    )
    conversion_failures: int
    out_of_bounds: int | None
    out_of_bounds_share: float | None
    keys_outside: int | None
    distinct_keys_outside: int | None
    date_min: date | None
    date_max: date | None
    freshness_days: int | None
    outside_public_range: int | None


class TableQuality(View):
    mirrors = report.TableQuality

    name: str
    rows: int
    previous_rows: int | None
    row_change: int | None
    row_change_rate: float | None
    units: int | None
    duplicate_units: int | None
    duplicate_unit_rows: int | None
    units_over_bound: int | None
    columns: list[ColumnQuality]


class QualityReport(View):
    """A load's quality report (:class:`connectors.quality.report.QualityReport`, with its
    ``status``, which the report derives from its rules and error)."""

    dataset: str
    source: str
    created_at: datetime
    status: str
    tables: list[TableQuality]
    rules: list[RuleResult]
    error: LoadError | None


class Quality(View):
    mirrors = versions.Quality

    dataset: str
    version: int | None = Field(description="null: a failed load (it holds no number).")
    load: str
    state: str
    current: bool
    report: QualityReport


class IssueAnswer(View):
    mirrors = issues.IssueAnswer

    text: str
    answered_at: datetime


class IssueResolution(View):
    mirrors = issues.IssueResolution

    kind: str
    version: int | None
    note: str
    resolved_at: datetime
    revoked_receipts: int


class Issue(View):
    mirrors = issues.Issue

    id: str
    number: int
    dataset: str
    state: str
    title: str
    description: str
    about_subject: bool = Field(
        description="Whether it is about one subject's records (never which)."
    )
    dataset_version: int | None
    tenant: str | None
    raised_at: datetime
    answer: IssueAnswer | None
    resolution: IssueResolution | None


class IssueList(View):
    issues: list[Issue]
