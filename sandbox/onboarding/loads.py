"""Loads: a new version of a dataset from its sources and policy, published only if it passes.

A load is two steps. :meth:`Loads.begin_load` checks everything that can be checked without
reading data (role, zone, policy and its quality rules, the sources, that no other load of the
dataset runs), records the load under its own id as ``loading`` and gives it the next version
number: one after the highest number a ready or loading version holds.
:meth:`Loads.run_load` streams the sources into a plain workspace in the build area
(:func:`connectors.load.ingest`), writing progress as it goes (:mod:`sandbox.onboarding.progress`),
then seals it into ``<workspaces>/<dataset>/v<N>.sealed`` (:mod:`sandbox.vault`) and deletes the
plain file; only when the load and its quality rules pass does one transaction register the
version and make it current. A failed load is recorded as ``failed`` under its id with its
report and error, and **releases its number** (``version`` NULL): the next load takes it, so
version numbers count the versions made, failed loads use up none. Nothing else changes: the
current version, the workspace files, the ledger stay as they were. The number is unique per
dataset in the state store (``uq_version_loads_dataset_id_version``), so two loads begun at
once can never hold the same one: the second is refused (``409 conflict``). Over HTTP,
:meth:`Loads.start_load` runs the second step in a background thread. Both steps are recorded in
the audit log as the actor that began the load (the outcome names the request that began it, if
any), naming the load's id and the number it held.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from connectors.load import Source, ingest, sources_for
from connectors.quality.report import QualityReport
from connectors.quality.rules import read_rules
from connectors.source import SourceSpec
from policies.loader import parse_policy
from sandbox.access.model import Actor, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.catalog import caps_text, require_authorised
from sandbox.clock import now, utc
from sandbox.errors import (
    Conflict,
    Forbidden,
    InternalError,
    InvalidRequest,
    LoadInterrupted,
    NotFound,
    VeilError,
)
from sandbox.keys import directory as keystore
from sandbox.keys.master import MasterKeys
from sandbox.onboarding.model import LoadState, PendingLoad, Problem
from sandbox.onboarding.progress import ProgressHook, ProgressWriter, load_row
from sandbox.onboarding.sources import source_spec
from sandbox.onboarding.staff import require_loader
from sandbox.onboarding.uploads import Uploads, is_upload_source
from sandbox.onboarding.versions import Version, load_of
from sandbox.store.schema import (
    dataset_providers,
    datasets,
    providers,
    version_loads,
    versions,
    zones,
)
from sandbox.vault.sealed import build_area, build_name, seal, sealed_path

__all__ = ["STALE_AFTER", "Loads"]

log = logging.getLogger("veil.onboarding")

STALE_AFTER: Final = timedelta(minutes=15)  # a ``loading`` version without progress this long


class Loads:
    """Loads into the workspace directory, recorded in the state store behind ``engine`` and in
    ``audit``.

    ``quota_bytes`` caps each load's source size (``Settings.load_quota_bytes``).
    ``master_keys`` seal new versions; default: those of the data directory's default key
    directory (``<data_dir>/keys``, next to the workspaces). ``uploads``: where sources named
    ``upload:<id>`` are found (:mod:`sandbox.onboarding.uploads`).
    """

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        workspace_dir: Path,
        *,
        quota_bytes: int | None = None,
        master_keys: MasterKeys | None = None,
        uploads: Uploads | None = None,
    ) -> None:
        self.engine = engine
        self.uploads = uploads
        self.audit = require_log(audit, "the loads service")
        self.workspace_dir = workspace_dir
        self.quota_bytes = quota_bytes
        self.master_keys = (
            master_keys
            if master_keys is not None
            else keystore.master_keys(workspace_dir.parent / "keys", master_key=None)
        )

    def begin_load(
        self,
        actor: Actor,
        zone: str,
        dataset: str,
        policy_text: str,
        source: str | None = None,
        sources: Mapping[str, str] | None = None,
        *,
        provider: str | None = None,
        policy_name: str = "<policy>",
        confine_to: Path | None = None,
        cluster_by: str | None = None,
    ) -> PendingLoad:
        """Check a load, record its version as ``loading`` and return it (nothing read yet).

        ``confine_to``: local file sources must lie in this directory (loads over HTTP: a
        remote caller must not make the server read any file it can). ``cluster_by``: store
        the tables sorted by this column (overrides the policy's ``[storage] cluster_by``).
        The load's run records its outcome as ``actor``'s. Staff load any dataset from any
        source; a provider member only a dataset of its provider, from its uploads."""
        with self.engine.connect() as con:
            mine = require_loader(con, actor, dataset)
            require_authorised(con, zone, dataset, "load")
        if mine is not None and provider not in (None, mine):
            raise Forbidden("a provider member loads only for its own provider", field="provider")
        named = [source] if sources is None else list(sources.values())
        if mine is not None and not all(is_upload_source(s) for s in named if s is not None):
            raise Forbidden(
                "a provider member loads from its uploads: name the source upload:<id>",
                field="source",
            )
        policy = parse_policy(policy_text, policy_name)
        rules = read_rules(tomllib.loads(policy_text), policy_name)
        if policy.dataset != dataset:
            raise InvalidRequest(
                f"the policy is for dataset {policy.dataset!r}, not {dataset[:64]!r}",
                field="policy",
            )
        if cluster_by is not None and not any(t.column(cluster_by) for t in policy.tables):
            raise InvalidRequest(
                "cluster_by must name a column of one of the policy's tables", field="cluster_by"
            )
        if (source is None) == (sources is None):
            raise InvalidRequest("give a source, or sources (one per table)", field="source")
        given: Source | Mapping[str, Source]
        if sources is not None:
            given = {
                t: self._spec(actor, zone, dataset, s, confine_to, mine) for t, s in sources.items()
            }
        else:
            assert source is not None
            given = self._spec(actor, zone, dataset, source, confine_to, mine)
        connectors = sources_for(policy, given)
        names = sorted({c.name for c in connectors.values()})
        load = new_id("load")
        try:
            version, path, previous_rows = self._record(
                actor, zone, dataset, load, policy_text, policy.title, names, provider
            )
        except IntegrityError:
            # another load of the dataset began in the same moment and took the number (or
            # created the dataset): the store's unique keys refused the second
            raise Conflict(f"another load of {dataset} began at the same time") from None
        log.info("load started dataset=%s version=%d load=%s", dataset, version, load)
        return PendingLoad(
            actor,
            zone,
            dataset,
            load,
            version,
            path,
            policy,
            rules,
            connectors,
            previous_rows,
            cluster_by or policy.cluster_by,
        )

    def _spec(
        self,
        actor: Actor,
        zone: str,
        dataset: str,
        text: str,
        confine_to: Path | None,
        provider: str | None,
    ) -> SourceSpec:
        """A source of the load: an upload (``upload:<id>``), or, for staff, a source string
        (a file confined to ``confine_to``, a URL)."""
        if is_upload_source(text):
            if self.uploads is None:
                raise Forbidden("uploads are not served here")
            with self.engine.connect() as con:
                return self.uploads.source_spec(con, actor, zone, dataset, text)
        if provider is not None:
            raise Forbidden(
                "a provider member loads from its uploads: name the source upload:<id>",
                field="source",
            )
        return source_spec(text, confine_to)

    def _record(
        self,
        actor: Actor,
        zone: str,
        dataset: str,
        load: str,
        policy_text: str,
        title: str,
        names: list[str],
        provider: str | None,
    ) -> tuple[int, Path, dict[str, int] | None]:
        """Record a load as ``loading`` with the next version number, in one transaction (the
        dataset's row locked on PostgreSQL; SQLite serialises writers): (number, path, row
        counts of the current version)."""
        with self.engine.begin() as con:
            if con.execute(select(zones.c.id).where(zones.c.id == zone)).first() is None:
                raise NotFound(f"no zone {zone!r}")
            if provider is not None:
                found = con.execute(
                    select(providers.c.zone_id).where(providers.c.id == provider)
                ).first()
                if found is None:
                    raise NotFound(f"no provider {provider!r}")
                if found.zone_id != zone:
                    raise InvalidRequest(f"provider {provider} is not of zone {zone}")
            existing = con.execute(
                select(datasets).where(datasets.c.id == dataset).with_for_update()
            ).first()
            previous_rows: dict[str, int] | None = None
            if existing is None:
                con.execute(
                    datasets.insert().values(
                        id=dataset, zone_id=zone, title=title, created_at=now()
                    )
                )
            elif existing.zone_id != zone:
                raise Conflict(f"dataset {dataset} belongs to another zone")
            elif existing.current_version is not None:
                row = con.execute(
                    select(versions.c.row_counts).where(
                        versions.c.dataset_id == dataset,
                        versions.c.version == existing.current_version,
                    )
                ).first()
                if row is not None:
                    previous_rows = json.loads(row.row_counts)
            _no_running_load(con, dataset)
            # failed loads hold no number (NULL): the next number follows the versions made
            version = 1 + max(
                con.execute(
                    select(func.max(versions.c.version)).where(versions.c.dataset_id == dataset)
                ).scalar()
                or 0,
                con.execute(
                    select(func.max(version_loads.c.version)).where(
                        version_loads.c.dataset_id == dataset
                    )
                ).scalar()
                or 0,
            )
            path = sealed_path(self.workspace_dir, dataset, version)
            # A file there belongs to no version (the number is above every registered one and
            # no load holds it): left by a load stopped between sealing and registering.
            _remove_orphan(path)
            at = now()
            con.execute(
                version_loads.insert().values(
                    id=load,
                    dataset_id=dataset,
                    version=version,
                    zone_id=zone,
                    state=LoadState.LOADING.value,
                    source=", ".join(names),
                    policy=policy_text,
                    path=str(path),
                    rows_loaded=0,
                    started_by=actor.member.id if actor.member is not None else None,
                    started_at=at,
                    updated_at=at,
                )
            )
            if provider is not None:
                con.execute(
                    dataset_providers.delete().where(dataset_providers.c.dataset_id == dataset)
                )
                con.execute(
                    dataset_providers.insert().values(dataset_id=dataset, provider_id=provider)
                )
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "load.begin",
                    refs={
                        "zone": zone,
                        "dataset": dataset,
                        "version": version,
                        "load": load,
                        "provider": provider,
                    },
                    sealed={"sources": names},
                ),
                actor,
            )
        return version, path, previous_rows

    def run_load(
        self, pending: PendingLoad, *, on_progress: ProgressHook | None = None, reraise: bool = True
    ) -> Version:
        """Load a pending version; publish it if it passes, else record it as failed, in either
        case as the actor that began it.

        With ``reraise`` the error of a failed load is raised after it is recorded (the CLI);
        without, it is only recorded (a background load over HTTP). Returns the load's view
        (a failed one has released its number: ``version`` None).
        """
        progress = ProgressWriter(self.engine, pending, on_progress)
        build: Path | None = None  # the plain workspace, only until it is sealed
        sealed = False  # the sealed file exists, and is no version's until registered
        try:
            build = build_area(self.workspace_dir) / build_name(pending.dataset, pending.version)
            report = ingest(
                pending.policy,
                pending.connectors,
                build,
                rules=pending.rules,
                quota_bytes=self.quota_bytes,
                previous_rows=pending.previous_rows,
                on_progress=progress,
                cluster_by=pending.cluster_by,
            )
            seal(build, pending.path, self.master_keys, pending.dataset, pending.version)
            sealed = True
            self._publish(pending, report, progress.rows)
        except VeilError as exc:
            if sealed and not isinstance(exc, LoadInterrupted):
                # registering failed: the file is no version's, and its number is freed (not
                # so after an interruption: the number, and the path, may be another load's)
                pending.path.unlink(missing_ok=True)
            failed: QualityReport | None = getattr(exc, "report", None)
            problem = exc.problem()
            problem.pop("type", None)
            self._fail(pending, problem, failed)
            log.info(
                "load failed dataset=%s version=%d code=%s",
                pending.dataset,
                pending.version,
                exc.error_code,
            )
            if reraise:
                raise
            return load_of(self.engine, pending.dataset, pending.load)
        except Exception as exc:
            if sealed:
                pending.path.unlink(missing_ok=True)
            log.error(
                "load failed dataset=%s version=%d error=%s",
                pending.dataset,
                pending.version,
                type(exc).__name__,
            )
            self._fail(pending, InternalError("internal error").problem(), None)
            if reraise:
                raise
            return load_of(self.engine, pending.dataset, pending.load)
        finally:
            if build is not None:
                build.unlink(missing_ok=True)
        log.info("load ready dataset=%s version=%d", pending.dataset, pending.version)
        return load_of(self.engine, pending.dataset, pending.load)

    def start_load(self, pending: PendingLoad) -> threading.Thread:
        """Run a pending load in a background thread (its outcome is recorded, never raised)."""
        thread = threading.Thread(
            target=self.run_load,
            args=(pending,),
            kwargs={"reraise": False},
            name=f"veil-load-{pending.dataset}-v{pending.version}",
            daemon=True,
        )
        thread.start()
        return thread

    def _publish(self, pending: PendingLoad, report: QualityReport, rows: int) -> None:
        counts = {t.name: t.rows for t in report.tables}
        # the profile counted, per table, the units above its row cap
        capped = [t.name for t in report.tables if t.units_over_bound == 0]
        at = now()
        with self.engine.begin() as con:
            # first, the load must still hold its number: a load silent for STALE_AFTER may have
            # been marked interrupted (its number released) while it still ran
            claimed = con.execute(
                load_row(pending)
                .where(
                    version_loads.c.state == LoadState.LOADING.value,
                    version_loads.c.version == pending.version,
                )
                .values(
                    state=LoadState.READY.value,
                    rows_loaded=max(rows, sum(counts.values())),
                    bytes_read=version_loads.c.bytes_total,  # all of it (progress is throttled)
                    report=json.dumps(report.to_dict()),
                    finished_at=at,
                    updated_at=at,
                )
            )
            if claimed.rowcount != 1:
                raise LoadInterrupted("the load was marked interrupted before it was registered")
            con.execute(
                versions.insert().values(
                    dataset_id=pending.dataset,
                    version=pending.version,
                    path=str(pending.path),
                    policy=_policy_text(con, pending),
                    row_counts=json.dumps(counts),
                    within_row_caps=caps_text(capped),
                    salt=secrets.randbits(62),
                    created_at=at,
                )
            )
            con.execute(
                update(datasets)
                .where(datasets.c.id == pending.dataset)
                .values(current_version=pending.version, title=pending.policy.title)
            )
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "load.ready",
                    refs={
                        "dataset": pending.dataset,
                        "version": pending.version,
                        "load": pending.load,
                        "rows": sum(counts.values()),
                    },
                    primary=False,  # the load's outcome, after the request that began it
                ),
                pending.actor,
            )

    def _fail(self, pending: PendingLoad, problem: Problem, report: QualityReport | None) -> None:
        at = now()
        with self.engine.begin() as con:
            recorded = con.execute(
                load_row(pending)
                .where(version_loads.c.state == LoadState.LOADING.value)
                .values(
                    state=LoadState.FAILED.value,
                    version=None,  # released: the next load takes the number
                    error=json.dumps(dict(problem), default=str),
                    report=json.dumps(report.to_dict()) if report is not None else None,
                    finished_at=at,
                    updated_at=at,
                )
            )
            if recorded.rowcount != 1:
                return  # already recorded as interrupted by the next load
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "load.failed",
                    # the number it held and released, and the load that names it for good
                    refs={
                        "dataset": pending.dataset,
                        "version": pending.version,
                        "load": pending.load,
                    },
                    code=str(problem.get("code") or "load_failed"),
                    primary=False,
                ),
                pending.actor,
            )


def _no_running_load(con: Connection, dataset: str) -> None:
    """One load per dataset at a time; a load silent for STALE_AFTER was interrupted."""
    running = con.execute(
        select(
            version_loads.c.id,
            version_loads.c.version,
            version_loads.c.path,
            version_loads.c.updated_at,
        ).where(
            version_loads.c.dataset_id == dataset,
            version_loads.c.state == LoadState.LOADING.value,
        )
    ).all()
    for row in running:
        if now() - utc(row.updated_at) < STALE_AFTER:
            raise Conflict(
                f"version {row.version} of {dataset} is still loading", version=row.version
            )
        problem = LoadInterrupted(
            "the load stopped reporting progress (the server stopped?)"
        ).problem()
        _remove_orphan(Path(row.path))  # sealed, perhaps, but never registered
        con.execute(
            update(version_loads)
            .where(version_loads.c.id == row.id)
            .values(
                state=LoadState.FAILED.value,
                version=None,  # released, like any failed load's
                error=json.dumps(problem),
                finished_at=now(),
                updated_at=now(),
            )
        )


def _policy_text(con: Connection, pending: PendingLoad) -> str:
    row = con.execute(
        select(version_loads.c.policy).where(version_loads.c.id == pending.load)
    ).one()
    return str(row.policy)


def _remove_orphan(path: Path) -> None:
    """Delete a sealed file that no registered version names (a load stopped between sealing
    and registering it; its number is free again). Registered versions' files are never
    touched: their numbers are never given out again."""
    if path.exists():
        log.warning("removing an unregistered workspace file %s", path.name)
        path.unlink(missing_ok=True)
