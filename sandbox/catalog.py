"""Zones, datasets and their immutable versions.

A dataset's current version is one row update, so a new load switches queries over atomically; a
query pins the version it started with. Parsed policies are cached per (dataset, version).

What any member may read of it (:func:`list_datasets`, :func:`get_dataset`): schema and the
public part of each policy — never rows, never extremes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from policies.loader import parse_policy
from policies.model import Policy, PublicPolicy
from sandbox.access.model import Actor
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.clock import now, utc
from sandbox.errors import Conflict, NotFound, ZoneNotAuthorised
from sandbox.store.schema import datasets, versions, zone_authorisations, zones


@dataclass(frozen=True)
class Zone:
    id: str
    kind: str
    title: str
    operator: str
    description: str


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    zone: str
    title: str
    version: int
    path: Path
    policy: Policy
    row_counts: dict[str, int]
    salt: int
    # Tables none of whose units has more rows than the table's cap; None: not measured yet.
    within_row_caps: frozenset[str] | None = None


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset's current version, as the catalogue lists it."""

    id: str
    zone: str
    title: str
    version: int
    description: str
    provider: str
    tables: tuple[str, ...]

    @classmethod
    def of(cls, version: DatasetVersion) -> DatasetSummary:
        return DatasetSummary(
            id=version.dataset,
            zone=version.zone,
            title=version.title,
            version=version.version,
            description=version.policy.description,
            provider=version.policy.provider,
            tables=tuple(sorted(version.row_counts)),
        )


@dataclass(frozen=True)
class DatasetDetail(DatasetSummary):
    """A dataset's current version with the public part of its policy."""

    policy: PublicPolicy


def create_zone(engine: Engine, audit: AuditLog, actor: Actor, zone: Zone) -> None:
    with engine.begin() as con:
        if con.execute(select(zones.c.id).where(zones.c.id == zone.id)).first():
            raise Conflict(f"zone {zone.id} exists")
        con.execute(
            zones.insert().values(
                id=zone.id,
                kind=zone.kind,
                title=zone.title,
                operator=zone.operator,
                description=zone.description,
                created_at=now(),
            )
        )
        # Created authorised, open-ended and unscoped, as the migration left existing zones;
        # the authority then sets its scope and term, suspends, resumes or exits it.
        con.execute(
            zone_authorisations.insert().values(
                zone_id=zone.id,
                state="active",
                scope=OPEN_SCOPE,
                term_start=now(),
                term_end=None,
                updated_at=now(),
            )
        )
        audit.append(
            con,
            Event("onboarding", "zone.create", refs={"zone": zone.id, "kind": zone.kind}),
            actor,
        )


def list_zones(engine: Engine) -> list[Zone]:
    with engine.connect() as con:
        rows = con.execute(select(zones).order_by(zones.c.id)).all()
    return [Zone(r.id, r.kind, r.title, r.operator, r.description) for r in rows]


def add_version(
    engine: Engine,
    audit: AuditLog,
    actor: Actor,
    zone_id: str,
    policy_text: str,
    path: Path,
    row_counts: dict[str, int],
    policy_source: str = "<policy>",
    *,
    expect_version: int | None = None,
    within_row_caps: Collection[str] | None = None,
) -> int:
    """Register a loaded workspace as the dataset's next version and make it current.

    ``expect_version``: the number the workspace was sealed for; ``Conflict`` if the next
    version has another number (the sealed file would not open under it).
    ``within_row_caps``: its tables none of whose units has more rows than the cap, measured
    when it was built (:func:`connectors.sink.within_row_caps`)."""
    policy = parse_policy(policy_text, policy_source)
    with engine.begin() as con:
        existing = con.execute(select(datasets).where(datasets.c.id == policy.dataset)).first()
        if existing is None:
            con.execute(
                datasets.insert().values(
                    id=policy.dataset, zone_id=zone_id, title=policy.title, created_at=now()
                )
            )
        elif existing.zone_id != zone_id:
            raise Conflict(f"dataset {policy.dataset} belongs to another zone")
        last = con.execute(
            select(versions.c.version)
            .where(versions.c.dataset_id == policy.dataset)
            .order_by(versions.c.version.desc())
        ).first()
        version = 1 if last is None else last.version + 1
        if expect_version is not None and version != expect_version:
            raise Conflict(
                f"the next version of {policy.dataset} is {version}, not {expect_version}",
                version=version,
            )
        con.execute(
            versions.insert().values(
                dataset_id=policy.dataset,
                version=version,
                path=str(path),
                policy=policy_text,
                row_counts=json.dumps(row_counts),
                within_row_caps=caps_text(within_row_caps),
                salt=secrets.randbits(62),
                created_at=now(),
            )
        )
        con.execute(
            update(datasets)
            .where(datasets.c.id == policy.dataset)
            .values(current_version=version, title=policy.title)
        )
        audit.append(
            con,
            Event(
                "onboarding",
                "version.register",
                refs={"zone": zone_id, "dataset": policy.dataset, "version": version},
                primary=False,  # the load that built it is the request's entry
            ),
            actor,
        )
    return version


def current(engine: Engine, dataset: str) -> DatasetVersion:
    """The dataset's current version, or ``NotFound``."""
    query = (
        select(datasets.c.zone_id, datasets.c.title, versions)
        .join(versions, versions.c.dataset_id == datasets.c.id)
        .where(datasets.c.id == dataset, versions.c.version == datasets.c.current_version)
    )
    with engine.connect() as con:
        row = con.execute(query).first()
    if row is None:
        raise NotFound(f"no dataset {dataset!r}")
    return DatasetVersion(
        dataset=dataset,
        zone=row.zone_id,
        title=row.title,
        version=row.version,
        path=Path(row.path),
        policy=_policy(row.policy, f"{dataset} v{row.version}"),
        row_counts=json.loads(row.row_counts),
        salt=row.salt,
        within_row_caps=(
            None if row.within_row_caps is None else frozenset(json.loads(row.within_row_caps))
        ),
    )


def list_datasets(engine: Engine, zone: str | None = None) -> list[DatasetSummary]:
    """The current version of every dataset (of ``zone``), as the catalogue lists it."""
    return [DatasetSummary.of(v) for v in list_current(engine, zone)]


def get_dataset(engine: Engine, dataset_id: str) -> DatasetDetail:
    """A dataset's current version with the public part of its policy, or ``NotFound``."""
    version = current(engine, dataset_id)
    summary = DatasetSummary.of(version)
    return DatasetDetail(**vars(summary), policy=PublicPolicy.of(version.policy))


def list_current(engine: Engine, zone: str | None = None) -> list[DatasetVersion]:
    query = select(datasets.c.id).where(datasets.c.current_version.is_not(None))
    if zone is not None:
        query = query.where(datasets.c.zone_id == zone)
    with engine.connect() as con:
        ids = [r.id for r in con.execute(query.order_by(datasets.c.id))]
    return [current(engine, i) for i in ids]


def caps_text(tables: Collection[str] | None) -> str | None:
    """How ``within_row_caps`` is stored: a sorted JSON list, or NULL when not measured."""
    return None if tables is None else json.dumps(sorted(tables))


def record_within_row_caps(
    engine: Engine, dataset: str, version: int, tables: Collection[str]
) -> None:
    """Record what the first query on a version measured (for versions built before it was
    measured at build time); a version's workspace never changes, so neither does this."""
    with engine.begin() as con:
        con.execute(
            update(versions)
            .where(
                versions.c.dataset_id == dataset,
                versions.c.version == version,
                versions.c.within_row_caps.is_(None),
            )
            .values(within_row_caps=caps_text(tables))
        )


@lru_cache(maxsize=256)
def _policy(text: str, source: str) -> Policy:
    return parse_policy(text, source)


# -- the operator's authorisation (docs/administration.md#operator-authorisation) -------------

OPEN_SCOPE = '{"datasets":null,"products":null}'
PRODUCTS = ("query", "verification", "load")  # what a zone serves, as a scope names them


def require_authorised(
    con: Connection | Engine, zone: str, dataset: str, product: str, at: datetime | None = None
) -> None:
    """Refuse (``zone_not_authorised``) unless ``zone``'s operator is authorised at ``at`` (now)
    for ``product`` on ``dataset``: state active, inside its term, both inside its scope."""
    query = select(zone_authorisations).where(zone_authorisations.c.zone_id == zone)
    if isinstance(con, Engine):
        with con.connect() as c:
            row = c.execute(query).first()
    else:
        row = con.execute(query).first()
    refusal = authorisation_refusal(row, dataset, product, at or now())
    if refusal is not None:
        raise ZoneNotAuthorised(refusal, zone=zone)


def authorisation_refusal(row: Any, dataset: str, product: str, at: datetime) -> str | None:
    """Why a zone's authorisation row (``None``: none recorded) refuses ``product`` on
    ``dataset`` at ``at``; ``None`` if it allows it."""
    if row is None:
        return "the zone's operator has no authorisation"
    if row.state != "active":
        return f"the zone's operator authorisation is {row.state}"
    start = utc(row.term_start)
    end = row.term_end
    if at < start:
        return "the zone's operator authorisation has not started"
    if end is not None and at >= utc(end):
        return "the zone's operator authorisation has ended"
    scope = json.loads(row.scope)
    if scope.get("datasets") is not None and dataset not in scope["datasets"]:
        return "the dataset is outside the zone's authorised scope"
    if scope.get("products") is not None and product not in scope["products"]:
        return f"the product {product} is outside the zone's authorised scope"
    return None
