"""The CLI's local mode: administration straight on a data directory, same results as the API
(each result dumped through the response model the API answers it with)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from sandbox.access.admin import Administration
from sandbox.access.model import Actor
from sandbox.api.responses import ledger as ledger_views
from sandbox.api.responses import tenants as views
from sandbox.api.responses.base import View
from sandbox.audit.log import AuditLog
from sandbox.ledger.service import Ledger


def wire(view: type[View], result: Any) -> dict[str, Any]:
    """``result`` as the JSON body the API answers it with (``view``'s)."""
    return view.of(result).model_dump(mode="json", exclude_unset=True)


class Local:
    """Administration with the rights of whoever holds the data directory: the local
    administrator, recorded in the audit log like any actor."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.book = Ledger(engine, audit)
        self.admin = Administration(engine, audit, self.book)
        self.actor = Actor.local()

    def close(self) -> None:
        self.engine.dispose()

    def create_tenant(self, name: str, kind: str, purpose_class: str) -> dict[str, Any]:
        return wire(views.Tenant, self.admin.create_tenant(self.actor, name, kind, purpose_class))

    def list_tenants(self) -> list[dict[str, Any]]:
        return [wire(views.Tenant, t) for t in self.admin.list_tenants(self.actor)]

    def create_member(
        self, tenant: str, name: str, role: str, subject: str | None = None
    ) -> dict[str, Any]:
        created = self.admin.create_member(self.actor, tenant, name, role, subject)
        return wire(views.NewMember, created)

    def list_members(self, tenant: str) -> list[dict[str, Any]]:
        return [wire(views.Member, m) for m in self.admin.list_members(self.actor, tenant)]

    def issue_key(self, tenant: str, member: str) -> dict[str, Any]:
        return wire(views.IssuedKey, self.admin.issue_key(self.actor, tenant, member))

    def revoke_key(self, tenant: str, member: str, key_id: str) -> None:
        self.admin.revoke_key(self.actor, tenant, member, key_id)

    def create_grant(self, tenant: str, **fields: Any) -> dict[str, Any]:
        return wire(views.Grant, self.admin.create_grant(self.actor, tenant, **fields))

    def list_grants(self, tenant: str) -> list[dict[str, Any]]:
        return [wire(views.Grant, g) for g in self.admin.list_grants(self.actor, tenant)]

    def set_sub_budget(self, tenant: str, grant: str, member: str, budget: float) -> dict[str, Any]:
        sub = self.admin.set_sub_budget(self.actor, tenant, grant, member, budget)
        return wire(views.SubBudget, sub)

    def ledger(self, tenant: str | None, dataset: str | None, csv_out: bool) -> Any:
        found = self.book.entries(self.actor, tenant_id=tenant, dataset_id=dataset)
        if csv_out:
            return ledger_views.ledger_csv(found)
        return ledger_views.ledger(found).model_dump(mode="json")
