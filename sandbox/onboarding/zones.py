"""Zones (专区): creating one (admins) and listing them.

A zone's row and its audit entry are :mod:`sandbox.catalog`'s (the catalog also serves
``GET /v1/zones``); this module checks what a new zone must be: an id, a kind, an operator and a
title.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import Engine

from sandbox import catalog
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.audit.log import log_for
from sandbox.errors import InvalidRequest
from sandbox.onboarding.model import ZoneKind, check_id
from sandbox.onboarding.staff import require

__all__ = ["Zones"]

log = logging.getLogger("veil.onboarding")


class Zones:
    """The zones of the state store behind ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_zone(
        self,
        actor: Member | None,
        zone_id: str,
        kind: str,
        operator: str,
        title: str,
        description: str = "",
    ) -> dict[str, Any]:
        require(actor, MemberRole.ADMIN)
        check_id(zone_id, "zone")
        try:
            zone_kind = ZoneKind(kind)
        except ValueError:
            raise InvalidRequest(
                "kind is domain, regional or comprehensive", field="kind"
            ) from None
        if not operator.strip() or not title.strip():
            raise InvalidRequest("a zone needs an operator and a title", field="operator")
        audit = log_for(self.engine)  # transitional: until onboarding gets its AuditLog
        assert audit is not None
        catalog.create_zone(
            self.engine,
            audit,
            Actor.local() if actor is None else Actor.of(actor),
            catalog.Zone(zone_id, zone_kind.value, title, operator, description),
        )
        log.info("zone created id=%s", zone_id)
        return {
            "id": zone_id,
            "kind": zone_kind.value,
            "title": title,
            "operator": operator,
            "description": description,
        }

    def list_zones(self) -> list[dict[str, Any]]:
        """Every zone: id, kind, title, operator, description."""
        return [dataclasses.asdict(z) for z in catalog.list_zones(self.engine)]
