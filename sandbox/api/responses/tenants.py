"""Tenants, members, API keys (never their hashes) and grants."""

from __future__ import annotations

from sandbox.api.responses.base import View


class Tenant(View):
    id: str
    name: str
    kind: str
    purpose_class: str


class TenantList(View):
    tenants: list[Tenant]


class Member(View):
    id: str
    tenant: str
    name: str
    role: str
    subject: str | None = None


class NewMember(Member):
    api_key: str


class MemberList(View):
    members: list[Member]


class ApiKey(View):
    id: str
    created_at: str
    revoked_at: str | None


class ApiKeyList(View):
    keys: list[ApiKey]


class IssuedKey(View):
    id: str
    member: str
    api_key: str


class GrantFigures(View):
    """A grant's budget in plain numbers: what a grant and a member's budget view share."""

    accounting: str
    unit: str
    total: float
    spent: float
    remaining: float
    delta_total: float
    delta_spent: float
    delta_remaining: float
    per_query_cap: float
    refresh: str
    next_refresh: str | None
    spent_as_epsilon: float | None = None
    total_as_epsilon: float | None = None


class Grant(GrantFigures):
    id: str
    tenant: str
    dataset: str


class GrantList(View):
    grants: list[Grant]


class SubBudget(View):
    grant: str
    member: str
    total: float
    spent: float
    remaining: float
    delta_total: float
