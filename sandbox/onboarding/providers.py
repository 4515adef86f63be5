"""Providers: the departments that supply datasets, and the members who speak for them.

Providers are their own table (``providers``), not tenants: a provider belongs to one zone, and
its people are members (of any tenant) with role ``provider``, each linked to one provider through
``provider_members`` (linking again moves the member). Registering providers and linking members
is for admins; anyone may list them, each with the datasets it supplies. What a provider member
may then see of its datasets is :mod:`sandbox.onboarding.staff`.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, select

from sandbox.access.model import Member, MemberRole
from sandbox.audit import log as audit
from sandbox.clock import now
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.onboarding.model import check_id
from sandbox.onboarding.staff import require
from sandbox.store.schema import dataset_providers, members, provider_members, providers, zones

__all__ = ["Providers"]

log = logging.getLogger("veil.onboarding")


class Providers:
    """The providers of the state store behind ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_provider(
        self,
        actor: Member | None,
        provider_id: str,
        name: str,
        zone: str,
        description: str = "",
    ) -> dict[str, Any]:
        require(actor, MemberRole.ADMIN)
        check_id(provider_id, "provider")
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
        require(actor, MemberRole.ADMIN)
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


def _provider_view(row: Any, owned: list[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "zone": row.zone_id,
        "description": row.description,
        "datasets": owned,
    }
