"""Tenants, analysts and grants made directly on a state store, for the ledger's tests and the
others that need a charged member without going through HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Engine

from policies.accounting import Accounting
from sandbox.access import members, tenants
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.ledger import grants
from sandbox.ledger.service import Ledger
from tests.support.store import LOCAL, local_audit


def local_ledger(engine: Engine) -> Ledger:
    """The ledger of a test's own state store, recording in its audit log."""
    return Ledger(engine, local_audit(engine))


def analyst_actor(member_id: str, tenant_id: str) -> Actor:
    """An analyst acting (as its API key would make it), for calls made without HTTP."""
    return Actor.of(Member(member_id, tenant_id, "analyst", MemberRole.ANALYST))


@dataclass(frozen=True)
class Analyst:
    tenant_id: str
    member_id: str
    key: str
    grant_id: str

    @property
    def actor(self) -> Actor:
        return analyst_actor(self.member_id, self.tenant_id)


def new_analyst(
    engine: Engine,
    *,
    budget_micro: int,
    cap_micro: int,
    dataset: str = "enterprise",
    delta_pico: int = 0,
    refresh: grants.Refresh = grants.Refresh.NONE,
    name: str = "Ledger Test Institute",
) -> Analyst:
    """A fresh research tenant with one analyst (and key) and one grant on ``dataset``."""
    tenant = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, name, "research", "public_welfare"
    )
    member, key = members.create_member(
        engine, local_audit(engine), LOCAL, tenant, "analyst", MemberRole.ANALYST
    )
    grant = local_ledger(engine).grants.create_grant(
        LOCAL,
        tenant,
        dataset,
        Accounting.PURE,
        budget_micro=budget_micro,
        delta_pico=delta_pico,
        per_query_cap_micro=cap_micro,
        refresh=refresh,
    )
    return Analyst(tenant, member, key, grant)


def count_sql(day: int) -> str:
    """A distinct COUNT query per ``day`` (the answer cache would make repeats free)."""
    since = date(2000, 1, 1) + timedelta(days=day)
    return f"SELECT COUNT(*) AS n FROM registry WHERE founded >= '{since.isoformat()}'"
