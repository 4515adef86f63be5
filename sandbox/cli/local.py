"""The CLI's local mode: administration straight on a data directory, same results as the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from sandbox.access.admin import Administration
from sandbox.access.model import Actor
from sandbox.audit.log import AuditLog
from sandbox.ledger import entries


class Local:
    """Administration with the rights of whoever holds the data directory: the local
    administrator, recorded in the audit log like any actor."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.admin = Administration(engine, audit)
        self.actor = Actor.local()

    def close(self) -> None:
        self.engine.dispose()

    def create_tenant(self, name: str, kind: str, purpose_class: str) -> dict[str, Any]:
        return self.admin.create_tenant(self.actor, name, kind, purpose_class)

    def list_tenants(self) -> list[dict[str, Any]]:
        return self.admin.list_tenants(self.actor)

    def create_member(
        self, tenant: str, name: str, role: str, subject: str | None = None
    ) -> dict[str, Any]:
        return self.admin.create_member(self.actor, tenant, name, role, subject)

    def list_members(self, tenant: str) -> list[dict[str, Any]]:
        return self.admin.list_members(self.actor, tenant)

    def issue_key(self, tenant: str, member: str) -> dict[str, Any]:
        return self.admin.issue_key(self.actor, tenant, member)

    def revoke_key(self, tenant: str, member: str, key_id: str) -> None:
        self.admin.revoke_key(self.actor, tenant, member, key_id)

    def create_grant(self, tenant: str, **fields: Any) -> dict[str, Any]:
        return self.admin.create_grant(self.actor, tenant, **fields)

    def list_grants(self, tenant: str) -> list[dict[str, Any]]:
        return self.admin.list_grants(self.actor, tenant)

    def set_sub_budget(self, tenant: str, grant: str, member: str, budget: float) -> dict[str, Any]:
        return self.admin.set_sub_budget(self.actor, tenant, grant, member, budget)

    def ledger(self, tenant: str | None, dataset: str | None, csv_out: bool) -> Any:
        records = entries.entries(self.engine, tenant_id=tenant, dataset_id=dataset)
        return entries.to_csv(records) if csv_out else {"entries": records}
