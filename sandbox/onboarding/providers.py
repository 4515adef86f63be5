"""Providers: the departments that supply datasets, and the members who speak for them.

Providers are their own table (``providers``), not tenants: a provider belongs to one zone, and
its people are members (of any tenant) with role ``provider``, each linked to one provider through
``provider_members`` (linking again moves the member). Registering providers and linking members
is for admins; anyone may list them, each with the datasets it supplies. What a provider member
may then see of its datasets is :mod:`sandbox.onboarding.staff`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from sandbox.access.model import Actor, MemberRole
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now
from sandbox.errors import Conflict, InvalidRequest, NotFound
from sandbox.onboarding.model import check_id
from sandbox.store.schema import dataset_providers, members, provider_members, providers, zones

__all__ = ["Provider", "ProviderMember", "Providers"]

log = logging.getLogger("veil.onboarding")


@dataclass(frozen=True)
class Provider:
    """A provider, with the datasets it supplies (by id)."""

    id: str
    name: str
    zone: str
    description: str
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class ProviderMember:
    """A member that speaks for a provider."""

    provider: str
    member: str


class Providers:
    """The providers of the state store behind ``engine``; changes recorded in ``audit``."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the providers service")

    def create_provider(
        self,
        actor: Actor,
        provider_id: str,
        name: str,
        zone: str,
        description: str = "",
    ) -> Provider:
        actor.require(MemberRole.ADMIN)
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
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "provider.create",
                    refs={"provider": provider_id, "zone": zone},
                    sealed={"name": name},
                ),
                actor,
            )
        log.info("provider created id=%s zone=%s", provider_id, zone)
        return self.get_provider(provider_id)

    def get_provider(self, provider_id: str) -> Provider:
        with self.engine.connect() as con:
            row = con.execute(select(providers).where(providers.c.id == provider_id)).first()
            if row is None:
                raise NotFound(f"no provider {provider_id!r}")
            owned = con.execute(
                select(dataset_providers.c.dataset_id)
                .where(dataset_providers.c.provider_id == provider_id)
                .order_by(dataset_providers.c.dataset_id)
            ).all()
        return _provider(row, [r.dataset_id for r in owned])

    def list_providers(self, zone: str | None = None) -> list[Provider]:
        """Every provider (of ``zone``), by id (any member may list them)."""
        query = select(providers).order_by(providers.c.id)
        if zone is not None:
            query = query.where(providers.c.zone_id == zone)
        with self.engine.connect() as con:
            rows = con.execute(query).all()
            owned = con.execute(select(dataset_providers)).all()
        by_provider: dict[str, list[str]] = {}
        for link in owned:
            by_provider.setdefault(link.provider_id, []).append(link.dataset_id)
        return [_provider(r, sorted(by_provider.get(r.id, []))) for r in rows]

    def add_provider_member(self, actor: Actor, provider_id: str, member_id: str) -> ProviderMember:
        """Let a member of role ``provider`` speak for ``provider_id`` (one provider each)."""
        actor.require(MemberRole.ADMIN)
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
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "provider.member",
                    refs={"provider": provider_id, "member": member_id},
                ),
                actor,
            )
        return ProviderMember(provider_id, member_id)


def _provider(row: Any, owned: list[str]) -> Provider:
    return Provider(row.id, row.name, row.zone_id, row.description, tuple(owned))
