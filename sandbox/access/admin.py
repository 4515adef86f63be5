"""Administration of tenants, members, API keys and grants: the logic behind the HTTP API and
the CLI alike.

``actor`` is the authenticated member, or the local administrator (the CLI working directly on a
data directory, which already has every right over it). Other tenants' objects are not found,
never forbidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from policies.accounting import MICRO, PICO, Accounting, request_delta_to_pico, to_micro
from policies.errors import InvalidBudget
from sandbox import catalog
from sandbox.access import keys, members, model, tenants
from sandbox.access.keys import ApiKey
from sandbox.access.model import Actor, MemberRole
from sandbox.audit.log import AuditLog, require_log
from sandbox.errors import InvalidRequest
from sandbox.ledger.budgets import GrantStatus, grant_status
from sandbox.ledger.grants import Refresh
from sandbox.ledger.service import Ledger


@dataclass(frozen=True)
class MemberInfo:
    """A member as administration shows it (``subject``: the subject it speaks for, if any)."""

    id: str
    tenant: str
    name: str
    role: str
    subject: str | None

    @classmethod
    def of(cls, m: model.Member) -> MemberInfo:
        return cls(m.id, m.tenant_id, m.name, m.role.value, m.subject_id)


@dataclass(frozen=True)
class NewMember(MemberInfo):
    """A new member with its first API key, shown once."""

    api_key: str


@dataclass(frozen=True)
class IssuedKey:
    """A new API key, shown once."""

    id: str
    member: str
    api_key: str


@dataclass(frozen=True)
class SubBudget:
    """A member's sub-budget of a grant (ε or ρ) and the grant's δ."""

    grant: str
    member: str
    total: float
    spent: float
    remaining: float
    delta_total: float


class Administration:
    """Tenants, members, keys and grants, for an admin (or the local administrator); built once
    with the state store, its audit log and its ledger."""

    def __init__(self, engine: Engine, audit: AuditLog, ledger: Ledger) -> None:
        self.engine = engine
        self.audit = require_log(audit, "administration")
        self.ledger = ledger

    def _admin(self, actor: Actor, tenant_id: str | None = None) -> None:
        """The tenant must be visible to the actor (else 404), and the actor must be an admin."""
        if tenant_id is not None:
            tenants.get_tenant(self.engine, actor, tenant_id)
        actor.require(MemberRole.ADMIN)

    def create_tenant(self, actor: Actor, name: str, kind: str, purpose_class: str) -> model.Tenant:
        self._admin(actor)
        tenant_id = tenants.create_tenant(self.engine, self.audit, actor, name, kind, purpose_class)
        return tenants.get_tenant(self.engine, actor, tenant_id)

    def list_tenants(self, actor: Actor) -> list[model.Tenant]:
        return tenants.list_tenants(self.engine, actor)

    def get_tenant(self, actor: Actor, tenant_id: str) -> model.Tenant:
        return tenants.get_tenant(self.engine, actor, tenant_id)

    def create_member(
        self,
        actor: Actor,
        tenant_id: str,
        name: str,
        role: str,
        subject: str | None = None,
    ) -> NewMember:
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
        found = MemberInfo.of(members.get_member(self.engine, tenant_id, member_id))
        return NewMember(**vars(found), api_key=key)

    def list_members(self, actor: Actor, tenant_id: str) -> list[MemberInfo]:
        self._admin(actor, tenant_id)
        return [MemberInfo.of(m) for m in members.list_members(self.engine, tenant_id)]

    def list_keys(self, actor: Actor, tenant_id: str, member_id: str) -> list[ApiKey]:
        self._admin(actor, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        return keys.list_keys(self.engine, member_id)

    def issue_key(self, actor: Actor, tenant_id: str, member_id: str) -> IssuedKey:
        self._admin(actor, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        key_id, key = keys.issue_key(self.engine, self.audit, actor, member_id)
        return IssuedKey(key_id, member_id, key)

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
    ) -> GrantStatus:
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
        grants = self.ledger.grants
        grant_id = grants.create_grant(
            actor,
            tenant_id,
            dataset,
            mode,
            budget_micro=budget,
            delta_pico=request_delta_to_pico(delta),  # a budget: rounded down, never raised
            per_query_cap_micro=cap,
            refresh=Refresh(refresh),
        )
        return grant_status(grants.grant_by_id(actor, grant_id))

    def list_grants(self, actor: Actor, tenant_id: str) -> list[GrantStatus]:
        tenants.get_tenant(self.engine, actor, tenant_id)
        return [grant_status(g) for g in self.ledger.grants.grants_of(actor, tenant_id)]

    def set_sub_budget(
        self,
        actor: Actor,
        tenant_id: str,
        grant_id: str,
        member_id: str,
        budget: float,
    ) -> SubBudget:
        """Give a member a sub-budget of the tenant's grant; it spends from both."""
        self._admin(actor, tenant_id)
        grants = self.ledger.grants
        grant = grants.grant_by_id(actor, grant_id, tenant_id)
        members.get_member(self.engine, tenant_id, member_id)
        amount = to_micro(budget, "budget")
        if amount > grant.budget_micro:
            raise InvalidBudget("a sub-budget cannot exceed the grant", field="budget")
        current = grants.member_budget(grant_id, member_id)
        if current is not None and amount < current.spent_micro:
            raise InvalidBudget(
                "a sub-budget cannot go below what the member spent", field="budget"
            )
        grants.set_member_budget(actor, grant_id, member_id, amount)
        sub = grants.member_budget(grant_id, member_id)
        assert sub is not None
        return SubBudget(
            grant=grant_id,
            member=member_id,
            total=sub.budget_micro / MICRO,
            spent=sub.spent_micro / MICRO,
            remaining=sub.left_micro / MICRO,
            delta_total=grant.delta_pico / PICO,
        )
