"""Tenants, members, API keys and grants over HTTP (logic in :mod:`sandbox.access.admin`)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from sandbox.api.deps import ActorDep, ServicesDep
from sandbox.api.responses import tenants as views
from sandbox.api.responses.base import ViewRoute

router = APIRouter(prefix="/v1", tags=["tenants"], route_class=ViewRoute)


class TenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["bank", "research", "government", "other"]
    purpose_class: Literal["public_welfare", "commercial"]


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal[
        "admin", "operator", "provider", "analyst", "verifier", "auditor", "subject", "authority"
    ]
    subject: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The credit code a subject member speaks for (role subject only).",
    )


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


@router.post("/tenants", status_code=201, response_model=views.Tenant)
def create_tenant(body: TenantBody, actor: ActorDep, services: ServicesDep) -> views.Tenant:
    return views.Tenant.of(
        services.admin.create_tenant(actor, body.name, body.kind, body.purpose_class)
    )


@router.get("/tenants", response_model=views.TenantList)
def list_tenants(actor: ActorDep, services: ServicesDep) -> views.TenantList:
    """Admins and auditors see every tenant; other members their own."""
    found = services.admin.list_tenants(actor)
    return views.TenantList(tenants=[views.Tenant.of(t) for t in found])


@router.get("/tenants/{tenant}", response_model=views.Tenant)
def get_tenant(tenant: str, actor: ActorDep, services: ServicesDep) -> views.Tenant:
    return views.Tenant.of(services.admin.get_tenant(actor, tenant))


@router.post("/tenants/{tenant}/members", status_code=201, response_model=views.NewMember)
def create_member(
    tenant: str, body: MemberBody, actor: ActorDep, services: ServicesDep
) -> views.NewMember:
    """A new member with its first API key, shown once: store it now."""
    return views.NewMember.of(
        services.admin.create_member(actor, tenant, body.name, body.role, body.subject)
    )


@router.get("/tenants/{tenant}/members", response_model=views.MemberList)
def list_members(tenant: str, actor: ActorDep, services: ServicesDep) -> views.MemberList:
    found = services.admin.list_members(actor, tenant)
    return views.MemberList(members=[views.Member.of(m) for m in found])


@router.get("/tenants/{tenant}/members/{member_id}/keys", response_model=views.ApiKeyList)
def list_keys(
    tenant: str, member_id: str, actor: ActorDep, services: ServicesDep
) -> views.ApiKeyList:
    found = services.admin.list_keys(actor, tenant, member_id)
    return views.ApiKeyList(keys=[views.ApiKey.of(k) for k in found])


@router.post(
    "/tenants/{tenant}/members/{member_id}/keys",
    status_code=201,
    response_model=views.IssuedKey,
)
def issue_key(
    tenant: str, member_id: str, actor: ActorDep, services: ServicesDep
) -> views.IssuedKey:
    return views.IssuedKey.of(services.admin.issue_key(actor, tenant, member_id))


@router.delete("/tenants/{tenant}/members/{member_id}/keys/{key_id}", status_code=204)
def revoke_key(
    tenant: str, member_id: str, key_id: str, actor: ActorDep, services: ServicesDep
) -> None:
    services.admin.revoke_key(actor, tenant, member_id, key_id)


@router.post("/tenants/{tenant}/grants", status_code=201, response_model=views.Grant)
def create_grant(
    tenant: str, body: GrantBody, actor: ActorDep, services: ServicesDep
) -> views.Grant:
    created = services.admin.create_grant(
        actor,
        tenant,
        dataset=body.dataset,
        accounting=body.accounting,
        epsilon=body.epsilon,
        rho=body.rho,
        delta=body.delta,
        per_query_cap=body.per_query_cap,
        refresh=body.refresh,
    )
    return views.Grant.of(created)


@router.get("/tenants/{tenant}/grants", response_model=views.GrantList)
def list_grants(tenant: str, actor: ActorDep, services: ServicesDep) -> views.GrantList:
    found = services.admin.list_grants(actor, tenant)
    return views.GrantList(grants=[views.Grant.of(g) for g in found])


@router.put(
    "/tenants/{tenant}/grants/{grant_id}/members/{member_id}", response_model=views.SubBudget
)
def set_sub_budget(
    tenant: str,
    grant_id: str,
    member_id: str,
    body: SubBudgetBody,
    actor: ActorDep,
    services: ServicesDep,
) -> views.SubBudget:
    """Give a member a sub-budget of the tenant's grant; it spends from both."""
    return views.SubBudget.of(
        services.admin.set_sub_budget(actor, tenant, grant_id, member_id, body.budget)
    )
