"""Administration of tenants, members, API keys and grants: the logic behind the HTTP API and
the CLI alike.

``actor`` is the authenticated member, or the local administrator (the CLI working directly on a
data directory, which already has every right over it). Other tenants' objects are not found,
never forbidden.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from policies.accounting import MICRO, PICO, Accounting, request_delta_to_pico, to_micro
from policies.errors import InvalidBudget
from sandbox import catalog
from sandbox.access import keys, members, model, tenants
from sandbox.access.model import Actor, MemberRole
from sandbox.audit.log import AuditLog, require_log
from sandbox.errors import InvalidRequest
from sandbox.ledger import budgets, grants


def tenant_view(t: model.Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "kind": t.kind.value, "purpose_class": t.purpose_class}


def member_view(m: model.Member) -> dict[str, Any]:
    view: dict[str, Any] = {"id": m.id, "tenant": m.tenant_id, "name": m.name, "role": m.role.value}
    if m.subject_id is not None:
        view["subject"] = m.subject_id
    return view


def grant_view(g: grants.Grant) -> dict[str, Any]:
    view = budgets.describe(g)
    for internal in ("summary", "queries_left_at", "grant"):
        view.pop(internal)
    return {"id": g.id, "tenant": g.tenant_id, **view}


class Administration:
    """Tenants, members, keys and grants, for an admin (or the local administrator); built once
    with the state store and its audit log."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = require_log(audit, "administration")

    def _admin(self, actor: Actor, tenant_id: str | None = None) -> None:
        """The tenant must be visible to the actor (else 404), and the actor must be an admin."""
        if tenant_id is not None:
            tenants.get_tenant(self.engine, actor, tenant_id)
        actor.require(MemberRole.ADMIN)

    def create_tenant(
        self, actor: Actor, name: str, kind: str, purpose_class: str
    ) -> dict[str, Any]:
        self._admin(actor)
        tenant_id = tenants.create_tenant(self.engine, self.audit, actor, name, kind, purpose_class)
        return tenant_view(tenants.get_tenant(self.engine, actor, tenant_id))

    def list_tenants(self, actor: Actor) -> list[dict[str, Any]]:
        return [tenant_view(t) for t in tenants.list_tenants(self.engine, actor)]

    def get_tenant(self, actor: Actor, tenant_id: str) -> dict[str, Any]:
        return tenant_view(tenants.get_tenant(self.engine, actor, tenant_id))

    def create_member(
        self,
        actor: Actor,
        tenant_id: str,
        name: str,
        role: str,
        subject: str | None = None,
    ) -> dict[str, Any]:
        """A new member with its first API key, shown once. A ``subject`` member names the subject
        (credit code) it speaks for; no other role takes one."""
        self._admin(actor, tenant_id)
        try:
            member_role = MemberRole(role)
        except ValueError:
            roles = ", ".join(r.value for r in MemberRole)
            raise InvalidRequest(f"role is one of {roles}", field="role") from None
        if member_role == MemberRole.SUBJECT and subject is None:
            raise InvalidRequest(
                "a subject member needs 'subject' (its credit code)", field="subject"
            )
        if member_role != MemberRole.SUBJECT and subject is not None:
            raise InvalidRequest("only a subject member takes 'subject'", field="subject")
        member_id, key = members.create_member(
            self.engine, self.audit, actor, tenant_id, name, member_role, subject_id=subject
        )
        return {
            **member_view(members.get_member(self.engine, tenant_id, member_id)),
            "api_key": key,
        }

    def list_members(self, actor: Actor, tenant_id: str) -> list[dict[str, Any]]:
        self._admin(actor, tenant_id)
        return [member_view(m) for m in members.list_members(self.engine, tenant_id)]

    def list_keys(self, actor: Actor, tenant_id: str, member_id: str) -> list[dict[str, object]]:
        self._admin(actor, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        return keys.list_keys(self.engine, member_id)

    def issue_key(self, actor: Actor, tenant_id: str, member_id: str) -> dict[str, Any]:
        self._admin(actor, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        key_id, key = keys.issue_key(self.engine, self.audit, actor, member_id)
        return {"id": key_id, "member": member_id, "api_key": key}

    def revoke_key(self, actor: Actor, tenant_id: str, member_id: str, key_id: str) -> None:
        self._admin(actor, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        keys.revoke_key(self.engine, self.audit, actor, member_id, key_id)

    def create_grant(
        self,
        actor: Actor,
        tenant_id: str,
        *,
        dataset: str,
        accounting: str,
        epsilon: float | None,
        rho: float | None,
        delta: float,
        per_query_cap: float,
        refresh: str,
    ) -> dict[str, Any]:
        self._admin(actor, tenant_id)
        catalog.current(self.engine, dataset)  # the dataset must exist
        mode = Accounting(accounting)
        amount = epsilon if mode == Accounting.PURE else rho
        name = "epsilon" if mode == Accounting.PURE else "rho"
        if amount is None:
            raise InvalidBudget(f"{name} is required for a {mode.value} grant", field=name)
        other, other_name = (rho, "rho") if mode == Accounting.PURE else (epsilon, "epsilon")
        if other is not None:
            raise InvalidBudget(
                f"{other_name} does not apply to a {mode.value} grant (give {name})",
                field=other_name,
            )
        budget = to_micro(amount, name)
        cap = to_micro(per_query_cap, "per_query_cap")
        if cap > budget:
            raise InvalidBudget("per_query_cap exceeds the budget", field="per_query_cap")
        grant_id = grants.create_grant(
            self.engine,
            tenant_id,
            dataset,
            mode,
            budget_micro=budget,
            delta_pico=request_delta_to_pico(delta),  # a budget: rounded down, never raised
            per_query_cap_micro=cap,
            refresh=grants.Refresh(refresh),
        )
        return grant_view(grants.grant_by_id(self.engine, grant_id))

    def list_grants(self, actor: Actor, tenant_id: str) -> list[dict[str, Any]]:
        tenants.get_tenant(self.engine, actor, tenant_id)
        return [grant_view(g) for g in grants.grants_of(self.engine, tenant_id)]

    def set_sub_budget(
        self,
        actor: Actor,
        tenant_id: str,
        grant_id: str,
        member_id: str,
        budget: float,
    ) -> dict[str, Any]:
        """Give a member a sub-budget of the tenant's grant; it spends from both."""
        self._admin(actor, tenant_id)
        grant = grants.grant_by_id(self.engine, grant_id, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        amount = to_micro(budget, "budget")
        if amount > grant.budget_micro:
            raise InvalidBudget("a sub-budget cannot exceed the grant", field="budget")
        current = grants.member_budget(self.engine, grant_id, member_id)
        if current is not None and amount < current.spent_micro:
            raise InvalidBudget(
                "a sub-budget cannot go below what the member spent", field="budget"
            )
        grants.set_member_budget(self.engine, grant_id, member_id, amount)
        sub = grants.member_budget(self.engine, grant_id, member_id)
        assert sub is not None
        return {
            "grant": grant_id,
            "member": member_id,
            "total": sub.budget_micro / MICRO,
            "spent": sub.spent_micro / MICRO,
            "remaining": sub.left_micro / MICRO,
            "delta_total": grant.delta_pico / PICO,
        }
