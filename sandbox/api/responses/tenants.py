"""Tenants, members, API keys (never their hashes) and grants."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from policies.accounting import Accounting
from sandbox.access import admin, keys, model
from sandbox.api.responses.base import View
from sandbox.ledger import budgets


class Tenant(View):
    mirrors = model.Tenant

    id: str
    name: str
    kind: str
    purpose_class: str


class TenantList(View):
    tenants: list[Tenant]


class Member(View):
    mirrors: ClassVar[type | None] = admin.MemberInfo
    omit_none = frozenset({"subject"})

    id: str
    tenant: str
    name: str
    role: str
    subject: str | None = None


class NewMember(Member):
    mirrors = admin.NewMember

    api_key: str


class MemberList(View):
    members: list[Member]


class ApiKey(View):
    mirrors = keys.ApiKey

    id: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyList(View):
    keys: list[ApiKey]


class IssuedKey(View):
    mirrors = admin.IssuedKey

    id: str
    member: str
    api_key: str


class GrantFigures(View):
    """A grant's budget in plain numbers: what a grant and a member's budget view share.
    ``spent_as_epsilon`` and ``total_as_epsilon`` are members of a zCDP grant's only (``null``
    where there is no ε to give: nothing spent, or δ = 0)."""

    @classmethod
    def absent(cls, result: Any) -> set[str]:
        found = super().absent(result)
        if result.accounting != Accounting.ZCDP:
            found |= {"spent_as_epsilon", "total_as_epsilon"}
        return found

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
    next_refresh: datetime | None
    spent_as_epsilon: float | None = None
    total_as_epsilon: float | None = None


class Grant(GrantFigures):
    mirrors = budgets.GrantStatus

    id: str
    tenant: str
    dataset: str


class GrantList(View):
    grants: list[Grant]


class SubBudget(View):
    mirrors = admin.SubBudget

    grant: str
    member: str
    total: float
    spent: float
    remaining: float
    delta_total: float
