"""Tenants, members, API keys and grants. Deny by default; other tenants' objects answer 404."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from policies.accounting import (
    MICRO,
    PICO,
    Accounting,
    InvalidBudget,
    delta_to_pico,
    to_micro,
)
from sandbox import access, budgets, catalog, ledger
from sandbox.access import MemberRole
from sandbox.api.deps import MemberDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["tenants"])
ADMIN = MemberRole.ADMIN


class TenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["bank", "research", "government", "other"]
    purpose_class: Literal["public_welfare", "commercial"]


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "operator", "provider", "analyst", "verifier", "auditor"]


class GrantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(max_length=64)
    accounting: Literal["pure", "zcdp"] = "pure"
    epsilon: float | None = Field(None, strict=True, description="Budget per period (pure).")
    rho: float | None = Field(None, strict=True, description="Budget per period (zcdp).")
    delta: float = Field(0.0, strict=True, description="δ per period (partition selection).")
    per_query_cap: float = Field(strict=True, description="Largest ε (or ρ) one query may spend.")
    refresh: Literal["none", "daily", "weekly", "monthly"] = "none"


class SubBudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: float = Field(strict=True, description="The member's share of the grant (ε or ρ).")


def _tenant(t: access.Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "kind": t.kind.value, "purpose_class": t.purpose_class}


def _member(m: access.Member) -> dict[str, Any]:
    return {"id": m.id, "tenant": m.tenant_id, "name": m.name, "role": m.role.value}


def _grant(g: ledger.Grant) -> dict[str, Any]:
    view = budgets.describe(g)
    view.pop("summary")
    view.pop("queries_left_at")
    return {"id": g.id, "tenant": g.tenant_id, **view}


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantBody, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    member.require(ADMIN)
    tenant_id = access.create_tenant(services.engine, body.name, body.kind, body.purpose_class)
    return _tenant(access.get_tenant(services.engine, member, tenant_id))


@router.get("/tenants")
def list_tenants(member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    return {"tenants": [_tenant(t) for t in access.list_tenants(services.engine, member)]}


@router.get("/tenants/{tenant}")
def get_tenant(tenant: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    return _tenant(access.get_tenant(services.engine, member, tenant))


@router.post("/tenants/{tenant}/members", status_code=201)
def create_member(
    tenant: str, body: MemberBody, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    """A new member with its first API key, shown once: store it now."""
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    member_id, key = access.create_member(services.engine, tenant, body.name, MemberRole(body.role))
    created = access.get_member(services.engine, tenant, member_id)
    return {**_member(created), "api_key": key}


@router.get("/tenants/{tenant}/members")
def list_members(tenant: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    return {"members": [_member(m) for m in access.list_members(services.engine, tenant)]}


@router.get("/tenants/{tenant}/members/{member_id}/keys")
def list_keys(
    tenant: str, member_id: str, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    access.get_member(services.engine, tenant, member_id)
    return {"keys": access.list_keys(services.engine, member_id)}


@router.post("/tenants/{tenant}/members/{member_id}/keys", status_code=201)
def issue_key(
    tenant: str, member_id: str, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    access.get_member(services.engine, tenant, member_id)
    key_id, key = access.issue_key(services.engine, member_id)
    return {"id": key_id, "member": member_id, "api_key": key}


@router.delete("/tenants/{tenant}/members/{member_id}/keys/{key_id}", status_code=204)
def revoke_key(
    tenant: str, member_id: str, key_id: str, member: MemberDep, services: ServicesDep
) -> None:
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    access.get_member(services.engine, tenant, member_id)
    access.revoke_key(services.engine, member_id, key_id)


@router.post("/tenants/{tenant}/grants", status_code=201)
def create_grant(
    tenant: str, body: GrantBody, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    catalog.current(services.engine, body.dataset)  # the dataset must exist
    accounting = Accounting(body.accounting)
    amount = body.epsilon if accounting == Accounting.PURE else body.rho
    name = "epsilon" if accounting == Accounting.PURE else "rho"
    if amount is None:
        raise InvalidBudget(f"{name} is required for a {accounting.value} grant", field=name)
    budget = to_micro(amount, name)
    cap = to_micro(body.per_query_cap, "per_query_cap")
    if cap > budget:
        raise InvalidBudget("per_query_cap exceeds the budget", field="per_query_cap")
    grant_id = ledger.create_grant(
        services.engine,
        tenant,
        body.dataset,
        accounting,
        budget_micro=budget,
        delta_pico=delta_to_pico(body.delta),
        per_query_cap_micro=cap,
        refresh=ledger.Refresh(body.refresh),
    )
    return _grant(ledger.grant_by_id(services.engine, grant_id))


@router.get("/tenants/{tenant}/grants")
def list_grants(tenant: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    access.get_tenant(services.engine, member, tenant)
    return {"grants": [_grant(g) for g in ledger.grants_of(services.engine, tenant)]}


@router.put("/tenants/{tenant}/grants/{grant_id}/members/{member_id}")
def set_sub_budget(
    tenant: str,
    grant_id: str,
    member_id: str,
    body: SubBudgetBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Give a member a sub-budget of the tenant's grant; it spends from both."""
    access.get_tenant(services.engine, member, tenant)
    member.require(ADMIN)
    grant = ledger.grant_by_id(services.engine, grant_id, tenant)
    access.get_member(services.engine, tenant, member_id)
    amount = to_micro(body.budget, "budget")
    if amount > grant.budget_micro:
        raise InvalidBudget("a sub-budget cannot exceed the grant", field="budget")
    ledger.set_member_budget(services.engine, grant_id, member_id, amount)
    sub = ledger.member_budget(services.engine, grant_id, member_id)
    assert sub is not None
    return {
        "grant": grant_id,
        "member": member_id,
        "total": sub.budget_micro / MICRO,
        "spent": sub.spent_micro / MICRO,
        "remaining": sub.left_micro / MICRO,
        "delta_total": grant.delta_pico / PICO,
    }
