"""Zones (专区): creating one (admins) and listing them (anyone).

A zone's row and its audit entry are :mod:`sandbox.catalog`'s, and so is the result,
:class:`sandbox.catalog.Zone`; this module checks what a new zone must be: an id, a kind, an
operator and a title.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from sandbox import catalog
from sandbox.access.model import Actor, MemberRole
from sandbox.audit.log import AuditLog, require_log
from sandbox.errors import InvalidRequest
from sandbox.onboarding.model import ZoneKind, check_id

__all__ = ["Zones"]

log = logging.getLogger("veil.onboarding")


class Zones:
    """The zones of the state store behind ``engine``; changes recorded in ``audit``."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the zones service")

    def create_zone(
        self,
        actor: Actor,
        zone_id: str,
        kind: str,
        operator: str,
        title: str,
        description: str = "",
    ) -> catalog.Zone:
        actor.require(MemberRole.ADMIN)
        check_id(zone_id, "zone")
        try:
            zone_kind = ZoneKind(kind)
        except ValueError:
            raise InvalidRequest(
                "kind is domain, regional or comprehensive", field="kind"
            ) from None
        if not operator.strip() or not title.strip():
            raise InvalidRequest("a zone needs an operator and a title", field="operator")
        zone = catalog.Zone(zone_id, zone_kind.value, title, operator, description)
        catalog.create_zone(self.engine, self.audit, actor, zone)
        log.info("zone created id=%s", zone_id)
        return zone

    def list_zones(self) -> list[catalog.Zone]:
        """Every zone, by id (any member may list them)."""
        return catalog.list_zones(self.engine)
