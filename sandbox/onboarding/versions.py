"""A dataset's versions: the list, one version's view, rollback, and the quality reports.

Every load makes a version, numbered after every earlier one; a version is ``ready`` (registered
in ``versions``, its workspace sealed), ``failed`` or ``loading`` (its ``version_loads`` row).
:func:`version_view` is the one view of a version, read by the routes and returned by a load.
Activating a ready version makes it current (a rollback, or forward again); workspace files are
never deleted or overwritten. Views and reports are for the dataset's staff
(:mod:`sandbox.onboarding.staff`): reports hold counts and date ranges.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from connectors.quality.html import render_html
from connectors.quality.report import QualityReport
from sandbox.access.model import Member
from sandbox.audit import log as audit
from sandbox.errors import Conflict, NotFound
from sandbox.onboarding.model import LoadState, iso
from sandbox.onboarding.staff import STAFF, dataset_row, require, require_staff
from sandbox.store.schema import datasets, version_loads, versions

__all__ = ["Versions", "version_view"]

log = logging.getLogger("veil.onboarding")


class Versions:
    """The versions and quality reports of the datasets in the state store behind ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list_versions(self, actor: Member | None, zone: str, dataset: str) -> dict[str, Any]:
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
                    select(version_loads.c.version).where(version_loads.c.dataset_id == dataset)
                )
            }
        return {
            "dataset": dataset,
            "zone": zone,
            "versions": [version_view(self.engine, dataset, v) for v in sorted(numbers)],
        }

    def get_version(
        self, actor: Member | None, zone: str, dataset: str, version: int
    ) -> dict[str, Any]:
        with self.engine.connect() as con:
            _in_zone(con, zone, dataset)
            require_staff(con, actor, dataset)
        return version_view(self.engine, dataset, version)

    def activate(
        self, actor: Member | None, zone: str, dataset: str, version: int
    ) -> dict[str, Any]:
        """Make an earlier (or later) ready version current again: a rollback, atomically."""
        require(actor, *STAFF)
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
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "version.activate",
                    refs={"zone": zone, "dataset": dataset, "version": version},
                ),
            )
        log.info("version activated dataset=%s version=%d", dataset, version)
        return version_view(self.engine, dataset, version)

    def quality(
        self, actor: Member | None, dataset: str, version: int | None = None
    ) -> dict[str, Any]:
        """The quality report of a version (default: the current one), for staff only."""
        with self.engine.connect() as con:
            ds = dataset_row(con, dataset)
            require_staff(con, actor, dataset)
            if version is None:
                version = ds.current_version
                if version is None:
                    raise NotFound(f"{dataset!r} has no current version; name one (?version=N)")
            row = con.execute(
                select(version_loads.c.state, version_loads.c.report).where(
                    version_loads.c.dataset_id == dataset, version_loads.c.version == version
                )
            ).first()
        if row is None or row.report is None:
            raise NotFound(f"no quality report for version {version} of {dataset!r}")
        return {
            "dataset": dataset,
            "version": version,
            "state": row.state,
            "current": ds.current_version == version,
            "report": json.loads(row.report),
        }

    def quality_html(self, actor: Member | None, dataset: str, version: int | None = None) -> str:
        found = self.quality(actor, dataset, version)
        return render_html(QualityReport.from_dict(found["report"]))


def _in_zone(con: Connection, zone: str, dataset: str) -> Any:
    row = con.execute(select(datasets).where(datasets.c.id == dataset)).first()
    if row is None or row.zone_id != zone:
        raise NotFound(f"no dataset {dataset!r} in zone {zone!r}")
    return row


def version_view(engine: Engine, dataset: str, version: int) -> dict[str, Any]:
    """One version as the API shows it: state, progress, error and quality summary (no
    access check: the caller has made it)."""
    with engine.connect() as con:
        ds = dataset_row(con, dataset)
        load = con.execute(
            select(version_loads).where(
                version_loads.c.dataset_id == dataset, version_loads.c.version == version
            )
        ).first()
        ready = con.execute(
            select(versions.c.row_counts, versions.c.created_at).where(
                versions.c.dataset_id == dataset, versions.c.version == version
            )
        ).first()
    if load is None and ready is None:
        raise NotFound(f"no version {version} of {dataset!r}")
    view: dict[str, Any] = {
        "dataset": dataset,
        "zone": ds.zone_id,
        "version": version,
        "current": ds.current_version == version,
    }
    if load is None:  # registered without a recorded load (e.g. the demo zone)
        assert ready is not None
        counts = json.loads(ready.row_counts)
        view.update(
            state=LoadState.READY.value,
            rows_loaded=sum(counts.values()),
            row_counts=counts,
            finished_at=iso(ready.created_at),
            quality=None,
        )
        return view
    fraction = None
    if load.bytes_total and load.bytes_read is not None:
        fraction = min(1.0, load.bytes_read / load.bytes_total)
    view.update(
        state=load.state,
        source=load.source,
        rows_loaded=load.rows_loaded,
        progress={
            "rows": load.rows_loaded,
            "table": load.current_table,
            "bytes_read": load.bytes_read,
            "bytes_total": load.bytes_total,
            "fraction": 1.0 if load.state == LoadState.READY.value else fraction,
        },
        started_at=iso(load.started_at),
        finished_at=iso(load.finished_at),
    )
    if ready is not None:
        view["row_counts"] = json.loads(ready.row_counts)
    if load.error is not None:
        view["error"] = json.loads(load.error)
    if load.report is not None:
        report = QualityReport.from_dict(json.loads(load.report))
        view["quality"] = {
            "status": report.status,
            "failed_rules": [r.to_dict() for r in report.failed_rules],
        }
    return view
