"""Tenants: the organisations that use the zone. Other tenants' objects are not found, never
forbidden.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from sandbox.access.model import (
    ZONE_WIDE,
    Actor,
    ActorKind,
    PurposeClass,
    Tenant,
    TenantKind,
    new_id,
)
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.clock import now
from sandbox.errors import InvalidRequest, NotFound
from sandbox.store.schema import tenants


def create_tenant(
    engine: Engine, audit: AuditLog, actor: Actor, name: str, kind: str, purpose_class: str
) -> str:
    try:
        kind, purpose_class = TenantKind(kind), PurposeClass(purpose_class)
    except ValueError:
        raise InvalidRequest(
            "kind is bank, research, government or other; purpose_class is public_welfare or "
            "commercial",
            field="kind" if kind not in TenantKind.__members__.values() else "purpose_class",
        ) from None
    if not name.strip():
        raise InvalidRequest("a tenant needs a name", field="name")
    tenant_id = new_id("ten")
    with engine.begin() as con:
        con.execute(
            tenants.insert().values(
                id=tenant_id,
                name=name,
                kind=kind.value,
                purpose_class=purpose_class.value,
                created_at=now(),
            )
        )
        audit.append(
            con,
            Event(
                "admin",
                "tenant.create",
                tenant=tenant_id,
                refs={"kind": kind.value, "purpose_class": purpose_class.value},
                sealed={"name": name},
            ),
            actor,
        )
    return tenant_id


def _tenant(row: Any) -> Tenant:
    return Tenant(row.id, row.name, TenantKind(row.kind), PurposeClass(row.purpose_class))


def list_tenants(engine: Engine, actor: Actor) -> list[Tenant]:
    """The tenants ``actor`` sees: every one for zone staff and the local administrator, its
    own for any other member."""
    query = select(tenants).order_by(tenants.c.created_at, tenants.c.id)
    if actor.member is not None and actor.member.role not in ZONE_WIDE:
        query = query.where(tenants.c.id == actor.member.tenant_id)
    elif actor.kind != ActorKind.LOCAL and actor.member is None:
        return []
    with engine.connect() as con:
        return [_tenant(r) for r in con.execute(query)]


def get_tenant(engine: Engine, actor: Actor, tenant_id: str) -> Tenant:
    """A tenant ``actor`` may see; otherwise not found."""
    if not actor.sees_tenant(tenant_id):
        raise NotFound(f"no tenant {tenant_id!r}")
    return find_tenant(engine, tenant_id)


def find_tenant(engine: Engine, tenant_id: str) -> Tenant:
    """A tenant by id, whoever asks (checks of a request's references: a consent's tenant)."""
    with engine.connect() as con:
        row = con.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return _tenant(row)
