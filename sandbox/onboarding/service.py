"""Data onboarding: zones, providers, loads into immutable versions, quality reports, issues.

The logic behind ``/v1/zones``, ``/v1/providers``, ``/v1/zones/{zone}/datasets/{id}/versions``,
``/v1/datasets/{id}/quality``, ``/v1/datasets/{id}/issues`` and the ``veil`` commands alike
(docs/onboarding.md). ``actor`` is the authenticated member, or ``None`` for the local
administrator (the CLI on a data directory).

A load is two steps. :meth:`Onboarding.begin_load` checks everything that can be checked without
reading data (role, zone, policy and its quality rules, the sources), allocates the next version
number and records it as ``loading``. :meth:`Onboarding.run_load` streams the sources into a
plain workspace in the build area (:func:`connectors.load.ingest`), writing progress as it goes,
then seals it into ``<workspaces>/<dataset>/v<N>.sealed`` (:mod:`sandbox.vault`) and deletes the
plain file; only when the load and its quality rules pass does one transaction register the
version and make it current. A failed load records the version as ``failed`` with its report
and error and changes nothing else: the current version, the workspace files, the ledger stay as
they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, func, select, update
from sqlalchemy.exc import IntegrityError

from connectors.base import Connector, Progress, SourceSpec, parse_source
from connectors.errors import InvalidSource
from connectors.load import Source, ingest, sources_for
from connectors.quality import QualityReport, QualityRules, read_rules, render_html
from policies.loader import parse_policy
from policies.model import Policy
from sandbox.access.model import SUBJECT_ID, Member, MemberRole, new_id
from sandbox.audit import log as audit
from sandbox.clock import now
from sandbox.errors import Conflict, Forbidden, InvalidRequest, NoGrant, NotFound, VeilError
from sandbox.keys.master import MasterKeyRing
from sandbox.store.schema import (
    dataset_issues,
    dataset_providers,
    datasets,
    grants,
    issue_revocations,
    members,
    provider_members,
    providers,
    receipts,
    verification_events,
    version_loads,
    versions,
    zones,
)
from sandbox.vault.sealed import build_area, build_name, seal, sealed_path
from sandbox.verification.receipts import subject_ref

__all__ = [
    "IssueState",
    "LoadState",
    "Onboarding",
    "PendingLoad",
    "ResolutionKind",
    "ZoneKind",
]

log = logging.getLogger("veil.onboarding")

OBJECT_ID: Final = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
STALE_AFTER: Final = timedelta(minutes=15)  # a ``loading`` version without progress this long
PROGRESS_EVERY_S: Final = 0.5
DATA_CORRECTION: Final = "data_correction"  # sandbox.verification.RevocationReason.DATA_CORRECTION
STAFF: Final = (MemberRole.ADMIN, MemberRole.OPERATOR)


class ZoneKind(StrEnum):
    DOMAIN = "domain"
    REGIONAL = "regional"
    COMPREHENSIVE = "comprehensive"


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class IssueState(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    RESOLVED = "resolved"


class ResolutionKind(StrEnum):
    NO_CHANGE = "no_change"
    CORRECTED = "corrected"


@dataclass(frozen=True)
class PendingLoad:
    """A load that :meth:`Onboarding.begin_load` accepted and recorded as ``loading``."""

    zone: str
    dataset: str
    version: int
    path: Path
    policy: Policy
    rules: QualityRules
    connectors: Mapping[str, Connector]
    previous_rows: Mapping[str, int] | None
    cluster_by: str | None = None  # the load's, else the policy's [storage] cluster_by


ProgressHook = Callable[[Progress], None]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


def _check_id(value: str, what: str) -> None:
    if not OBJECT_ID.match(value):
        raise InvalidRequest(
            f"a {what} id is 1 to 63 lower-case letters, digits, '_' or '-', from a letter",
            field="id",
        )


class Onboarding:
    """Onboarding over the state store and the workspace directory.

    ``quota_bytes`` caps each load's source size (``Settings.load_quota_bytes``); ``zone_secret``
    keys the subject references of issues like those of receipts (without it they are SHA-256,
    which does not match receipts, so no receipt can be revoked by a correction).
    """

    def __init__(
        self,
        engine: Engine,
        workspace_dir: Path,
        *,
        quota_bytes: int | None = None,
        zone_secret: bytes | None = None,
        master_keys: MasterKeyRing | None = None,
    ) -> None:
        self.engine = engine
        self.workspace_dir = workspace_dir
        self.quota_bytes = quota_bytes
        self.zone_secret = zone_secret
        self.master_keys = master_keys

    def _sealing_keys(self) -> MasterKeyRing:
        """The master keys that seal new versions; default: those of the default key directory
        of the data directory (``<data_dir>/keys``, next to the workspaces)."""
        if self.master_keys is None:
            from sandbox.keys import directory as keystore

            self.master_keys = keystore.master_keys(
                self.workspace_dir.parent / "keys", master_key=None
            )
        return self.master_keys

    # -- zones and providers -------------------------------------------------------------------

    def create_zone(
        self,
        actor: Member | None,
        zone_id: str,
        kind: str,
        operator: str,
        title: str,
        description: str = "",
    ) -> dict[str, Any]:
        from sandbox import catalog

        _require(actor, MemberRole.ADMIN)
        _check_id(zone_id, "zone")
        try:
            zone_kind = ZoneKind(kind)
        except ValueError:
            raise InvalidRequest(
                "kind is domain, regional or comprehensive", field="kind"
            ) from None
        if not operator.strip() or not title.strip():
            raise InvalidRequest("a zone needs an operator and a title", field="operator")
        catalog.create_zone(
            self.engine, catalog.Zone(zone_id, zone_kind.value, title, operator, description)
        )
        log.info("zone created id=%s", zone_id)
        return {
            "id": zone_id,
            "kind": zone_kind.value,
            "title": title,
            "operator": operator,
            "description": description,
        }

    def create_provider(
        self,
        actor: Member | None,
        provider_id: str,
        name: str,
        zone: str,
        description: str = "",
    ) -> dict[str, Any]:
        _require(actor, MemberRole.ADMIN)
        _check_id(provider_id, "provider")
        if not name.strip():
            raise InvalidRequest("a provider needs a name", field="name")
        with self.engine.begin() as con:
            if con.execute(select(zones.c.id).where(zones.c.id == zone)).first() is None:
                raise NotFound(f"no zone {zone!r}")
            if con.execute(select(providers.c.id).where(providers.c.id == provider_id)).first():
                raise Conflict(f"provider {provider_id} exists")
            con.execute(
                providers.insert().values(
                    id=provider_id,
                    name=name,
                    zone_id=zone,
                    description=description,
                    created_at=now(),
                )
            )
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "provider.create",
                    refs={"provider": provider_id, "zone": zone},
                    sealed={"name": name},
                ),
            )
        log.info("provider created id=%s zone=%s", provider_id, zone)
        return self.get_provider(provider_id)

    def get_provider(self, provider_id: str) -> dict[str, Any]:
        with self.engine.connect() as con:
            row = con.execute(select(providers).where(providers.c.id == provider_id)).first()
            if row is None:
                raise NotFound(f"no provider {provider_id!r}")
            owned = con.execute(
                select(dataset_providers.c.dataset_id)
                .where(dataset_providers.c.provider_id == provider_id)
                .order_by(dataset_providers.c.dataset_id)
            ).all()
        return _provider_view(row, [r.dataset_id for r in owned])

    def list_providers(self, zone: str | None = None) -> list[dict[str, Any]]:
        query = select(providers).order_by(providers.c.id)
        if zone is not None:
            query = query.where(providers.c.zone_id == zone)
        with self.engine.connect() as con:
            rows = con.execute(query).all()
            owned = con.execute(select(dataset_providers)).all()
        by_provider: dict[str, list[str]] = {}
        for link in owned:
            by_provider.setdefault(link.provider_id, []).append(link.dataset_id)
        return [_provider_view(r, sorted(by_provider.get(r.id, []))) for r in rows]

    def add_provider_member(
        self, actor: Member | None, provider_id: str, member_id: str
    ) -> dict[str, Any]:
        """Let a member of role ``provider`` speak for ``provider_id`` (one provider each)."""
        _require(actor, MemberRole.ADMIN)
        with self.engine.begin() as con:
            if (
                con.execute(select(providers.c.id).where(providers.c.id == provider_id)).first()
                is None
            ):
                raise NotFound(f"no provider {provider_id!r}")
            row = con.execute(select(members.c.role).where(members.c.id == member_id)).first()
            if row is None:
                raise NotFound(f"no member {member_id!r}")
            if row.role != MemberRole.PROVIDER.value:
                raise InvalidRequest("only a member of role provider speaks for a provider")
            con.execute(provider_members.delete().where(provider_members.c.member_id == member_id))
            con.execute(
                provider_members.insert().values(
                    member_id=member_id, provider_id=provider_id, created_at=now()
                )
            )
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "provider.member",
                    refs={"provider": provider_id, "member": member_id},
                ),
            )
        return {"provider": provider_id, "member": member_id}

    # -- who may see what ----------------------------------------------------------------------

    def _dataset_row(self, con: Connection, dataset: str) -> Any:
        row = con.execute(select(datasets).where(datasets.c.id == dataset)).first()
        if row is None:
            raise NotFound(f"no dataset {dataset!r}")
        return row

    def _provider_of(self, con: Connection, dataset: str) -> str | None:
        row = con.execute(
            select(dataset_providers.c.provider_id).where(dataset_providers.c.dataset_id == dataset)
        ).first()
        return None if row is None else str(row.provider_id)

    def _speaks_for(self, con: Connection, member: Member) -> str | None:
        row = con.execute(
            select(provider_members.c.provider_id).where(provider_members.c.member_id == member.id)
        ).first()
        return None if row is None else str(row.provider_id)

    def _is_staff(self, con: Connection, actor: Member | None, dataset: str) -> bool:
        """Admins, operators and the dataset's provider: they see reports and every issue."""
        if actor is None or actor.role in STAFF:
            return True
        if actor.role != MemberRole.PROVIDER:
            return False
        mine = self._speaks_for(con, actor)
        return mine is not None and mine == self._provider_of(con, dataset)

    def _require_staff(self, con: Connection, actor: Member | None, dataset: str) -> None:
        self._dataset_row(con, dataset)
        if not self._is_staff(con, actor, dataset):
            assert actor is not None
            if actor.role == MemberRole.PROVIDER:
                raise Forbidden("only the provider of this dataset may do this")
            raise Forbidden(
                "this call needs the role admin, operator or the dataset's provider",
                role=actor.role.value,
            )

    # -- loads ---------------------------------------------------------------------------------

    def begin_load(
        self,
        actor: Member | None,
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
        the tables sorted by this column (overrides the policy's ``[storage] cluster_by``)."""
        _require(actor, *STAFF)
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
            given = {t: _spec(s, confine_to) for t, s in sources.items()}
        else:
            assert source is not None
            given = _spec(source, confine_to)
        connectors = sources_for(policy, given)
        names = sorted({c.name for c in connectors.values()})
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
            existing = con.execute(select(datasets).where(datasets.c.id == dataset)).first()
            previous_rows: dict[str, int] | None = None
            if existing is None:
                con.execute(
                    datasets.insert().values(
                        id=dataset, zone_id=zone, title=policy.title, created_at=now()
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
            self._no_running_load(con, dataset)
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
            if path.exists():
                raise Conflict(f"a workspace file for version {version} exists already")
            at = now()
            con.execute(
                version_loads.insert().values(
                    dataset_id=dataset,
                    version=version,
                    zone_id=zone,
                    state=LoadState.LOADING.value,
                    source=", ".join(names),
                    policy=policy_text,
                    path=str(path),
                    rows_loaded=0,
                    started_by=actor.id if actor is not None else None,
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
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "load.begin",
                    refs={
                        "zone": zone,
                        "dataset": dataset,
                        "version": version,
                        "provider": provider,
                    },
                    sealed={"sources": names},
                ),
            )
        log.info("load started dataset=%s version=%d", dataset, version)
        return PendingLoad(
            zone,
            dataset,
            version,
            path,
            policy,
            rules,
            connectors,
            previous_rows,
            cluster_by or policy.cluster_by,
        )

    def _no_running_load(self, con: Connection, dataset: str) -> None:
        """One load per dataset at a time; a load silent for STALE_AFTER was interrupted."""
        running = con.execute(
            select(version_loads.c.version, version_loads.c.updated_at).where(
                version_loads.c.dataset_id == dataset,
                version_loads.c.state == LoadState.LOADING.value,
            )
        ).all()
        for row in running:
            if now() - _utc(row.updated_at) < STALE_AFTER:
                raise Conflict(
                    f"version {row.version} of {dataset} is still loading", version=row.version
                )
            problem = {
                "title": "Load interrupted",
                "status": 500,
                "detail": "the load stopped reporting progress (the server stopped?)",
                "code": "load_interrupted",
            }
            con.execute(
                update(version_loads)
                .where(
                    version_loads.c.dataset_id == dataset, version_loads.c.version == row.version
                )
                .values(
                    state=LoadState.FAILED.value,
                    error=json.dumps(problem),
                    finished_at=now(),
                    updated_at=now(),
                )
            )

    def run_load(
        self, pending: PendingLoad, *, on_progress: ProgressHook | None = None, reraise: bool = True
    ) -> dict[str, Any]:
        """Load a pending version; publish it if it passes, else record it as failed.

        With ``reraise`` the error of a failed load is raised after it is recorded (the CLI);
        without, it is only recorded (a background load over HTTP). Returns the version's view.
        """
        progress = _ProgressWriter(self.engine, pending, on_progress)
        build: Path | None = None  # the plain workspace, only until it is sealed
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
            seal(build, pending.path, self._sealing_keys(), pending.dataset, pending.version)
        except VeilError as exc:
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
            return self._version(pending.dataset, pending.version)
        except Exception as exc:
            log.error(
                "load failed dataset=%s version=%d error=%s",
                pending.dataset,
                pending.version,
                type(exc).__name__,
            )
            self._fail(
                pending,
                {"title": "Internal error", "status": 500, "detail": "internal error",
                 "code": "internal_error"},
                None,
            )  # fmt: skip
            if reraise:
                raise
            return self._version(pending.dataset, pending.version)
        finally:
            if build is not None:
                build.unlink(missing_ok=True)
        self._publish(pending, report, progress.rows)
        log.info("load ready dataset=%s version=%d", pending.dataset, pending.version)
        return self._version(pending.dataset, pending.version)

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
        at = now()
        with self.engine.begin() as con:
            con.execute(
                versions.insert().values(
                    dataset_id=pending.dataset,
                    version=pending.version,
                    path=str(pending.path),
                    policy=_policy_text(con, pending),
                    row_counts=json.dumps(counts),
                    salt=secrets.randbits(62),
                    created_at=at,
                )
            )
            con.execute(
                update(datasets)
                .where(datasets.c.id == pending.dataset)
                .values(current_version=pending.version, title=pending.policy.title)
            )
            con.execute(
                _load_row(pending).values(
                    state=LoadState.READY.value,
                    rows_loaded=max(rows, sum(counts.values())),
                    bytes_read=version_loads.c.bytes_total,  # all of it (progress is throttled)
                    report=json.dumps(report.to_dict()),
                    finished_at=at,
                    updated_at=at,
                )
            )
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "load.ready",
                    refs={
                        "dataset": pending.dataset,
                        "version": pending.version,
                        "rows": sum(counts.values()),
                    },
                    primary=False,  # the load's outcome, after the request that began it
                ),
            )

    def _fail(
        self, pending: PendingLoad, problem: Mapping[str, Any], report: QualityReport | None
    ) -> None:
        at = now()
        with self.engine.begin() as con:
            con.execute(
                _load_row(pending).values(
                    state=LoadState.FAILED.value,
                    error=json.dumps(dict(problem), default=str),
                    report=json.dumps(report.to_dict()) if report is not None else None,
                    finished_at=at,
                    updated_at=at,
                )
            )
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "load.failed",
                    refs={"dataset": pending.dataset, "version": pending.version},
                    code=str(problem.get("code") or "load_failed"),
                    primary=False,
                ),
            )

    # -- versions ------------------------------------------------------------------------------

    def _in_zone(self, con: Connection, zone: str, dataset: str) -> Any:
        row = con.execute(select(datasets).where(datasets.c.id == dataset)).first()
        if row is None or row.zone_id != zone:
            raise NotFound(f"no dataset {dataset!r} in zone {zone!r}")
        return row

    def list_versions(self, actor: Member | None, zone: str, dataset: str) -> dict[str, Any]:
        with self.engine.connect() as con:
            self._in_zone(con, zone, dataset)
            self._require_staff(con, actor, dataset)
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
            "versions": [self._version(dataset, v) for v in sorted(numbers)],
        }

    def get_version(
        self, actor: Member | None, zone: str, dataset: str, version: int
    ) -> dict[str, Any]:
        with self.engine.connect() as con:
            self._in_zone(con, zone, dataset)
            self._require_staff(con, actor, dataset)
        return self._version(dataset, version)

    def _version(self, dataset: str, version: int) -> dict[str, Any]:
        with self.engine.connect() as con:
            ds = self._dataset_row(con, dataset)
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
                finished_at=_iso(ready.created_at),
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
            started_at=_iso(load.started_at),
            finished_at=_iso(load.finished_at),
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

    def activate(
        self, actor: Member | None, zone: str, dataset: str, version: int
    ) -> dict[str, Any]:
        """Make an earlier (or later) ready version current again: a rollback, atomically."""
        _require(actor, *STAFF)
        with self.engine.begin() as con:
            self._in_zone(con, zone, dataset)
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
        return self._version(dataset, version)

    # -- quality -------------------------------------------------------------------------------

    def quality(
        self, actor: Member | None, dataset: str, version: int | None = None
    ) -> dict[str, Any]:
        """The quality report of a version (default: the current one), for staff only."""
        with self.engine.connect() as con:
            ds = self._dataset_row(con, dataset)
            self._require_staff(con, actor, dataset)
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

    # -- issues (数据异议处理) -----------------------------------------------------------------

    def _subject_ref(self, subject: str) -> str:
        if not SUBJECT_ID.match(subject):
            raise InvalidRequest(
                "a subject is 1 to 64 letters, digits, '_', '.' or '-'", field="subject"
            )
        if self.zone_secret is not None:
            return subject_ref(subject, self.zone_secret)
        return hashlib.sha256(b"veil.subject.v1\x00" + subject.encode("utf-8")).hexdigest()

    def raise_issue(
        self,
        actor: Member | None,
        dataset: str,
        title: str,
        description: str,
        subject: str | None = None,
    ) -> dict[str, Any]:
        """A quality issue on a dataset, or on one subject's records (named by its credit code,
        kept only as a keyed hash). Staff, members of tenants with a grant on the dataset,
        verifiers, and a subject about its own records may raise one."""
        if not title.strip():
            raise InvalidRequest("an issue needs a title", field="title")
        if actor is not None and actor.role == MemberRole.SUBJECT:
            if subject is not None and subject != actor.subject_id:
                raise Forbidden("a subject raises issues about its own records only")
            subject = actor.subject_id
        ref = self._subject_ref(subject) if subject is not None else None
        for _attempt in range(5):
            try:
                with self.engine.begin() as con:
                    ds = self._dataset_row(con, dataset)
                    self._may_raise(con, actor, dataset)
                    number = 1 + (
                        con.execute(
                            select(func.max(dataset_issues.c.number)).where(
                                dataset_issues.c.dataset_id == dataset
                            )
                        ).scalar()
                        or 0
                    )
                    issue_id = new_id("iss")
                    con.execute(
                        dataset_issues.insert().values(
                            id=issue_id,
                            dataset_id=dataset,
                            number=number,
                            tenant_id=actor.tenant_id if actor is not None else None,
                            raised_by=actor.id if actor is not None else None,
                            title=title,
                            description=description,
                            subject_ref=ref,
                            dataset_version=ds.current_version,
                            state=IssueState.OPEN.value,
                            created_at=now(),
                        )
                    )
                    audit.append(
                        con,
                        audit.Event(
                            "onboarding",
                            "issue.raise",
                            refs={"dataset": dataset, "issue": issue_id, "number": number},
                            sealed={
                                "title": title,
                                "description": description,
                                "subject": subject,
                            },
                        ),
                    )
                break
            except IntegrityError:  # another issue took the number: try the next
                continue
        else:
            raise Conflict("could not number the issue; try again")
        log.info("issue raised dataset=%s number=%d", dataset, number)
        return self._issue(dataset, number)

    def _may_raise(self, con: Connection, actor: Member | None, dataset: str) -> None:
        if actor is None or self._is_staff(con, actor, dataset):
            return
        if actor.role in (MemberRole.VERIFIER, MemberRole.SUBJECT):
            return
        has_grant = con.execute(
            select(grants.c.id).where(
                grants.c.tenant_id == actor.tenant_id, grants.c.dataset_id == dataset
            )
        ).first()
        if has_grant is None:
            raise NoGrant(f"your tenant has no grant on {dataset!r}")

    def _issue_row(self, con: Connection, dataset: str, number: int) -> Any:
        row = con.execute(
            select(dataset_issues).where(
                dataset_issues.c.dataset_id == dataset, dataset_issues.c.number == number
            )
        ).first()
        if row is None:
            raise NotFound(f"no issue {number} on {dataset!r}")
        return row

    def _visible(self, con: Connection, actor: Member | None, dataset: str) -> Any:
        """A filter on issues: all for staff, the actor's tenant's otherwise."""
        if self._is_staff(con, actor, dataset):
            return dataset_issues.c.dataset_id == dataset
        assert actor is not None
        return and_(
            dataset_issues.c.dataset_id == dataset, dataset_issues.c.tenant_id == actor.tenant_id
        )

    def list_issues(self, actor: Member | None, dataset: str) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            self._dataset_row(con, dataset)
            rows = con.execute(
                select(dataset_issues)
                .where(self._visible(con, actor, dataset))
                .order_by(dataset_issues.c.number)
            ).all()
            revoked = self._revocation_counts(con, [r.id for r in rows])
        return [_issue_view(r, revoked.get(r.id, 0)) for r in rows]

    def get_issue(self, actor: Member | None, dataset: str, number: int) -> dict[str, Any]:
        with self.engine.connect() as con:
            self._dataset_row(con, dataset)
            row = con.execute(
                select(dataset_issues).where(
                    self._visible(con, actor, dataset), dataset_issues.c.number == number
                )
            ).first()
        if row is None:
            raise NotFound(f"no issue {number} on {dataset!r}")
        return self._issue(dataset, number)

    def _issue(self, dataset: str, number: int) -> dict[str, Any]:
        with self.engine.connect() as con:
            row = self._issue_row(con, dataset, number)
            revoked = self._revocation_counts(con, [row.id])
        return _issue_view(row, revoked.get(row.id, 0))

    def _revocation_counts(self, con: Connection, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = con.execute(
            select(issue_revocations.c.issue_id, func.count())
            .where(issue_revocations.c.issue_id.in_(ids))
            .group_by(issue_revocations.c.issue_id)
        ).all()
        return {r[0]: int(r[1]) for r in rows}

    def answer_issue(
        self, actor: Member | None, dataset: str, number: int, answer: str
    ) -> dict[str, Any]:
        if not answer.strip():
            raise InvalidRequest("an answer needs text", field="answer")
        with self.engine.begin() as con:
            self._require_staff(con, actor, dataset)
            row = self._issue_row(con, dataset, number)
            if row.state == IssueState.RESOLVED.value:
                raise Conflict(f"issue {number} is resolved")
            con.execute(
                update(dataset_issues)
                .where(dataset_issues.c.id == row.id)
                .values(
                    state=IssueState.ANSWERED.value,
                    answer=answer,
                    answered_by=actor.id if actor is not None else None,
                    answered_at=now(),
                )
            )
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "issue.answer",
                    refs={"dataset": dataset, "issue": row.id, "number": number},
                    sealed={"answer": answer},
                ),
            )
        return self._issue(dataset, number)

    def resolve_issue(
        self,
        actor: Member | None,
        dataset: str,
        number: int,
        kind: str,
        version: int | None = None,
        note: str = "",
        *,
        revoke_receipts: bool = True,
    ) -> dict[str, Any]:
        """Close an issue. ``corrected`` names the ready version that carries the correction;
        for an issue about a subject it revokes (``revoke_receipts``) that subject's valid
        receipts answered from older versions of the dataset, with reason ``data_correction``."""
        try:
            resolution = ResolutionKind(kind)
        except ValueError:
            raise InvalidRequest("kind is no_change or corrected", field="kind") from None
        if resolution == ResolutionKind.CORRECTED and version is None:
            raise InvalidRequest("a correction names the version that holds it", field="version")
        if resolution == ResolutionKind.NO_CHANGE and version is not None:
            raise InvalidRequest("only a correction names a version", field="version")
        with self.engine.begin() as con:
            self._require_staff(con, actor, dataset)
            row = self._issue_row(con, dataset, number)
            if row.state == IssueState.RESOLVED.value:
                raise Conflict(f"issue {number} is resolved")
            if version is not None:
                ready = con.execute(
                    select(versions.c.version).where(
                        versions.c.dataset_id == dataset, versions.c.version == version
                    )
                ).first()
                if ready is None:
                    raise InvalidRequest(
                        f"version {version} of {dataset} is not a ready version", field="version"
                    )
                if row.dataset_version is not None and version <= row.dataset_version:
                    raise InvalidRequest(
                        "a correction is a version newer than the one the issue was raised on",
                        field="version",
                    )
            at = now()
            con.execute(
                update(dataset_issues)
                .where(dataset_issues.c.id == row.id)
                .values(
                    state=IssueState.RESOLVED.value,
                    resolution=resolution.value,
                    resolution_version=version,
                    resolution_note=note,
                    resolved_by=actor.id if actor is not None else None,
                    resolved_at=at,
                )
            )
            revoked = 0
            if (
                resolution == ResolutionKind.CORRECTED
                and revoke_receipts
                and row.subject_ref is not None
                and version is not None
            ):
                revoked = _revoke_older(con, row.id, row.subject_ref, dataset, version, at)
            audit.append(
                con,
                audit.Event(
                    "onboarding",
                    "issue.resolve",
                    refs={
                        "dataset": dataset,
                        "issue": row.id,
                        "number": number,
                        "kind": resolution.value,
                        "version": version,
                        "revoked": revoked,
                    },
                    sealed={"note": note},
                ),
            )
        log.info(
            "issue resolved dataset=%s number=%d kind=%s revoked=%d",
            dataset,
            number,
            resolution.value,
            revoked,
        )
        return self._issue(dataset, number)


# -- helpers ------------------------------------------------------------------------------------


def _require(actor: Member | None, *roles: MemberRole) -> None:
    if actor is not None:
        actor.require(*roles)


def _spec(text: str, root: Path | None) -> SourceSpec:
    """Parse a source; with ``root``, a local file source must lie inside it (relative paths
    are taken from it)."""
    if not isinstance(text, str) or len(text) > 4096:
        raise InvalidSource("a source is a string of at most 4096 characters")
    spec = parse_source(text)
    if root is None or spec.kind == "postgresql" or spec.location.startswith("s3://"):
        return spec
    location = Path(spec.location)
    if not location.is_absolute():
        location = root / location
    if ".." in location.parts:
        raise InvalidSource("a file source may not contain '..'", file=spec.location[:200])
    fixed: list[str] = []
    for part in location.parts:
        if any(c in part for c in "*?[{"):
            break
        fixed.append(part)
    base = root.resolve()
    prefix = Path(*fixed).resolve() if fixed else base
    if not prefix.is_relative_to(base):
        raise InvalidSource(
            "over HTTP, file sources must lie in the data directory's sources/ folder",
            file=spec.location[:200],
        )
    return SourceSpec(spec.kind, str(location), spec.options)


def _load_row(pending: PendingLoad) -> Any:
    return update(version_loads).where(
        version_loads.c.dataset_id == pending.dataset,
        version_loads.c.version == pending.version,
    )


def _policy_text(con: Connection, pending: PendingLoad) -> str:
    row = con.execute(
        select(version_loads.c.policy).where(
            version_loads.c.dataset_id == pending.dataset,
            version_loads.c.version == pending.version,
        )
    ).one()
    return str(row.policy)


def _revoke_older(
    con: Connection, issue_id: str, ref: str, dataset: str, version: int, at: datetime
) -> int:
    """Revoke the subject's valid receipts answered from versions of ``dataset`` before
    ``version``; record them against the issue. Returns how many."""
    found = con.execute(
        select(receipts.c.id, verification_events.c.dataset_version)
        .join(verification_events, verification_events.c.receipt_id == receipts.c.id)
        .where(
            receipts.c.subject_ref == ref,
            receipts.c.status == "valid",
            verification_events.c.dataset == dataset,
        )
    ).all()
    ids = []
    for row in found:
        with contextlib.suppress(ValueError):
            if int(row.dataset_version) < version:
                ids.append(row.id)
    if not ids:
        return 0
    con.execute(
        update(receipts)
        .where(receipts.c.id.in_(ids), receipts.c.status == "valid")
        .values(status="revoked", revoked_at=at, reason=DATA_CORRECTION)
    )
    con.execute(
        issue_revocations.insert(),
        [{"issue_id": issue_id, "receipt_id": r, "created_at": at} for r in ids],
    )
    return len(ids)


def _provider_view(row: Any, owned: list[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "zone": row.zone_id,
        "description": row.description,
        "datasets": owned,
    }


def _issue_view(row: Any, revoked: int) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "number": row.number,
        "dataset": row.dataset_id,
        "state": row.state,
        "title": row.title,
        "description": row.description,
        "about_subject": row.subject_ref is not None,  # the subject itself is never shown back
        "dataset_version": row.dataset_version,
        "tenant": row.tenant_id,
        "raised_at": _iso(row.created_at),
        "answer": None,
        "resolution": None,
    }
    if row.answer is not None:
        view["answer"] = {"text": row.answer, "answered_at": _iso(row.answered_at)}
    if row.resolution is not None:
        view["resolution"] = {
            "kind": row.resolution,
            "version": row.resolution_version,
            "note": row.resolution_note or "",
            "resolved_at": _iso(row.resolved_at),
            "revoked_receipts": revoked,
        }
    return view


class _ProgressWriter:
    """Sums the per-table progress of a load and writes it to its version row, at most every
    PROGRESS_EVERY_S (and passes each update on to ``hook``, e.g. a progress bar)."""

    def __init__(self, engine: Engine, pending: PendingLoad, hook: ProgressHook | None) -> None:
        self.engine = engine
        self.pending = pending
        self.hook = hook
        self.tables: dict[str, Progress] = {}
        self.lock = threading.Lock()
        self.last = 0.0

    @property
    def rows(self) -> int:
        with self.lock:
            return sum(p.rows for p in self.tables.values())

    def __call__(self, progress: Progress) -> None:
        with self.lock:
            self.tables[progress.table] = progress
            moment = time.monotonic()
            due = moment - self.last >= PROGRESS_EVERY_S
            if due:
                self.last = moment
            rows = sum(p.rows for p in self.tables.values())
            read = [p.bytes_read for p in self.tables.values()]
            total = [p.bytes_total for p in self.tables.values()]
        if self.hook is not None:
            self.hook(progress)
        if not due:
            return
        try:
            with self.engine.begin() as con:
                con.execute(
                    _load_row(self.pending).values(
                        rows_loaded=rows,
                        bytes_read=None if None in read else sum(r for r in read if r),
                        bytes_total=None if None in total else sum(t for t in total if t),
                        current_table=progress.table,
                        updated_at=now(),
                    )
                )
        except Exception as exc:  # progress is best effort: never fail a load over it
            log.warning("progress not recorded dataset=%s error=%s", self.pending.dataset,
                        type(exc).__name__)  # fmt: skip
