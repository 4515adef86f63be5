"""Zones, providers, versions and their loads, quality reports and issues (staff views).

Paths under the data directory are shown relative to it (``sandbox/api/redact.py``); a source
is shown as the caller named it, relative to ``<data_dir>/sources``.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from sandbox.api.responses.base import View


class Provider(View):
    id: str
    name: str
    zone: str
    description: str
    datasets: list[str]


class ProviderList(View):
    providers: list[Provider]


class ProviderMember(View):
    provider: str
    member: str


class LoadProgress(View):
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
    rule: str
    table: str
    column: str | None
    passed: bool
    limit: float
    actual: float
    message: str


class QualitySummary(View):
    status: str
    failed_rules: list[RuleResult]


class Version(View):
    dataset: str
    zone: str
    version: int
    current: bool
    state: str = Field(description="loading, ready or failed.")
    source: str | None = None
    rows_loaded: int
    progress: LoadProgress | None = None
    started_at: str | None = None
    finished_at: str | None
    row_counts: dict[str, int] | None = None
    error: LoadError | None = None
    quality: QualitySummary | None = None


class StartedLoad(Version):
    url: str = Field(description="Poll this for the load's progress (also the Location header).")


class VersionList(View):
    dataset: str
    zone: str
    versions: list[Version]


class ColumnQuality(View):
    name: str
    type: str
    role: str
    nulls: int
    null_rate: float
    conversion_failures: int
    out_of_bounds: int | None
    out_of_bounds_share: float | None
    keys_outside: int | None
    distinct_keys_outside: int | None
    date_min: str | None
    date_max: str | None
    freshness_days: int | None
    outside_public_range: int | None


class TableQuality(View):
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
    dataset: str
    source: str
    created_at: str
    status: str
    tables: list[TableQuality]
    rules: list[RuleResult]
    error: LoadError | None


class Quality(View):
    dataset: str
    version: int
    state: str
    current: bool
    report: QualityReport


class IssueAnswer(View):
    text: str
    answered_at: str | None


class IssueResolution(View):
    kind: str
    version: int | None
    note: str
    resolved_at: str | None
    revoked_receipts: int


class Issue(View):
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
    raised_at: str | None
    answer: IssueAnswer | None
    resolution: IssueResolution | None


class IssueList(View):
    issues: list[Issue]
