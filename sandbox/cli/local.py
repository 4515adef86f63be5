"""The CLI's local mode: administration straight on a data directory, same results as the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from sandbox.access import admin
from sandbox.ledger import entries


class Local:
    """Administration with the rights of whoever holds the data directory (``actor=None``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()

    def create_tenant(self, name: str, kind: str, purpose_class: str) -> dict[str, Any]:
        return admin.create_tenant(self.engine, None, name, kind, purpose_class)

    def list_tenants(self) -> list[dict[str, Any]]:
        return admin.list_tenants(self.engine, None)

    def create_member(
        self, tenant: str, name: str, role: str, subject: str | None = None
    ) -> dict[str, Any]:
        return admin.create_member(self.engine, None, tenant, name, role, subject)

    def list_members(self, tenant: str) -> list[dict[str, Any]]:
        return admin.list_members(self.engine, None, tenant)

    def issue_key(self, tenant: str, member: str) -> dict[str, Any]:
        return admin.issue_key(self.engine, None, tenant, member)

    def revoke_key(self, tenant: str, member: str, key_id: str) -> None:
        admin.revoke_key(self.engine, None, tenant, member, key_id)

    def create_grant(self, tenant: str, **fields: Any) -> dict[str, Any]:
        return admin.create_grant(self.engine, None, tenant, **fields)

    def list_grants(self, tenant: str) -> list[dict[str, Any]]:
        return admin.list_grants(self.engine, None, tenant)

    def set_sub_budget(self, tenant: str, grant: str, member: str, budget: float) -> dict[str, Any]:
        return admin.set_sub_budget(self.engine, None, tenant, grant, member, budget)

    def ledger(self, tenant: str | None, dataset: str | None, csv_out: bool) -> Any:
        records = entries.entries(self.engine, tenant_id=tenant, dataset_id=dataset)
        return entries.to_csv(records) if csv_out else {"entries": records}
