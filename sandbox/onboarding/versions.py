"""A dataset's versions: the list, one version's view, rollback, and the quality reports.

Every load is recorded under its own id (``load_…``, its ``version_loads`` row) and holds a
version number while it runs: ``loading``, then ``ready`` (registered in ``versions``, its
workspace sealed) or ``failed``. A failed load releases its number, which the next load takes:
numbers count the versions made. :func:`version_of` (by number) and :func:`load_of` (by load id,
whatever the outcome) read the one :class:`Version` result, returned by the routes and by a load.
Activating a ready version makes it current (a rollback, or forward again); workspace files are
never deleted or overwritten. Versions and reports are for the dataset's staff
(:mod:`sandbox.onboarding.staff`): reports hold counts and date ranges.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from connectors.quality.html import render_html
from connectors.quality.report import QualityReport, RuleResult
from sandbox.access.model import Actor
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import utc
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.onboarding.model import LoadState, Problem
from sandbox.onboarding.staff import dataset_row, require_loader, require_staff
from sandbox.store.schema import datasets, version_loads, versions

__all__ = [
    "LoadProgress",
    "Quality",
    "QualitySummary",
    "Version",
    "VersionList",
    "Versions",
    "load_of",
    "version_of",
]

log = logging.getLogger("veil.onboarding")


@dataclass(frozen=True)
class LoadProgress:
    """How far a load got: rows, the table being read, source bytes read of all (if known)."""

    rows: int
    table: str | None
    bytes_read: int | None
    bytes_total: int | None
    fraction: float | None


@dataclass(frozen=True)
class QualitySummary:
    """A version's quality report in short: passed or failed, and the rules that failed."""

    status: str
    failed_rules: tuple[RuleResult, ...]


@dataclass(frozen=True, kw_only=True)
class Version:
    """One version of a dataset, or one load. ``load`` is the load's id (``None``: a version
    registered without a recorded load, the demo zone's, which has no source, progress, start,
    error or quality summary either); ``version`` is ``None`` for a failed load, which released
    the number it held; ``row_counts`` is only that of a ready version; ``error`` is the problem
    a failed load raised."""

    dataset: str
    zone: str
    version: int | None
    load: str | None = None
    current: bool
    state: LoadState
    source: str | None = None
    rows_loaded: int
    progress: LoadProgress | None = None
    started_at: datetime | None = None
    finished_at: datetime | None
    row_counts: Mapping[str, int] | None = None
    error: Problem | None = None
    quality: QualitySummary | None = None


@dataclass(frozen=True)
class VersionList:
    dataset: str
    zone: str
    versions: tuple[Version, ...]


@dataclass(frozen=True)
class Quality:
    """The quality report of one version or load (``version`` None: a failed load)."""

    dataset: str
    version: int | None
    load: str
    state: LoadState
    current: bool
    report: QualityReport


class Versions:
    """The versions and quality reports of the datasets in the state store behind ``engine``;
    changes recorded in ``audit``."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the versions service")

    def list_versions(self, actor: Actor, zone: str, dataset: str) -> VersionList:
        """The versions by number (ready and loading), then the failed loads in the order they
        began (they hold no number)."""
        with self.engine.connect() as con:
            _in_zone(con, zone, dataset)
            require_staff(con, actor, dataset)
            numbers = {
                r.version
                for r in con.execute(
                    select(versions.c.version).where(versions.c.dataset_id == dataset)
                )
            } | {
                r.version
                for r in con.execute(
                    select(version_loads.c.version).where(
                        version_loads.c.dataset_id == dataset,
                        version_loads.c.version.is_not(None),
                    )
                )
            }
            failed = [
                r.id
                for r in con.execute(
                    select(version_loads.c.id)
                    .where(
                        version_loads.c.dataset_id == dataset,
                        version_loads.c.version.is_(None),
                    )
                    .order_by(version_loads.c.started_at, version_loads.c.id)
                )
            ]
        return VersionList(
            dataset,
            zone,
            tuple(version_of(self.engine, dataset, v) for v in sorted(numbers))
            + tuple(load_of(self.engine, dataset, load) for load in failed),
        )

    def get_version(self, actor: Actor, zone: str, dataset: str, version: int) -> Version:
        with self.engine.connect() as con:
            _in_zone(con, zone, dataset)
            require_staff(con, actor, dataset)
        return version_of(self.engine, dataset, version)

    def get_load(self, actor: Actor, zone: str, dataset: str, load: str) -> Version:
        """One load by its id, whatever its outcome (a failed one has no number)."""
        with self.engine.connect() as con:
            _in_zone(con, zone, dataset)
            require_staff(con, actor, dataset)
        return load_of(self.engine, dataset, load)

    def activate(self, actor: Actor, zone: str, dataset: str, version: int) -> Version:
        """Make an earlier (or later) ready version current again: a rollback, atomically. For
        staff and the dataset's provider."""
        with self.engine.connect() as con:
            require_loader(con, actor, dataset)  # other roles refused before anything is read
        with self.engine.begin() as con:
            _in_zone(con, zone, dataset)
            ready = con.execute(
                select(versions.c.path).where(
                    versions.c.dataset_id == dataset, versions.c.version == version
                )
            ).first()
            if ready is None:
                load = con.execute(
                    select(version_loads.c.state).where(
                        version_loads.c.dataset_id == dataset, version_loads.c.version == version
                    )
                ).first()
                if load is None:
                    raise NotFound(f"no version {version} of {dataset!r}")
                raise Conflict(f"version {version} is {load.state}, not ready", state=load.state)
            if not Path(ready.path).exists():
                raise Conflict(f"the workspace file of version {version} is gone")
            con.execute(
                update(datasets).where(datasets.c.id == dataset).values(current_version=version)
            )
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "version.activate",
                    refs={"zone": zone, "dataset": dataset, "version": version},
                ),
                actor,
            )
        log.info("version activated dataset=%s version=%d", dataset, version)
        return version_of(self.engine, dataset, version)

    def quality(
        self, actor: Actor, dataset: str, version: int | None = None, load: str | None = None
    ) -> Quality:
        """The quality report of a version (default: the current one) or of a load (by id:
        failed loads too), for staff only."""
        with self.engine.connect() as con:
            ds = dataset_row(con, dataset)
            require_staff(con, actor, dataset)
            query = select(
                version_loads.c.id, version_loads.c.version, version_loads.c.state,
                version_loads.c.report,
            ).where(version_loads.c.dataset_id == dataset)  # fmt: skip
            if load is not None:
                if version is not None:
                    raise InvalidRequest("name a version or a load, not both", field="load")
                query = query.where(version_loads.c.id == load)
                which = f"load {load[:64]}"
            else:
                if version is None:
                    version = ds.current_version
                    if version is None:
                        raise NotFound(f"{dataset!r} has no current version; name one (?version=N)")
                query = query.where(version_loads.c.version == version)
                which = f"version {version}"
            row = con.execute(query).first()
        if row is None or row.report is None:
            raise NotFound(f"no quality report for {which} of {dataset!r}")
        return Quality(
            dataset,
            row.version,
            row.id,
            LoadState(row.state),
            row.version is not None and ds.current_version == row.version,
            QualityReport.from_dict(json.loads(row.report)),
        )

    def quality_html(
        self, actor: Actor, dataset: str, version: int | None = None, load: str | None = None
    ) -> str:
        """The quality report as a readable HTML page."""
        return render_html(self.quality(actor, dataset, version, load).report)


def _in_zone(con: Connection, zone: str, dataset: str) -> Any:
    row = con.execute(select(datasets).where(datasets.c.id == dataset)).first()
    if row is None or row.zone_id != zone:
        raise NotFound(f"no dataset {dataset!r} in zone {zone!r}")
    return row


def version_of(engine: Engine, dataset: str, version: int) -> Version:
    """One version by number: state, progress, error and quality summary (no access check: the
    caller has made it). Failed loads hold no number: :func:`load_of` finds them."""
    with engine.connect() as con:
        ds = dataset_row(con, dataset)
        load = con.execute(
            select(version_loads).where(
                version_loads.c.dataset_id == dataset, version_loads.c.version == version
            )
        ).first()
        ready = con.execute(
            select(versions.c.version, versions.c.row_counts, versions.c.created_at).where(
                versions.c.dataset_id == dataset, versions.c.version == version
            )
        ).first()
    if load is None and ready is None:
        raise NotFound(f"no version {version} of {dataset!r}")
    return _view(ds, load, ready)


def load_of(engine: Engine, dataset: str, load: str) -> Version:
    """One load by its id, whatever its outcome (no access check: the caller has made it)."""
    with engine.connect() as con:
        ds = dataset_row(con, dataset)
        row = con.execute(
            select(version_loads).where(
                version_loads.c.dataset_id == dataset, version_loads.c.id == load
            )
        ).first()
        ready = None
        if row is not None and row.version is not None:
            ready = con.execute(
                select(versions.c.version, versions.c.row_counts, versions.c.created_at).where(
                    versions.c.dataset_id == dataset, versions.c.version == row.version
                )
            ).first()
    if row is None:
        raise NotFound(f"no load {load[:64]!r} of {dataset!r}")
    return _view(ds, row, ready)


def _view(ds: Any, load: Any, ready: Any) -> Version:
    """The view of a load row and/or a registered version row (at least one of them)."""
    row_counts = json.loads(ready.row_counts) if ready is not None else None
    if load is None:  # registered without a recorded load (e.g. the demo zone)
        assert ready is not None and row_counts is not None
        return Version(
            dataset=ds.id,
            zone=ds.zone_id,
            version=ready.version,
            current=ds.current_version == ready.version,
            state=LoadState.READY,
            rows_loaded=sum(row_counts.values()),
            finished_at=utc(ready.created_at),
            row_counts=row_counts,
        )
    state = LoadState(load.state)
    fraction = None
    if load.bytes_total and load.bytes_read is not None:
        fraction = min(1.0, load.bytes_read / load.bytes_total)
    quality = None
    if load.report is not None:
        report = QualityReport.from_dict(json.loads(load.report))
        quality = QualitySummary(report.status, report.failed_rules)
    return Version(
        dataset=ds.id,
        zone=ds.zone_id,
        version=load.version,
        load=load.id,
        current=load.version is not None and ds.current_version == load.version,
        state=state,
        source=load.source,
        rows_loaded=load.rows_loaded,
        progress=LoadProgress(
            rows=load.rows_loaded,
            table=load.current_table,
            bytes_read=load.bytes_read,
            bytes_total=load.bytes_total,
            fraction=1.0 if state == LoadState.READY else fraction,
        ),
        started_at=utc(load.started_at),
        finished_at=utc(load.finished_at) if load.finished_at is not None else None,
        row_counts=row_counts,
        error=json.loads(load.error) if load.error is not None else None,
        quality=quality,
    )
