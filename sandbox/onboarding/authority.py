"""The operator's authorisation of a zone (docs/administration.md#operator-authorisation).

Each zone records it: a scope (datasets, products; ``None``: all), a term (start, end; no end:
open-ended) and a state, ``active``, ``suspended`` or ``exited``. Only a member of role
``authority`` (or the local administrator) changes it, every change audited in its transaction.
While the zone is not authorised — suspended, exited, outside its term, or outside its scope —
its products refuse with ``zone_not_authorised`` (:func:`sandbox.catalog.require_authorised`);
reads of the catalogue and the audit log still work.

Exit is final: every version of the zone's datasets is made unusable (no current version) and
its sealed file deleted (if it lies in this data directory's workspaces; ``deleted`` says), and
an exit certificate listing what was destroyed is signed with the receipt signing key (Ed25519
over its canonical JSON, like a receipt).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from sandbox.access.model import Actor, MemberRole
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.canonical import b64url_encode, canonical_json
from sandbox.catalog import PRODUCTS
from sandbox.clock import now, utc, wire
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.keys.signing import SigningKeys
from sandbox.store.schema import datasets, versions, zone_authorisations, zones

__all__ = ["Authorisation", "Authority", "ExitCertificate"]

log = logging.getLogger("veil.onboarding")

# Who reads a zone's authorisation: the authority, and the zone's staff and auditors.
READERS = (MemberRole.AUTHORITY, MemberRole.ADMIN, MemberRole.OPERATOR, MemberRole.AUDITOR)


@dataclass(frozen=True)
class Authorisation:
    zone: str
    state: str  # active | suspended | exited
    datasets: tuple[str, ...] | None  # None: every dataset of the zone
    products: tuple[str, ...] | None  # None: every product (query, verification, load)
    term_start: datetime
    term_end: datetime | None  # None: open-ended
    updated_at: datetime
    certificate: dict[str, Any] | None = None  # the exit certificate, once exited


@dataclass(frozen=True)
class ExitCertificate:
    """What an exit destroyed, signed: ``document`` is what ``signature`` covers."""

    document: dict[str, Any]
    key: str
    signature: str

    def wire(self) -> dict[str, Any]:
        return {"certificate": self.document, "key": self.key, "signature": self.signature}


class Authority:
    """The authorisations of the zones behind ``engine``; transitions recorded in ``audit``.
    ``workspace_dir`` holds the sealed versions an exit deletes; ``signing`` signs its
    certificate (without it, exit is refused)."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        workspace_dir: Path,
        signing: SigningKeys | None = None,
    ) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the authority service")
        self.workspace_dir = workspace_dir
        self.signing = signing

    def get(self, actor: Actor, zone: str) -> Authorisation:
        actor.require(*READERS)
        with self.engine.connect() as con:
            return _read(con, zone)

    def authorise(
        self,
        actor: Actor,
        zone: str,
        *,
        term_start: datetime,
        term_end: datetime | None = None,
        datasets: Sequence[str] | None = None,
        products: Sequence[str] | None = None,
    ) -> Authorisation:
        """Set the zone's scope and term (its state stays as it is; an exited zone refuses)."""
        actor.require(MemberRole.AUTHORITY)
        start, end = utc(term_start), None if term_end is None else utc(term_end)
        if end is not None and end <= start:
            raise InvalidRequest("the term ends after it starts", field="term_end")
        if products is not None:
            unknown = sorted(set(products) - set(PRODUCTS))
            if unknown:
                raise InvalidRequest(
                    f"products are {', '.join(PRODUCTS)}; not {', '.join(unknown)}",
                    field="products",
                )
        scope = {
            "datasets": None if datasets is None else sorted(set(datasets)),
            "products": None if products is None else sorted(set(products)),
        }
        with self.engine.begin() as con:
            current = _read(con, zone)
            if current.state == "exited":
                raise Conflict("the zone's operator has exited", state=current.state)
            con.execute(
                update(zone_authorisations)
                .where(zone_authorisations.c.zone_id == zone)
                .values(
                    scope=json.dumps(scope, separators=(",", ":")),
                    term_start=start,
                    term_end=end,
                    updated_at=now(),
                )
            )
            refs: dict[str, Any] = {
                "zone": zone,
                "term_start": wire(start),
                "term_end": "" if end is None else wire(end),
                "datasets": "*" if datasets is None else ",".join(scope["datasets"] or []),
                "products": "*" if products is None else ",".join(scope["products"] or []),
            }
            self.audit.append(con, Event("admin", "zone.authorise", refs=refs), actor)
            found = _read(con, zone)
        log.info("zone authorised id=%s", zone)
        return found

    def suspend(self, actor: Actor, zone: str) -> Authorisation:
        return self._move(actor, zone, "suspend", ("active",), "suspended")

    def resume(self, actor: Actor, zone: str) -> Authorisation:
        return self._move(actor, zone, "resume", ("suspended",), "active")

    def _move(
        self, actor: Actor, zone: str, action: str, sources: tuple[str, ...], target: str
    ) -> Authorisation:
        actor.require(MemberRole.AUTHORITY)
        with self.engine.begin() as con:
            current = _read(con, zone)
            if current.state not in sources:
                raise Conflict(
                    f"the zone's operator authorisation is {current.state}: cannot {action}",
                    state=current.state,
                )
            con.execute(
                update(zone_authorisations)
                .where(zone_authorisations.c.zone_id == zone)
                .values(state=target, updated_at=now())
            )
            self.audit.append(
                con,
                Event("admin", f"zone.{action}", refs={"zone": zone, "state": target}),
                actor,
            )
            found = _read(con, zone)
        log.info("zone %s id=%s", action, zone)
        return found

    def exit(self, actor: Actor, zone: str, *, confirm: str) -> ExitCertificate:
        """Exit the operator: the zone's versions made unusable and their sealed files
        deleted, then the signed certificate of what was destroyed. Final: ``confirm`` must
        name the zone again."""
        actor.require(MemberRole.AUTHORITY)
        if confirm != zone:
            raise InvalidRequest("confirm names the zone that exits", field="confirm")
        if self.signing is None:
            raise InvalidRequest("exit needs the receipt signing key")
        ring = self.signing.ring()
        at = now()
        with self.engine.begin() as con:
            current = _read(con, zone)
            if current.state == "exited":
                raise Conflict("the zone's operator has exited", state=current.state)
            rows = con.execute(
                select(versions.c.dataset_id, versions.c.version, versions.c.path)
                .join(datasets, datasets.c.id == versions.c.dataset_id)
                .where(datasets.c.zone_id == zone)
                .order_by(versions.c.dataset_id, versions.c.version)
            ).all()
            destroyed = []
            doomed: list[Path] = []
            for row in rows:
                path = Path(row.path)
                # only this data directory's files: a copy's store may name another's
                ours = path.resolve().is_relative_to(self.workspace_dir.resolve())
                existed = ours and path.is_file()
                if existed:
                    doomed.append(path)
                destroyed.append(
                    {
                        "dataset": row.dataset_id,
                        "version": row.version,
                        "file": path.name,
                        "sha256": _sha256(path) if existed else None,
                        "deleted": existed,
                    }
                )
            document = {
                "type": "veil.zone.exit.v1",
                "zone": zone,
                "exited_at": wire(at),
                "destroyed": destroyed,
            }
            signature = ring.current.sign(canonical_json(document))
            certificate = ExitCertificate(document, ring.current_id, b64url_encode(signature))
            con.execute(
                update(datasets).where(datasets.c.zone_id == zone).values(current_version=None)
            )
            con.execute(
                update(zone_authorisations)
                .where(zone_authorisations.c.zone_id == zone)
                .values(
                    state="exited",
                    updated_at=at,
                    certificate=json.dumps(certificate.wire(), separators=(",", ":")),
                )
            )
            self.audit.append(
                con,
                Event(
                    "admin",
                    "zone.exit",
                    refs={
                        "zone": zone,
                        "versions": len(destroyed),
                        "certificate": hashlib.sha256(canonical_json(document)).hexdigest(),
                    },
                ),
                actor,
            )
        # After the commit: a failed delete leaves a file no version names any more.
        for path in doomed:
            path.unlink(missing_ok=True)
        log.warning("zone exited id=%s versions=%d", zone, len(destroyed))
        return certificate


def _read(con: Connection, zone: str) -> Authorisation:
    row = con.execute(
        select(zone_authorisations).where(zone_authorisations.c.zone_id == zone)
    ).first()
    if row is None:
        if con.execute(select(zones.c.id).where(zones.c.id == zone)).first() is None:
            raise NotFound(f"no zone {zone[:64]!r}")
        raise NotFound(f"zone {zone[:64]!r} has no operator authorisation")
    scope = json.loads(row.scope)
    return Authorisation(
        zone=zone,
        state=row.state,
        datasets=None if scope.get("datasets") is None else tuple(scope["datasets"]),
        products=None if scope.get("products") is None else tuple(scope["products"]),
        term_start=utc(row.term_start),
        term_end=None if row.term_end is None else utc(row.term_end),
        updated_at=utc(row.updated_at),
        certificate=None if row.certificate is None else json.loads(row.certificate),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
